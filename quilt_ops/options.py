"""Task options: how they are declared (long names, a few conventional short ones) and checked.

Invoke makes a short flag from each option's first free letter (``-a`` for
``--parallel``, ``-r`` for ``--dry-run``), and ``-i`` would mean the identity
file before the task name but the IAM user after it. quilt-ops' tasks have long
options only, plus the short ones people expect: ``-n`` for ``--dry-run`` and
``-y`` for ``--yes``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import invoke

from .errors import ConfigError

DEFAULT_PARALLEL = 10
#: The conventional short flags, by option name.
SHORT_FLAGS = {"dry_run": "n", "yes": "y"}
#: Options whose value is a whole number: Invoke casts them and ``--help`` shows INT (their
#: default is None, from which Invoke would guess a string).
WHOLE_NUMBERS = ("parallel", "keep")
#: Long names as other tools spell them (the exporter-toolkit's ``--web.config.file``), shown first.
LONG_NAMES = {"web_config_file": "web.config.file"}


class QuiltTask(invoke.Task):
    """An invoke task without invented short flags, whose whole-number options are INT."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["auto_shortflags"] = False
        super().__init__(*args, **kwargs)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        if name in LONG_NAMES:
            opts["names"].insert(0, LONG_NAMES[name])
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names:
            opts["names"].append(short)
        if name in WHOLE_NUMBERS:
            opts["kind"] = int
        return opts


def task(**kwargs: Any) -> Callable[..., Any]:
    """``@task`` for quilt-ops' tasks (see `QuiltTask`)."""
    return invoke.task(klass=QuiltTask, **kwargs)


def parallel(value: Any, default: int = DEFAULT_PARALLEL) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--parallel must be a whole number, not {value!r}") from None
    if not 1 <= number <= 200:
        raise ConfigError(f"--parallel must be between 1 and 200, not {number}")
    return number


def seconds(option: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be a number of seconds, not {value!r}") from None
    if not 0 < number <= 86400:
        raise ConfigError(f"{option} must be between 0 and 86400 seconds, not {value}")
    return number


def choice(option: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def confirm_breaking(yes: bool) -> Callable[[str], bool]:
    """For ``--break-lock``: shows who holds the lock and asks (``--yes`` agrees up front)."""

    def ask(holder: str) -> bool:
        if yes:
            print(f"breaking the lock held by {holder}", file=sys.stderr, flush=True)
            return True
        if not sys.stdin.isatty():
            raise ConfigError(f"the lock is held by {holder}; --break-lock needs --yes when stdin is not a terminal")
        sys.stderr.write(f"The lock is held by {holder}.\nBreak it (its holder's run is ended)? [y/N] ")
        sys.stderr.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    return ask
