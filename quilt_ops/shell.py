"""The remote shell scripts' shared parts, and reading what they print.

Every remote step is one POSIX ``sh`` script built here. It starts with the
same prologue: enter ``quilt.registry_dir`` (nothing runs when that fails), check
the tools it needs, and find out how to reach Docker and the env file: directly,
or through sudo when the login user cannot (``quilt.docker: auto``). Finding out
is part of the same command as the work, so it costs no extra round trip.

Scripts print their results as sections: a line ``<marker> <kind> <words...>``
(the marker is random per command, so nothing the host prints can fake one),
followed by free text, or, for ``blob`` sections, exactly the announced number
of bytes (file contents are bytes). A ``fail`` section means the prologue
stopped the script; `raise_for_failure` turns it into one clear error.

Every value put into a script is quoted with `shlex.quote`; nothing read back
from the host is ever put into a script.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
from dataclasses import dataclass, field

from .config import DOCKER_AUTO, Settings
from .errors import HostError, MissingTool, QuiltError, RemoteCommandError
from .sh import Exit
from .status import ExitStatus

q = shlex.quote

#: Exit status of a script stopped by its prologue (a ``fail`` section says why).
PROLOGUE_FAILED = Exit.PROLOGUE_FAILED.value
#: The socket docker uses when DOCKER_HOST is not set.
DEFAULT_SOCKET = "/var/run/docker.sock"


class DockerUnreachable(QuiltError):
    """The login user cannot run docker, and sudo cannot either."""

    status = ExitStatus.UNKNOWN


class NotRun(QuiltError):
    """A changing command's guard stopped it on the host before it changed anything."""

    status = ExitStatus.INCOMPLETE


class LockLost(NotRun):
    """The host lock this run took is no longer held (the host gave it up)."""


class AccessChanged(NotRun):
    """Who owns the env file's folder (so who writes there) changed since the lock was taken."""

    status = ExitStatus.FAILED


@dataclass
class Section:
    kind: str
    words: list[str]
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


@dataclass
class Output:
    """A script's stdout, split into sections."""

    sections: list[Section] = field(default_factory=list)
    #: Text printed before the first section.
    preamble: bytes = b""

    def first(self, kind: str) -> Section | None:
        return next((s for s in self.sections if s.kind == kind), None)

    def all(self, kind: str) -> list[Section]:
        return [s for s in self.sections if s.kind == kind]

    def word(self, kind: str, default: str = "") -> str:
        section = self.first(kind)
        return section.words[0] if section and section.words else default

    @property
    def complete(self) -> bool:
        return self.first("end") is not None


def parse(stdout: bytes, marker: str) -> Output:
    """Splits a script's stdout into sections (see the module docstring)."""
    out = Output()
    tag = marker.encode() + b" "
    position = 0
    current: Section | None = None
    size = len(stdout)
    while position < size:
        end = stdout.find(b"\n", position)
        line_end = size if end < 0 else end
        line = stdout[position:line_end]
        following = line_end + 1
        if line.startswith(tag):
            words = line[len(tag) :].decode("utf-8", "replace").split()
            if not words:
                position = following
                continue
            current = Section(words[0], words[1:])
            out.sections.append(current)
            if current.kind == "blob" and len(current.words) >= 2 and current.words[1].isdigit():
                length = int(current.words[1])
                closing = b"\n" + tag + b"blobend " + current.words[0].encode() + b"\n"
                if stdout.startswith(closing, following + length):
                    current.body = stdout[following : following + length]
                    position = following + length + len(closing)
                else:  # the file changed between its size and its bytes: not to be trusted
                    current.kind, current.words = "unreadable", current.words[:1]
                    found = stdout.find(closing, following)
                    position = size if found < 0 else found + len(closing)
                current = None
                continue
            position = following
            continue
        chunk = stdout[position : min(following, size)]
        if current is None:
            out.preamble += chunk
        else:
            current.body += chunk
        position = following
    return out


def blob(output: Output, name: str) -> bytes | None:
    """The content of blob section ``name`` (None when the script sent none)."""
    for section in output.all("blob"):
        if section.words and section.words[0] == name:
            return section.body
    return None


#: How every script's section marker begins (the rest is random, per script).
MARKER_PREFIX = "@@quilt-"


