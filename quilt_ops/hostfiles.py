"""Files next to the env file on the host: read, replaced atomically, backed up privately.

Secrets travel only through a command's stdin, never in a command line (which
the host's process list shows) or a remote environment variable. A replaced
file is the complete old or the complete new one at every instant: the new
content goes into a temp file in the same folder, created private (umask 077)
before anything is written to it, checked to hold every byte, given the
original's owner, group and mode, flushed to disk, then renamed over the
original.

When the login user cannot do that itself (the folder or the file belongs to
root, or to another user whose ownership a plain rename would lose), the same
steps run as root through ``quilt.sudo``; the temp file, backup, journal and
lock are then root's, mode 0600, next to the env file. Which way is found on the
host, in the same command that reads the file (`Access`).
"""

from __future__ import annotations

import posixpath
import secrets
from dataclasses import dataclass
from enum import Enum

from .errors import QuiltError
from .shell import q


class HostFileError(QuiltError):
    """A file on the host could not be read or written; nothing was replaced."""


class Access(str, Enum):
    """How quilt-ops can change the env file's folder."""

    #: The login user owns the file and can write the folder.
    DIRECT = "direct"
    #: Only as root, through quilt.sudo.
    SUDO = "sudo"
    #: Neither: a changing task must refuse before it changes anything.
    NONE = "none"


TEMP_PREFIX = ".quilt-ops-tmp-"


def sibling(path: str, suffix: str) -> str:
    """A hidden name next to ``path``: env/registry -> env/.registry.<suffix>."""
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}.{suffix}")


def temp_name(path: str) -> str:
    """A fresh temp file name in the folder of ``path`` (so a rename over it is atomic)."""
    return posixpath.join(posixpath.dirname(path), f"{TEMP_PREFIX}{secrets.token_hex(6)}")


def temp_pattern(path: str) -> str:
    """The shell glob of every temp file quilt-ops may leave next to ``path`` (quoted prefix + ``*``)."""
    return q(posixpath.join(posixpath.dirname(path), TEMP_PREFIX)) + "*"


@dataclass(frozen=True, repr=False)
class RemoteFile:
    """A file's content and metadata as read from the host."""

    path: str
    content: bytes
    mode: int
    uid: int
    gid: int
    owner: str = ""
    group: str = ""

    def __repr__(self) -> str:  # never the content
        return f"RemoteFile({self.path!r}, {len(self.content)} bytes, mode {self.mode:04o}, {self.owner}:{self.group})"


def access_script(path: str) -> str:
    """Shell lines that say how ``path`` can be replaced (``say access WAY``) and define
    ``qfile`` accordingly. A rename keeps owner and group only if the login user is
    the owner and the group is its own; otherwise only root can keep them."""
    f, d = q(path), q(posixpath.dirname(path) or ".")
    return (
        f"if [ -w {d} ] && [ -x {d} ] && {{ [ ! -e {f} ] || {{ [ -O {f} ] && [ -G {f} ] && [ -r {f} ] && "
        f'[ -w {f} ]; }}; }}; then qfile() {{ "$@"; }}; say access direct; '
        'elif root_ok; then qfile() { as_root "$@"; }; say access sudo; '
        'else qfile() { "$@"; }; say access none; fi'
    )


def stat_script(path: str, name: str) -> str:
    """``say stat NAME MODE UID GID OWNER GROUP`` for a file (no words if it is missing)."""
    return f"say stat {q(name)} $(qfile stat -L -c {q('%a %u %g %U %G')} -- {q(path)} 2>/dev/null)"


def parse_stat(words: list[str]) -> tuple[int, int, int, str, str] | None:
    """mode, uid, gid, owner, group from a ``stat`` section's words (after the name), checked."""
    if len(words) != 5 or not all(w.isdigit() for w in words[:3]):
        return None
    try:
        mode = int(words[0], 8)
    except ValueError:
        return None
    return mode & 0o7777, int(words[1]), int(words[2]), words[3][:32], words[4][:32]


#: Run as root, the files quilt-ops leaves next to the env file take the env file's owner and
#: group ($1 of `own`), before anything is written to them: a later run as that owner (over
#: SSH) can use them, and a backup is never readable by anyone the env file is not.
_OWN = r"""
own() { ref=$1; shift; [ "$(id -u)" != 0 ] || [ ! -e "$ref" ] || chown --reference="$ref" -- "$@" 2>/dev/null; true; }
"""

