"""Invoke's and Fabric's core options: which quilt-ops honours, how, and which it refuses.

quilt-ops runs its remote commands with its own runner (`quilt_ops.remote`), not
with Invoke's ``run``, so the core flags that only set ``run()`` defaults would be
listed in ``--help`` and do nothing. Each one is honoured here or refused:

- ``-R/--dry`` is the task's own ``--dry-run`` (never a change); a task without
  one refuses it.
- ``-e/--echo`` (``run.echo``) writes each command run on a host to stderr, masked.
- ``-T/--command-timeout`` (``timeouts.command``) bounds every command run on a
  host; ``-t/--connect-timeout`` bounds every SSH connect (see `quilt_ops.ssh`).
- ``--prompt-for-sudo-password`` asks once for ``sudo.password`` (Invoke does, with
  getpass), for hosts whose sudo asks for a password (see `quilt_ops.sudo_password`).
- The flags in `REFUSED` (and a ``--`` remainder) end the run with one ``Error:``
  line before anything is contacted, and are left out of ``--help``.

The decisions are pure functions over plain values; `quilt_ops.cli` applies them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import ConfigError
from .masking import NOTHING, Masker, printable

#: Core flags quilt-ops cannot honour, by Invoke's argument name: the flag as typed, and why.
REFUSED: dict[str, tuple[str, str]] = {
    "debug": ("-d/--debug", "Invoke's debug log would print settings; use QUILT_OPS_DEBUG=1 for a bug"),
    "hide": ("--hide", "quilt-ops shows only checked, masked output from the host"),
    "pty": ("-p/--pty", "quilt-ops chooses per command whether it needs a terminal"),
    "warn-only": ("-w/--warn-only", "a failed step is never ignored"),
    "prompt-for-login-password": (
        "--prompt-for-login-password",
        "SSH password logins are not supported; use a key (-i KEY, or ssh-agent)",
    ),
    "no-dedupe": ("--no-dedupe", "each quilt-ops task runs once whatever the command line says"),
}

#: What quilt-ops says in ``--help`` for the core flags it honours in its own way.
HELP = {
    "dry": "Dry run: the task's own --dry-run (tasks without one refuse -R). Changes nothing.",
    "echo": "Echo each command run on a host to stderr (secrets masked) before running it.",
    "command-timeout": "Seconds any one command on a host may run, at most (each step has its own limit too).",
    "connect-timeout": "Seconds to wait for each SSH connection (default quilt.connect_timeout).",
    "prompt-for-sudo-password": (
        "Ask once (not echoed) for the sudo password of hosts whose sudo asks for one (as sudo.password)."
    ),
}

#: The task option -R maps to.
DRY_RUN = "dry_run"


def refusal(given: Mapping[str, Any], remainder: str = "") -> str | None:
    """The ``Error:`` line for the first core flag given that quilt-ops refuses, else None.

    ``given`` maps Invoke's core argument names to their parsed values (False, None,
    "" and 0 mean not given); ``remainder`` is what followed ``--``.
    """
    for name, (flag, why) in REFUSED.items():
        if given.get(name):
            return f"Error: {flag} is not supported by quilt-ops: {why}"
    if remainder.strip():
        return "Error: quilt-ops runs no ad-hoc command after '--': name a task (quilt-ops --list)"
    return None


def dry_refusal(dry: bool, tasks: Iterable[tuple[str, Iterable[str]]]) -> str | None:
    """With ``-R``, the ``Error:`` line for the first task (name, its option names) that has no
    ``--dry-run``, else None."""
    if not dry:
        return None
    for name, option_names in tasks:
        if DRY_RUN not in set(option_names):
            return f"Error: -R/--dry: {name} has no --dry-run, so it cannot be run dry; nothing was done"
    return None


def positive_seconds(where: str, value: Any) -> float | None:
    """A timeout from config or a flag: None when unset (None, 0, ""), else a number > 0."""
    if value is None or value == 0 or value == "":
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number of seconds, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number of seconds, not {value!r}") from None
    if not 0 < number <= 86400:
        raise ConfigError(f"{where} must be between 0 and 86400 seconds, not {value!r}")
    return number


def _get(config: Any, section: str, key: str) -> Any:
    try:
        part = config.get(section) if hasattr(config, "get") else getattr(config, section, None)
        return part.get(key) if part is not None and hasattr(part, "get") else None
    except (AttributeError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class RunOptions:
    """How commands run on a host: from Invoke's ``run.echo`` and ``timeouts.command``
    (``-e`` and ``-T``, or the same keys in a config file)."""

    echo: bool = False
    command_timeout: float | None = None

    @classmethod
    def load(cls, config: Any) -> RunOptions:
        if config is None:
            return cls()
        return cls(
            echo=_get(config, "run", "echo") is True,
            command_timeout=positive_seconds(
                "-T/--command-timeout (timeouts.command)", _get(config, "timeouts", "command")
            ),
        )


def limit(own: float, cap: float | None) -> float:
    """A command's time: its own, or the ``-T`` cap when that is shorter."""
    return own if cap is None else min(own, cap)


def echo_lines(host: str, script: str, mask: Masker = NOTHING) -> list[str]:
    """The lines ``-e`` shows for a command: ``[host] $ first line``, then the rest
    indented, masked and printable (no terminal escapes)."""
    shown = [printable(mask(line), limit=1000) for line in script.strip("\n").splitlines() or [""]]
    return [f"[{host}] $ {shown[0]}", *(f"[{host}]   {line}" for line in shown[1:])]


def echoer(stream: Callable[[], TextIO] = lambda: sys.stderr) -> Callable[[str, str, Masker], None]:
    """Writes `echo_lines` to stderr (looked up at each call)."""

    def echo(host: str, script: str, mask: Masker = NOTHING) -> None:
        out = stream()
        out.write("".join(line + "\n" for line in echo_lines(host, script, mask)))
        out.flush()

    return echo
