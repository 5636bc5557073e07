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
import re
import secrets
from dataclasses import dataclass
from enum import Enum

from .errors import QuiltError
from .shell import q


class HostFileError(QuiltError):
    """A file on the host could not be read or written; nothing was replaced."""


class Access(str, Enum):
    """How quilt-ops changes files in the env file's folder."""

    #: As the login user, who owns the folder (and the file).
    DIRECT = "direct"
    #: As the folder's owner, another user than the one logged in (root on the host, through
    #: runuser; or through quilt.sudo): never as root in a folder a user can change.
    OWNER = "owner"
    #: As root, through quilt.sudo (or root itself): the folder is root's.
    SUDO = "sudo"
    #: Not at all: a changing task refuses before it changes anything (see `REFUSALS`).
    NONE = "none"


#: Why files next to the env file cannot be changed safely, by the word the script says.
REFUSALS = {
    "nofolder": "its folder {folder} does not exist",
    "symlink": "{file} is a symbolic link (a rename would replace the link, not the file it points to)",
    "open-folder": "{folder} can be written by other users (mode {mode}): quilt-ops will not put secrets there",
    "mixed": "{file} belongs to {file_owner} but {folder} to {owner}, who could change what root writes there: "
    "give the file and its folder one owner",
    "readonly": "{folder} is not writable by its owner {owner}, and passwordless sudo does not work",
    "needs-sudo": "{folder} belongs to root and passwordless sudo does not work",
    "other-owner": "{folder} belongs to {owner}, and passwordless sudo (to act as {owner}) does not work",
    "no-name": "{folder} belongs to uid {owner}, which has no user name to act as",
    "unreachable": "{folder} belongs to {owner}, who cannot reach it (a folder above it is closed to {owner})",
}


