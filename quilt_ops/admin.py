"""Creating the registry's first admin: validate locally, then answer create_admin.sh's prompts.

``create_admin.sh`` asks, on a terminal, for ``Username: ``, ``Email: ``,
``Password: `` and, when the password is long enough, ``Confirm password: ``
(the last two with echo off). Two versions of the program exist: the 2018
open-source one (refusals exit 2) and the Marketplace one (every refusal exits
0). So the verdict comes from the text: ``Success.`` is success, an ``Error:``
line (or ``Passwords don't match!``) is a refusal whatever the exit status, and
a refusal that comes before a prompt is reported at once, never waited on.

It is run as the operator runs it, from ``registry_dir``, on a pseudo-terminal,
and each answer is typed when its prompt appears; but ``env/registry`` is never
sourced: it is read as data with Docker's rules and handed over through a private
file (see `quilt_ops.admin_env`), so no value of it is ever run. The answers never go into a command line, a
remote environment variable or a shell history, and the password, like every
env-file value, is masked in anything shown.
"""

from __future__ import annotations

import getpass
import re
import sys
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from . import admin_env, docker_access, shell, stopping
from .config import Settings
from .envfile import EnvFile
from .errors import QuiltError
from .masking import Masker, printable
from .remote import PID_PREFIX, Process, Target
from .shell import q
from .status import ExitStatus

USERNAME = re.compile(r"[a-z][a-z0-9_]*")
EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
RESERVED = ("team", "public", "anonymous", "quilt")
MIN_PASSWORD = 8
USERNAME_PROMPT, EMAIL_PROMPT, PASSWORD_PROMPT, CONFIRM_PROMPT = (
    "Username: ",
    "Email: ",
    "Password: ",
    "Confirm password: ",
)
MISMATCH = "Passwords don't match!"


class InvalidInput(QuiltError):
    """An input the registry would refuse; the host is never contacted."""

    status = ExitStatus.USAGE


class AdminFailed(QuiltError):
    """The registry refused, or the program failed; no admin was created."""


@dataclass(frozen=True)
class Admin:
    """What create_admin asks for; ``password`` never appears in repr."""

    username: str
    email: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Admin(username={self.username!r}, email={self.email!r})"


def _control(text: str) -> bool:
    """True if ``text`` holds a control character: a terminal would act on it (^Q, ^S, ^V,
    ^Z, ^\\ ...) instead of passing it on, so what is stored would differ from what was given."""
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def validate_identity(username: str, email: str) -> None:
    """The registry's rules for the user name and email (checked before the password is asked)."""
    if username in RESERVED or not USERNAME.fullmatch(username):
        raise InvalidInput(
            f"Invalid username. (a lowercase letter, then lowercase letters, digits or _; not {', '.join(RESERVED)})"
        )
    if not EMAIL.fullmatch(email) or _control(email):
        raise InvalidInput("Invalid email.")


def validate(admin: Admin) -> None:
    """The registry's own rules, checked before the host is contacted."""
    validate_identity(admin.username, admin.email)
    if len(admin.password) < MIN_PASSWORD:
        raise InvalidInput(f"Password must be at least {MIN_PASSWORD} characters long.")
    if _control(admin.password):
        raise InvalidInput("Password must not hold control characters (a terminal would act on them).")


def masker(admin: Admin, env: bytes | None = None, into: Masker | None = None) -> Masker:
    """The password and the env file's values, added to ``into`` (the target's, for ``-e``) if given."""
    found = (into or Masker()).add(admin.password)
    if env is not None:
        found.add(*EnvFile(env).values())
    return found


def precheck_script(settings: Settings, docker: docker_access.DockerAccess | None = None) -> shell.Script:
    """Checks the script, the env file and the registry container; sends the env file
    (to mask its values in anything the program prints). Changes nothing."""
    s = shell.Script(settings)
    docker = docker or docker_access.ScriptDocker(settings)
    docker.prepare(s)
    s.files(settings.env_file, write=False)
    script = q(settings.create_admin_script)
    s.add(f"if [ -x {script} ]; then say script ok; else say script missing; fi")
    s.send_file(settings.env_file, "env")
    docker.add_inspect(s, [settings.containers.registry])
    s.end()
    return s


@dataclass
class Precheck:
    problems: list[str]
    env: bytes | None


