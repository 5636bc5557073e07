"""The static shell quilt-ops runs on a host, as package data (``quilt_ops/sh/*.sh``).

Every script here is plain text checked by shellcheck (tests/unit/test_shell_files.py);
nothing is formatted into it: values reach it only as arguments (``"$@"``), each quoted
with `shlex.quote` on the command line that runs it, or through stdin. Every exit code a
remote command gives quilt-ops a meaning for is in `Exit`.
"""

from __future__ import annotations

from enum import IntEnum
from functools import cache
from importlib import resources


class Exit(IntEnum):
    """The exit codes of quilt-ops' remote commands that quilt-ops reads a meaning from."""

    OK = 0
    #: File steps (replace.sh, backup.sh, write_private.sh; `quilt_ops.hostfiles.FAILURES`).
    TEMP_CREATE = 21
    TEMP_WRITE = 22
    INCOMPLETE = 23
    OWNER = 24
    MODE = 25
    RENAME = 26
    WRITE = 27
    CHANGED = 28
    NO_SHA256SUM = 29
    #: The rotation's steps around them.
    JOURNAL_NOT_SAVED = 40
    BACKUP_FAILED = 41
    JOURNAL_NOT_UPDATED = 42
    #: ``flock -E``: the lock file is held (by this run's holder, as the guard wants).
    LOCK_HELD = 75
    #: The prologue stopped the script (a ``fail`` section says why).
    PROLOGUE_FAILED = 93


@cache
def load(name: str) -> str:
    """The text of ``quilt_ops/sh/NAME``."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def names() -> list[str]:
    """Every script shipped (for shellcheck)."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".sh"))
