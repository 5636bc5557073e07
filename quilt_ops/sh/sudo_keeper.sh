# shellcheck shell=sh
# sudo_keeper.sh NAME ASKPASS_TEXT SUDO...: keeps a host's sudo password for one SSH connection
# (quilt_ops.sudo_password). Run once per connection, on its own channel, with the password
# as the first line of stdin (never an argument or a variable of the environment). It
#  - refuses a temp folder (TMPDIR) of another user, or one others may rename in ("fail tmpdir");
#  - removes the folders of earlier keepers that are gone (a killed run's): a live keeper
#    holds an flock on its folder's "lock" file;
#  - makes a private folder ${TMPDIR:-/tmp}/quilt-ops-sudo.NAME (mkdir -m 700: fails if it
#    exists; NAME is random, chosen by quilt-ops, so that nothing read back from the host goes
#    into a later command) holding "password" (0600) and "askpass" (ASKPASS_TEXT, askpass.sh),
#    and a lock on it;
#  - checks the password once, with the command prefix SUDO (quilt.sudo, with -A): "sudo -k
#    -A true" (-k: the cached credentials do not count);
#  - prints "ready ok" (or "ready none": sudo is not installed), or "fail REASON";
#  - then waits until stdin ends (the connection closed, or the run was killed) and removes
#    the folder.
# Exit codes: 0 the folder was kept and removed; 1 it failed before (the "fail" line says why).
name=$1
askpass_text=$2
shift 2
umask 077
if ! command -v "$1" >/dev/null 2>&1; then
    echo "ready none"
    cat >/dev/null
    exit 0
fi
base=${TMPDIR:-/tmp}
# The temp folder must be the login user's or root's (a symlink too: its owner could point it
# elsewhere later), and no one else may rename what is in it (not writable by group or others,
# or sticky, as /tmp): else another user could swap the private folder for one of theirs
# between mkdir and the password's write (their "password" file, opened by ">").
uid=$(id -u)
if [ -z "$(find "$base" -maxdepth 0 \( -user "$uid" -o -user 0 \) 2>/dev/null)" ] ||
    [ -z "$(find "$base/." -maxdepth 0 -type d \( -user "$uid" -o -user 0 \) \( -perm -1000 -o ! -perm /022 \) 2>/dev/null)" ]; then
    echo "fail tmpdir"
    exit 1
fi
if command -v flock >/dev/null 2>&1; then
    for old in "$base"/quilt-ops-sudo.*; do
        if [ ! -d "$old" ] || [ ! -O "$old" ] || [ -L "$old" ]; then continue; fi
        # A folder just made has no lock yet: only those older than a minute are looked at.
        [ -n "$(find "$old" -maxdepth 0 -mmin +1 2>/dev/null)" ] || continue
        flock -n "$old/lock" true 2>/dev/null || continue
        rm -rf -- "$old"
    done
fi
d=$base/quilt-ops-sudo.$name
mkdir -m 700 -- "$d" 2>/dev/null || {
    echo "fail mktemp"
    exit 1
}
trap 'rm -rf -- "$d"' EXIT
trap 'exit 1' HUP INT TERM PIPE
if command -v flock >/dev/null 2>&1; then
    exec 9>"$d/lock" && flock -n 9
fi
# The first line of stdin, as is: read by head, not into a shell variable.
head -n 1 >"$d/password" || {
    echo "fail write"
    exit 1
}
if ! { printf '%s' "$askpass_text" >"$d/askpass" && chmod 700 "$d/askpass"; }; then
    echo "fail write"
    exit 1
fi
: >"$d/checking"
SUDO_ASKPASS=$d/askpass
export SUDO_ASKPASS
# sudo's messages in English (LC_ALL=C), to tell a wrong password from other refusals.
checked=$(LC_ALL=C "$@" -k true 2>&1 </dev/null)
rc=$?
rm -f -- "$d/checking" "$d/asked"
if [ "$rc" != 0 ]; then
    case $checked in
        *"incorrect password"* | *"no password was provided"* | *"Sorry, try again"*) echo "fail refused" ;;
        *"unable to run"* | *"Permission denied"*) echo "fail askpass" ;;
        *"must have a tty"*) echo "fail tty" ;;
        *) echo "fail notallowed" ;;
    esac
    exit 1
fi
echo "ready ok"
cat >/dev/null
