#!/bin/sh
# Ends the holder of lock file $1 (a lock being broken, quilt_ops.lock): only a quilt-ops lock
# holder of this lock (its command line says so: its name, then $1) that has the file open (or
# whose owner's process does, see holders), never through a symlink; waits (up to 10 s) until
# the holder has stopped its run's commands and let go.
[ ! -L "$1" ] || exit 0
# The path's folder resolved, its last part never followed: swapped for a symlink after the
# check above (by the folder's owner), it still names this folder's lock file, never another
# folder's, whose holder (another stack's run) would be ended.
dir=$(cd -P -- "$(dirname -- "$1")" && pwd) || exit 0
target=$dir/$(basename -- "$1")
named() { { tr '\0' ' ' < "/proc/$1/cmdline"; } 2>/dev/null | grep -qF " $2 "; }
# The file itself, not its name: the folder's owner may rename another folder's lock file
# (which that folder's holder has open) to this path; the path an fd shows is then this one.
# An fd is this lock's if it is the file at the path now (device and inode), and its holder's
# command line names this lock ($1, as quilt_ops.lock gives both): the other folder's holder
# names its own.
lockid=$(stat -c '%d:%i' -- "$target" 2>/dev/null) || exit 0
sep=$(printf '\001')
ours() {
  case $({ tr '\0' '\001' < "/proc/$1/cmdline"; } 2>/dev/null) in
    *"${sep}quilt-ops-lock$sep$lock$sep"*) return 0 ;;
  esac
  return 1
}
lock=$1
# A holder has the file open itself, or (in a folder of another user, lock_holder.sh) through
# the owner's process it started (runuser between them): then the holder is that process's
# nearest quilt-ops-lock ancestor (a parent its child cannot change).
holders() {
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    named "$p" quilt-ops-lock || named "$p" quilt-ops-lock-owner || continue
    for fd in "/proc/$p"/fd/*; do
      [ "$(readlink -- "$fd" 2>/dev/null)" = "$target" ] || continue
      [ "$(stat -L -c '%d:%i' -- "$fd" 2>/dev/null)" = "$lockid" ] || continue
      up=$p i=0
      while [ $i -lt 3 ] && ! named "$up" quilt-ops-lock; do
        up=$(sed 's/.*) //' "/proc/$up/stat" 2>/dev/null | cut -d' ' -f2) i=$((i+1))
        case $up in '' | *[!0-9]* | 0 | 1) up=; break ;; esac
      done
      [ -n "$up" ] && named "$up" quilt-ops-lock && ours "$up" && echo "$up"
      break
    done
  done
}
for p in $(holders); do kill "$p" 2>/dev/null; done
i=0; while [ -n "$(holders)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
exit 0
