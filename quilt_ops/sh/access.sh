# shellcheck shell=sh disable=SC2317  # qfile is called by the script this is part of
# Sourced into a remote script after the prologue (say, root_ok, as_root), then called as
# `quilt_access FILE FOLDER`: decides how files next to FILE are changed, says it
# (`say access WAY [why...]`, WAY in quilt_ops.hostfiles.Access) and defines qfile for it.
# Leaves $qaccess (the way) and $dn (the folder's owner) for the rest of the script.
#
# Root never writes in a folder a user can change: a user there could swap a name for a
# symbolic link between a check and a write, and make root write anywhere. So a user's
# folder is written as that user (the login user itself, or through runuser or sudo), and a
# root's folder as root; a folder others can write, a symlinked env file, or a root-owned
# file in a user's folder is refused. The group may write the folder only when it is the
# owner's own (user private groups).
qfile() { "$@"; }
# shellcheck disable=SC2034  # qaccess is read by the script this is part of
access() { qaccess=$1; say access "$@"; }
quilt_access() {
  af=$1; ad=$2
  if [ ! -d "$ad" ]; then access none nofolder
  elif [ -L "$af" ]; then access none symlink
  else
    dm=$(stat -L -c %a -- "$ad"); du=$(stat -L -c %u -- "$ad"); dn=$(stat -L -c %U -- "$ad")
    dg=$(stat -L -c %G -- "$ad"); fu=$du; fn=$dn
    if [ -e "$af" ]; then fu=$(stat -c %u -- "$af"); fn=$(stat -c %U -- "$af"); fi
    if [ $((0$dm & 2)) -ne 0 ] || { [ $((0$dm & 16)) -ne 0 ] && [ "$dg" != "$dn" ]; }; then
      access none open-folder "$dn" "$dm"
    elif [ "$du" = 0 ]; then
      if [ "$(id -u)" = 0 ]; then access sudo
      elif root_ok; then qfile() { as_root "$@"; }; access sudo
      else access none needs-sudo root; fi
    elif [ "$fu" != "$du" ]; then access none mixed "$dn" "$dm" "$fn"
    elif [ "$du" = "$(id -u)" ]; then
      if [ -w "$ad" ] && [ -x "$ad" ]; then access direct
      # the login user has root anyway
      elif root_ok; then qfile() { as_root "$@"; }; access sudo
      else access none readonly "$dn"; fi
    elif [ "$dn" = UNKNOWN ]; then access none no-name "$du"
    elif [ "$(id -u)" = 0 ]; then qfile() { runuser -u "$dn" -- "$@"; }; owner_can=qfile
    elif root_ok; then qfile() { as_root runuser -u "$dn" -- "$@"; }; owner_can=qfile
    else access none other-owner "$dn"; fi
  fi
  # As the folder's owner, from here: a parent folder closed to that user hides it.
  if [ "${owner_can:-}" = qfile ]; then
    owner_can=
    if qfile test -w "$ad" -a -x "$ad" 2>/dev/null; then access owner
    else qfile() { "$@"; }; access none unreachable "$dn"; fi
  fi
}
