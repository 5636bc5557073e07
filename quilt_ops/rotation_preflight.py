"""Before a rotation changes anything: lock and read the host, check it, plan; the dry run.

`prepare` takes the host lock (unless a dry run) and reads everything in one command
(`rotation_host.gather`); `preflight` refuses a host whose journal, env file or health
make a rotation unsafe, establishes the IAM user and plans (`key_rotation`), and answers
`Ready` (the plan) or `Resumable` (a journal a killed run left, which `rotation_resume`
finishes or rolls back first); `show_plan` shows the plan; `dry_run` all of it, changing
nothing. The driver (`quilt_ops.rotation`) calls these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import rotation_host
from .checks import HostHealth
from .envfile import BUCKET, EnvFile, EnvFileError
from .errors import Refused
from .hostfiles import Access, RemoteFile
from .journal import Journal
from .key_rotation import RotateOptions, plan_lines
from .keys import AwsError
from .reporting import Reporter
from .rotation_errors import Left, RotationReport, error
from .rotation_host import HostState, Place
from .rotation_plan import Plan
from .status import ExitStatus

if TYPE_CHECKING:
    from .rotation import Rotation


@dataclass(frozen=True)
class Ready:
    """A host that passed the pre-flight: what was read, its env file, and the plan."""

    state: HostState
    env: RemoteFile
    plan: Plan


@dataclass(frozen=True)
class Resumable:
    """A host that passed the pre-flight with a journal a killed run left: finished or rolled
    back first, the plan then follows from what IAM holds."""

    state: HostState
    env: RemoteFile
    journal: Journal


def prepare(place: Place, options: RotateOptions, reporter: Reporter) -> HostState:
    """Takes the lock (unless a dry run) and reads everything in one command."""
    if not options.dry_run:
        place.lock.acquire()
        place.locked = True
        reporter.step(f"locked {place.host}")
    state = rotation_host.gather(place)
    if state.access == Access.NONE and not options.dry_run:
        raise Refused(
            f"{place.settings.env_file} on {place.host} cannot be replaced safely: "
            f"{state.access_reason}; nothing was changed"
        )
    return state


def preflight(rotation: Rotation, state: HostState) -> Ready | Resumable:
    """Reads everything, changes nothing; raises `Refused` when it cannot go on safely.

    A journal found is checked against IAM before anything is done (and shown by a dry run).
    """
    with rotation.step("preflight"):
        env = check_env(rotation.place, state)
        try:
            rotation.secret.find(state.host_key, env)
            rotation.audit.update(iam_user=rotation.secret.user, old_key_id=state.host_key)
            rotation.secret.reload()
        except AwsError as e:
            raise error(rotation.facts(Left.NOTHING, str(e))) from None
        if state.journal is not None:
            decision = rotation.secret.resume_decision(state.journal, state.host_key)
            rotation.reporter.step(
                f"an unfinished rotation (step '{state.journal.step}') will be: {decision.action.value}"
            )
            return Resumable(state, env, state.journal)
        check_health(rotation.host, state.health)
        return Ready(state, env, rotation.secret.plan(state.host_key))


def check_env(place: Place, state: HostState) -> RemoteFile:
    """The env file, when the journal and the file allow a rotation; else `Refused`."""
    name, host = place.settings.env_file, place.host
    if state.journal_problem:
        raise Refused(
            f"a rotation journal {place.journal_name} exists on {host} but cannot be used "
            f"({state.journal_problem}); check {name} by hand, then remove the journal; nothing was changed"
        )
    if state.env is None:
        raise Refused(f"cannot read {name} on {host}: {state.env_problem}; nothing was changed")
    try:
        EnvFile(state.env.content).check_rotatable()
    except EnvFileError as e:
        raise Refused(f"{name} on {host} cannot be rotated safely: {e}; nothing was changed") from None
    return state.env


def check_health(host: str, report: HostHealth) -> None:
    """A rotation restarts the registry: refuse to start one on a host that is already down."""
    bad = [c for c in report.checks if c.status in (ExitStatus.CRITICAL, ExitStatus.UNKNOWN)]
    if bad:
        reasons = "; ".join(f"{c.name}: {c.summary}" for c in bad[:3])
        raise Refused(f"{host} is not healthy now ({reasons}); fix it first (fab restart); nothing was changed")


def show_plan(rotation: Rotation, ready: Ready, *extra: str) -> None:
    lines = plan_lines(ready.plan, rotation.settings, ready.state, EnvFile(ready.env.content).get(BUCKET))
    rotation.reporter.show([*lines, *extra])


def dry_run(rotation: Rotation, state: HostState) -> RotationReport:
    """What a real run would do, from what `prepare` read; nothing is changed."""
    host = rotation.host
    if state.access == Access.NONE:
        raise Refused(
            f"{rotation.settings.env_file} on {host} cannot be replaced safely: {state.access_reason}; "
            "a real run would refuse; nothing was changed"
        )
    checked = preflight(rotation, state)
    if isinstance(checked, Resumable):
        found = checked.journal
        rotation.reporter.show(
            [
                f"{host}: an unfinished rotation (step '{found.step}', started "
                f"{found.started:%Y-%m-%dT%H:%M:%SZ} by {found.who}) would be "
                "finished or rolled back first; the plan follows from what IAM holds then",
                f"{host}: dry run, nothing changed",
            ]
        )
        return RotationReport(host, "dry-run", rotation.secret.user, found.old_key_id)
    show_plan(rotation, checked, f"{host}: dry run, nothing changed")
    return RotationReport(host, "dry-run", checked.plan.iam_user, checked.plan.old_key.id)
