"""Recreate the registry's containers and wait until the host is healthy again.

The documented procedure is ``docker rm -f registry catalog registry-nginx``
then ``./start.sh``: an env file is read only when a container is created, and
``registry-nginx`` shares the registry's network namespace, so all three go
together. Before removing anything the start script and the env file are
checked, so a restart that cannot succeed changes nothing.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field

from fabric import Connection

from . import containers, health, ssh
from .config import Settings
from .errors import QuiltError
from .output import Progress
from .status import ExitStatus

POLL_INTERVAL = 0.5
#: Exit codes of the pre-checks in `command`, so their failure is told apart.
MISSING_SCRIPT, NOT_EXECUTABLE, MISSING_ENV = 90, 91, 92


class RestartError(QuiltError):
    """The containers could not be recreated, or did not come back healthy."""


@dataclass
class RestartReport:
    """How a restart went on one host."""

    host: str
    script_seconds: float
    total_seconds: float
    #: From the removal of the containers to the first good registry probe.
    downtime_seconds: float | None
    health: health.HostHealth
    output_tail: list[str] = field(default_factory=list)


def command(settings: Settings) -> str:
    """One remote command: pre-checks, ``docker rm -f``, the start script."""
    script = shlex.quote(settings.start_script)
    env = shlex.quote(settings.env_file)
    body = (
        f"if [ ! -e {script} ]; then echo 'start script {settings.start_script} not found'; exit {MISSING_SCRIPT}; fi; "
        f"if [ ! -x {script} ]; then echo 'start script {settings.start_script} is not executable'; "
        f"exit {NOT_EXECUTABLE}; fi; "
        f"if [ ! -r {env} ]; then echo 'env file {settings.env_file} is missing or unreadable'; exit {MISSING_ENV}; fi; "
        f"{containers.remove_command(settings.containers)} && {script} 2>&1"
    )
    return ssh.in_dir(settings, body)


def tail(text: str, lines: int = 8) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()][-lines:]


def recreate(cxn: Connection, settings: Settings, progress: Progress) -> tuple[float, list[str]]:
    """Removes and recreates the containers; returns the time taken and the output tail."""
    progress.step(f"removing {' '.join(settings.containers)} and running {settings.start_script}")
    started = time.monotonic()
    result = ssh.run(cxn, command(settings), timeout=max(settings.restart_timeout, 60))
    seconds = time.monotonic() - started
    output = tail(result.stdout + result.stderr)
    if result.exited in (MISSING_SCRIPT, NOT_EXECUTABLE, MISSING_ENV):
        raise RestartError(f"{output[-1] if output else 'pre-check failed'} on {ssh.describe(cxn)}; "
                           "nothing was changed")
    if not result.ok:
        shown = " | ".join(output[-4:]) or "no output"
        raise RestartError(f"{settings.start_script} failed on {ssh.describe(cxn)} "
                           f"(exit code {result.exited}): {shown}")
    progress.step(f"{settings.start_script} finished in {seconds:.1f}s")
    return seconds, output


def wait_healthy(cxn: Connection, settings: Settings, progress: Progress, timeout: float,
                 since: float) -> tuple[health.HostHealth, float | None]:
    """Polls the containers and probes until all pass or ``timeout`` runs out.

    Returns the last health and the registry's downtime measured from ``since``
    (None if the registry never answered).
    """
    deadline = time.monotonic() + timeout
    registry_up: float | None = None
    while True:
        report = health.collect(cxn, settings, env_file=False)
        now = time.monotonic()
        registry_probe = report.check("probe registry")
        if registry_up is None and registry_probe is not None and registry_probe.status == ExitStatus.OK:
            registry_up = now
        failing = report.failing()
        if not failing:
            progress.done()
            return report, (registry_up - since) if registry_up else None
        if now >= deadline:
            progress.done()
            return report, (registry_up - since) if registry_up else None
        waiting_on = ", ".join(c.name for c in failing[:3])
        progress.waiting(f"waiting for health ({waiting_on}); {deadline - now:.0f}s left")
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


def restart(cxn: Connection, settings: Settings, progress: Progress, timeout: float | None = None) -> RestartReport:
    """Recreates the containers on one host and waits until it is healthy.

    Raises `RestartError` when the start script fails or health does not pass
    within ``timeout`` (default ``quilt.restart_timeout``).
    """
    timeout = settings.restart_timeout if timeout is None else timeout
    started = time.monotonic()
    script_seconds, output = recreate(cxn, settings, progress)
    report, downtime = wait_healthy(cxn, settings, progress, timeout, since=started)
    total = time.monotonic() - started
    failing = report.failing()
    if failing:
        reasons = "; ".join(f"{c.name}: {c.summary}" for c in failing)
        raise RestartError(f"{ssh.describe(cxn)} did not become healthy within {timeout:.0f}s after "
                           f"{settings.start_script}: {reasons}")
    down = f"; registry probe down {downtime:.1f}s" if downtime is not None else ""
    progress.step(f"healthy after {total:.1f}s{down}")
    return RestartReport(ssh.describe(cxn), script_seconds, total, downtime, report, output)
