"""``quilt.rotations``: the operator's own record of each rotation in progress.

The journal a run leaves on the host is the host's (its folder's owner can write it), so it is
a claim, never the reason to delete a key. This file, on the operator's machine (by default
beside ``quilt.known_users``), is: one line a host, ``HOST IAM_USER OLD_KEY NEW_KEY`` (``-``
until CreateAccessKey answered), ``#`` comments, the host named as known_hosts names it
(`quilt_ops.known_users.entry`). A run writes its line before it creates the key, names the new
key once it has it, and removes the line when it finishes or rolls back. Resuming, a key is
deleted only if this record names it for the same host and user (`rotation_plan.resume`).
Rewritten atomically (0600) under an exclusive lock, like known_users.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from dataclasses import dataclass

from .errors import ConfigError
from .known_users import HOST, USER

FILE_NAME = "quilt_rotations"
#: An access key ID as IAM writes it.
KEY = re.compile(r"[A-Z0-9]{16,128}")
HEADER = "# quilt-ops: rotations in progress (HOST IAM_USER OLD_KEY NEW_KEY), removed when each ends"


@dataclass(frozen=True)
class Record:
    """One rotation in progress, as the operator's machine recorded it."""

    user: str
    old_key_id: str
    new_key_id: str | None = None


def default_path(known_users: str) -> str:
    """The file beside known_users."""
    return os.path.join(os.path.dirname(os.path.abspath(known_users)), FILE_NAME)


def parse(text: str) -> dict[str, Record]:
    """Host -> record; lines that are not ``HOST USER OLD NEW`` are skipped."""
    found: dict[str, Record] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) != 4 or words[0].startswith("#"):
            continue
        host, user, old, new = words
        if HOST.fullmatch(host) and USER.fullmatch(user) and KEY.fullmatch(old) and (new == "-" or KEY.fullmatch(new)):
            found[host] = Record(user, old, None if new == "-" else new)
    return found


def line(host: str, record: Record) -> str:
    return f"{host} {record.user} {record.old_key_id} {record.new_key_id or '-'}"


def lookup(path: str, host: str) -> Record | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse(f.read()).get(host)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


def save(path: str, host: str, record: Record) -> None:
    """Records ``host``'s rotation (replacing its line, keeping every other line)."""
    if not HOST.fullmatch(host) or not USER.fullmatch(record.user) or not KEY.fullmatch(record.old_key_id):
        raise ConfigError(f"cannot record a rotation of {host!r} in {path}: not a host, an IAM user and a key ID")
    if record.new_key_id is not None and not KEY.fullmatch(record.new_key_id):
        raise ConfigError(f"cannot record a rotation of {host!r} in {path}: {record.new_key_id!r} is not a key ID")
    _rewrite(path, host, line(host, record))


def remove(path: str, host: str) -> None:
    """Removes ``host``'s line (nothing to do if there is none)."""
    if lookup(path, host) is not None:
        _rewrite(path, host, None)


def _rewrite(path: str, host: str, new_line: str | None) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = [HEADER]
        kept = [one for one in lines if one.split()[:1] != [host]]
        if new_line is not None:
            kept.append(new_line)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{FILE_NAME}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(kept) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None
    finally:
        os.close(lock_fd)
