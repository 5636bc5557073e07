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
from invoke.parser import ParserContext

from . import __version__, core_options, streams
from .executor import Executor
from .status import usage_status
from .tasks import ns


def bad_value(e: ValueError, argv: list[str]) -> str:
    """The ``Error:`` line for an option value Invoke could not cast (an INT option's),
    naming the option as typed."""
    text = str(e)
    if not text.startswith("invalid literal for int()"):
        return f"Error: invalid option value: {text}"
    value = text.split(": ", 1)[-1].strip("'")
    flag = "an INT option"
    for before, word in zip(["", *argv], argv, strict=False):
        if word.startswith("-") and "=" in word and word.split("=", 1)[1] == value:
            flag = word.split("=", 1)[0]
        elif word == value and before.startswith("-"):
            flag = before
    return f"Error: {flag} must be a whole number, not {value!r}"


class CleanErrors:
    """Program mixin: option and config-file mistakes are one ``Error:`` line, exit 64
    (3 when only ``health`` was asked for, as Nagios plugins do).

    invoke prints parse errors without a prefix (exit 1), silently ignores a
    ``-f`` path that does not exist (an operator's typo would run with the
    defaults) and shows a traceback for bad YAML.
    """

    args: Any
    argv: list[str]

    def named_tasks(self) -> list[str]:
        """The tasks asked for: as parsed, or (when parsing failed) the words of the command
        line that name one."""
        parsed = getattr(self, "tasks", None)
        if parsed:
            return [str(context.name) for context in parsed]
        collection = getattr(self, "collection", None) or getattr(self, "namespace", None)
        names = set(collection.task_names) if collection is not None else set()
        return [word for word in (getattr(self, "argv", None) or [])[1:] if word in names]

    def usage_code(self) -> int:
        return int(usage_status(self.named_tasks()))

    def parse_core(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().parse_core(*args, **kwargs)  # type: ignore[misc]
        except ParseError as e:
            raise Exit(f"Error: {e}", code=self.usage_code()) from None
        except ValueError as e:  # a core option value invoke could not cast (-T abc)
            raise Exit(bad_value(e, list(self.argv or [])), code=self.usage_code()) from None

    def parse_tasks(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().parse_tasks(*args, **kwargs)  # type: ignore[misc]
        except ParseError as e:
            context = getattr(e, "context", None)
            name = getattr(context, "name", None)
            code = int(usage_status([name])) if name else self.usage_code()
            raise Exit(f"Error: {e}", code=code) from None
        except ValueError as e:  # an option value invoke could not cast
            raise Exit(bad_value(e, list(self.argv or [])), code=self.usage_code()) from None

    def parse_cleanup(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().parse_cleanup(*args, **kwargs)  # type: ignore[misc]
        except ParseError as e:  # --help NAME of no task
            raise Exit(f"Error: {e}", code=self.usage_code()) from None

    def update_config(self, *args: Any, **kwargs: Any) -> Any:
        path = self.args.config.value
        if path and not os.path.isfile(path):
            raise Exit(f"Error: config file {path} not found", code=self.usage_code())
        try:
            return super().update_config(*args, **kwargs)  # type: ignore[misc]
        except Exit:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise Exit(f"Error: cannot read config file {path}: {first}", code=self.usage_code()) from None


def long_name(arg: Any) -> str:
    """An argument's long name (Fabric's ``-t`` is named ``t`` first)."""
    return next((name for name in arg.names if len(name) > 1), str(arg.name))


class CoreFlags:
    """Program mixin: Invoke's and Fabric's core flags tell the truth (`quilt_ops.core_options`).

    Refused flags end the run before the config is read (so before any prompt) and are
    left out of ``--help``; ``-R`` becomes each task's ``--dry-run``; the help of the
    flags quilt-ops honours in its own way says what they do here.
    """

    args: Any
    core: Any
    tasks: Any

    def parse_core_args(self) -> None:
        """Refuses ``-d`` before Invoke turns its debug log on (right after this parse)."""
        super().parse_core_args()  # type: ignore[misc]
        if self.args.debug.value:
            refused = core_options.refusal({"debug": True}) or ""
            raise ParseError(refused.removeprefix("Error: "))

    def core_args(self) -> list[Any]:
        args: list[Any] = super().core_args()  # type: ignore[misc]
        for arg in args:
            if long_name(arg) in core_options.HELP:
                arg.help = core_options.HELP[long_name(arg)]
        return args

    def shown_core_args(self) -> list[Any]:
        return [arg for arg in self.core_args() if long_name(arg) not in core_options.REFUSED]

    def print_help(self) -> None:
        """Invoke's help, without the refused flags."""
        bundled = getattr(self, "namespace", None) is not None
        suffix = "<subcommand> [--subcommand-opts] ..." if bundled else "task1 [--task1-opts] ... taskN [--taskN-opts]"
        print(f"Usage: {self.binary} [--core-opts] {suffix}")  # type: ignore[attr-defined]
        print("")
        print("Core options:")
        print("")
        self.print_columns(ParserContext(args=self.shown_core_args()).help_tuples())  # type: ignore[attr-defined]
        if bundled:
            self.list_tasks()  # type: ignore[attr-defined]

    def update_config(self, *args: Any, **kwargs: Any) -> Any:
        given = {name: self.args[name].value for name in core_options.REFUSED if name in self.args}
        remainder = self.core.remainder if self.core and not self.args.complete.value else ""
        code = int(usage_status([str(context.name) for context in self.tasks or []]))
        refused = core_options.refusal(given, remainder)
        if refused:
            raise Exit(refused, code=code)
        if self.args.dry.value:
            contexts = list(self.tasks or [])
            refused = core_options.dry_refusal(
                True,
                [
                    (str(context.name), [arg.attr_name or arg.name for arg in context.args.values()])
                    for context in contexts
                ],
            )
            if refused:
                raise Exit(refused, code=code)
            for context in contexts:
                context.args[core_options.DRY_RUN].value = True
        return super().update_config(*args, **kwargs)  # type: ignore[misc]


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


class QuiltOps(CleanErrors, CoreFlags, LocalFlag, Fab):
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
    """Runs ``quilt-ops ARGV...`` in this process; returns the exit status.

    A closed stdout while Invoke prints (``--help | head -1``) ends quietly with 0: what
    was asked for was done, its reader stopped reading (see `quilt_ops.streams`).
    """
    try:
        program().run(["quilt-ops", *argv], exit=True)
    except SystemExit as e:
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BrokenPipeError:
        streams.stdout_closed()
        return 0
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
        fab.__class__ = type("QuiltFab", (CleanErrors, CoreFlags, LocalFlag, type(fab)), {})
        if getattr(fab, "argv", None):
            try:
                fab.parse_core_args()
            except ParseError as e:  # a refused core flag (fab turned -d's log on before the fabfile)
                raise Exit(f"Error: {e}", code=fab.usage_code()) from None
