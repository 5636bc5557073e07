"""What the operator sees: progress during waits, health tables, JSON documents.

Progress goes to stdout (stderr when stdout carries JSON): a spinner redrawn in
place when the stream is a terminal, plain timestamped lines otherwise, so logs
of cron jobs and CI stay readable. Nothing here ever receives a secret.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Iterable, TextIO

from .health import HostHealth
from .status import ExitStatus, label, worst

SPINNER = "|/-\\"
_print_lock = threading.Lock()


class Progress:
    """Steps with their elapsed time, and waits that show they are alive."""

    def __init__(self, stream: TextIO | None = None, prefix: str = "", quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.prefix = f"{prefix}: " if prefix else ""
        self.quiet = quiet
        self.started = time.monotonic()
        self._frame = 0
        self._last_plain = ("", 0.0)
        self._drawn = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _write(self, text: str) -> None:
        with _print_lock:
            self.stream.write(text)
            self.stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\033[K")
            self._drawn = False

    def step(self, text: str) -> None:
        """A line saying what is being done (or was done), with the time so far."""
        if self.quiet:
            return
        self._clear()
        self._write(f"[{self.elapsed():6.1f}s] {self.prefix}{text}\n")

    def waiting(self, text: str) -> None:
        """Called on each poll of a wait: redraws the spinner, or prints a line
        when the status text changes (and every 10 s while it does not)."""
        if self.quiet:
            return
        if self.tty:
            self._frame = (self._frame + 1) % len(SPINNER)
            self._write(f"\r\033[K{SPINNER[self._frame]} [{self.elapsed():6.1f}s] {self.prefix}{text}")
            self._drawn = True
            return
        last_text, last_time = self._last_plain
        if text != last_text or time.monotonic() - last_time >= 10:
            self._write(f"[{self.elapsed():6.1f}s] {self.prefix}{text}\n")
            self._last_plain = (text, time.monotonic())

    def done(self) -> None:
        self._clear()


def table(rows: Iterable[Iterable[str]], headers: Iterable[str]) -> str:
    """A plain left-aligned text table."""
    rows = [list(map(str, r)) for r in rows]
    headers = list(headers)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def health_table(reports: list[HostHealth]) -> str:
    """Every check of every host, then one summary line a host."""
    rows = []
    for report in reports:
        for check in report.checks:
            rows.append((report.host, check.name, label(check.status), check.summary))
    lines = [table(rows, ("HOST", "CHECK", "STATUS", "DETAIL")), ""]
    for report in reports:
        failing = report.failing()
        counts = f"{len(report.checks) - len(failing)}/{len(report.checks)} checks OK"
        lines.append(f"{report.host}: {label(report.status)} ({counts})")
    return "\n".join(lines)


def health_json(reports: list[HostHealth]) -> str:
    """One JSON document with every check of every host."""
    status = overall(reports)
    doc: dict[str, Any] = {"status": label(status), "exit_code": int(status),
                           "hosts": [r.as_dict() for r in reports]}
    return json.dumps(doc, indent=2, default=str)


def overall(reports: list[HostHealth]) -> ExitStatus:
    return worst(r.status for r in reports)
