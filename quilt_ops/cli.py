"""The ``quilt-ops`` console script (``fab`` with quilt-ops' tasks built in), and
what a checkout's fabfile.py changes in ``fab``.

invoke's ``fab -c`` cannot load a collection from an installed package, so this
program carries the collection itself and works from any directory. Options,
config files (``~/.fabric.yaml``, ``-f FILE``) and ``FABRIC_QUILT_*`` variables
are Fabric's.
"""

from __future__ import annotations

import os

from fabric import Config
from fabric.main import Fab
from invoke.exceptions import Exit, ParseError

from . import __version__
from .executor import Executor
from .status import ExitStatus
from .tasks import ns


class CleanErrors:
    """Program mixin: option and config-file mistakes are one ``Error:`` line, exit 2.

    invoke prints parse errors without a prefix (exit 1), silently ignores a
    ``-f`` path that does not exist (an operator's typo would run with the
    defaults) and shows a traceback for bad YAML.
    """

    def parse_core(self, *args, **kwargs):
        try:
            return super().parse_core(*args, **kwargs)
        except ParseError as e:
            raise Exit(f"Error: {e}", code=int(ExitStatus.USAGE)) from None

    def parse_tasks(self, *args, **kwargs):
        try:
            return super().parse_tasks(*args, **kwargs)
        except ParseError as e:
            raise Exit(f"Error: {e}", code=int(ExitStatus.USAGE)) from None
        except ValueError as e:  # an option value invoke could not cast
            raise Exit(f"Error: invalid option value: {e}", code=int(ExitStatus.USAGE)) from None

    def update_config(self, *args, **kwargs):
        path = self.args.config.value
        if path and not os.path.isfile(path):
            raise Exit(f"Error: config file {path} not found", code=int(ExitStatus.USAGE))
        try:
            return super().update_config(*args, **kwargs)
        except Exit:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise Exit(f"Error: cannot read config file {path}: {first}", code=int(ExitStatus.USAGE)) from None


class QuiltOps(CleanErrors, Fab):
    """``fab`` with the quilt-ops collection built in."""

    def print_version(self) -> None:
        super().print_version()
        print(f"quilt-ops {__version__}")


program = QuiltOps(
    name="quilt-ops",
    binary="quilt-ops",
    binary_names=["quilt-ops"],
    version=__version__,
    namespace=ns,
    executor_class=Executor,
    config_class=Config,
)


def main() -> None:
    program.run()


def use_with_fab() -> None:
    """Makes the running ``fab`` program behave as ``quilt-ops`` (called from fabfile.py).

    invoke takes the executor class only from the program or from config files
    read before the fabfile, so the fabfile sets it, and the config-file checks,
    on the program itself.
    """
    import fabric.main

    fab = fabric.main.program
    fab.executor_class = Executor
    if not isinstance(fab, CleanErrors):
        fab.__class__ = type("QuiltFab", (CleanErrors, type(fab)), {})
