#!/bin/sh
# Ends the holder of lock file $1 (a lock being broken, quilt_ops.lock): only a process that has
# the file open and is a quilt-ops lock holder (its command line says so), never through a
# symlink; waits (up to 10 s) until the holder has stopped its run's commands and let go.
[ ! -L "$1" ] || exit 0
# The path's folder resolved, its last part never followed: swapped for a symlink after the
# check above (by the folder's owner), it still names this folder's lock file, never another
# folder's, whose holder (another stack's run) would be ended.
dir=$(cd -P -- "$(dirname -- "$1")" && pwd) || exit 0
target=$dir/$(basename -- "$1")
holders() {
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null | grep -qF ' quilt-ops-lock ' || continue
    for fd in "$p"/fd/*; do
      if [ "$(readlink -- "$fd" 2>/dev/null)" = "$target" ]; then echo "${p#/proc/}"; break; fi
    done
  done
}
for p in $(holders); do kill "$p" 2>/dev/null; done
i=0; while [ -n "$(holders)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
exit 0
