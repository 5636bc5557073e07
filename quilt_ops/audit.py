"""The local audit log: JSON lines of every changing run, never a secret.

Kept at ``quilt.audit_log`` (default ``~/.local/state/quilt-ops/audit.log``),
created 0600 in a 0700 folder, appended to with a single write per record so
that concurrent runs do not interleave. A changing run writes a record when it
starts and one when it ends, so a run that is killed still leaves a trace.

The audit log serves the run, never the other way round: a log that cannot be
written is one warning line on stderr, and never changes a run's outcome or
exit status.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from .errors import QuiltError

_warned: set[str] = set()
_warn_lock = threading.Lock()


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def append(path: str, record: dict[str, Any]) -> bool:
    """Appends one record; on failure warns once (per log) on stderr and returns False."""
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
        return True
    except OSError as e:
        with _warn_lock:
            if path not in _warned:
                _warned.add(path)
                print(
                    f"Warning: cannot write the audit log {path}: {e.strerror}; the run goes on",
                    file=sys.stderr,
                    flush=True,
                )
        return False


def outcome_of(error: BaseException | None) -> str:
    """The audit name of how a run ended."""
    if error is None:
        return "done"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, QuiltError):
        return error.status.name.lower().replace("_", "-")
    return "internal-error"


class Run:
    """One changing run on one host: `start` writes the first record, `end` the last.

    ``record`` is filled by the run (outcome, key IDs, steps...); never a secret.
    """

    def __init__(self, path: str, task: str, host: str, **fields: Any) -> None:
        self.path = path
        self.record: dict[str, Any] = {"task": task, "host": host, "run": uuid.uuid4().hex[:12], **fields}
        self.started = time.monotonic()
        self.ended = False

    def start(self) -> Run:
        append(self.path, {**self.record, "event": "start"})
        return self

    def end(self, error: BaseException | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        self.record.setdefault("outcome", outcome_of(error))
        if isinstance(error, QuiltError):
            self.record.setdefault("error", str(error))
        self.record["seconds"] = round(time.monotonic() - self.started, 3)
        append(self.path, {**self.record, "event": "end"})


@contextmanager
def recorded(path: str, task: str, host: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Writes a ``start`` record now and an ``end`` record when the block ends (with the
    exception's outcome and message, if any: messages never hold a secret)."""
    run = Run(path, task, host, **fields).start()
    try:
        yield run.record
    except BaseException as e:
        run.end(e)
        raise
    run.end()
