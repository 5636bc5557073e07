"""Resuming a rotation a killed run left: its journal on the host finished or rolled back.

What to do is decided by `rotation_plan.resume` from the journal, the host's key and IAM's
keys (for the IAM user derived afresh, never the journal's word); this runs the decision
through the driver's `act` (`quilt_ops.rotation`), so that a failure is compensated as the
failure policy says, and then plans afresh from what the host and IAM hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import health, rotation_host
from .errors import QuiltError, Refused
from .journal import Journal, Step
from .rotation_errors import RotationReport
from .rotation_host import HostState
from .rotation_plan import Deletion, Resume, ResumeDecision
from .rotation_preflight import Ready, Resumable, check_health
from .status import ExitStatus

if TYPE_CHECKING:
    from .rotation import Rotation


def resume_first(rotation: Rotation, unfinished: Resumable) -> RotationReport | Ready:
    """Resumes the journal found; then plans from what the host and IAM hold now."""
    finished = resume(rotation, unfinished.state, unfinished.journal)
    if finished is not None:
        return finished
    # The resume may have put the old file back: plan from what the host holds now.
    state = rotation.state = rotation_host.gather(rotation.place)
    if state.env is None or state.journal is not None:
        raise Refused(
            f"{rotation.settings.env_file} on {rotation.host} changed while it was being resumed; run rotate-keys again"
        )
    rotation.secret.reload()
    plan = rotation.secret.plan(state.host_key)
    check_health(rotation.host, health.collect(rotation.place.target, rotation.settings, env_file=False))
    return Ready(state, state.env, plan)


def resume(rotation: Rotation, state: HostState, found: Journal) -> RotationReport | None:
    """Finishes or rolls back a run that died; returns a report if it finished one."""
    rotation.journal = found
    rotation.reporter.step(
        f"found an unfinished rotation (step '{found.step}', started {found.started:%Y-%m-%dT%H:%M:%SZ} by {found.who})"
    )
    decision = rotation.secret.resume_decision(found, state.host_key)
    rotation.audit.update(
        resumed=found.step.value,
        decision=decision.action.value,
        old_key_id=found.old_key_id,
        new_key_id=found.new_key_id or decision.delete_new,
    )
    rotation.secret.allowed |= {k for k in (decision.delete_new, decision.retire_old) if k}
    old, new = found.old_key_id, found.new_key_id or "the new key"
    with rotation.step("resume"):
        if decision.action == Resume.ROLL_BACK:
            rotation.act(
                Step.RESUME_ROLLBACK,
                lambda: roll_back(rotation, decision),
                old,
                new,
                because=lambda e: "resuming an unfinished rotation",
            )
            notes(rotation, decision)
            withheld(rotation, decision, "rolled back")
            rotation.reporter.step("rolled the unfinished rotation back; now rotating afresh")
            return None
        if decision.action == Resume.FINISH_ROLLBACK:
            rotation.act(
                Step.RESUME_ROLLBACK,
                lambda: rotation.undo(found, old, decision.delete_new or "", state.host_key),
                old,
                new,
                because=lambda e: "resuming a rollback",
            )
            withheld(rotation, decision, "rolled back")
            rotation.reporter.step("finished the interrupted rollback; now rotating afresh")
            return None
        report = finish(rotation, found, decision)
        withheld(rotation, decision, "finished")
        return report


def withheld(rotation: Rotation, decision: ResumeDecision, done: str) -> None:
    """Ends the run (exit 4) naming the keys the journal alone would have had deleted."""
    if not decision.withheld:
        return
    user = rotation.secret.user
    commands = "; ".join(f"aws iam delete-access-key --user-name {user} --access-key-id {k}" for k in decision.withheld)
    raise QuiltError(
        f"the unfinished rotation on {rotation.host} was {done} without deleting {', '.join(decision.withheld)}: "
        f"{rotation.settings.rotations_file} does not record that rotation for {user} "
        f"(the journal on the host alone proves nothing); if it is that rotation's, delete it: {commands}",
        ExitStatus.FAILED,
    )


def finish(rotation: Rotation, found: Journal, decision: ResumeDecision) -> RotationReport:
    """The host holds the new key: require it running healthy, then retire the old one."""
    new, old = decision.runs_on, found.old_key_id

    def running() -> None:
        if not rotation.steps.runs_healthy_on(new):
            rotation.steps.restart_on(new)

    rotation.act(Step.WRITTEN, running, old, new, because=lambda e: f"resuming: {e}")
    if decision.retire_old:
        rotation.finish(found, decision.retire_old, new, found.keep_old)
    else:
        rotation.clear_journal()
    user = rotation.secret.user
    message = f"finished the unfinished rotation {old} -> {new} for {user}"
    return RotationReport(rotation.host, "finished", user, old, new, message)


def roll_back(rotation: Rotation, decision: ResumeDecision) -> None:
    if not rotation.steps.runs_healthy_on(decision.runs_on):
        rotation.steps.restart_on(decision.runs_on)
    if decision.delete_new:
        rotation.secret.retire(Deletion(decision.delete_new, "left by the unfinished rotation"), decision.runs_on)
    rotation.clear_journal()


def notes(rotation: Rotation, decision: ResumeDecision) -> None:
    for key_id in decision.unproven:
        rotation.reporter.step(
            f"note: {key_id} was created after the unfinished rotation started but it did not "
            f"record it; if it is that run's, delete it: aws iam delete-access-key "
            f"--user-name {rotation.secret.user} --access-key-id {key_id}"
        )