def precheck(target: Target, settings: Settings) -> Precheck:
    """Problems that would stop create_admin.sh on this host (empty when none)."""
    docker = docker_access.of(target, settings)
    built = precheck_script(settings, docker)
    result = target.run(built.text(), timeout=30, what="the create-admin pre-check")
    output = shell.parse(result.stdout_bytes, built.marker)
    shell.raise_for_failure(output, target.name, settings)
    problems = []
    if output.word("script") != "ok":
        problems.append(f"{settings.create_admin_script} is missing or not executable in {settings.where}")
    env = shell.blob(output, "env")
    if env is None:
        problems.append(f"env file {settings.env_file} is missing or unreadable")
    else:
        try:
            admin_env.entries(env)
        except admin_env.Unusable as e:
            problems.append(f"env file {settings.env_file} cannot be given to create_admin.sh: {e}")
    registry = settings.containers.registry
    found = docker.answer(output, [registry]).containers
    state = (found.documents.get(registry) or {}).get("State") or {}
    if found.problem:
        problems.append(found.problem)
    elif state.get("Running") is not True:
        problems.append(f"the registry container {registry} is not running")
    return Precheck(problems, env)


#: The private file create_admin_env.sh reads the environment from (made by mktemp on the host).
DATA_FILE = re.compile(r"/[A-Za-z0-9._/-]+/quilt-ops-admin\.[A-Za-z0-9]{10}")


def stage_script(settings: Settings) -> shell.Script:
    """Writes stdin (the NUL-separated environment) to a new private file and names it."""
    s = shell.Script(settings)
    s.add(
        'umask 077; f=$(mktemp "${TMPDIR:-/tmp}/quilt-ops-admin.XXXXXXXXXX") || exit 1',
        'if cat >"$f"; then say data "$f"; else rm -f -- "$f"; exit 1; fi',
        # As root (--local), create_admin.sh runs as the folder's owner, who must read the file.
        'if [ "$(id -u)" = 0 ] && [ "$(stat -c %u .)" != 0 ]; then chown -- "$(stat -c %u .)" "$f" || exit 1; fi',
    )
    s.end()
    return s


def stage(target: Target, settings: Settings, env: bytes) -> str:
    """Puts the environment create_admin.sh gets on the host; returns the file's path."""
    try:
        data = admin_env.encode(admin_env.entries(env))
    except admin_env.Unusable as e:
        raise AdminFailed(f"{settings.env_file} on {target.name} cannot be given to create_admin.sh: {e}") from None
    built = stage_script(settings)
    result = target.run(built.text(), timeout=30, stdin=data, what="passing the registry's environment")
    output = shell.parse(result.stdout_bytes, built.marker)
    shell.raise_for_failure(output, target.name, settings)
    path = output.word("data")
    if result.exited != 0 or not DATA_FILE.fullmatch(path):
        raise AdminFailed(f"cannot write a private temporary file on {target.name}; nothing changed")
    return path


def unstage(target: Target, settings: Settings, path: str) -> None:
    """Removes the file if create_admin_env.sh did not get to it (best effort)."""
    s = shell.Script(settings, enter_dir=False)
    s.add(f"rm -f -- {q(path)}")
    s.end()
    try:
        target.run(s.text(), timeout=15, what="removing the temporary environment file")
    except QuiltError:
        pass


def command(settings: Settings, data: str) -> str:
    """The remote command: create_admin_env.sh (package data), which exports the
    environment read from ``data`` verbatim and execs create_admin.sh. Only the
    file's name and the script's path are arguments; no value is."""
    s = shell.Script(settings)
    script = q(settings.create_admin_script)
    s.add(
        admin_env.script(admin_env.OWNED),
        f"owned_check {script} || {{ echo 'Error: {settings.create_admin_script}, or a folder above it, can be "
        "written by someone other than root and the folder owner: refusing to run it as root'; exit 96; }",
        # A host whose sudo asks (sudo.password: SUDO_ASKPASS is set): credentials cached for this
        # terminal first, as create_admin.sh's own sudo asks the terminal, not the askpass helper.
        'if [ -n "${SUDO_ASKPASS:-}" ] && [ "$(id -u)" != 0 ]; then as_root -v 2>/dev/null; fi',
        f"as_owner bash -c {q(admin_env.script())} create_admin_env {q(data)} {script}",
    )
    return s.text()


