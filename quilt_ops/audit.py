"""The local audit log: one JSON line per changing run, never a secret.

Kept at ``quilt.audit_log`` (default ``~/.local/state/quilt-ops/audit.log``),
created 0600 in a 0700 folder, appended to with a single write per record so
that concurrent runs do not interleave.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

from .errors import QuiltError


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def append(path: str, record: dict[str, Any]) -> None:
    """Appends one record; raises `QuiltError` if the log cannot be written."""
    line = json.dumps({"time": now(), **record}, sort_keys=True, default=str) + "\n"
    try:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise QuiltError(f"cannot write the audit log {path}: {e.strerror}") from None
