"""Rotating a secret in a host's env file, so that nothing is ever lost: the driver.

For each step the driver records it (the journal on the host, and the audit record),
acts, and when the act fails asks the failure policy (`rotation_policy.after_failure`)
and runs the compensation it names: nothing, forget the journal, abandon the new secret,
leave it for the next run, roll back, or report that the rollback is stuck. The steps:
lock, read, check and plan (`rotation_preflight`); finish or roll back what a dead run
left (`rotation_resume`); create the new secret, verify it, write the env file atomically,
recreate the containers and require health on the new secret, retire the old.

What is rotated is not known here: `key_rotation.AccessKeys` (RegistryUser's AWS key)
finds the owner, plans, creates, verifies and retires, and checks every deletion right
before its call (`rotation_plan.check_deletion`); `key_rotation_steps.KeySteps` is the
key's part of each step on the host. Host operations are `quilt_ops.rotation_host`; the
errors and their wording are `quilt_ops.rotation_errors`.

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
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

from . import rotation_host, rotation_preflight, rotation_resume, stopping
from .config import Settings
from .errors import QuiltError, Refused
from .hostfiles import RemoteFile
from .journal import Journal, Step
from .key_rotation import AccessKeys, RotateOptions
from .key_rotation_steps import KeySteps
from .keys import AwsError, KeyStore, NewKey
from .local import again
from .lock import HostLock
from .masking import Masker
from .remote import Target
from .reporting import Reporter
from .rotation_errors import Facts, Left, RotationError, RotationReport, error
from .rotation_host import HostState, Place
from .rotation_policy import Failure, Recovery, after_failure, classify
from .rotation_preflight import Ready, Resumable

__all__ = ["RotateOptions", "Rotation", "RotationReport"]

T = TypeVar("T")
#: Words for a failure in a message (what was left, or why a rollback was needed).
Say = Callable[[QuiltError], str]


class Rotation:
    """One rotation on one host: `prepare`, then `preflight` and `execute` (or `dry_run`), then `close`."""

    def __init__(
        self, target: Target, settings: Settings, store: KeyStore, options: RotateOptions, reporter: Reporter
    ) -> None:
        self.settings, self.options, self.reporter = settings, options, reporter
        # The target's own masker: what ``-e`` echoes on this host is masked with it too.
        self.place = Place(
            target, settings, HostLock(target, settings, "rotate-keys"), getattr(target, "masker", None) or Masker()
        )
        self.secret = AccessKeys(store, options, settings, target, reporter, self.place.masker)
        self.steps = KeySteps(self.place, self.secret, reporter, options.restart_timeout)
        self.host = target.name
        #: The command that finishes what this run leaves (in its messages).
        self.again = again(target, "rotate-keys")
        self.journal: Journal | None = None
        #: What the host held when last read (None before `prepare`).
        self.state: HostState | None = None
        #: The audit record of this run (no secret ever goes in).
        self.audit: dict[str, Any] = {"steps": []}
        self.current_step = "start"

    @property
    def lock(self) -> HostLock:
        return self.place.lock

    def close(self) -> None:
        self.lock.release()

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

    def clear_journal(self) -> None:
        rotation_host.clear_journal(self.place)
        self.journal = None
        self.secret.forget_record()

    def facts(self, left: Left, reason: str = "", old: str = "", new: str = "", **more: Any) -> Facts:
        more.update(env_file=self.settings.env_file, again=self.again)
        return Facts(self.host, self.current_step, left, reason, old, new, **more)

    # -- the phases ----------------------------------------------------------------------------

    def prepare(self) -> HostState:
        """Takes the lock (unless a dry run) and reads everything in one command."""
        self.state = rotation_preflight.prepare(self.place, self.options, self.reporter)
        return self.state

    def preflight(self, state: HostState) -> Ready | Resumable:
        """Checks what `prepare` read, changes nothing: the plan, or the journal to resume first."""
        return rotation_preflight.preflight(self, state)

    def dry_run(self, state: HostState) -> RotationReport:
        return rotation_preflight.dry_run(self, state)

    def execute(self, checked: Ready | Resumable) -> RotationReport:
        """Finishes what a dead run left (if anything), then rotates."""
        try:
            self.secret.bind()
            if isinstance(checked, Resumable):
                resumed = rotation_resume.resume_first(self, checked)
                if isinstance(resumed, RotationReport):
                    return resumed
                checked = resumed
            rotation_preflight.show_plan(self, checked)
            return self.rotate(checked)
        except KeyboardInterrupt:
            with stopping.cleaning_up():
                raise self.interrupted() from None

    # -- the run -------------------------------------------------------------------------------

    def rotate(self, ready: Ready) -> RotationReport:
        plan, env = ready.plan, ready.env
        old = plan.old_key.id
        self.secret.allowed = {d.key_id for d in plan.make_room}
        try:
            arn = self.secret.user_arn()
        except AwsError as e:
            raise error(self.facts(Left.NOTHING, str(e))) from None
        record = self.steps.first_journal(plan, env)
        # The journal first: if it cannot be written, nothing has been changed yet.
        self.act(Step.START, lambda: self.record(record), old)
        with self.step("cleanup"):
            self.act(Step.MAKE_ROOM, lambda: self.steps.make_room(plan, ready.state.host_key), old)
        new, created = self.create(record)
        with self.step("verify"):
            self.reporter.step(self.act(Step.VERIFY, lambda: self.steps.verify(new, arn, env.content), old, new.id))
        written = self.write(created, new, env)
        with self.step("restart"):
            self.act(
                Step.WRITTEN,
                lambda: self.steps.restart_on(new.id),
                old,
                new.id,
                leave=lambda e: f"{e} while recreating the containers",
            )
        self.finish(written, old, new.id, plan.keep_old)
        message = f"rotated {old} -> {new.id} for {plan.iam_user}" + (
            f"; {old} kept Inactive" if plan.keep_old else f"; {old} deleted"
        )
        return RotationReport(self.host, "rotated", plan.iam_user, old, new.id, message)

    def create(self, record: Journal) -> tuple[NewKey, Journal]:
        """The new secret, and the journal that names it (recorded)."""
        with self.step("create"):
            new: NewKey = self.act(Step.CREATING, self.secret.create, record.old_key_id)
            self.audit["new_key_id"] = new.id
        created = record.at(Step.CREATED, new_key_id=new.id, new_key_created=new.created)
        self.act(Step.CREATED, lambda: self.record(created), record.old_key_id, new.id)
        self.reporter.step(f"created {new.id}")
        return new, created

    def write(self, created: Journal, new: NewKey, env: RemoteFile) -> Journal:
        """Writes the env file with the new secret; returns the journal the host then holds."""
        name = self.settings.env_file
        with self.step("write"):
            content = self.secret.written(env.content, new)
            writing = created.at(Step.WRITING, written_sha256=hashlib.sha256(content).hexdigest())
            self.journal = writing
            self.act(
                Step.WRITING,
                lambda: self.steps.write_env(writing, content, env),
                writing.old_key_id,
                new.id,
                leave=lambda e: f"{e} while writing {name}",
            )
            self.journal = written = writing.at(Step.WRITTEN)
            self.reporter.step(f"wrote {name} with {new.id} (backup kept until done)")
        return written

    def finish(self, journal: Journal, old: str, new: str, keep_old: bool) -> None:
        """Retires the old secret (the host runs healthy on the new one), then clears the journal."""
        retiring = journal.at(Step.RETIRING)
        with self.step("retire"):
            self.act(Step.RETIRING, lambda: self.record(retiring), old, new)
            done = self.act(Step.RETIRING, lambda: self.secret.retire_old(old, new, keep_old), old, new)
            self.reporter.step(done)
        self.act(Step.DONE, self.clear_journal, old, new)

    # -- failure -------------------------------------------------------------------------------

    def act(
        self, step: Step, action: Callable[[], T], old: str = "", new: str = "", *, leave: Say = str, because: Say = str
    ) -> T:
        """Runs ``action``; on a failure the operator can act on, compensates as the policy says.

        ``leave`` says what happened when the rest is left to the next run; ``because``, why
        a rollback (or a rollback that failed) was needed.
        """
        try:
            return action()
        except QuiltError as e:
            self.recover(step, e, old, new, leave, because)

    def recover(self, step: Step, e: QuiltError, old: str, new: str, leave: Say, because: Say) -> NoReturn:
        """Runs the compensation `after_failure` names, then raises the error that says what is left."""
        failure = classify(e)
        recovery = after_failure(step, failure, self.journal)
        if recovery == Recovery.REPORT:
            raise e
        if recovery == Recovery.SWEEP:  # IAM may have made the key all the same: abandon it, if found
            self.journal, new, recovery = self.steps.unanswered(self.journal, self.state, self.facts, e)
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
        if recovery == Recovery.ROLL_BACK and self.journal is not None:  # the policy rolls back written files only
            self.rollback(self.journal, because(e), old, new)
        raise error(
            self.facts(Left.BOTH_KEYS, because(e), old, new, compensation_error=str(e), holds=self.steps.holds())
        ) from None

    def abandoned(self, step: Step, failure: Failure, e: QuiltError, new: str) -> RotationError:
        """Deletes the new secret the host never saw; the error that says so."""
        self.abandon(new, str(e) if step == Step.VERIFY else "")
        if step == Step.WRITING and failure in (Failure.NOT_STARTED, Failure.GUARD_STOPPED):
            # The write never ran: the host still has the old file.
            reason = f"{e} before writing {self.settings.env_file}"
            return error(self.facts(Left.NEW_KEY_DELETED, reason, note=" (its journal is cleared by the next run)"))
        return error(self.facts(Left.NEW_KEY_DELETED, str(e), new=new))

    def forget(self) -> None:
        """The secret was not created: remove the journal (best effort: the next run clears it anyway)."""
        try:
            self.clear_journal()
        except QuiltError:
            pass

    def abandon(self, key_id: str, why: str = "") -> None:
        """Deletes a new secret the host never saw, and the journal. If AWS cannot be reached to
        delete it, the journal stays, so that the next run deletes it (the host still runs on
        the old one); ``why`` (the reason it is given up) leads the message then."""
        try:
            self.secret.delete_new(key_id, self.state.host_key if self.state else None)
        except (AwsError, Refused) as e:
            raise error(self.facts(Left.NEW_KEY, why, new=key_id, compensation_error=str(e))) from None
        self.forget()

    def rollback(self, journal: Journal, reason: str, old_key_id: str, new_key_id: str) -> NoReturn:
        """Undoes a rotation whose env file was written; always raises."""
        with self.step("rollback"):
            self.act(
                Step.ROLLING_BACK,
                lambda: self.undo(journal, old_key_id, new_key_id, new_key_id),
                old_key_id,
                new_key_id,
                leave=lambda e: f"rotation failed ({reason}); then {e} while rolling back",
                because=lambda e: reason,
            )
        raise error(self.facts(Left.ROLLED_BACK, reason))

    def undo(self, journal: Journal, old_key_id: str, new_key_id: str, host_key: str | None) -> None:
        """Puts the old file back, recreates the containers on it, deletes the new secret."""
        rolling_back = journal.at(Step.ROLLING_BACK)
        self.record(rolling_back)
        self.reporter.step("rolling back")
        if host_key != old_key_id:
            self.steps.restore_old_file(rolling_back, old_key_id, written=self.state)
        if not self.steps.runs_healthy_on(old_key_id):
            self.steps.restart_on(old_key_id)
        if new_key_id:  # (none: the resume decision withheld it)
            self.secret.delete_new(new_key_id, old_key_id, rolling_back=True)
            self.reporter.step(f"deleted {new_key_id}")
        self.clear_journal()

    def interrupted(self) -> QuiltError:
        """Ctrl-C: delete a secret the host never saw; otherwise say how to finish."""
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