class Session:
    """One run of create_admin.sh on a PTY, driven prompt by prompt."""

    def __init__(
        self, target: Target, settings: Settings, admin: Admin, timeout: float, mask: Masker, data: str
    ) -> None:
        self.target, self.settings, self.admin, self.timeout, self.mask = target, settings, admin, timeout, mask
        self.data = data
        self.output = ""
        self.process: Process | None = None
        self.deadline = time.monotonic() + timeout

    def run(self) -> str:
        """Answers every prompt and returns the program's success line, or raises `AdminFailed`."""
        self.process = self.target.start(command(self.settings, self.data), timeout=self.timeout + 5, pty=True)
        try:
            position = self.expect(USERNAME_PROMPT, 0)
            self.answer(self.admin.username)
            position = self.expect(EMAIL_PROMPT, position)
            self.answer(self.admin.email)
            position = self.expect(PASSWORD_PROMPT, position)
            self.answer(self.admin.password)
            position = self.expect(CONFIRM_PROMPT, position)
            self.answer(self.admin.password)
            self.finish()
            code = self.process.exit_code()
        finally:
            self.process.close()
        return self.verdict(code)

    def answer(self, text: str) -> None:
        assert self.process is not None
        self.process.send((text + "\r").encode())

    def read(self) -> bool:
        """Reads what is there; False once the program has ended and all output is read."""
        assert self.process is not None
        stopping.check()
        if self.process.finished():
            return False
        out, err = self.process.read(0.2)
        self.output += (out + err).decode("utf-8", "replace")
        return True

    def expect(self, prompt: str, position: int) -> int:
        """Waits for ``prompt`` after ``position``; returns the position after it.

        A refusal (an ``Error:`` line) or the program's end stops the wait at once.
        """
        while True:
            found = self.output.find(prompt, position)
            if found >= 0:
                return found + len(prompt)
            refusal = self.refusal(self.output[position:])
            if refusal:
                raise AdminFailed(f"the registry refused: {refusal}")
            if not self.read():
                assert self.process is not None
                refusal = self.refusal(self.output[position:])
                if refusal:
                    raise AdminFailed(f"the registry refused: {refusal}")
                code = self.process.exit_code()
                raise AdminFailed(
                    self.failure(f"the program ended (exit code {code}) before asking '{prompt.strip()}'")
                )
            if time.monotonic() > self.deadline:
                raise AdminFailed(self.failure(f"no '{prompt.strip()}' prompt within {self.timeout:.0f}s"))

    def finish(self) -> None:
        while self.read():
            if time.monotonic() > self.deadline:
                raise AdminFailed(self.failure(f"the program did not finish within {self.timeout:.0f}s"))

    def lines(self, text: str) -> list[str]:
        """The program's lines, masked and printable; on a terminal the wrapper's own line
        (its process group) and the script's sections come through too, and are left out."""
        return [
            printable(line.strip(), 200)
            for line in self.mask(text).replace("\r", "\n").splitlines()
            if line.strip() and not line.startswith((PID_PREFIX.decode(), shell.MARKER_PREFIX))
        ]

    def refusal(self, text: str) -> str | None:
        for line in self.lines(text):
            if line.startswith("Error:"):
                return line.removeprefix("Error:").strip()
            if line == MISMATCH:
                return line
        return None

    def failure(self, reason: str) -> str:
        shown = " | ".join(self.lines(self.output)[-6:])
        return f"{reason} on {self.target.name}" + (f"; last output: {shown}" if shown else "")

    def verdict(self, code: int) -> str:
        refusal = self.refusal(self.output)
        if refusal:
            raise AdminFailed(f"the registry refused: {refusal}")
        if "Success." in self.lines(self.output) and code == 0:
            return "Success."
        raise AdminFailed(
            self.failure(f"{self.settings.create_admin_script} exited with code {code} without saying Success.")
        )


def gather(
    username: str | None,
    email: str | None,
    password_stdin: bool,
    environ: Mapping[str, str],
    stdin: TextIO | None = None,
) -> Admin:
    """The admin's details from options, the environment, stdin or local prompts.

    The password is never an option: one line of stdin (``--password-stdin``),
    ``QUILT_ADMIN_PASSWORD``, or asked twice with echo off on a terminal.
    """
    stdin = stdin or sys.stdin
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
    validate_identity(username, email)
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
        raise InvalidInput(
            "no password: use --password-stdin or set QUILT_ADMIN_PASSWORD (it is never a command-line option)"
        )
    return Admin(username, email, password)


def create(target: Target, settings: Settings, admin: Admin, timeout: float, env: bytes | None = None) -> str:
    """Creates the admin on one host; returns the program's success line."""
    data = stage(target, settings, env or b"")
    try:
        return Session(target, settings, admin, timeout, masker(admin, env, into=target.masker), data).run()
    finally:
        unstage(target, settings, data)