class Script:
    """A remote script under construction: prologue first, then the work."""

    def __init__(self, settings: Settings, *, enter_dir: bool = True) -> None:
        self.settings = settings
        self.marker = MARKER_PREFIX + secrets.token_hex(6)
        self.lines: list[str] = [
            f"m={q(self.marker)}",
            'say() { printf \'%s %s\\n\' "$m" "$*"; }',
            # Runs as root when the login user cannot: root itself, or quilt.sudo.
            self._root_function(),
        ]
        if enter_dir and settings.registry_dir:
            self.lines.append(
                f"cd -- {q(settings.registry_dir)} 2>/dev/null || {{ say fail nodir; exit {PROLOGUE_FAILED}; }}"
            )

    def _root_function(self) -> str:
        sudo = self.settings.sudo.strip()
        if not sudo:
            return (
                'as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else return 126; fi; }; '
                'root_ok() { [ "$(id -u)" = 0 ]; }'
            )
        return (
            f'as_root() {{ if [ "$(id -u)" = 0 ]; then "$@"; else {sudo} "$@"; fi; }}; '
            f'root_ok() {{ [ "$(id -u)" = 0 ] || as_root true 2>/dev/null; }}'
        )

    def add(self, *lines: str) -> Script:
        self.lines.extend(lines)
        return self

    def need(self, *tools: str) -> Script:
        """Stops with ``fail tool NAME`` when a program is missing."""
        for tool in tools:
            self.lines.append(
                f"command -v {q(tool)} >/dev/null 2>&1 || {{ say fail tool {q(tool)}; exit {PROLOGUE_FAILED}; }}"
            )
        return self

    def docker(self, required: bool = True) -> Script:
        """Defines ``qdocker``: docker as the login user when it can reach the socket,
        else through sudo (``quilt.docker: auto``), else the configured prefix.

        When docker cannot be run at all, a ``required`` script stops (``fail``);
        otherwise a ``dockerfail`` section says why and ``qdocker`` fails, so that
        the rest of the script (probes, the env file) still runs.
        """
        configured = self.settings.docker.strip()
        if configured.startswith("unix://"):  # a socket (the SDK's on the host itself): the CLI on it
            configured = f"docker -H {q(configured)}"
        if configured != DOCKER_AUTO:
            self.lines.append(f'qdocker() {{ {configured} "$@"; }}; say docker configured')
            return self

        def failing(reason: str, text: str) -> str:
            if required:
                return f"say fail {reason}; exit {PROLOGUE_FAILED}"
            return f"say dockerfail; echo {q(text)}; qdocker() {{ return 1; }}"

        no_docker = failing("tool docker", "docker: command not found")
        no_sudo = failing("docker-access nosudo", "permission denied on the docker socket; sudo: command not found")
        no_rights = failing(
            "docker-access norights", "permission denied on the docker socket; sudo: a password is required"
        )
        self.lines += [
            f's=${{DOCKER_HOST:-unix://{DEFAULT_SOCKET}}}; p=""',
            'case "$s" in unix://*) p=${s#unix://} ;; esac',
            f"if ! command -v docker >/dev/null 2>&1; then {no_docker}",
            # Direct when the socket can be used, or is simply not there (the engine is down:
            # docker says so); a socket whose folder the user cannot even search needs root.
            'elif [ -z "$p" ] || { [ -r "$p" ] && [ -w "$p" ]; } || { [ ! -e "$p" ] && [ -x "${p%/*}" ]; }; then',
            '  qdocker() { docker "$@"; }; say docker direct',
            'elif root_ok; then qdocker() { as_root docker "$@"; }; say docker sudo',
            f'elif ! command -v sudo >/dev/null 2>&1 && [ "$(id -u)" != 0 ]; then {no_sudo}',
            f"else {no_rights}",
            "fi",
        ]
        return self

    def files(self, path: str, write: bool) -> Script:
        """Defines ``qfile``: runs a command on ``path`` and its folder as the login user
        when it can (read, or write the file and its folder), else as root."""
        f, d = q(path), q(posixpath.dirname(path) or ".")
        can = (
            # A folder the login user cannot search hides its files: "-e" is false there.
            f"[ -r {f} ] || {{ [ -x {d} ] && [ ! -e {f} ]; }}"
            if not write
            else f"[ -w {d} ] && [ -x {d} ] && {{ [ ! -e {f} ] || {{ [ -r {f} ] && [ -w {f} ]; }}; }}"
        )
        self.lines += [
            f'if {can}; then qfile() {{ "$@"; }}; say files direct',
            'elif root_ok; then qfile() { as_root "$@"; }; say files sudo',
            'else qfile() { "$@"; }; say files none; fi',
        ]
        return self

    def guard_lock(self, lock_file: str, note_file: str, token: str) -> Script:
        """Stops with ``fail lock-lost`` unless the host lock is still held by this run."""
        self.lines.append(
            f"qfile flock -n -E {Exit.LOCK_HELD.value} {q(lock_file)} true 2>/dev/null; "
            f"if [ $? != {Exit.LOCK_HELD.value} ] || ! qfile grep -qF -- {q(token)} {q(note_file)} 2>/dev/null; then "
            f"say fail lock-lost; exit {PROLOGUE_FAILED}; fi"
        )
        return self

    def send_file(self, path: str, name: str) -> Script:
        """A ``blob NAME SIZE`` section with the file's bytes (``missing`` / ``unreadable`` if not)."""
        f, n = q(path), q(name)
        self.lines.append(
            f"if ! qfile test -e {f} 2>/dev/null; then say missing {n}; "
            f"elif ! qfile test -r {f} 2>/dev/null || [ -d {f} ]; then say unreadable {n}; "
            f"else say blob {n} $(qfile cat -- {f} | wc -c); qfile cat -- {f}; echo; say blobend {n}; fi"
        )
        return self

    def end(self) -> Script:
        self.lines.append("say end")
        return self

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def raise_for_failure(output: Output, host: str, settings: Settings) -> None:
    """Turns a prologue's ``fail`` section into the error that says what to do."""
    failed = output.first("fail")
    if failed is None:
        return
    reason = failed.words[0] if failed.words else ""
    if reason == "nodir":
        raise RemoteCommandError(
            f"cannot enter quilt.registry_dir {settings.registry_dir!r} on {host}; nothing was run there"
        )
    if reason == "tool":
        tool = failed.words[1] if len(failed.words) > 1 else "a tool"
        raise MissingTool(f"{tool} is not installed on {host} (quilt-ops needs it there)")
    if reason == "docker-access":
        what = "sudo is not installed" if failed.words[1:2] == ["nosudo"] else "passwordless sudo does not work"
        raise DockerUnreachable(
            f"the login user on {host} cannot reach the Docker socket and {what}: add the user to the docker "
            "group (sudo usermod -aG docker USER), or allow it passwordless sudo (or give its password: "
            "sudo.password or --prompt-for-sudo-password; or set quilt.docker)"
        )
    if reason == "lock-lost":
        raise LockLost(f"the host lock on {host} was lost (the connection stalled?)")
    if reason == "access-changed":
        raise AccessChanged(
            f"the owner or mode of {settings.env_file}'s folder on {host} changed during the run; this step was not run"
        )
    raise HostError(f"a command on {host} stopped: {reason}")
