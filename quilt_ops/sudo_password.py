"""Hosts whose sudo asks for a password: ``sudo.password`` and ``--prompt-for-sudo-password``.

The password is taken where Fabric users put it: Invoke's and Fabric's ``sudo.password``
config key (``fabric.yaml``, ``-f FILE``, the ``FABRIC_SUDO_PASSWORD`` variable), or the
core flag ``--prompt-for-sudo-password``, which Invoke turns into the same key by asking
once, with getpass, before any task runs. Without it nothing changes: quilt.sudo
(``sudo -n``) never asks, and no extra command runs.

With it, each SSH connection starts one keeper (``sh/sudo_keeper.sh``) on its own channel,
before any other command: it reads the password from its stdin into a 0600 file in a private
folder of the login user (``${TMPDIR:-/tmp}/quilt-ops-sudo.NAME``, made 0700 by ``mkdir``,
which fails if it exists; NAME random, chosen here, so that no later command holds anything
read back from the host), beside ``sh/askpass.sh``, checks it once (``sudo -k -A true``: a
wrong password is tried once, and ends the host's run with one ``Error:`` line, exit 3), and
removes the folder when the connection ends (stdin's end; a killed run's folder is removed by
the next keeper: a live one holds an flock on it). The keeper is one more channel on the same
connection, and only when a password is given (also to a host whose sudo does not ask). Every later command on the
connection gets ``SUDO_ASKPASS`` (that folder's askpass, a path) and quilt.sudo with ``-A``
for ``-n``; the sudo of the host's own scripts (start.sh's ``sudo docker``, run without a
terminal) uses the same helper, which sudo does when ``DISPLAY`` is set, so it is set too
when unset. The password itself is never on a command line, in an environment variable,
in output or in an exception's text.

sudo's own credential cache cannot be primed once instead: it is kept per terminal or per
parent process, and each command is a new session with a new parent.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import sh
from .errors import ConfigError, HostError

q = shlex.quote

#: Seconds the keeper may take to answer (mktemp, one sudo check: about 2 s when the password is wrong).
READY_TIMEOUT = 30.0
#: The value DISPLAY gets, when unset, in the commands of a host whose sudo asks: sudo runs its askpass
#: helper, without a terminal, only when DISPLAY is set (nothing is ever displayed).
DISPLAY = "quilt-ops-askpass"
#: How to set the password, in messages.
HOW = "sudo.password, FABRIC_SUDO_PASSWORD or --prompt-for-sudo-password"


class Reading(Protocol):
    """What `first_line` needs of a started command (`quilt_ops.remote.Process`)."""

    def read(self, wait: float) -> tuple[bytes, bytes]: ...

    def finished(self) -> bool: ...


class SudoPasswordRefused(HostError):
    """The host's sudo did not take the password given (tried once); nothing ran there."""


def password(config: Any) -> str | None:
    """``sudo.password`` from Invoke's/Fabric's config (None when unset or empty).

    Raises `ConfigError` (without the value) when it is not text, or holds a line break.
    """
    try:
        section = config.get("sudo") if hasattr(config, "get") else getattr(config, "sudo", None)
        value = section.get("password") if section is not None and hasattr(section, "get") else None
    except (AttributeError, KeyError, TypeError):
        return None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"sudo.password must be text, not {type(value).__name__}")
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError("sudo.password must be one line")
    return value


def asking(sudo: str) -> str:
    """quilt.sudo as used when a password is given: ``-n`` (never ask) replaced by ``-A`` (ask
    the askpass helper). "" (never sudo) stays "". Raises `ConfigError` when it is not a command
    line (an unclosed quote)."""
    try:
        words = shlex.split(sudo)
    except ValueError as e:
        raise ConfigError(f"quilt.sudo is not a command line ({e})") from None
    if not words:
        return ""
    rest = [word for word in words[1:] if word not in ("-n", "--non-interactive")]
    if "-A" not in rest and "--askpass" not in rest:
        rest.insert(0, "-A")
    return " ".join(q(word) for word in [words[0], *rest])


def new_name() -> str:
    """A keeper folder's name (random: ``quilt-ops-sudo.NAME`` in the login user's temp folder)."""
    return secrets.token_hex(12)


def keeper_command(name: str, sudo: str, mark: str) -> str:
    """The command line of a connection's keeper (no secret in it: the password is its stdin)."""
    return f"sh -c {q(sh.load('sudo_keeper.sh'))} {q(mark)} {q(name)} {q(sh.load('askpass.sh'))} {sudo}"


def environment(name: str | None) -> str:
    """What every command on a connection whose keeper is ready starts with: the askpass
    helper's path (never the password; the folder as the keeper made it, from the name
    chosen here: nothing read back from the host), and DISPLAY when unset."""
    if not name:
        return ""
    return (
        f'SUDO_ASKPASS="${{TMPDIR:-/tmp}}"/quilt-ops-sudo.{q(name)}/askpass; DISPLAY=${{DISPLAY:-{DISPLAY}}}; '
        "export SUDO_ASKPASS DISPLAY; "
    )


def ready(line: str, host: str) -> bool:
    """Whether the keeper keeps the password (False: sudo is not installed, none is needed),
    from its first line; raises the error its ``fail`` line means."""
    words = line.split()
    if words in (["ready", "ok"], ["ready", "none"]):
        return words[1] == "ok"
    reason = words[1] if words[:1] == ["fail"] and len(words) > 1 else ""
    if reason == "refused":
        raise SudoPasswordRefused(f"sudo on {host} did not accept the password given ({HOW}); nothing was run there")
    if reason == "notallowed":
        raise SudoPasswordRefused(
            f"sudo on {host} refused the login user with the password given (not in sudoers?); nothing was run there"
        )
    if reason == "askpass":
        raise HostError(
            f"sudo on {host} cannot run quilt-ops' askpass helper (is the temp folder mounted noexec? set TMPDIR "
            "for the login user); nothing was run there"
        )
    if reason == "tty":
        raise HostError(
            f"sudo on {host} runs only on a terminal (Defaults requiretty); allow the login user without one "
            "(Defaults:USER !requiretty); nothing was run there"
        )
    if reason == "tmpdir":
        raise HostError(
            f"the login user's temp folder on {host} (TMPDIR, else /tmp) is another user's, or others can "
            "rename files in it (not sticky): no place for the sudo password; nothing was run there"
        )
    if reason in ("mktemp", "write"):
        raise HostError(f"cannot make a private temp folder on {host} for the sudo password; nothing was run there")
    raise HostError(f"the sudo password could not be set up on {host}; nothing was run there")


def first_line(
    process: Reading,
    host: str,
    timeout: float = READY_TIMEOUT,
    clock: Any = time.monotonic,
    check: Callable[[], None] = lambda: None,
) -> str:
    """The keeper's first line (its answer), read within ``timeout``; ``check`` is called
    between reads (it raises when the run is being stopped)."""
    started = clock()
    out = b""
    while b"\n" not in out and not process.finished():
        check()
        if clock() - started > timeout:
            raise HostError(f"the sudo password check on {host} did not answer within {timeout:.0f}s")
        chunk, _ = process.read(0.2)
        out += chunk
    return out.split(b"\n", 1)[0].decode("utf-8", "replace")
