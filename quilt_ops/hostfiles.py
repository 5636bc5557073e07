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

from . import sh
from .errors import QuiltError
from .sh import Exit
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
    and define ``qfile`` accordingly (``sh/access.sh``, which says why root never writes in a
    folder a user can change)."""
    return f"{sh.load('access.sh')}quilt_access {q(path)} {q(posixpath.dirname(path) or '.')}"


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


#: What a failing file step's exit code means (``sh/replace.sh``, ``backup.sh``, ``write_private.sh``).
FAILURES: dict[int, str] = {
    Exit.TEMP_CREATE: "cannot create a temp file",
    Exit.TEMP_WRITE: "cannot write the temp file",
    Exit.INCOMPLETE: "the content arrived incomplete",
    Exit.OWNER: "cannot give the new file the original's owner",
    Exit.MODE: "cannot set the mode",
    Exit.RENAME: "cannot rename the new file into place",
    Exit.WRITE: "cannot write the file",
    Exit.CHANGED: "it changed since it was read (edited meanwhile?)",
    Exit.NO_SHA256SUM: "sha256sum is not installed",
}


def restore_mode(recorded: int, current: int | None) -> int:
    """The mode an env file is put back with on a rollback: the journal's (the file's mode when
    the rotation began) but never wider than the file the rotation wrote, which kept that mode.
    The journal is a file on the host: a forged ``mode`` must not make the old secret readable
    to all. Permission bits only (no setuid, setgid or sticky)."""
    return recorded & (0o600 if current is None else current) & 0o777


def replace_command(path: str, size: int, mode: int, was_sha256: str) -> str:
    """Replaces ``path`` with ``size`` bytes read from stdin, if it still has the digest
    ``was_sha256`` (see ``sh/replace.sh``)."""
    if not re.fullmatch(r"[0-9a-f]{64}", was_sha256):
        raise ValueError("not a SHA-256 digest")
    return (
        f"qfile sh -c {q(sh.load('replace.sh'))} quilt-ops-replace {q(path)} {q(temp_name(path))} {int(size)} "
        f"{mode & 0o7777:o} {was_sha256}"
    )


def backup_command(path: str, backup: str) -> str:
    return f"qfile sh -c {q(sh.load('backup.sh'))} quilt-ops-backup {q(path)} {q(backup)}"


def write_private_command(path: str, owner_of: str = "") -> str:
    """Writes stdin to ``path`` (0600, atomically; written as root, owned as ``owner_of``)."""
    return f"qfile sh -c {q(sh.load('write_private.sh'))} quilt-ops-write {q(path)} {q(temp_name(path))} {q(owner_of)}"


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
