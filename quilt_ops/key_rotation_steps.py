"""The AWS key's part of each rotation step on the host: what the driver records, acts and compensates.

`quilt_ops.key_rotation.AccessKeys` is the IAM side (whose key, the plan, create, verify,
retire); this is the rest of what is specific to a key: the rotation's first journal, the
plan's deletions, the proof of the new key, the env file written with it (the command's
exit code turned into the error the failure policy reads), the containers recreated and
required to run on a key, the old file put back, what the env file holds. Nothing here
decides what to do on a failure: it raises, and the driver (`quilt_ops.rotation`) asks
`quilt_ops.rotation_policy`. Host operations are `quilt_ops.rotation_host`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from math import ceil

from . import health, hostfiles, rotation_host
from .checks import HostHealth
from .envfile import EnvFile
from .errors import QuiltError
from .hostfiles import HostFileError, RemoteFile
from .journal import Journal, JournalBehind, Step
from .key_rotation import AccessKeys
from .keys import NewKey
from .lock import who_am_i
from .reporting import Reporter
from .restart import RestartError
from .rotation_errors import Facts, Left, error
from .rotation_host import HostState, Place
from .rotation_plan import LIST_LAG, CreateWindow, Plan, Sweep, SweepDecision
from .rotation_policy import Recovery
from .sh import Exit

#: How often IAM's keys are listed again while a lost CreateAccessKey answer's key is not listed.
LIST_EVERY = 2.0


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class KeySteps:
    """One host's key rotation, step by step on the host (the IAM side is ``keys``)."""

    def __init__(self, place: Place, keys: AccessKeys, reporter: Reporter, restart_timeout: float | None) -> None:
        self.place, self.keys, self.reporter, self.restart_timeout = place, keys, reporter, restart_timeout
        self.settings = place.settings
        self.host = place.host

    def first_journal(self, plan: Plan, env: RemoteFile) -> Journal:
        """The journal a rotation writes before it changes anything (no secret in it); the
        operator's record of the rotation is written first (`quilt_ops.rotation_record`)."""
        self.keys.save_record(plan.old_key.id)
        return Journal(
            step=Step.CREATING,
            iam_user=plan.iam_user,
            old_key_id=plan.old_key.id,
            started=datetime.now(timezone.utc).replace(microsecond=0),
            who=who_am_i(),
            keep_old=plan.keep_old,
            mode=env.mode,
            old_key_created=plan.old_key.created,
            original_sha256=_sha256(env.content),
        )

    def make_room(self, plan: Plan, host_key: str | None) -> None:
        for deletion in plan.make_room:
            self.keys.retire(deletion, host_key)

    def verify(self, new: NewKey, arn: str, env: bytes) -> str:
        """Proves the new key with its own credentials; returns what the operator reads."""
        started = time.monotonic()
        try:
            checks = self.keys.verify(new, arn, env)
        finally:
            self.reporter.done()
        return f"verified {new.id}: 3 passes in a row after {checks} checks ({time.monotonic() - started:.1f}s)"

    def write_env(self, writing: Journal, content: bytes, original: RemoteFile) -> None:
        """The write, its exit code turned into the error that names what failed."""
        name = self.settings.env_file
        ran = rotation_host.write_env(self.place, writing, content, original)
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
        report = rotation_host.restart(self.place, self.reporter, self.restart_timeout)
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

    def restore_old_file(self, journal: Journal, old_key_id: str, written: HostState | None) -> None:
        """Puts the backup back in place, after checking it holds the old key; ``written`` is what
        the host held when last read (the file the rotation wrote, for its mode)."""
        name, backup_name = self.settings.env_file, self.place.backup_name
        # The backup is a file on the host: check it holds the old key before putting it back.
        backup = rotation_host.read_backup(self.place)
        if backup is None or _sha256(backup) != journal.original_sha256 or EnvFile(backup).key_id != old_key_id:
            raise QuiltError(
                f"the backup {backup_name} on {self.host} is missing or is not the file the rotation began "
                f"with (holding {old_key_id}): it is not put back"
            )
        if not journal.written_sha256:
            raise QuiltError(
                f"the rotation journal on {self.host} does not say what was written to {name}: "
                "the backup is not put back"
            )
        # The bytes just checked go back (not the backup file again), and only over the file
        # this rotation wrote: an edit made since is never overwritten.
        written_mode = written.env.mode if written is not None and written.env is not None else None
        mode = hostfiles.restore_mode(journal.mode, written_mode)
        ran = rotation_host.restore_env(self.place, backup, mode, journal.written_sha256)
        if ran.code != 0:
            why = (
                "it changed since the rotation wrote it (edited meanwhile?)"
                if ran.code == Exit.CHANGED
                else hostfiles.describe_failure(ran.code, ran.stderr)
            )
            raise QuiltError(f"cannot restore {name} from its backup on {self.host}: {why}")
        self.reporter.step(f"restored {name} from its backup")

    def unanswered(
        self, journal: Journal | None, state: HostState | None, facts: Callable[..., Facts], e: QuiltError
    ) -> tuple[Journal | None, str, Recovery]:
        """After a failed CreateAccessKey (`Recovery.SWEEP`): IAM may have made the key all the same
        (a timeout, a lost answer). What to do is `rotation_plan.sweep`'s: the key found is
        recorded in the journal (best effort: it is deleted next, and a failed deletion leaves it
        there for the next run) and abandoned; none listed yet: IAM's list may lag, so list again
        for `LIST_LAG`; still none (or IAM cannot be listed), or keys that cannot be told apart:
        nothing is deleted and the journal keeps what the next run needs to decide the same way
        (the keys listed before, the calls' window) (`Left.UNANSWERED`, `Left.UNCLEAR`, made with
        the driver's ``facts``)."""
        if journal is None:
            return journal, "", Recovery.FORGET
        now = datetime.now(timezone.utc)
        window = self.keys.window or CreateWindow(journal.started, now)
        before = tuple(k.id for k in self.keys.keys)
        kept = journal.at(
            Step.CREATING,
            keys_before=before,
            create_began=window.began,
            create_ended=window.ended,
            create_slack=ceil(window.slack.total_seconds()),
        )
        # First, so that a run killed while it lists again leaves it too (best effort: without
        # it, the next run names any key made since the run began).
        with suppress(QuiltError):
            rotation_host.save_journal(self.place, kept)
        try:
            decision = self.listed_again(window, before, state.host_key if state else None)
        except QuiltError as lost:
            raise error(facts(Left.UNANSWERED, str(e), compensation_error=str(lost))) from None
        if decision.action == Sweep.LEAVE:
            why = f"IAM listed no key made by it within {LIST_LAG.seconds}s: its list may lag behind"
            raise error(facts(Left.UNANSWERED, str(e), compensation_error=why)) from None
        if decision.key is None:
            raise error(facts(Left.UNCLEAR, str(e), compensation_error=self.unclear(decision, window))) from None
        key = decision.key
        self.reporter.step(f"IAM made {key.id} during this run though CreateAccessKey failed: deleting it")
        found = journal.at(Step.CREATED, new_key_id=key.id, new_key_created=key.created)
        with suppress(QuiltError):
            rotation_host.save_journal(self.place, found)
        return found, key.id, Recovery.ABANDON

    def listed_again(self, window: CreateWindow, before: tuple[str, ...], host_key: str | None) -> SweepDecision:
        """`AccessKeys.sweep`, listing again once every `LIST_EVERY` while it says `Sweep.WAIT`."""
        began = time.monotonic()
        try:
            while True:
                waited = timedelta(seconds=time.monotonic() - began)
                decision = self.keys.sweep(window, before, host_key, waited)
                if decision.action != Sweep.WAIT:
                    return decision
                self.reporter.waiting(
                    f"IAM lists no key made by the failed CreateAccessKey yet; listing again "
                    f"({waited.seconds}s of {LIST_LAG.seconds}s)"
                )
                time.sleep(LIST_EVERY)
        finally:
            self.reporter.done()

    def unclear(self, decision: SweepDecision, window: CreateWindow) -> str:
        """Why no key is deleted, and the command that deletes the right one by hand."""
        names = ", ".join(f"{k.id} (created {k.created:%H:%M:%SZ})" if k.created else k.id for k in decision.candidates)
        calls = f"{window.began:%H:%M:%SZ} to {window.ended:%H:%M:%SZ}"
        why = (
            f"IAM lists {len(decision.candidates)} keys made since this run began: {names}"
            if len(decision.candidates) > 1
            else f"the one key made since this run began, {names}, was not made during its calls ({calls})"
        )
        command = f"aws iam delete-access-key --user-name {self.keys.user} --access-key-id KEY"
        return f"{why}; if one is this run's (made {calls}), delete it by hand: {command}"

    def holds(self) -> str:
        """What the env file holds now, for a message."""
        try:
            found = rotation_host.holds(self.place)
        except QuiltError:
            return "an unknown key (cannot read it)"
        return "an unknown key" if found is None else (found or "no key")
