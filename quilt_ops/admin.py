"""Creating the registry's first admin: validate locally, then answer create_admin.sh's prompts.

``create_admin.sh`` takes no arguments and asks, on a terminal, for
``Username: ``, ``Email: ``, ``Password: `` and ``Confirm password: `` (the last
two with echo off). It is run the way the operator runs it, from
``registry_dir``: ``. env/registry && ./create_admin.sh``, on a pseudo-terminal,
and each answer is typed into the program's input when its prompt appears. The
answers never go into a command line, a remote environment variable or a shell
history, and the password is masked in anything shown (the terminal echoes the
username and email as typed, and would echo a password if a program forgot to
turn echo off).
"""

from __future__ import annotations

import getpass
import re
import shlex
import socket
import sys
import time
from typing import Mapping, TextIO
from dataclasses import dataclass

from fabric import Connection

from . import ssh
from .config import Settings
from .errors import HostError, QuiltError
from .status import ExitStatus

USERNAME = re.compile(r"[a-z][a-z0-9_]*")
EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
RESERVED = ("team", "public", "anonymous", "quilt")
MIN_PASSWORD = 8
PROMPTS = ("Username: ", "Email: ", "Password: ", "Confirm password: ")
MASK = "********"


class InvalidInput(QuiltError):
    """An input the registry would refuse; the host is never contacted."""

    status = ExitStatus.USAGE


class AdminFailed(QuiltError):
    """The registry refused, or the program failed; the host is unchanged."""


@dataclass(frozen=True)
class Admin:
    """What create_admin asks for; ``password`` never appears in repr."""

    username: str
    email: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Admin(username={self.username!r}, email={self.email!r})"


def validate(admin: Admin) -> None:
    """The registry's own rules, checked before the host is contacted."""
    if admin.username in RESERVED or not USERNAME.fullmatch(admin.username):
        raise InvalidInput("Invalid username. (a lowercase letter, then lowercase letters, digits or _; "
                           f"not {', '.join(RESERVED)})")
    if not EMAIL.fullmatch(admin.email):
        raise InvalidInput("Invalid email.")
    if len(admin.password) < MIN_PASSWORD:
        raise InvalidInput(f"Password must be at least {MIN_PASSWORD} characters long.")
    if any(ch in admin.password for ch in "\r\n\x00\x03\x04\x15\x17\x7f"):
        raise InvalidInput("Password must not hold line breaks or terminal control characters.")


def command(settings: Settings) -> str:
    """The remote command: the operator's documented procedure, answers not included."""
    env = shlex.quote("./" + settings.env_file if "/" not in settings.env_file else settings.env_file)
    # Sourcing is silenced: bash complaining about a line of the env file would print part of a value.
    return ssh.in_dir(settings, f"if [ ! -r {env} ]; then echo 'env file {settings.env_file} is missing or "
                                f"unreadable'; exit 92; fi; . {env} >/dev/null 2>&1; "
                                f"exec {shlex.quote(settings.create_admin_script)}")


def mask(text: str, password: str) -> str:
    return text.replace(password, MASK) if password else text


def tail(text: str, password: str, lines: int = 6) -> str:
    shown = [line.rstrip() for line in mask(text, password).replace("\r", "").splitlines() if line.strip()]
    return " | ".join(shown[-lines:])