def refusal(words: list[str], file: str) -> str:
    """The reason behind ``say access none WORD [details...]``, for people."""
    reason = words[0] if words else ""
    details = dict(zip(("owner", "mode", "file_owner"), [w[:32] for w in words[1:]], strict=False))
    text = REFUSALS.get(reason, "the folder cannot be written safely")
    return text.format(
        folder=posixpath.dirname(file) or ".",
        file=file,
        owner=details.get("owner", "?"),
        mode=details.get("mode", "?"),
        file_owner=details.get("file_owner", "?"),
    )


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
    """Shell lines that decide how files next to ``path`` are changed (``say access WAY [why...]``)
    and define ``qfile`` accordingly.

    Root never writes in a folder a user can change: a user there could swap a name for a
    symbolic link between a check and a write, and make root write anywhere. So a user's
    folder is written as that user (the login user itself, or through runuser or sudo),
    and a root's folder as root; a folder others can write, a symlinked env file, or a
    root-owned file in a user's folder is refused. The group may write the folder only when
    it is the owner's own (user private groups).
    """
    f, d = q(path), q(posixpath.dirname(path) or ".")
    return "\n".join(
        [
            'qfile() { "$@"; }; access() { qaccess=$1; say access "$@"; }',
            f"if [ ! -d {d} ]; then access none nofolder",
            f"elif [ -L {f} ]; then access none symlink",
            "else",
            f"  dm=$(stat -L -c %a -- {d}); du=$(stat -L -c %u -- {d}); dn=$(stat -L -c %U -- {d})",
            f"  dg=$(stat -L -c %G -- {d}); fu=$du; fn=$dn",
            f"  if [ -e {f} ]; then fu=$(stat -c %u -- {f}); fn=$(stat -c %U -- {f}); fi",
            '  if [ $((0$dm & 2)) -ne 0 ] || { [ $((0$dm & 16)) -ne 0 ] && [ "$dg" != "$dn" ]; }; then',
            '    access none open-folder "$dn" "$dm"',
            '  elif [ "$du" = 0 ]; then',
            '    if [ "$(id -u)" = 0 ]; then access sudo',
            '    elif root_ok; then qfile() { as_root "$@"; }; access sudo',
            "    else access none needs-sudo root; fi",
            '  elif [ "$fu" != "$du" ]; then access none mixed "$dn" "$dm" "$fn"',
            '  elif [ "$du" = "$(id -u)" ]; then',
            f"    if [ -w {d} ] && [ -x {d} ]; then access direct",
            '    elif root_ok; then qfile() { as_root "$@"; }; access sudo',  # the login user has root anyway
            '    else access none readonly "$dn"; fi',
            '  elif [ "$dn" = UNKNOWN ]; then access none no-name "$du"',
            '  elif [ "$(id -u)" = 0 ]; then qfile() { runuser -u "$dn" -- "$@"; }; owner_can=qfile',
            '  elif root_ok; then qfile() { as_root runuser -u "$dn" -- "$@"; }; owner_can=qfile',
            '  else access none other-owner "$dn"; fi',
            "fi",
            # As the folder's owner, from here: a parent folder closed to that user hides it.
            f'if [ "${{owner_can:-}}" = qfile ]; then owner_can=; if qfile test -w {d} -a -x {d} 2>/dev/null; '
            'then access owner; else qfile() { "$@"; }; access none unreachable "$dn"; fi; fi',
        ]
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

#: New files are made with noclobber (``set -C``: fails on any name that exists, a planted
#: symlink included) and then appended to. Together with the folder rule of `access_script`
#: (root writes only in root's folders), nothing quilt-ops writes can be redirected.

#: The last steps of a replace: the temp file $tmp takes $f's owner and group
#: and the mode $mode, is synced and renamed over $f, and the folder is synced.
_INSTALL = r"""
if [ -e "$f" ]; then chown --reference="$f" -- "$tmp" 2>/dev/null || { rm -f -- "$tmp"; exit 24; }; fi
chmod "$mode" -- "$tmp" || { rm -f -- "$tmp"; exit 25; }
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$f" || { rm -f -- "$tmp"; exit 26; }
{ sync -- "$f" "$(dirname -- "$f")"; } 2>/dev/null || sync
"""

#: Replaces $1 with exactly $3 bytes from stdin, mode $4, keeping $1's owner and group; only
#: if $1 still holds what was read (SHA-256 $5): an edit made meanwhile is never overwritten.
#: Runs as the login user or, through qfile, as the folder's owner or root.
_REPLACE = (
    _OWN
    + r"""
set -u
f=$1; tmp=$2; n=$3; mode=$4; was=$5
umask 077
command -v sha256sum >/dev/null 2>&1 || exit 29
if [ "$(sha256sum < "$f" | cut -c1-64)" != "$was" ]; then exit 28; fi
rm -f -- "$tmp"
( set -C; : > "$tmp" ) || exit 21
own "$f" "$tmp"
cat >> "$tmp" || { rm -f -- "$tmp"; exit 22; }
if [ "$(wc -c < "$tmp")" -ne "$n" ]; then rm -f -- "$tmp"; exit 23; fi
"""
    + _INSTALL
)

#: Copies $1 to the private backup $2 (0600, $1's owner), then syncs it.
_BACKUP = (
    _OWN
    + r"""
umask 077
rm -f -- "$2" && ( set -C; : > "$2" ) && own "$1" "$2" && cat -- "$1" >> "$2" && chmod 600 -- "$2" &&
  { sync -- "$2" 2>/dev/null || sync; }
"""
)

#: Writes stdin to $1 atomically (0600; owned as $3, when given): for journals and notes,
#: which hold no secret.
_WRITE_PRIVATE = (
    _OWN
    + r"""
umask 077
tmp=$2
rm -f -- "$tmp"
( set -C; : > "$tmp" ) && own "${3:-}" "$tmp" && cat >> "$tmp" && mv -f -- "$tmp" "$1" || { rm -f -- "$tmp"; exit 27; }
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
    28: "it changed since it was read (edited meanwhile?)",
    29: "sha256sum is not installed",
}


def replace_command(path: str, size: int, mode: int, was_sha256: str) -> str:
    """Replaces ``path`` with ``size`` bytes read from stdin, if it still has the digest
    ``was_sha256`` (see `_REPLACE`)."""
    if not re.fullmatch(r"[0-9a-f]{64}", was_sha256):
        raise ValueError("not a SHA-256 digest")
    return (
        f"qfile sh -c {q(_REPLACE)} quilt-ops-replace {q(path)} {q(temp_name(path))} {int(size)} "
        f"{mode & 0o7777:o} {was_sha256}"
    )


def backup_command(path: str, backup: str) -> str:
    return f"qfile sh -c {q(_BACKUP)} quilt-ops-backup {q(path)} {q(backup)}"


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
