"""Masking secrets in text that came from the host before anything shows it.

Output from the host (the start script, create_admin, docker's errors) may echo
a line of the env file. Every value of the env file, the passwords inside URL
values, and the old and new secret keys of a rotation are replaced by `MASK` in
anything quilt-ops prints, raises or logs.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "********"
#: Values shorter than this are not masked (``1``, ``80``, ``yes``: not secrets, and
#: masking them would garble every message).
MIN_LENGTH = 4


class Masker:
    """Replaces known secret values in text."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self.add(*values)

    def add(self, *values: str) -> Masker:
        for value in values:
            value = value.strip()
            if len(value) >= MIN_LENGTH:
                self._values.add(value)
        return self

    def __call__(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        return text

    def __repr__(self) -> str:
        return f"Masker({len(self._values)} values)"


NOTHING = Masker()


def printable(text: str, limit: int = 120) -> str:
    """Text read back from the host, safe to show: printable characters only (no terminal
    escapes), and not longer than ``limit``."""
    shown = "".join(ch if ch.isprintable() else "?" for ch in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
