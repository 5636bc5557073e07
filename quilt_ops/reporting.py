"""How the library tells what it is doing, without knowing how it is shown.

`restart`, `rotation` and the other library modules report through a
`Reporter`; `quilt_ops.output` has the one that draws on a terminal or writes
plain lines, tests and the exporter use `Silent` or their own.
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    """Receives progress from a running operation (never a secret)."""

    def step(self, text: str) -> None:
        """A step begins or has ended: one line."""
        ...

    def waiting(self, text: str) -> None:
        """Still waiting (called about once a second): shows the wait is alive."""
        ...

    def done(self) -> None:
        """A wait has ended."""
        ...

    def show(self, lines: list[str]) -> None:
        """Lines to show as they are (a plan, a dry run's findings)."""
        ...


class Silent:
    """A reporter that shows nothing."""

    def step(self, text: str) -> None:
        pass

    def waiting(self, text: str) -> None:
        pass

    def done(self) -> None:
        pass

    def show(self, lines: list[str]) -> None:
        pass


class Recorder(Silent):
    """Keeps what it is told (for tests, and for the audit log's step list)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, text: str) -> None:
        self.lines.append(text)

    def show(self, lines: list[str]) -> None:
        self.lines.extend(lines)
