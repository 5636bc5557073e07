"""Rotating a secret in a host's env file, so that nothing is ever lost: the driver.

For each step the driver records it (the journal on the host, and the audit record),
acts, and when the act fails asks the failure policy (`rotation_policy.after_failure`)
and runs the compensation it names: nothing, forget the journal, abandon the new secret,
leave it for the next run, roll back, or report that the rollback is stuck. The steps:
lock the host and read everything in one command (`rotation_host.gather`); finish or
roll back what a dead run left; plan; create the new secret, verify it, write the env file
atomically, recreate the containers and require health on the new secret, retire the old.

What is rotated is not known here: `key_rotation.AccessKeys` (RegistryUser's AWS key)
finds the owner, plans, creates, verifies and retires, and checks every deletion right
before its call (`rotation_plan.check_deletion`). Host operations are
`quilt_ops.rotation_host`; the errors and their wording are `quilt_ops.rotation_errors`.

Invariants kept at every instant:
- the host's env file names a key that IAM accepts: a key is deleted only after
  neither the file nor the running registry uses it;
- the env file is the complete old or the complete new file (see `hostfiles`),
  with its owner, group and mode;
- a journal on the host (next to the env file, 0600, no secret) says how far a
  run got, so the next run, from any machine, finishes it or rolls it back,
  whatever killed it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NoReturn, TypeVar

from . import health, hostfiles, rotation_host, stopping
from .checks import HostHealth
from .config import Settings
from .envfile import BUCKET, EnvFile, EnvFileError
from .errors import QuiltError, Refused
from .hostfiles import Access, HostFileError
from .journal import Journal, JournalBehind, Step
from .key_rotation import AccessKeys, RotateOptions, plan_lines, shared_key_refusal
from .keys import AwsError, KeyStore, NewKey
from .local import again
from .lock import HostLock, who_am_i
from .masking import Masker
from .remote import Target
from .reporting import Reporter
from .restart import RestartError
from .rotation_errors import (
    Facts,
    Interrupted,
    Left,
    RollbackFailed,
    RolledBack,
    RotationError,
    RotationFailed,
    Unfinished,
    error,
)
from .rotation_host import HostState, Place
from .rotation_plan import Deletion, Plan, Resume, ResumeDecision
from .rotation_policy import Failure, Recovery, after_failure, classify
from .sh import Exit
from .status import ExitStatus

__all__ = [
    "HostState",
    "Interrupted",
    "RollbackFailed",
    "RolledBack",
    "RotateOptions",
    "Rotation",
    "RotationError",
    "RotationFailed",
    "RotationReport",
    "Unfinished",
    "plan_lines",
    "shared_key_refusal",
]


T = TypeVar("T")


@dataclass
class RotationReport:
    host: str
    outcome: str
    iam_user: str | None = None
    old_key_id: str | None = None
    new_key_id: str | None = None
    message: str = ""
    lines: list[str] = field(default_factory=list)


class Rotation:
    """One rotation on one host: `prepare`, then `execute` (or `dry_run`), then `close`."""

    def __init__(
        self, target: Target, settings: Settings, store: KeyStore, options: RotateOptions, reporter: Reporter
    ) -> None:
        self.settings, self.options, self.reporter = settings, options, reporter
        # The target's own masker: what ``-e`` echoes on this host is masked with it too.
        self.place = Place(
            target, settings, HostLock(target, settings, "rotate-keys"), getattr(target, "masker", None) or Masker()
        )
        self.secret = AccessKeys(store, options, settings, target, reporter, self.place.masker)
        self.host = target.name
        #: The command that finishes what this run leaves (in its messages).
        self.again = again(target, "rotate-keys")
        self.journal: Journal | None = None
        self.state: HostState | None = None
        #: The audit record of this run (no secret ever goes in).
        self.audit: dict[str, Any] = {"steps": []}
        self.current_step = "start"

    @property
    def lock(self) -> HostLock:
        return self.place.lock

    def find_user(self, host_key: str | None, bucket: str | None) -> tuple[str, str]:
        return self.secret.find_user(host_key, bucket)

    # -- bookkeeping -------------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A step of the audit record (timed), and the step an interruption names."""
        self.current_step = name
        started = time.monotonic()
        try:
            yield
        finally:
            self.audit["steps"].append({"step": name, "seconds": round(time.monotonic() - started, 3)})

    def record(self, current: Journal) -> None:
        """The journal on the host says ``current`` (in memory first: a failure leaves it as
        far as it may have got)."""
        self.journal = current
        rotation_host.save_journal(self.place, current)

    def facts(self, left: Left, reason: str = "", old: str = "", new: str = "", **more: Any) -> Facts:
        return Facts(
            host=self.host,
            step=self.current_step,
            left=left,
            reason=reason,
            old_key_id=old,
            new_key_id=new,
            env_file=self.settings.env_file,
            again=self.again,
            **more,
        )

    # -- reading the host ----------------------------------------------------------------------

    def prepare(self) -> HostState:
        """Takes the lock (unless a dry run) and reads everything in one command."""
        if not self.options.dry_run:
            self.lock.acquire()
            self.place.locked = True
            self.reporter.step(f"locked {self.host}")
        self.state = rotation_host.gather(self.place)
        if self.state.access == Access.NONE and not self.options.dry_run:
            raise Refused(
                f"{self.settings.env_file} on {self.host} cannot be replaced safely: "
                f"{self.state.access_reason}; nothing was changed"
            )
        return self.state

    def preflight(self) -> Plan | None:
        """Reads everything, changes nothing; raises `Refused` when it cannot go on safely.

        Returns the plan, or None when an unfinished rotation must be resumed
        first (the plan is made after that, from what IAM then holds).
        """
        state = self.state
        assert state is not None
        with self.step("preflight"):
            self.check_env(state)
            try:
                self.secret.find(state)
                self.audit.update(iam_user=self.secret.user, old_key_id=state.host_key)
                self.secret.reload()
            except AwsError as e:
                raise error(self.facts(Left.NOTHING, str(e))) from None
            if state.journal is not None:
                # Checked against IAM before anything is done (and shown by a dry run).
                decision = self.secret.resume_decision(state.journal, state.host_key)
                self.reporter.step(
                    f"an unfinished rotation (step '{state.journal.step}') will be: {decision.action.value}"
                )
                return None
            self.check_health(state.health)
            return self.secret.plan(state.host_key)

    def check_env(self, state: HostState) -> None:
        name = self.settings.env_file
        if state.journal_problem:
            raise Refused(
                f"a rotation journal {self.place.journal_name} exists on {self.host} but cannot be used "
                f"({state.journal_problem}); check {name} by hand, then remove the journal; nothing was changed"
            )
        if state.env is None:
            raise Refused(f"cannot read {name} on {self.host}: {state.env_problem}; nothing was changed")
        try:
            EnvFile(state.env.content).check_rotatable()
        except EnvFileError as e:
            raise Refused(f"{name} on {self.host} cannot be rotated safely: {e}; nothing was changed") from None

    def check_health(self, report: HostHealth) -> None:
        """A rotation restarts the registry: refuse to start one on a host that is already down."""
        bad = [c for c in report.checks if c.status in (ExitStatus.CRITICAL, ExitStatus.UNKNOWN)]
        if bad:
            reasons = "; ".join(f"{c.name}: {c.summary}" for c in bad[:3])
            raise Refused(
                f"{self.host} is not healthy now ({reasons}); fix it first (fab restart); nothing was changed"
            )

    def show_plan(self, plan: Plan, state: HostState, *extra: str) -> None:
        assert state.env is not None
        lines = plan_lines(plan, self.settings, state, EnvFile(state.env.content).get(BUCKET))
        self.reporter.show([*lines, *extra])

    # -- the run -------------------------------------------------------------------------------

    def execute(self, plan: Plan | None) -> RotationReport:
        """Finishes what a dead run left (if anything), then rotates."""
        try:
            self.secret.bind()
            if plan is None:
                finished, plan = self.resume_first()
                if finished is not None:
                    return finished
            assert self.state is not None and plan is not None
            self.show_plan(plan, self.state)
            return self.rotate(plan)
        except KeyboardInterrupt:
            with stopping.cleaning_up():
                raise self.interrupted() from None

    def resume_first(self) -> tuple[RotationReport | None, Plan | None]:
        """Resumes the journal found; then plans from what the host and IAM hold now."""
        assert self.state is not None and self.state.journal is not None
        finished = self.resume(self.state.journal)
        if finished is not None:
            return finished, None
        # The resume may have put the old file back: plan from what the host holds now.
        state = self.state = rotation_host.gather(self.place)
        if state.env is None or state.journal is not None:
            raise Refused(
                f"{self.settings.env_file} on {self.host} changed while it was being resumed; run rotate-keys again"
            )
        self.secret.reload()
        plan = self.secret.plan(state.host_key)
        self.check_health(health.collect(self.place.target, self.settings, env_file=False))
        return None, plan

    def dry_run(self) -> RotationReport:
        state = self.state
        assert state is not None
        if state.access == Access.NONE:
            raise Refused(
                f"{self.settings.env_file} on {self.host} cannot be replaced safely: {state.access_reason}; "
                "a real run would refuse; nothing was changed"
            )
        plan = self.preflight()
        if plan is None:
            assert state.journal is not None
            self.reporter.show(
                [
                    f"{self.host}: an unfinished rotation (step '{state.journal.step}', started "
                    f"{state.journal.started:%Y-%m-%dT%H:%M:%SZ} by {state.journal.who}) would be "
                    "finished or rolled back first; the plan follows from what IAM holds then",
                    f"{self.host}: dry run, nothing changed",
                ]
            )
            return RotationReport(self.host, "dry-run", self.secret.user, state.journal.old_key_id)
        self.show_plan(plan, state, f"{self.host}: dry run, nothing changed")
        return RotationReport(self.host, "dry-run", plan.iam_user, plan.old_key.id)

    def rotate(self, plan: Plan) -> RotationReport:
        state = self.state
        assert state is not None and state.env is not None
        old = plan.old_key.id
        self.secret.allowed = {d.key_id for d in plan.make_room}
        try:
            arn = self.secret.user_arn()
        except AwsError as e:
            raise error(self.facts(Left.NOTHING, str(e))) from None
        record = Journal(
            step=Step.CREATING,
            iam_user=plan.iam_user,
            old_key_id=old,
            started=datetime.now(timezone.utc).replace(microsecond=0),
            who=who_am_i(),
            keep_old=plan.keep_old,
            mode=state.env.mode,
            old_key_created=plan.old_key.created,
            original_sha256=hashlib.sha256(state.env.content).hexdigest(),
        )
        # The journal first: if it cannot be written, nothing has been changed yet.
        self.act(Step.START, lambda: self.record(record), old)
        with self.step("cleanup"):
            self.act(Step.MAKE_ROOM, lambda: self.make_room(plan, state.host_key), old)
        new = self.create(record)
        self.verify(new, arn, state.env.content, old)
        self.write(new)
        with self.step("restart"):
            self.act(
                Step.WRITTEN,
                lambda: self.restart_on(new.id),
                old,
                new.id,
                leave=lambda e: f"{e} while recreating the containers",
            )
        self.finish(old, new.id, plan.keep_old)
        message = f"rotated {old} -> {new.id} for {plan.iam_user}" + (
            f"; {old} kept Inactive" if plan.keep_old else f"; {old} deleted"
        )
        return RotationReport(self.host, "rotated", plan.iam_user, old, new.id, message)

    def make_room(self, plan: Plan, host_key: str | None) -> None:
        for deletion in plan.make_room:
            self.secret.retire(deletion, host_key)

    def create(self, record: Journal) -> NewKey:
        with self.step("create"):
            new: NewKey = self.act(Step.CREATING, self.secret.create, record.old_key_id)
            self.audit["new_key_id"] = new.id
        created = record.at(Step.CREATED, new_key_id=new.id, new_key_created=new.created)
        self.act(Step.CREATED, lambda: self.record(created), record.old_key_id, new.id)
        self.reporter.step(f"created {new.id}")
        return new

    def verify(self, new: NewKey, arn: str, env: bytes, old: str) -> None:
        def proving() -> int:
            try:
                return self.secret.verify(new, arn, env)
            finally:
                self.reporter.done()

        with self.step("verify"):
            started = time.monotonic()
            checks = self.act(Step.VERIFY, proving, old, new.id)
            self.reporter.step(
                f"verified {new.id}: 3 passes in a row after {checks} checks ({time.monotonic() - started:.1f}s)"
            )

    def write(self, new: NewKey) -> None:
        state = self.state
        assert state is not None and state.env is not None and self.journal is not None
        name = self.settings.env_file
        with self.step("write"):
            content = self.secret.written(state.env.content, new)
            writing = self.journal.at(Step.WRITING, written_sha256=hashlib.sha256(content).hexdigest())
            self.journal = writing
            self.act(
                Step.WRITING,
                lambda: self.write_env(writing, content),
                writing.old_key_id,
                new.id,
                leave=lambda e: f"{e} while writing {name}",
            )
            self.journal = writing.at(Step.WRITTEN)
            self.reporter.step(f"wrote {name} with {new.id} (backup kept until done)")

    def write_env(self, writing: Journal, content: bytes) -> None:
        """The write, its exit code turned into the error that names what failed."""
        assert self.state is not None and self.state.env is not None
        name = self.settings.env_file
        ran = rotation_host.write_env(self.place, writing, content, self.state.env)
        if ran.code in (Exit.BACKUP_FAILED, *hostfiles.FAILURES):
            # The replace is atomic: the env file is untouched.
            what = "back up" if ran.code == Exit.BACKUP_FAILED else "write"
            why = hostfiles.describe_failure(ran.code, ran.stderr)
            raise HostFileError(f"cannot {what} {name} on {self.host}: {why}")
        if ran.code != 0:
            # The file is replaced but the journal's last word failed: the next run reads the host's key.
            raise JournalBehind(f"{name} was written but the journal was not updated ({ran.stderr[:100]})")

    def restart_on(self, key_id: str) -> None:
        """Recreates the containers and requires health with ``key_id`` in the registry container."""
        report = rotation_host.restart(self.place, self.reporter, self.options.restart_timeout)
        self.require_key(report.key_in_effect, report.health, key_id)

    def require_key(self, in_effect: str | None, report: HostHealth, key_id: str) -> None:
        registry = self.settings.containers.registry
        check = report.find(health.Kind.CONTAINER, registry)
        if check is not None and not check.details.get("exists", True):
            raise RestartError(f"the registry container {registry} is missing on {self.host}")
        if in_effect != key_id:
            raise RestartError(f"the registry container {registry} runs with {in_effect or 'no key'}, not {key_id}")
        self.reporter.step(f"the registry runs with {key_id}")

    def runs_healthy_on(self, key_id: str) -> bool:
        in_effect, report = rotation_host.runs_on(self.place)
        return in_effect == key_id and not report.failing()

    def finish(self, old: str, new: str, keep_old: bool) -> None:
        """Retires the old key (the host runs healthy on the new one), then clears the journal."""
        assert self.journal is not None
        retiring = self.journal.at(Step.RETIRING)
        with self.step("retire"):
            self.act(Step.RETIRING, lambda: self.record(retiring), old, new)
            done = self.act(Step.RETIRING, lambda: self.secret.retire_old(old, new, keep_old), old, new)
            self.reporter.step(done)
        self.act(Step.DONE, self.clear_journal, old, new)

    def clear_journal(self) -> None:
        rotation_host.clear_journal(self.place)
        self.journal = None

    # -- failure -------------------------------------------------------------------------------

    def act(
        self,
        step: Step,
        action: Callable[[], T],
        old: str = "",
        new: str = "",
        *,
        leave: Callable[[QuiltError], str] = str,
        because: Callable[[QuiltError], str] = str,
    ) -> T:
        """Runs ``action``; on a failure the operator can act on, compensates as the policy says.

        ``leave`` says what happened when the rest is left to the next run; ``because``, why
        a rollback (or a rollback that failed) was needed.
        """
        try:
            return action()
        except QuiltError as e:
            self.recover(step, e, old, new, leave, because)

    def recover(
        self,
        step: Step,
        e: QuiltError,
        old: str,
        new: str,
        leave: Callable[[QuiltError], str],
        because: Callable[[QuiltError], str],
    ) -> NoReturn:
        """Runs the compensation `after_failure` names, then raises the error that says what is left."""
        failure = classify(e)
        recovery = after_failure(step, failure, self.journal)
        if recovery == Recovery.REPORT:
            raise e
        if recovery == Recovery.SWEEP:
            new = self.unanswered(e)
            recovery = Recovery.ABANDON if new else Recovery.FORGET
        if recovery == Recovery.FORGET:
            self.forget()
        if recovery in (Recovery.NOTHING_CHANGED, Recovery.FORGET):
            raise error(self.facts(Left.NOTHING, str(e))) from None
        if recovery == Recovery.ABANDON:
            raise self.abandoned(step, failure, e, new) from None
        if recovery == Recovery.LEAVE:
            reason = str(e) if failure == Failure.JOURNAL_BEHIND else leave(e)
            left = {Step.RETIRING: Left.OLD_KEY_ACTIVE, Step.DONE: Left.JOURNAL}.get(step, Left.EITHER_KEY)
            raise error(self.facts(left, reason, old, new)) from None
        if recovery == Recovery.ROLL_BACK:
            self.rollback(because(e), old, new)
        raise error(
            self.facts(Left.BOTH_KEYS, because(e), old, new, compensation_error=str(e), holds=self.holds())
        ) from None

    def unanswered(self, e: QuiltError) -> str:
        """CreateAccessKey failed, but IAM may have made the key: the one found (now in the
        journal, to be abandoned), or ""; if IAM cannot be listed the journal stays."""
        assert self.journal is not None
        try:
            key = self.secret.unanswered(self.journal.started, self.state.host_key if self.state else None)
        except QuiltError as lost:
            raise error(self.facts(Left.UNANSWERED, str(e), compensation_error=str(lost))) from None
        if key is not None:
            self.reporter.step(f"IAM made {key.id} during this run though CreateAccessKey failed: deleting it")
            with suppress(QuiltError):
                self.record(self.journal.at(Step.CREATED, new_key_id=key.id, new_key_created=key.created))
        return key.id if key else ""

    def abandoned(self, step: Step, failure: Failure, e: QuiltError, new: str) -> RotationError:
        """Deletes the new key the host never saw; the error that says so."""
        self.abandon(new, str(e) if step == Step.VERIFY else "")
        if step == Step.WRITING and failure in (Failure.NOT_STARTED, Failure.GUARD_STOPPED):
            # The write never ran: the host still has the old file.
            reason = f"{e} before writing {self.settings.env_file}"
            return error(self.facts(Left.NEW_KEY_DELETED, reason, note=" (its journal is cleared by the next run)"))
        return error(self.facts(Left.NEW_KEY_DELETED, str(e), new=new))

    def forget(self) -> None:
        """The key was not created: remove the journal (best effort: the next run clears it anyway)."""
        try:
            self.clear_journal()
        except QuiltError:
            pass

    def abandon(self, key_id: str, why: str = "") -> None:
        """Deletes a new key the host never saw, and the journal.

        If AWS cannot be reached to delete it, the journal stays, so that the next run
        deletes the key (the host still runs on the old one). ``why`` (the reason it is given
        up) leads the message then.
        """
        try:
            self.secret.delete_new(key_id, self.state.host_key if self.state else None)
        except (AwsError, Refused) as e:
            raise error(self.facts(Left.NEW_KEY, why, new=key_id, compensation_error=str(e))) from None
        self.forget()

    def restore_old_file(self, old_key_id: str) -> None:
        """Puts the backup back in place, after checking it holds the old key."""
        assert self.journal is not None
        name, backup_name = self.settings.env_file, self.place.backup_name
        # The backup is a file on the host: check it holds the old key before putting it back.
        backup = rotation_host.read_backup(self.place)
        if (
            backup is None
            or hashlib.sha256(backup).hexdigest() != self.journal.original_sha256
            or EnvFile(backup).key_id != old_key_id
        ):
            raise QuiltError(
                f"the backup {backup_name} on {self.host} is missing or is not the file the rotation began "
                f"with (holding {old_key_id}): it is not put back"
            )
        if not self.journal.written_sha256:
            raise QuiltError(
                f"the rotation journal on {self.host} does not say what was written to {name}: "
                "the backup is not put back"
            )
        # The bytes just checked go back (not the backup file again), and only over the file
        # this rotation wrote: an edit made since is never overwritten.
        written = self.state.env.mode if self.state is not None and self.state.env is not None else None
        mode = hostfiles.restore_mode(self.journal.mode, written)
        ran = rotation_host.restore_env(self.place, backup, mode, self.journal.written_sha256)
        if ran.code != 0:
            why = (
                "it changed since the rotation wrote it (edited meanwhile?)"
                if ran.code == Exit.CHANGED
                else hostfiles.describe_failure(ran.code, ran.stderr)
            )
            raise QuiltError(f"cannot restore {name} from its backup on {self.host}: {why}")
        self.reporter.step(f"restored {name} from its backup")

    def undo(self, old_key_id: str, new_key_id: str, host_key: str | None) -> None:
        """Puts the old file back, recreates the containers on it, deletes the new key."""
        assert self.journal is not None
        self.record(self.journal.at(Step.ROLLING_BACK))
        self.reporter.step("rolling back")
        if host_key != old_key_id:
            self.restore_old_file(old_key_id)
        if not self.runs_healthy_on(old_key_id):
            self.restart_on(old_key_id)
        self.secret.delete_new(new_key_id, old_key_id, rolling_back=True)
        self.reporter.step(f"deleted {new_key_id}")
        self.clear_journal()

    def rollback(self, reason: str, old_key_id: str, new_key_id: str) -> NoReturn:
        """Undoes a rotation whose env file was written; always raises."""
        with self.step("rollback"):
            self.act(
                Step.ROLLING_BACK,
                lambda: self.undo(old_key_id, new_key_id, new_key_id),
                old_key_id,
                new_key_id,
                leave=lambda e: f"rotation failed ({reason}); then {e} while rolling back",
                because=lambda e: reason,
            )
        raise error(self.facts(Left.ROLLED_BACK, reason))

    def holds(self) -> str:
        """What the env file holds now, for a message."""
        try:
            found = rotation_host.holds(self.place)
        except QuiltError:
            return "an unknown key (cannot read it)"
        return "an unknown key" if found is None else (found or "no key")

    def interrupted(self) -> QuiltError:
        """Ctrl-C: delete a key the host never saw; otherwise say how to finish."""
        current = self.journal
        recovery = after_failure(Step.START, Failure.INTERRUPTED, current)
        if recovery == Recovery.NOTHING_CHANGED:
            return error(self.facts(Left.NOTHING, interrupted=True))
        if recovery == Recovery.ABANDON and current is not None and current.new_key_id and self.secret.user:
            try:
                self.abandon(current.new_key_id)
                return error(self.facts(Left.NEW_KEY_DELETED, new=current.new_key_id, interrupted=True))
            except QuiltError:
                pass
        return error(self.facts(Left.EITHER_KEY, interrupted=True))

    # -- resume --------------------------------------------------------------------------------

    def resume(self, found: Journal) -> RotationReport | None:
        """Finishes or rolls back a run that died; returns a report if it finished one."""
        state = self.state
        assert state is not None and self.secret.user is not None
        self.journal = found
        self.reporter.step(
            f"found an unfinished rotation (step '{found.step}', started "
            f"{found.started:%Y-%m-%dT%H:%M:%SZ} by {found.who})"
        )
        decision = self.secret.resume_decision(found, state.host_key)
        self.audit.update(
            resumed=found.step.value,
            decision=decision.action.value,
            old_key_id=found.old_key_id,
            new_key_id=found.new_key_id,
        )
        self.secret.allowed |= {k for k in (decision.delete_new, decision.retire_old) if k}
        old, new = found.old_key_id, found.new_key_id or "the new key"
        with self.step("resume"):
            if decision.action == Resume.ROLL_BACK:
                self.act(
                    Step.RESUME_ROLLBACK,
                    lambda: self.resume_roll_back(decision),
                    old,
                    new,
                    because=lambda e: "resuming an unfinished rotation",
                )
                self.resume_notes(decision)
                return None
            if decision.action == Resume.FINISH_ROLLBACK:
                self.act(
                    Step.RESUME_ROLLBACK,
                    lambda: self.undo(old, found.new_key_id or "", state.host_key),
                    old,
                    new,
                    because=lambda e: "resuming a rollback",
                )
                self.reporter.step("finished the interrupted rollback; now rotating afresh")
                return None
            return self.resume_finish(found, decision)

    def resume_finish(self, found: Journal, decision: ResumeDecision) -> RotationReport:
        """The host holds the new key: require it running healthy, then retire the old one."""
        new, old = decision.runs_on, found.old_key_id

        def running() -> None:
            if not self.runs_healthy_on(new):
                self.restart_on(new)

        self.act(Step.WRITTEN, running, old, new, because=lambda e: f"resuming: {e}")
        if decision.retire_old:
            self.finish(decision.retire_old, new, found.keep_old)
        else:
            self.clear_journal()
        user = self.secret.user
        message = f"finished the unfinished rotation {old} -> {new} for {user}"
        return RotationReport(self.host, "finished", user, old, new, message)

    def resume_roll_back(self, decision: ResumeDecision) -> None:
        if not self.runs_healthy_on(decision.runs_on):
            self.restart_on(decision.runs_on)
        if decision.delete_new:
            self.secret.retire(Deletion(decision.delete_new, "left by the unfinished rotation"), decision.runs_on)
        self.clear_journal()

    def resume_notes(self, decision: ResumeDecision) -> None:
        for key_id in decision.unproven:
            self.reporter.step(
                f"note: {key_id} was created after the unfinished rotation started but it did not "
                f"record it; if it is that run's, delete it: aws iam delete-access-key "
                f"--user-name {self.secret.user} --access-key-id {key_id}"
            )
        self.reporter.step("rolled the unfinished rotation back; now rotating afresh")

    def close(self) -> None:
        self.lock.release()
