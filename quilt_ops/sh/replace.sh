#!/bin/sh
# Replaces $1 with exactly $3 bytes from stdin, through the temp file $2, mode $4, keeping
# $1's owner and group; only if $1 still holds what was read (SHA-256 $5): an edit made
# meanwhile is never overwritten. The temp file is created private (umask 077, noclobber:
# a planted name or symlink fails), checked to hold every byte, given the original's owner,
# group and mode, synced and renamed over $1. Runs as the login user or, through qfile, as
# the folder's owner or root. Exit codes: quilt_ops.sh.Exit.
set -u
f=$1; tmp=$2; n=$3; mode=$4; was=$5
umask 077
# As root, the temp file takes the file's owner and group before anything is written to it.
own() { ref=$1; shift; [ "$(id -u)" != 0 ] || [ ! -e "$ref" ] || chown --reference="$ref" -- "$@" 2>/dev/null; true; }
command -v sha256sum >/dev/null 2>&1 || exit 29
if [ "$(sha256sum < "$f" | cut -c1-64)" != "$was" ]; then exit 28; fi
rm -f -- "$tmp"
( set -C; : > "$tmp" ) || exit 21
own "$f" "$tmp"
cat >> "$tmp" || { rm -f -- "$tmp"; exit 22; }
if [ "$(wc -c < "$tmp")" -ne "$n" ]; then rm -f -- "$tmp"; exit 23; fi
if [ -e "$f" ]; then chown --reference="$f" -- "$tmp" 2>/dev/null || { rm -f -- "$tmp"; exit 24; }; fi
chmod "$mode" -- "$tmp" || { rm -f -- "$tmp"; exit 25; }
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$f" || { rm -f -- "$tmp"; exit 26; }
{ sync -- "$f" "$(dirname -- "$f")"; } 2>/dev/null || sync
