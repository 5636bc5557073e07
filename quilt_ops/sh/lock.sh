# shellcheck shell=sh disable=SC2154  # qaccess and dn are set by access.sh, earlier in the script
# The host lock's part of a step's script (quilt_ops.lock): functions run after its prologue
# (say, as_root) and access.sh (qaccess, dn, qfile). Values come only as arguments.

# lock_hold PROGRAM [ARGS...]: runs the lock holder (lock_holder.sh) or the breaker
# (lock_break.sh) as the holder says: as root in a folder of another user (the "owner"
# access), otherwise as whoever writes the folder.
lock_hold() {
    if [ "$qaccess" = owner ]; then as_root "$@"; else qfile "$@"; fi
}

# lock_folder_owner: the holder's $9: the folder's owner in the "owner" access, else nothing.
lock_folder_owner() {
    if [ "$qaccess" = owner ]; then printf '%s\n' "$dn"; fi
}

# lock_register COMMANDS_FILE TOKEN: registers this command (its process group, and the run's
# token) with the holder, which stops it if the run vanishes. Registered first, checked second
# (lock_guard): a holder that goes away between the two still finds the command, and one that
# went before is caught by the check.
lock_register() {
    # shellcheck disable=SC2016  # the snippet takes its value as an argument
    printf '%s %s\n' "$(sed 's/.*) //' /proc/$$/stat | cut -d' ' -f3)" "$2" |
        qfile sh -c 'umask 077; cat >> "$1"' quilt-ops-register "$1" 2>/dev/null
}

# lock_access_is WAY: the folder's ownership decides who writes there (access.sh): what was
# true when the lock was taken must still be true for every changing command; otherwise
# "say fail access-changed" and the script stops (93: quilt_ops.sh.Exit.PROLOGUE_FAILED).
lock_access_is() {
    [ "$qaccess" = "$1" ] || { say fail access-changed; exit 93; }
}
