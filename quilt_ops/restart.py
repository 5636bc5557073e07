"""Recreate the registry's containers and wait until the host is healthy again.

The documented procedure is ``docker rm -f registry catalog registry-nginx``
then ``./start.sh``: an env file is read only when a container is created, and
nginx shares the registry's network namespace, so all three go together.
Before removing anything the start script and the env file are checked (the env
file with Docker's own rules, which refuse the whole file for one bad line), so a
restart that cannot succeed changes nothing: that takes one command of its own.

``quilt.restart_timeout`` bounds the whole restart: the start script (a real
one may pull images and migrate the database for minutes, or hang) is killed
on the host with everything it started when the time is up, before anything
else runs; the rest of the time goes to waiting for health, polled at most
every ``quilt.probe_interval`` (a Marketplace build may meter /healthcheck).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from invoke.runners import Result

from . import admin_env, containers, docker_access, health, sh, shell, stopping
from .checks import HostHealth
from .config import Settings
from .envfile import EnvFile
from .errors import ConnectionLost, NotStarted, QuiltError, RemoteTimeout
from .masking import Masker
from .remote import RemoteResult, Target
from .reporting import Reporter
from .shell import q
from .status import ExitStatus

#: The host side: ``restart_precheck`` and ``restart_run_start`` (``sh/restart.sh``).
SCRIPT = "restart.sh"


class RestartError(QuiltError):
    """The containers could not be recreated, or did not come back healthy."""


class NothingChanged(RestartError):
    """A pre-check failed; nothing was removed."""


class LostBeforeRemoval(ConnectionLost):
    """The connection dropped during the pre-checks: nothing was removed."""


class StoppedBeforeRemoval(stopping.Stopped):
    """Ctrl-C during the pre-checks: nothing was removed."""


@dataclass
class RestartReport:
    """How a restart went on one host."""

    host: str
    script_seconds: float
    total_seconds: float
    #: From the removal of the containers to the first good registry probe.
    downtime_seconds: float | None
    health: HostHealth
    #: The registry container's key ID after the restart (when asked for).
    key_in_effect: str | None = None
    output_tail: list[str] = field(default_factory=list)


def precheck_script(
    settings: Settings, guard: shell.Script | None = None, docker: docker_access.DockerAccess | None = None
) -> shell.Script:
    """The first command: the start script and the env file checked, the env file sent back
    (checked locally with Docker's own rules, and its values used for masking)."""
    docker = docker or docker_access.ScriptDocker(settings)
    s = guard or shell.Script(settings)
    docker.prepare(s, required=True)
    s.files(settings.env_file, write=False)
    s.add(
        admin_env.script(admin_env.OWNED),
        sh.load(SCRIPT),
        f"restart_precheck {q(settings.start_script)} {q(settings.env_file)}",
    )
    s.send_file(settings.env_file, "env")
    return s.add("say ready")


def script(settings: Settings, guard: shell.Script | None = None) -> shell.Script:
    """The second command: ``docker rm -f`` of the three containers, then the start script."""
    s = guard or shell.Script(settings)
    docker_access.ScriptDocker(settings).prepare(s, required=True)
    s.add("say removing", containers.remove_command(settings.containers.names))
    return _run_start(s, settings)


def start_script(settings: Settings, guard: shell.Script | None = None) -> shell.Script:
    """The start script alone, in a command of its own (after the SDK removed the containers)."""
    return _run_start(guard or shell.Script(settings), settings)


def _run_start(s: shell.Script, settings: Settings) -> shell.Script:
    return s.add(admin_env.script(admin_env.OWNED), sh.load(SCRIPT), f"restart_run_start {q(settings.start_script)}")


PRECHECK_MESSAGES = {
    "missing-script": "start script {script} not found in {where}",
    "script-not-executable": "start script {script} is not executable",
    "env-unreadable": "env file {env} is missing or unreadable",
    "not-owned": "start script {script}, or a folder above it, can be written by someone other than root and "
    "the owner of {where}: refusing to run it as root (issue 18)",
}


def tail(text: str, lines: int = 8) -> list[str]:
    """The last non-blank lines of some output (Invoke's `Result.tail`, blank lines dropped)."""
    kept = "\n".join(line for line in text.splitlines() if line.strip())
    return Result(stdout=kept).tail("stdout", lines).strip("\n").splitlines()


def recreate(  # noqa: C901, PLR0915 - the documented procedure step by step, each with what a failure left; to split
    target: Target,
    settings: Settings,
    reporter: Reporter,
    timeout: float,
    guard: shell.Script | None = None,
    masker: Masker | None = None,
) -> tuple[float, list[str]]:
    """Removes and recreates the containers; returns the time the start script took and
    the (masked) tail of its output. Raises `NothingChanged` when a pre-check fails."""
    names = " ".join(settings.containers.names)
    docker = docker_access.of(target, settings)
    # Two commands, each with its own guard: the pre-checks (whose env file is checked
    # here, by Docker's rules, before anything is removed), then the removal and the start.
    second_guard = copy.deepcopy(guard) if guard is not None else None
    built = precheck_script(settings, guard, docker)
    started = time.monotonic()
    mask = masker or Masker()

    def run(command: shell.Script, seconds: float, prechecks: bool = False) -> RemoteResult:
        try:
            return target.run(
                command.text(),
                timeout=seconds,
                what=settings.start_script,
                on_wait=lambda t: reporter.waiting(f"{settings.start_script} still running ({t:.0f}s)"),
            )
        except RemoteTimeout:
            if prechecks:
                raise NothingChanged(
                    f"the pre-checks on {target.name} did not finish within {seconds:.0f}s; nothing was changed"
                ) from None
            cap = getattr(getattr(target, "run_options", None), "command_timeout", None)
            bound = cap if cap is not None and cap < seconds else timeout  # -T, or the restart's own
            raise RestartError(
                f"{settings.start_script} on {target.name} did not finish within {bound:.0f}s; "
                "it was stopped there, with everything it started"
            ) from None
        finally:
            reporter.done()

    # Until the removal starts, an interruption leaves the containers as they were: the
    # exceptions say so (and still are what the caller handles: a lost connection, Ctrl-C).
    try:
        result = run(built, timeout, prechecks=True)
    except NotStarted:
        raise
    except ConnectionLost as e:
        raise LostBeforeRemoval(str(e)) from None
    except KeyboardInterrupt:
        raise StoppedBeforeRemoval() from None
    output = shell.parse(result.stdout_bytes, built.marker)
    shell.raise_for_failure(output, target.name, settings)
    precheck = output.first("precheck")
    if precheck is not None:
        reason = precheck.words[0] if precheck.words else ""
        text = PRECHECK_MESSAGES.get(reason, "pre-check failed: {reason}").format(
            script=settings.start_script, where=settings.where, env=settings.env_file, reason=reason
        )
        raise NothingChanged(f"{text} on {target.name}; nothing was changed")
    env = shell.blob(output, "env")
    if env is None or output.first("ready") is None:
        raise NothingChanged(
            f"env file {settings.env_file} on {target.name} could not be read whole; nothing was changed"
        )
    env_file = EnvFile(env)
    mask.add(*env_file.values())
    refused = env_file.refused_by_docker()
    if refused:
        raise NothingChanged(
            f"Docker would refuse env file {settings.env_file} on {target.name} ({'; '.join(refused[:3])}), "
            "so the containers could not be created again; nothing was changed"
        )
    reporter.step(f"removing {names} and running {settings.start_script}")
    if docker.in_script:
        built = script(settings, second_guard)
    else:  # the SDK removes the containers; the start script runs in a command of its own
        docker.remove(settings.containers.names)
        built = start_script(settings, second_guard)
    result = run(built, max(1.0, timeout - (time.monotonic() - started)))
    output = shell.parse(result.stdout_bytes, built.marker)
    shell.raise_for_failure(output, target.name, settings)
    seconds = time.monotonic() - started
    script_output = output.first("script")
    lines = tail(mask(script_output.text if script_output else ""))
    exit_section = output.first("scriptexit")
    if output.first("script") is None:
        raise RestartError(
            f"could not start {settings.start_script} on {target.name}: "
            f"{mask(result.stderr.strip())[:200] or 'no output'}"
        )
    if exit_section is None or result.exited != 0:
        shown = " | ".join(lines[-4:]) or "no output"
        raise RestartError(f"{settings.start_script} failed on {target.name} (exit code {result.exited}): {shown}")
    reporter.step(f"{settings.start_script} finished in {seconds:.1f}s")
    return seconds, lines


def wait_healthy(
    target: Target, settings: Settings, reporter: Reporter, timeout: float, since: float, key_in_effect: bool = False
) -> tuple[HostHealth, float | None, health.Reading]:
    """Polls the containers and probes until all pass or ``timeout`` runs out.

    Returns the last health, the registry's downtime measured from ``since``
    (None if the registry never answered), and the last reading.
    """
    deadline = time.monotonic() + timeout
    registry_up: float | None = None
    while True:
        reading = health.look(target, settings, env_file=False, key_in_effect=key_in_effect)
        report = health.evaluate(target.name, reading, settings, env_file=False)
        now = time.monotonic()
        probe = health.registry_probe(report)
        if registry_up is None and probe is not None and probe.status == ExitStatus.OK:
            registry_up = now
        failing = report.failing()
        # The next poll comes a whole interval after this one ended, so two probes are
        # never closer than quilt.probe_interval, however long the script took.
        if not failing or now + settings.probe_interval > deadline:
            reporter.done()
            return report, (registry_up - since) if registry_up else None, reading
        waiting_on = ", ".join(c.name for c in failing[:3])
        reporter.waiting(f"waiting for health ({waiting_on}); {deadline - now:.0f}s left")
        stopping.sleep(settings.probe_interval)


def restart(
    target: Target,
    settings: Settings,
    reporter: Reporter,
    timeout: float | None = None,
    guard: shell.Script | None = None,
    masker: Masker | None = None,
    key_in_effect: bool = False,
) -> RestartReport:
    """Recreates the containers on one host and waits until it is healthy.

    Raises `RestartError` when the start script fails or health does not pass
    within ``timeout`` (default ``quilt.restart_timeout``), counted from the start.
    """
    timeout = settings.restart_timeout if timeout is None else timeout
    started = time.monotonic()
    script_seconds, output = recreate(target, settings, reporter, timeout, guard, masker)
    remaining = max(timeout - (time.monotonic() - started), settings.probe_interval)
    report, downtime, reading = wait_healthy(
        target, settings, reporter, remaining, since=started, key_in_effect=key_in_effect
    )
    total = time.monotonic() - started
    failing = report.failing()
    if failing:
        reasons = "; ".join(f"{c.name}: {c.summary}" for c in failing)
        raise RestartError(
            f"{target.name} did not become healthy within {timeout:.0f}s after {settings.start_script}: {reasons}"
        )
    down = f"; registry probe down {downtime:.1f}s" if downtime is not None else ""
    reporter.step(f"healthy after {total:.1f}s{down}")
    return RestartReport(target.name, script_seconds, total, downtime, report, reading.key_in_effect, output)
