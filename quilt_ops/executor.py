"""How quilt-ops' tasks are executed: once, across all hosts, with clean config errors.

Fabric's own executor calls a task once per ``-H`` host, one after the other,
each with its own Connection. quilt-ops' tasks take the whole host list
instead, so they can run hosts concurrently and print one summary. This uses
the extension points Fabric's executor uses: `Executor.expand_calls` clones
each call into a `HostsCall` whose `make_context` puts the ``-H`` hosts into
``quilt.hosts``, the way Fabric's ``ConnectionCall`` makes a Connection.
invoke's own `Executor.execute` does the rest (pre/post tasks, deduplication).

It also turns config that invoke cannot load (a mapping over a list, an
uncastable ``FABRIC_QUILT_*`` variable) into one ``Error:`` line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import invoke
from invoke.config import AmbiguousMergeError
from invoke.exceptions import Exit, UncastableEnvVar

from .config import DEFAULTS
from .status import ExitStatus, usage_status

ENV_PREFIX = "FABRIC_QUILT_"


def check_environment(environ: Mapping[str, str] = os.environ) -> None:
    """Refuses FABRIC_QUILT_* variables invoke cannot cast, naming the variable."""
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in DEFAULTS:
            continue  # invoke ignores variables that match no setting
        default = DEFAULTS[key]
        if isinstance(default, bool):
            # invoke reads every value but "0" and "" as true: "false" would switch the flag on.
            if value.strip().lower() in ("false", "no", "off", "f", "n"):
                raise Exit(
                    f"Error: {name}={value}: quilt.{key} would be true (only 0 or an empty value is false)",
                    code=int(ExitStatus.USAGE),
                )
            continue
        if isinstance(default, (list, dict)):
            raise Exit(
                f"Error: {name}: quilt.{key} cannot be set from the environment; set it in fabric.yaml",
                code=int(ExitStatus.USAGE),
            )
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            try:
                float(value)
            except ValueError:
                raise Exit(
                    f"Error: {name}: config key 'quilt.{key}' must be a number, not {value!r}",
                    code=int(ExitStatus.USAGE),
                ) from None


def mismatched_key(config: Any) -> str | None:
    """The quilt key whose value in some config file cannot merge with its default.

    invoke refuses to merge a mapping over a list (and the reverse) without
    saying which key; this finds it in the file layers.
    """
    for layer in ("_system", "_user", "_project", "_runtime"):
        data = getattr(config, layer, None) or {}
        section = data.get("quilt") if isinstance(data, dict) else None
        if not isinstance(section, dict):
            continue
        for key, value in section.items():
            default = DEFAULTS.get(key)
            if isinstance(default, dict) != isinstance(value, dict):
                return str(key)
    return None


#: The one line for ``-H`` with ``--local``.
LOCAL_WITH_HOSTS = "Error: --local (quilt.local) runs the tasks on this machine, without SSH: it takes no -H"


class HostsCall(invoke.Call):
    """A call whose context carries the ``-H`` hosts in ``quilt.hosts``, and ``--local`` in ``quilt.local``."""

    def __init__(self, *args: Any, hosts: list[str] | None = None, local: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hosts = list(hosts or [])
        self.local = local

    def clone_data(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clone_data()
        data["hosts"] = self.hosts
        data["local"] = self.local
        return data

    def make_context(self, config: Any) -> Any:
        if self.hosts and (self.local or config.quilt.get("local") is True):
            raise Exit(LOCAL_WITH_HOSTS, code=int(usage_status([self.task.name])))
        if self.hosts:
            config.quilt.hosts = list(self.hosts)
        if self.local:
            config.quilt.local = True
        return super().make_context(config)


class Executor(invoke.Executor):
    """Calls each task once; ``-H a,b`` becomes ``quilt.hosts``, ``--local`` ``quilt.local``."""

    #: What a bad option or config exits with (UNKNOWN when only health runs).
    usage: ExitStatus = ExitStatus.USAGE

    def execute(self, *tasks: Any) -> Any:
        self.usage = usage_status(str(getattr(task, "name", None) or task) for task in tasks)
        try:
            check_environment()
        except Exit as e:
            raise Exit(e.message, code=int(self.usage)) from None
        try:
            return super().execute(*tasks)
        except AmbiguousMergeError:
            key = mismatched_key(self.config)
            where = f"config key 'quilt.{key}'" if key else "a config value"
            raise Exit(
                f"Error: {where} has the wrong type (see the defaults in the README)", code=int(self.usage)
            ) from None
        except UncastableEnvVar as e:
            raise Exit(f"Error: a {ENV_PREFIX}* variable is invalid: {e}", code=int(self.usage)) from None

    def expand_calls(self, calls: Any) -> list[Any]:
        hosts, local = self.cli_hosts(), self.cli_local()
        if hosts and local:
            raise Exit(LOCAL_WITH_HOSTS, code=int(self.usage))
        return [
            call.clone(into=HostsCall, with_={"hosts": hosts, "local": local}) for call in super().expand_calls(calls)
        ]

    def cli_hosts(self) -> list[str]:
        core = self.core
        try:
            value = core[0].args.hosts.value if core else None
        except (AttributeError, IndexError, KeyError, TypeError):
            return []
        return [h.strip() for h in (value or "").split(",") if h.strip()]

    def cli_local(self) -> bool:
        """Whether ``--local`` was given (see `quilt_ops.cli.LocalFlag`)."""
        core = self.core
        try:
            return bool(core[0].args.local.value) if core else False
        except (AttributeError, IndexError, KeyError, TypeError):
            return False
