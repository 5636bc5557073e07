"""The ``quilt-ops`` console script (``fab`` with quilt-ops' tasks built in), and
what a checkout's fabfile.py changes in ``fab``.

invoke's ``fab -c`` cannot load a collection from an installed package, so this
program carries the collection itself and works from any directory. Options,
config files (``~/.fabric.yaml``, ``-f FILE``) and ``FABRIC_QUILT_*`` variables
are Fabric's. `run` runs it in-process (tests, ``python -m quilt_ops``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from fabric import Config
from fabric.main import Fab
from invoke import Argument
from invoke.exceptions import Exit, ParseError

from . import __version__
from .executor import Executor
from .status import ExitStatus
from .tasks import ns


class CleanErrors:
    """Program mixin: option and config-file mistakes are one ``Error:`` line, exit 64.

    invoke prints parse errors without a prefix (exit 1), silently ignores a
    ``-f`` path that does not exist (an operator's typo would run with the
    defaults) and shows a traceback for bad YAML.
    """

    args: Any

    def parse_core(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().parse_core(*args, **kwargs)  # type: ignore[misc]
        except ParseError as e:
            raise Exit(f"Error: {e}", code=int(ExitStatus.USAGE)) from None

    def parse_tasks(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().parse_tasks(*args, **kwargs)  # type: ignore[misc]
        except ParseError as e:
            raise Exit(f"Error: {e}", code=int(ExitStatus.USAGE)) from None
        except ValueError as e:  # an option value invoke could not cast
            raise Exit(f"Error: invalid option value: {e}", code=int(ExitStatus.USAGE)) from None

    def update_config(self, *args: Any, **kwargs: Any) -> Any:
        path = self.args.config.value
        if path and not os.path.isfile(path):
            raise Exit(f"Error: config file {path} not found", code=int(ExitStatus.USAGE))
        try:
            return super().update_config(*args, **kwargs)  # type: ignore[misc]
        except Exit:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise Exit(f"Error: cannot read config file {path}: {first}", code=int(ExitStatus.USAGE)) from None


class LocalFlag:
    """Program mixin: the core flag ``--local`` (every task runs on this machine, without SSH;
    the executor passes it on as ``quilt.local``)."""

    def core_args(self) -> list[Any]:
        args: list[Any] = super().core_args()  # type: ignore[misc]
        return [
            *args,
            Argument(
                names=("local",),
                kind=bool,
                default=False,
                help="Run the tasks on this machine, the registry host itself, without SSH (no -H).",
            ),
        ]


class QuiltOps(CleanErrors, LocalFlag, Fab):
    """``fab`` with the quilt-ops collection built in."""

    def print_version(self) -> None:
        super().print_version()  # "quilt-ops VERSION", then Fabric's, Paramiko's and Invoke's


def program() -> QuiltOps:
    return QuiltOps(
        name="quilt-ops",
        binary="quilt-ops",
        binary_names=["quilt-ops"],
        version=__version__,
        namespace=ns,
        executor_class=Executor,
        config_class=Config,
    )


def run(argv: list[str]) -> int:
    """Runs ``quilt-ops ARGV...`` in this process; returns the exit status."""
    try:
        program().run(["quilt-ops", *argv], exit=True)
    except SystemExit as e:
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


def use_with_fab() -> None:
    """Makes the running ``fab`` program behave as ``quilt-ops`` (called from fabfile.py).

    invoke takes the executor class only from the program or from config files
    read before the fabfile, so the fabfile sets it, the config-file checks and
    ``--local`` on the program itself. The core flags were parsed before the
    fabfile was loaded, so they are parsed again, ``--local`` now known.
    """
    import fabric.main

    fab = fabric.main.program
    fab.executor_class = Executor
    if not isinstance(fab, CleanErrors):
        fab.__class__ = type("QuiltFab", (CleanErrors, LocalFlag, type(fab)), {})
        if getattr(fab, "argv", None):
            fab.parse_core_args()