#: The last steps of a replace or restore: the temp file $tmp takes $f's owner and group
#: and the mode $mode, is synced and renamed over $f.
_INSTALL = r"""
if [ -e "$f" ]; then chown --reference="$f" -- "$tmp" 2>/dev/null || { rm -f -- "$tmp"; exit 24; }; fi
chmod "$mode" -- "$tmp" || { rm -f -- "$tmp"; exit 25; }
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$f" || { rm -f -- "$tmp"; exit 26; }
sync -- "$f" 2>/dev/null || sync
"""

#: Replaces $1 with exactly $3 bytes from stdin, mode $4, keeping $1's owner and group.
#: Runs as the login user or, through qfile, as root.
_REPLACE = (
    _OWN
    + r"""
set -u
f=$1; tmp=$2; n=$3; mode=$4
umask 077
rm -f -- "$tmp"
: > "$tmp" || exit 21
own "$f" "$tmp"
cat > "$tmp" || { rm -f -- "$tmp"; exit 22; }
if [ "$(wc -c < "$tmp")" -ne "$n" ]; then rm -f -- "$tmp"; exit 23; fi
"""
    + _INSTALL
)

#: Copies $1 to the private backup $2 (0600, $1's owner), then syncs it.
_BACKUP = (
    _OWN
    + r"""
umask 077
rm -f -- "$2" && : > "$2" && own "$1" "$2" && cat -- "$1" > "$2" && chmod 600 -- "$2" &&
  { sync -- "$2" 2>/dev/null || sync; }
"""
)

#: Puts backup $2 back in place of $1 with mode $4 and $1's owner, through temp $3.
_RESTORE = (
    _OWN
    + r"""
set -u
f=$1; bak=$2; tmp=$3; mode=$4
umask 077
rm -f -- "$tmp"
{ : > "$tmp" && own "$f" "$tmp" && cat -- "$bak" > "$tmp"; } || { rm -f -- "$tmp"; exit 31; }
"""
    + _INSTALL
)

#: Writes stdin to $1 atomically (0600; owned as $3, when given): for journals and notes,
#: which hold no secret.
_WRITE_PRIVATE = (
    _OWN
    + r"""
umask 077
tmp=$2
: > "$tmp" && own "${3:-}" "$tmp" && cat > "$tmp" && mv -f -- "$tmp" "$1" || { rm -f -- "$tmp"; exit 27; }
"""
)

#: What a failing step's exit code means.
FAILURES = {
    21: "cannot create a temp file",
    22: "cannot write the temp file",
    23: "the content arrived incomplete",
    24: "cannot give the new file the original's owner",
    25: "cannot set the mode",
    26: "cannot rename the new file into place",
    27: "cannot write the file",
    31: "cannot copy the backup",
}


def replace_command(path: str, size: int, mode: int) -> str:
    """Replaces ``path`` with ``size`` bytes read from stdin (see `_REPLACE`)."""
    return f"qfile sh -c {q(_REPLACE)} quilt-ops-replace {q(path)} {q(temp_name(path))} {int(size)} {mode & 0o7777:o}"


def backup_command(path: str, backup: str) -> str:
    return f"qfile sh -c {q(_BACKUP)} quilt-ops-backup {q(path)} {q(backup)}"


def restore_command(path: str, backup: str, mode: int) -> str:
    return f"qfile sh -c {q(_RESTORE)} quilt-ops-restore {q(path)} {q(backup)} {q(temp_name(path))} {mode & 0o7777:o}"


def write_private_command(path: str, owner_of: str = "") -> str:
    """Writes stdin to ``path`` (0600, atomically; written as root, owned as ``owner_of``)."""
    return f"qfile sh -c {q(_WRITE_PRIVATE)} quilt-ops-write {q(path)} {q(temp_name(path))} {q(owner_of)}"


def write_text_command(path: str, text: str, owner_of: str = "") -> str:
    """Writes a small non-secret text (a journal) to ``path`` (0600, atomically), from the command line."""
    return f"printf '%s' {q(text)} | {write_private_command(path, owner_of)}"


def remove_command(*paths: str) -> str:
    return "qfile rm -f -- " + " ".join(q(p) for p in paths) if paths else "true"


def describe_failure(code: int, stderr: str) -> str:
    """Why a file step failed, from its exit code and stderr (never file content)."""
    text = stderr.lower()
    if "no space left" in text:
        return "no space left on the device"
    if "permission denied" in text or "operation not permitted" in text:
        return "permission denied"
    if "read-only file system" in text:
        return "read-only file system"
    return FAILURES.get(code, f"exit code {code}")
