# shellcheck shell=sh
# as_folder_owner PROGRAM [ARGS...]: runs PROGRAM (a host script: start.sh, create_admin.sh) from
# the current folder (the registry folder). As root (--local as root), it runs as the folder's
# owner (runuser), never as root, and refuses (exit 96, "say owned refused ...") a PROGRAM or a
# folder on its path that someone other than root and that owner can write. Otherwise it runs
# PROGRAM as is. Issue 18.2: root must never run files other users can change.
as_folder_owner() {
    owned_check "$1" || return 96
    as_owner "$@"
}

# owned_check PATH: as root, refuses (96) PATH or a folder above it that someone other than
# root and the current folder's owner can write (sets ao_owner, ao_uid); else does nothing.
owned_check() {
    [ "$(id -u)" = 0 ] || return 0
    ao_owner=$(stat -c %U -- .) || return 96
    ao_uid=$(stat -c %u -- .) || return 96
    ao_path=$(readlink -f -- "$1") || { say owned refused unresolved; return 96; }
    ao_first=$ao_path
    while :; do
        # owner uid, group name, mode (octal) of each component, from the program up to /
        ao_facts=$(stat -c '%u %G %a' -- "$ao_path") || { say owned refused unreadable; return 96; }
        ao_u=${ao_facts%% *}
        ao_rest=${ao_facts#* }
        ao_g=${ao_rest%% *}
        ao_mode=${ao_rest#* }
        ao_gw=$(((0$ao_mode >> 3) & 2))
        ao_ow=$((0$ao_mode & 2))
        # A sticky folder (/tmp) lets nobody replace what root or the owner put in it.
        if [ "$ao_path" != "$ao_first" ] && [ $((0$ao_mode & 512)) != 0 ]; then
            ao_ow=0
            ao_gw=0
        fi
        # An access control list may let anybody write, whatever the mode bits say (ls marks
        # one with a '+' after the mode): refused, as the mode says too little
        ao_ls=$(ls -ld -- "$ao_path") || { say owned refused unreadable; return 96; }
        case $ao_ls in
            ??????????+*)
                say owned refused acl "$ao_path"
                return 96
                ;;
        esac
        if [ "$ao_u" != 0 ] && [ "$ao_u" != "$ao_uid" ]; then
            say owned refused owner "$ao_path"
            return 96
        fi
        if [ "$ao_ow" != 0 ] || { [ "$ao_gw" != 0 ] && [ "$ao_g" != root ] && [ "$ao_g" != "$ao_owner" ]; }; then
            say owned refused writable "$ao_path"
            return 96
        fi
        [ "$ao_path" = / ] && break
        ao_path=$(dirname -- "$ao_path")
    done
}

# as_owner COMMAND...: as root, runs COMMAND as the current folder's owner (as is when root
# owns it); else runs it as is.
as_owner() {
    if [ "$(id -u)" != 0 ]; then
        "$@"
        return
    fi
    ao_owner=$(stat -c %U -- .) || return 96
    if [ "$(stat -c %u -- .)" = 0 ]; then
        "$@"
    else
        runuser -u "$ao_owner" -- "$@"
    fi
}
