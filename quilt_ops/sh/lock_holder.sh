#!/bin/bash
# shellcheck disable=SC2016  # the `sh -c '...'` snippets take their values as arguments ($1, $2)
# The host lock's holder (quilt_ops.lock; run as `bash -c "$(cat lock_holder.sh)" quilt-ops-lock ARGS`:
# the breaker, lock_break.sh, knows a holder by that name in its command line).
#
# Holds the lock on $1, writes note $2 with $3, then waits for heartbeats (read -t ${10}, the
# seconds of silence after which the holder lets go). When its holder goes without saying
# "release" (killed, connection cut, network dead, --break-lock), it stops the commands the
# run registered in $4 (process group and token $5, checked against the group leader's command
# line, which holds the token) before letting go: no command of a vanished run goes on changing
# the host after the lock is free. The file opened is checked right after the open (a regular
# file, the inode at the path): a swap of the path between the check and the open is refused.
# $6 is the env file, $7 the command's marker (the holder answers in sections), $8 quilt.sudo
# (for root processes in those groups: `sudo docker`).
#
# It runs as whoever must stop the run's commands: the login user, or root. In a folder of
# another user ($9, the "owner" access) it runs as root and does every file operation as that
# user, opening the lock file too (root then opens the file the owner's process holds, never
# the path; see below). Run as root in
# root's folder, the files it makes take the env file's owner and group, so that a run as that
# user can take the lock later.
umask 077
IFS=$' \t\n'
lockf=$1; note=$2; text=$3; commands=$4; run_token=$5; env_file=$6; m=$7; sudo=$8; owner=$9; silence=${10}
say() { printf '%s lock %s\n' "$m" "$1"; }
asowner() { if [ -n "$owner" ]; then runuser -u "$owner" -- "$@"; else "$@"; fi; }
own() {
  [ -z "$owner" ] && [ "$(id -u)" = 0 ] && [ -e "$env_file" ] && chown --reference="$env_file" -- "$@" 2>/dev/null; true
}
[ ! -L "$lockf" ] || { say cannot-open; exit 3; }
asowner sh -c '[ -e "$1" ] || [ -L "$1" ] || : >> "$1"' quilt-ops-lock-file "$lockf" 2>/dev/null
# In a folder of another user, root never opens the lock path (issue 18: a FIFO, a symlink to a
# device or a root-only file swapped in between a check and the open was opened as root before
# the refusal): the owner's own process opens it (a FIFO blocks only that process, for at most
# 10 s), checks it got a regular file of its own, says its pid and waits; root opens the file
# that process holds (/proc/PID/fd/9: whatever is at the path by then does not matter), so root
# only ever opens what the owner could open anyway, and checks it again below.
if [ -n "$owner" ]; then
  coproc opener { asowner timeout 10 bash -c '
    exec 9<"$1" || exit 3
    case $(stat -L -c "%F:%u" -- "/proc/$$/fd/9") in
      "regular file:$(id -u)" | "regular empty file:$(id -u)") ;;
      *) exit 3 ;;
    esac
    echo "$$"
    read -r _' quilt-ops-lock-open "$lockf" 2>/dev/null; }
  # shellcheck disable=SC2154  # coproc sets opener_PID
  from=${opener[0]} to=${opener[1]} opener_pid=$opener_PID pid=
  IFS= read -r -t 12 pid <&"$from"
  case $pid in '' | *[!0-9]*) say cannot-open; exit 3 ;; esac
  [ "$(stat -c %U -- "/proc/$pid" 2>/dev/null)" = "$owner" ] || { say cannot-open; exit 3; }
  { exec 9<>"/proc/$pid/fd/9"; } 2>/dev/null || { say cannot-open; exit 3; }
  # Its stdin closed, the owner's process ends (saved numbers: an ended coproc's are unset).
  exec {to}>&- {from}<&-
  wait "$opener_pid" 2>/dev/null
else
  # The holder's own folder (or root's, which nobody else writes): it opens the path itself.
  { [ ! -L "$lockf" ] && [ -f "$lockf" ] && exec 9<"$lockf"; } 2>/dev/null || { say cannot-open; exit 3; }
fi
# What was opened must be the regular file now at that path (issue 18.2: a swap between the
# check and the open made root open a file of its choosing): same device and inode, and in
# another user's folder, that user's.
opened=$(stat -L -c '%d:%i:%F:%U' -- "/proc/$$/fd/9" 2>/dev/null)
there=$(stat -c '%d:%i:%F:%U' -- "$lockf" 2>/dev/null)
case $opened in *:'regular file':* | *:'regular empty file':*) ;; *) opened=not-regular ;; esac
[ -z "$owner" ] || [ "${opened##*:}" = "$owner" ] || opened=not-the-owners
[ "$opened" = "$there" ] || { exec 9<&-; say cannot-open; exit 3; }
flock -n 9 || { say busy; exit 4; }
own "$lockf"
asowner sh -c 'rm -f -- "$1" && : > "$1"' quilt-ops-lock-file "$commands" && own "$commands"
asowner sh -c 'rm -f -- "$1.new" && printf "%s\n" "$2" > "$1.new" && mv -f -- "$1.new" "$1"' \
  quilt-ops-lock-file "$note" "$text" && own "$note"
# A command's group may hold root processes (a start script's `sudo docker`): those through
# quilt.sudo (a prefix; empty: none).
as_root() { [ -n "$sudo" ] && [ "$(id -u)" != 0 ] && $sudo sh -c "$1" 2>/dev/null; }
signal() { kill -"$1" "-$2" 2>/dev/null; as_root "kill -$1 -$2"; true; }
alive() {
  for pg in $groups; do kill -0 "-$pg" 2>/dev/null || as_root "kill -0 -$pg" && return 0; done
  return 1
}
ours() {
  while IFS=' ' read -r pg token; do
    case "$pg" in ''|*[!0-9]*) continue ;; esac
    [ "$token" = "$run_token" ] && grep -qF -- "$run_token" "/proc/$pg/cmdline" 2>/dev/null && echo "$pg"
  done < "$commands"
}
finish() {
  IFS=$' \t\n'  # (a trap runs inside `IFS= read`)
  # The note goes first: the run's guards stop at once, and a lock held without a note
  # tells the next run that it is being let go (it waits a moment instead of refusing).
  asowner rm -f -- "$note"
  if [ "$released" = 0 ] && [ -s "$commands" ]; then
    # Found once: after TERM a group may live on without its leader (whose command line
    # told it was this run's), e.g. a docker client waiting on its container.
    groups=$(ours)
    for pg in $groups; do signal TERM "$pg"; done
    i=0; while alive && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
    for pg in $groups; do signal KILL "$pg"; done
  fi
  asowner rm -f -- "$commands"
  exit 0
}
released=0
trap finish TERM HUP
say acquired
while IFS= read -r -t "$silence" line; do
  if [ "$line" = release ]; then released=1; break; fi
done
finish
