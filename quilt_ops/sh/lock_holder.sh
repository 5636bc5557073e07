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
# user; the lock itself is held by a process of that user (see below). Run as root in root's
# folder, the files it makes take the env file's owner and group, so that a run as that
# user can take the lock later.
umask 077
IFS=$' \t\n'
lockf=$1; note=$2; text=$3; commands=$4; run_token=$5; env_file=$6; m=$7; sudo=$8; owner=$9; silence=${10}
say() { printf '%s lock %s\n' "$m" "$1"; }
# In a folder of another user, each call is bounded (10 s, then runuser and its child are
# killed: timeout's process group): the owner may stop the process runuser starts, or put a
# FIFO where it writes, which held root here for good. A call ended so is a failure, handled
# as any other. (The shell's "Killed" report goes to /dev/null, the command's stderr does not.)
asowner() {
  if [ -n "$owner" ]; then
    { timeout -s KILL 10 runuser -u "$owner" -- "$@" 2>&3 3>&-; } 3>&2 2>/dev/null
  else "$@"; fi
}
own() {
  [ -z "$owner" ] && [ "$(id -u)" = 0 ] && [ -e "$env_file" ] && chown --reference="$env_file" -- "$@" 2>/dev/null; true
}
[ ! -L "$lockf" ] || { say cannot-open; exit 3; }
asowner sh -c '[ -e "$1" ] || [ -L "$1" ] || : >> "$1"' quilt-ops-lock-file "$lockf" 2>/dev/null
# In a folder of another user, root never opens the lock file (issue 18: a FIFO, a symlink to a
# device or a root-only file swapped in between a check and the open was opened as root; and
# root opening /proc/PID/fd/9 of the owner's process was no better: the owner, who may ptrace
# that process, could swap its fd 9 for a device between its check and root's open). The
# owner's own process opens the path, checks it got the regular file of its own that is at the
# path, takes the flock and stays alive as long as this holder: it is the lock, and ends (lets
# go) when its stdin, a pipe only this holder writes, closes. Root only ever reads its one-word
# answer on another pipe of its own; it opens nothing of the owner's. A FIFO swapped in after
# the check blocks only the owner's process, which ends itself after 10 s.
opener_pid=
if [ -n "$owner" ]; then
  coproc runuser -u "$owner" -- bash -c '
    [ ! -L "$1" ] && [ -f "$1" ] || exit 3
    ( sleep 10; kill -KILL "$$" ) </dev/null >/dev/null 2>&1 &
    exec 9<"$1" || exit 3
    kill "$!" 2>/dev/null
    opened=$(stat -L -c "%d:%i:%F:%u" -- "/proc/$$/fd/9") && there=$(stat -c "%d:%i:%F:%u" -- "$1") || exit 3
    case $opened in *":regular file:$(id -u)" | *":regular empty file:$(id -u)") ;; *) exit 3 ;; esac
    [ "$opened" = "$there" ] || exit 3
    flock -n 9 || { echo busy; exit 4; }
    echo acquired
    while IFS= read -r _; do :; done' quilt-ops-lock-owner "$lockf" 2>/dev/null
  # shellcheck disable=SC2154  # coproc sets COPROC_PID
  from=${COPROC[0]} to=${COPROC[1]} opener_pid=$COPROC_PID answer=
  IFS= read -r -t 12 -n 16 answer <&"$from"  # bounded: the owner may write anything there
  exec {from}<&-
  case $answer in
    acquired) ;;
    busy) exec {to}>&-; say busy; exit 4 ;;
    *) exec {to}>&-; say cannot-open; exit 3 ;;
  esac
else
  # The holder's own folder (or root's, which nobody else writes): it opens the path itself.
  { [ ! -L "$lockf" ] && [ -f "$lockf" ] && exec 9<"$lockf"; } 2>/dev/null || { say cannot-open; exit 3; }
  # What was opened must be the regular file now at that path (issue 18.2: a swap between the
  # check and the open made root open a file of its choosing): same device and inode.
  opened=$(stat -L -c '%d:%i:%F' -- "/proc/$$/fd/9" 2>/dev/null)
  there=$(stat -c '%d:%i:%F' -- "$lockf" 2>/dev/null)
  case $opened in *:'regular file' | *:'regular empty file') ;; *) opened=not-regular ;; esac
  [ "$opened" = "$there" ] || { exec 9<&-; say cannot-open; exit 3; }
  flock -n 9 || { say busy; exit 4; }
fi
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
ours() {  # the file read as its owner (in a folder of another user, root opens nothing there),
  # at most 64 KiB of it: its owner may make it huge (a sparse file read into one line)
  while IFS=' ' read -r pg token; do
    case "$pg" in ''|*[!0-9]*) continue ;; esac
    [ "$token" = "$run_token" ] && grep -qF -- "$run_token" "/proc/$pg/cmdline" 2>/dev/null && echo "$pg"
  done < <(asowner head -c 65536 -- "$commands" 2>/dev/null)
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
  # The owner's process lets go once its stdin closes (waited for: the lock is free when
  # this holder has ended). Bounded: the owner may stop that process (runuser then stops
  # itself), which held root here for good; then runuser is ended (the owner keeps its lock).
  if [ -n "$opener_pid" ]; then
    exec {to}>&- 2>/dev/null
    i=0; while kill -0 "$opener_pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL "$opener_pid" 2>/dev/null; wait "$opener_pid" 2>/dev/null
  fi
  exit 0
}
released=0
trap finish TERM HUP
say acquired
while IFS= read -r -t "$silence" line; do
  if [ "$line" = release ]; then released=1; break; fi
done
finish
