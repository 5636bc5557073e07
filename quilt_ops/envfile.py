"""The registry's env file: read it as Docker does, and rewrite only the key lines, byte for byte.

The file is read two ways on the host: by ``docker run --env-file`` and by
bash's ``. env/registry``. `split_lines` follows Docker's own parser exactly
(docker/cli ``opts/file.go``): lines end at ``\\n`` only, one trailing ``\\r`` is
dropped, a byte-order mark is dropped from the first line, leading Unicode
white space is trimmed, ``#`` starts a comment, the name ends at the first
``=`` and may not hold a space or tab, the value is taken verbatim, a line with
no ``=`` takes its value from the environment of whoever runs docker, and a
file that is not UTF-8 is refused. A key line that bash would read differently
(quoted, exported, odd leading characters, an inline comment) is refused with
its line number rather than guessed at; python-dotenv, which reads the way a
shell does, finds those.

Everything here works on bytes; no value is ever formatted into a message, and
the objects' reprs show line numbers and names only.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from dotenv.parser import parse_stream

KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET = "AWS_SECRET_ACCESS_KEY"
#: The deployment guide's name for the secret; the registry's boto3 does not read it.
LEGACY_SECRET = "AWS_SECRET_KEY"
#: The key lines quilt-ops reads and rewrites (health looks for the same names).
KEY_NAMES = (KEY_ID, SECRET, LEGACY_SECRET)
SECRET_NAMES = (SECRET, LEGACY_SECRET)
BUCKET = "PACKAGE_BUCKET_NAME"

BOM = b"\xef\xbb\xbf"
_KEY_VALUE = re.compile(r"[A-Za-z0-9/+=]+")
#: What Docker's parser trims from a name (after Unicode white space): space and tab.
_NAME_SPACE = " \t"


class EnvFileError(ValueError):
    """The env file cannot be rotated safely; the message names lines, never values."""


def _go_space(ch: str) -> bool:
    """Go's ``unicode.IsSpace``, which Docker uses to trim the start of a line."""
    return ch in "\t\n\v\f\r \x85\xa0" or unicodedata.category(ch) in ("Zs", "Zl", "Zp")


@dataclass(frozen=True, repr=False)
class Line:
    """One line as Docker reads it, with its raw bytes (ending included)."""

    number: int
    raw: bytes
    #: The variable name, for ``NAME=value`` and bare ``NAME`` lines.
    key: str | None = None
    #: Where the value is in ``raw`` (``NAME=value`` lines).
    value_start: int = 0
    value_end: int = 0
    #: False for a bare ``NAME`` line (Docker takes the value from its own environment).
    assigns: bool = False
    #: Why Docker refuses this line (which makes it refuse the whole file).
    error: str | None = None
    #: The bytes before the name (white space Docker trims, a byte-order mark).
    lead: bytes = b""

    @property
    def value(self) -> bytes:
        return self.raw[self.value_start : self.value_end]

    @property
    def ending(self) -> bytes:
        if self.raw.endswith(b"\r\n"):
            return b"\r\n"
        return b"\n" if self.raw.endswith(b"\n") else b""

    def __repr__(self) -> str:
        return f"Line({self.number}, key={self.key!r})"


def split_lines(content: bytes) -> list[Line]:
    """The file's lines as Docker's ``--env-file`` parser reads them, keeping every byte."""
    lines: list[Line] = []
    position, number = 0, 0
    while position < len(content):
        end = content.find(b"\n", position)
        raw = content[position:] if end < 0 else content[position : end + 1]
        position += len(raw)
        number += 1
        lines.append(_parse_line(number, raw))
    return lines


def _parse_line(number: int, raw: bytes) -> Line:
    body_end = len(raw) - (1 if raw.endswith(b"\n") else 0)
    if raw[:body_end].endswith(b"\r"):
        body_end -= 1  # bufio.ScanLines drops one CR before the LF (or at the end)
    start = len(BOM) if number == 1 and raw.startswith(BOM) else 0
    try:
        text = raw[start:body_end].decode("utf-8")
    except UnicodeDecodeError:
        return Line(number, raw, error="not valid UTF-8 (docker refuses the file)")
    trimmed = text
    while trimmed and _go_space(trimmed[0]):
        trimmed = trimmed[1:]
    lead = raw[:start] + text[: len(text) - len(trimmed)].encode()
    if not trimmed or trimmed.startswith("#"):
        return Line(number, raw, lead=lead)
    name, equals, _ = trimmed.partition("=")
    name = name.lstrip(_NAME_SPACE)
    if any(ch in name for ch in _NAME_SPACE):
        return Line(
            number,
            raw,
            key=name.split()[0] if name.split() else None,
            lead=lead,
            error="a name with a space or tab (docker refuses the file)",
        )
    if not name:
        return Line(number, raw, lead=lead, error="no name before '=' (docker refuses the file)")
    if not equals:
        return Line(number, raw, key=name, lead=lead)
    value_start = len(lead) + len(name.encode()) + 1
    return Line(number, raw, key=name, value_start=value_start, value_end=body_end, assigns=True, lead=lead)


