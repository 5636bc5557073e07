# shellcheck shell=sh
# restart's host side (quilt_ops.restart), functions of a step's script: they run after its
# prologue (say, qfile) and as_folder_owner.sh (owned_check, as_owner). Values come only as
# arguments.

# restart_precheck START_SCRIPT ENV_FILE: before anything is removed, the start script is there,
# executable and writable by nobody but root and the folder's owner, and the env file readable;
# otherwise "say precheck WHY" and the script ends (exit 0: its sections say what happened).
restart_precheck() {
    if [ ! -e "$1" ]; then say precheck missing-script; exit 0; fi
    if [ ! -x "$1" ]; then say precheck script-not-executable; exit 0; fi
    if ! owned_check "$1" >/dev/null; then say precheck not-owned; exit 0; fi
    if ! qfile test -r "$2" 2>/dev/null; then say precheck env-unreadable; exit 0; fi
}

# restart_run_start START_SCRIPT: runs the start script (as the folder's owner when root), its
# output in a "script" section, then "say scriptexit CODE"; the script ends with that code.
restart_run_start() {
    say script
    as_owner "$1" 2>&1 </dev/null
    rc=$?
    say scriptexit "$rc"
    exit "$rc"
}
