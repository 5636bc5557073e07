"""The registry's env file: read its key lines, and rewrite only those, byte for byte.

The file is read two ways on the host: by ``docker run --env-file`` (each
``KEY=value`` line verbatim: quotes kept, no ``export``, a trailing CR dropped)
and by bash's ``. env/registry``. A key line the two would read differently
(quoted, exported, with an inline comment) is refused rather than guessed at;
python-dotenv, which reads the way a shell does, finds those lines.

Everything here works on bytes and never formats a value into a message.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from dotenv.parser import parse_stream

KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET = "AWS_SECRET_ACCESS_KEY"
#: The deployment guide's name for the secret; the registry's boto3 does not read it.
LEGACY_SECRET = "AWS_SECRET_KEY"
KEY_NAMES = (KEY_ID, SECRET, LEGACY_SECRET)
BUCKET = "PACKAGE_BUCKET_NAME"

_LINE = re.compile(rb"^([ \t]*)([^=#\s][^=]*?)=(.*?)(\r?\n|\r)?$", re.S)
_KEY_VALUE = re.compile(r"^[A-Za-z0-9/+=]+$")


class EnvFileError(ValueError):
    """The env file cannot be rotated safely; the message names lines, never values."""


@dataclass(frozen=True)
class Line:
    """One line of the file: its raw bytes and, for ``KEY=value`` lines, where the value is."""

    number: int
    raw: bytes
    key: str | None = None
    value_start: int = 0
    value_end: int = 0

    @property
    def value(self) -> bytes:
        return self.raw[self.value_start:self.value_end]

    @property
    def ending(self) -> bytes:
        body = self.raw.rstrip(b"\r\n")
        return self.raw[len(body):]


def split_lines(content: bytes) -> list[Line]:
    """Parses the file the way ``docker --env-file`` does, keeping every byte."""
    lines = []
    for number, raw in enumerate(content.splitlines(keepends=True), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(b"#"):
            lines.append(Line(number, raw))
            continue
        match = _LINE.match(raw)
        if not match:
            lines.append(Line(number, raw))
            continue
        key = match.group(2).decode("utf-8", "replace")
        value_start = match.start(3)
        value_end = match.end(3)
        if raw[:value_end].endswith(b"\r") and match.group(4) is None:
            value_end -= 1
        lines.append(Line(number, raw, key, value_start, value_end))
    return lines


@dataclass
class EnvFile:
    """An env file's content, with the key lines found."""

    content: bytes

    def __post_init__(self) -> None:
        self.lines = split_lines(self.content)

    def values(self, key: str) -> list[bytes]:
        return [line.value for line in self.lines if line.key == key]

    def get(self, key: str) -> str | None:
        """The value docker would pass (the last line wins), or None."""
        found = self.values(key)
        return found[-1].decode("utf-8", "replace") if found else None

    def has(self, key: str) -> bool:
        return any(line.key == key for line in self.lines)

    @property
    def key_id(self) -> str | None:
        return self.get(KEY_ID)

    @property
    def secret_names(self) -> list[str]:
        return [name for name in (SECRET, LEGACY_SECRET) if self.has(name)]

    def problems(self) -> list[str]:
        """Why rotating this file would be unsafe; empty when it is fine."""
        found = []
        for line in self.lines:
            text = line.raw.strip()
            if re.match(rb"^export[ \t]", text):
                found.append(f"line {line.number}: 'export' (docker --env-file rejects it)")
            elif line.key is not None and line.key != line.key.strip():
                found.append(f"line {line.number}: space around the name {line.key.strip()}")
        shell = {b.original.line: b for b in parse_stream(io.StringIO(self.content.decode("utf-8", "replace")))
                 if b.key is not None}
        for line in self.lines:
            if line.key not in KEY_NAMES:
                continue
            value = line.value.decode("utf-8", "replace")
            binding = shell.get(line.number)
            if value[:1] in ("'", '"'):
                found.append(f"line {line.number}: {line.key} is quoted (docker passes quotes verbatim)")
            elif binding is not None and binding.value is not None and binding.value != value:
                found.append(f"line {line.number}: {line.key} reads differently in bash and docker "
                             f"(inline comment or spaces)")
            elif value and not _KEY_VALUE.match(value):
                found.append(f"line {line.number}: {line.key} holds characters no AWS key has")
        ids = {v for v in self.values(KEY_ID)}
        if len(ids) > 1:
            found.append(f"{KEY_ID} appears {len(self.values(KEY_ID))} times with different values")
        return found

    def check_rotatable(self) -> None:
        """Raises `EnvFileError` unless the key lines can be rewritten safely."""
        problems = self.problems()
        if not self.has(KEY_ID) or not self.key_id:
            problems.insert(0, f"no {KEY_ID} line")
        if problems:
            raise EnvFileError("; ".join(problems))

    def with_key(self, key_id: str, secret: str) -> bytes:
        """The same bytes with only the key lines' values replaced.

        ``AWS_SECRET_KEY`` is rewritten too when present; ``AWS_SECRET_ACCESS_KEY``
        is added after the (last) ``AWS_ACCESS_KEY_ID`` line when neither is.
        """
        if not _KEY_VALUE.match(key_id) or not _KEY_VALUE.match(secret):
            raise EnvFileError("the new key has characters an env file cannot hold")
        new_values = {KEY_ID: key_id.encode(), SECRET: secret.encode(), LEGACY_SECRET: secret.encode()}
        add_secret = not self.secret_names
        last_id = max((i for i, line in enumerate(self.lines) if line.key == KEY_ID), default=None)
        if last_id is None:
            raise EnvFileError(f"no {KEY_ID} line")
        out = io.BytesIO()
        for i, line in enumerate(self.lines):
            if line.key in new_values:
                out.write(line.raw[:line.value_start] + new_values[line.key] + line.raw[line.value_end:])
            else:
                out.write(line.raw)
            if add_secret and i == last_id:
                ending = line.ending or self.newline()
                if not line.ending:
                    out.write(ending)
                out.write(SECRET.encode() + b"=" + new_values[SECRET])
                out.write(line.ending)  # keeps a missing final newline missing
        return out.getvalue()

    def newline(self) -> bytes:
        return b"\r\n" if b"\r\n" in self.content else b"\n"