class EnvFile:
    """An env file's content, with its lines as Docker reads them."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.lines = split_lines(content)

    def __repr__(self) -> str:
        return f"EnvFile({len(self.lines)} lines, keys={[line.key for line in self.lines if line.key]})"

    def key_lines(self, key: str) -> list[Line]:
        return [line for line in self.lines if line.key == key]

    def get(self, key: str) -> str | None:
        """The value docker passes for ``key`` (the last line wins), or None."""
        found = [line for line in self.key_lines(key) if line.assigns]
        return found[-1].value.decode("utf-8", "replace") if found else None

    def has(self, key: str) -> bool:
        return bool(self.key_lines(key))

    @property
    def key_id(self) -> str | None:
        return self.get(KEY_ID)

    @property
    def secret_names(self) -> list[str]:
        return [name for name in SECRET_NAMES if self.has(name)]

    def values(self) -> list[str]:
        """Every value (and the password inside any URL value), for masking output."""
        found: list[str] = []
        for line in self.lines:
            if line.error:
                # A line Docker refuses: Docker's error may quote it; all of it after the
                # name is masked (and the whole line, when there is no '=').
                text = line.raw.decode("utf-8", "replace").strip()
                found.append(text.partition("=")[2].strip() or text)
                continue
            if not line.assigns:
                continue
            value = line.value.decode("utf-8", "replace")
            found.append(value)
            if "://" in value:
                try:
                    password = urlsplit(value).password
                except ValueError:
                    password = None
                if password:
                    found.extend({password, unquote(password)})
        return [value for value in found if value]

    def refused_by_docker(self) -> list[str]:
        """The lines that make Docker refuse the whole file (numbers and reasons only)."""
        return [f"line {line.number}: {line.error}" for line in self.lines if line.error]

    def problems(self) -> list[str]:
        """Why rotating this file would be unsafe (line numbers and names only); empty when fine."""
        found = self.refused_by_docker()
        shell = {
            b.original.line: b
            for b in parse_stream(io.StringIO(self.content.decode("utf-8", "replace")))
            if b.key is not None
        }
        for name in KEY_NAMES:
            lines = self.key_lines(name)
            if len(lines) > 1:
                numbers = ", ".join(str(line.number) for line in lines[:-1]) + f" and {lines[-1].number}"
                found.append(f"{name} appears on lines {numbers} (keep one)")
        for line in self.lines:
            if line.key not in KEY_NAMES or line.error:
                continue
            where = f"line {line.number}: {line.key}"
            if not line.assigns:
                found.append(f"{where} has no '=' (docker would take it from its own environment)")
                continue
            value = line.value.decode("utf-8", "replace")
            binding = shell.get(line.number)
            if line.lead.strip(b" \t"):
                found.append(f"{where} starts with characters bash does not skip")
            elif value[:1] in ("'", '"'):
                found.append(f"{where} is quoted (docker passes quotes verbatim)")
            elif value and not _KEY_VALUE.fullmatch(value.split(" #")[0].rstrip()):
                found.append(f"{where} holds characters no AWS key has")
            elif binding is not None and binding.value is not None and binding.value != value:
                found.append(f"{where} reads differently in bash and docker (inline comment or spaces)")
            elif value and not _KEY_VALUE.fullmatch(value):
                found.append(f"{where} holds characters no AWS key has")
        return found

    def check_rotatable(self) -> None:
        """Raises `EnvFileError` unless the key lines can be rewritten safely."""
        problems = self.problems()
        if not self.key_id:
            problems.insert(0, f"no {KEY_ID} line")
        if problems:
            raise EnvFileError("; ".join(problems))

    def with_key(self, key_id: str, secret: str) -> bytes:
        """The same bytes with only the key lines' values replaced.

        ``AWS_SECRET_KEY`` is rewritten too when present; ``AWS_SECRET_ACCESS_KEY``
        is added after the ``AWS_ACCESS_KEY_ID`` line when neither is.
        """
        if not _KEY_VALUE.fullmatch(key_id) or not _KEY_VALUE.fullmatch(secret):
            raise EnvFileError("the new key has characters an env file cannot hold")
        self.check_rotatable()
        new_values = {KEY_ID: key_id.encode(), SECRET: secret.encode(), LEGACY_SECRET: secret.encode()}
        add_secret = not self.secret_names
        out = io.BytesIO()
        for line in self.lines:
            if line.key in new_values:
                out.write(line.raw[: line.value_start] + new_values[line.key] + line.raw[line.value_end :])
            else:
                out.write(line.raw)
            if add_secret and line.key == KEY_ID:
                if not line.ending:
                    out.write(self.newline())
                out.write(SECRET.encode() + b"=" + new_values[SECRET])
                out.write(line.ending)  # keeps a missing final newline missing
        return out.getvalue()

    def newline(self) -> bytes:
        return b"\r\n" if b"\r\n" in self.content else b"\n"
