"""How quilt-ops' tasks are executed: once, across all hosts, with clean config errors.

Fabric's own executor calls a task once per ``-H`` host, one after the other,
each with its own Connection. quilt-ops' tasks take the whole host list instead
(from ``-H``, put into ``quilt.hosts``) so they can run hosts concurrently and
print one summary. This executor also turns an unusable ``FABRIC_QUILT_*``
variable into one ``Error:`` line instead of invoke's traceback.
"""

from __future__ import annotations

import os

import invoke
from invoke.config import AmbiguousMergeError
from invoke.exceptions import Exit, UncastableEnvVar

from .config import DEFAULTS
from .status import ExitStatus

ENV_PREFIX = "FABRIC_QUILT_"


def check_environment(environ: dict[str, str] = os.environ) -> None:
    """Refuses FABRIC_QUILT_* variables invoke cannot cast, naming the variable."""
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        default = DEFAULTS.get(key)
        if key not in DEFAULTS:
            continue  # invoke ignores variables that match no setting
        if isinstance(default, (list, dict)):
            raise Exit(f"Error: {name}: quilt.{key} cannot be set from the environment; set it in fabric.yaml",
                       code=int(ExitStatus.USAGE))
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            try:
                float(value)
            except ValueError:
                raise Exit(f"Error: {name}: config key 'quilt.{key}' must be a number, not {value!r}",
                           code=int(ExitStatus.USAGE)) from None


def mismatched_key(config) -> str | None:
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
                return key
    return None


class Executor(invoke.Executor):
    """Calls each task once; ``-H a,b`` becomes ``quilt.hosts``."""

    def execute(self, *tasks):
        check_environment()
        calls = self.expand_calls(self.normalize(tasks))
        direct = list(calls)
        hosts = self._cli_hosts()
        results = {}
        for call in calls:
            config = self.config
            try:
                config.load_collection(self.collection.configuration(call.called_as))
            except AmbiguousMergeError:
                key = mismatched_key(config)
                where = f"config key 'quilt.{key}'" if key else "a config value"
                raise Exit(f"Error: {where} has the wrong type (see the defaults in the README)",
                           code=int(ExitStatus.USAGE)) from None
            try:
                config.load_shell_env()
            except (UncastableEnvVar, ValueError) as e:
                raise Exit(f"Error: a {ENV_PREFIX}* variable is invalid: {e}",
                           code=int(ExitStatus.USAGE)) from None
            if hosts:
                config.quilt.hosts = hosts
            context = call.make_context(config)
            result = call.task(context, *call.args, **call.kwargs)
            if call in direct and call.autoprint:
                print(result)
            results[call.task] = result
        return results

    def _cli_hosts(self) -> list[str]:
        try:
            value = self.core[0].args.hosts.value
        except (AttributeError, IndexError, KeyError, TypeError):
            return []
        return [h.strip() for h in (value or "").split(",") if h.strip()]