class Session:
    """One run of create_admin.sh on a PTY, driven prompt by prompt."""

    def __init__(self, c: Connection, settings: Settings, admin: Admin, timeout: float) -> None:
        self.c, self.settings, self.admin, self.timeout = c, settings, admin, timeout
        self.output = ""
        self.channel = None
        self.deadline = time.monotonic() + timeout

    def run(self) -> str:
        """Answers every prompt and returns the program's final message, or raises `AdminFailed`."""
        ssh.open_connection(self.c)
        try:
            self.channel = self.c.client.get_transport().open_session()
            self.channel.get_pty(term="dumb", width=200, height=40)
            self.channel.settimeout(0.5)
            self.channel.exec_command(command(self.settings))
        except Exception as e:
            raise HostError(f"cannot start {self.settings.create_admin_script} on {ssh.describe(self.c)}: "
                                f"{type(e).__name__}") from None
        try:
            answers = (self.admin.username, self.admin.email, self.admin.password, self.admin.password)
            position = 0
            for prompt, answer in zip(PROMPTS, answers):
                position = self.expect(prompt, position)
                self.channel.sendall((answer + "\r").encode())
            code = self.finish()
        finally:
            self.channel.close()
        return self.verdict(code)

    def read(self) -> bool:
        """Reads what is there; False once the program has ended and all output is read."""
        try:
            chunk = self.channel.recv(4096)
        except socket.timeout:
            return True
        if not chunk:
            return False
        self.output += chunk.decode("utf-8", "replace")
        return True

    def expect(self, prompt: str, position: int) -> int:
        """Waits for ``prompt`` after ``position``; returns the position after it."""
        while True:
            found = self.output.find(prompt, position)
            if found >= 0:
                return found + len(prompt)
            if not self.read():
                code = self.channel.recv_exit_status()
                raise AdminFailed(self.failure(f"the program ended (exit code {code}) before asking "
                                               f"'{prompt.strip()}'"))
            if time.monotonic() > self.deadline:
                raise AdminFailed(self.failure(f"no '{prompt.strip()}' prompt within {self.timeout:.0f}s"))

    def finish(self) -> int:
        while self.read():
            if time.monotonic() > self.deadline:
                raise AdminFailed(self.failure(f"the program did not finish within {self.timeout:.0f}s"))
        return self.channel.recv_exit_status()

    def failure(self, reason: str) -> str:
        shown = tail(self.output, self.admin.password)
        return f"{reason} on {ssh.describe(self.c)}" + (f"; last output: {shown}" if shown else "")

    def verdict(self, code: int) -> str:
        lines = [line.strip() for line in mask(self.output, self.admin.password).replace("\r", "").splitlines()]
        if code == 0 and "Success." in lines:
            return "Success."
        errors = [line for line in lines if line.startswith("Error:") or line == "Passwords don't match!"]
        if errors:
            raise AdminFailed(f"the registry refused: {errors[-1].removeprefix('Error:').strip()}")
        raise AdminFailed(self.failure(f"{self.settings.create_admin_script} exited with code {code}"))


def gather(username: str | None, email: str | None, password_stdin: bool, environ: Mapping[str, str],
           stdin: TextIO = sys.stdin) -> Admin:
    """The admin's details from options, the environment, stdin or local prompts.

    The password is never an option: one line of stdin (``--password-stdin``),
    ``QUILT_ADMIN_PASSWORD``, or asked twice with echo off on a terminal.
    """
    interactive = stdin.isatty() and not password_stdin

    def ask(what: str, given: str | None) -> str:
        if given is not None:
            return given
        if not interactive:
            raise InvalidInput(f"--{what} is required when stdin is not a terminal")
        sys.stderr.write(f"{what.capitalize()}: ")
        sys.stderr.flush()
        return stdin.readline().rstrip("\r\n")

    username = ask("username", username)
    email = ask("email", email)
    if password_stdin:
        password = stdin.readline().rstrip("\r\n")
        if not password:
            raise InvalidInput("--password-stdin: no password on stdin")
    elif environ.get("QUILT_ADMIN_PASSWORD"):
        password = environ["QUILT_ADMIN_PASSWORD"]
    elif stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Confirm password: ") != password:
            raise InvalidInput("Passwords don't match!")
    else:
        raise InvalidInput("no password: use --password-stdin or set QUILT_ADMIN_PASSWORD "
                           "(it is never a command-line option)")
    return Admin(username, email, password)


def precheck_command(settings: Settings, container: str = "registry") -> str:
    """Checks that the script is there and the registry container runs (for --dry-run)."""
    script = shlex.quote(settings.create_admin_script)
    return ssh.in_dir(settings, f"if [ -x {script} ]; then echo script-ok; fi; "
                                f"docker inspect --format '{{{{.State.Running}}}}' {container} 2>&1 | head -n1")


def precheck(c: Connection, settings: Settings) -> list[str]:
    """Problems that would stop create_admin.sh on this host (empty when none)."""
    result = ssh.run(c, precheck_command(settings), timeout=30)
    lines = result.stdout.split()
    problems = []
    if "script-ok" not in lines:
        problems.append(f"{settings.create_admin_script} is missing or not executable")
    if "true" not in lines:
        problems.append("the registry container is not running")
    return problems


def create(c: Connection, settings: Settings, admin: Admin, timeout: float) -> str:
    """Creates the admin on one host; returns the program's success line."""
    return Session(c, settings, admin, timeout).run()
