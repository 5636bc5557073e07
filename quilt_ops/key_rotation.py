"""What the rotation driver rotates on a Quilt registry host: RegistryUser's AWS access key.

Everything specific to IAM access keys is here: whose key it is (the IAM user), the plan
(`quilt_ops.rotation_plan`), creating the key, proving it with its own credentials,
the env file lines that carry it, retiring the old one and deleting a new one the host
never saw; every deletion is checked right before its IAM call
(`rotation_plan.check_deletion`) against the keys this run may retire. The driver
(`quilt_ops.rotation`) knows none of it: it records steps, writes the env file, restarts
and compensates; the key's part of each step on the host is `quilt_ops.key_rotation_steps`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import identity, known_users, rotation_plan, rotation_record
from .config import Settings
from .envfile import BUCKET, KEY_ID, EnvFile
from .errors import ConfigError, Refused
from .hostfiles import Access, RemoteFile
from .journal import Journal
from .keys import AwsError, KeyStore, NewKey
from .local import again
from .masking import Masker, printable
from .remote import Target
from .reporting import Reporter
from .rotation_host import HostState
from .rotation_plan import CreateWindow, Deletion, Key, Plan, ResumeDecision, SweepDecision

#: Why the driver retires the old key (a deletion made for any other reason is reported).
RETIRING_OLD = "the rotated host no longer uses it"


@dataclass
class RotateOptions:
    iam_user: str | None = None
    stack: str | None = None
    keep_old: bool = False
    delete_other_active: bool = False
    verify_timeout: float = 60.0
    restart_timeout: float | None = None
    dry_run: bool = False
    #: An explicit --iam-user/--stack may replace the host's recorded binding.
    rebind: bool = False


class AccessKeys:
    """RegistryUser's access keys, for one host's rotation."""

    #: The env file's name for what is rotated (for messages).
    what = "key"

    def __init__(
        self,
        store: KeyStore,
        options: RotateOptions,
        settings: Settings,
        target: Target,
        reporter: Reporter,
        masker: Masker,
    ) -> None:
        self.store, self.options, self.settings, self.target = store, options, settings, target
        self.host = target.name
        self.reporter, self.masker = reporter, masker
        #: The command that re-runs this task on this host (in the re-binding message).
        self.again = again(target, "rotate-keys")
        self.identity: identity.Identity | None = None
        self.user: str | None = None
        self.user_source = ""
        self.keys: list[Key] = []
        #: Keys this run may retire: filled from the plan or the resume decision only.
        self.allowed: set[str] = set()
        #: When this run's CreateAccessKey calls were made, if they failed.
        self.window: CreateWindow | None = None
        #: This run's line in the operator's record of rotations, once written.
        self.recorded: rotation_record.Record | None = None

    # -- who, and what IAM holds ---------------------------------------------------------------

    def find_user(self, host_key: str | None, bucket: str | None) -> tuple[str, str]:
        """The IAM user, established as a fresh run does (never from the journal nor the
        host's word alone: see `quilt_ops.identity`); with a stack, the host must also
        name the stack's bucket."""
        given, source = (self.options.iam_user, "--iam-user") if self.options.iam_user else (None, "")
        if not given and self.settings.iam_user:
            given, source = self.settings.iam_user, "quilt.iam_user"
        stack = self.options.stack
        facts = identity.gather(
            self.store,
            self.target,
            host_key,
            given_user=given,
            given_source=source,
            stack=stack,
            bindings=self.settings.known_users_file,
            rebind=self.options.rebind,
            rebind_command=self.again + " --rebind --iam-user USER (or --stack NAME)",
        )
        self.identity = identity.establish(facts)
        if stack:
            stack_bucket = self.store.stack_bucket(stack)
            if stack_bucket and bucket != stack_bucket:
                raise Refused(
                    f"{self.settings.env_file} on {self.host} names the bucket {printable(bucket or 'none')}, but "
                    f"stack {stack}'s bucket is {stack_bucket}; nothing was changed"
                )
        note = self.identity.binding_note
        return self.identity.user, self.identity.source + (f"; {note}" if note else "")

    def bind(self) -> None:
        """Records the host's binding (first rotation, or --rebind) once the run changes something."""
        if self.identity is not None and self.identity.bind and not self.options.dry_run:
            host, _ = identity.where(self.target)
            known_users.record(self.settings.known_users_file, host, self.identity.user)
            self.reporter.step(f"{host} bound to IAM user {self.identity.user} in {self.settings.known_users_file}")

    def find(self, host_key: str | None, env: RemoteFile) -> str:
        """Finds the IAM user of the host running on ``host_key`` with ``env`` (raises `AwsError`,
        `Refused`); returns it."""
        self.user, self.user_source = self.find_user(host_key, EnvFile(env.content).get(BUCKET))
        return self.user

    def reload(self) -> list[Key]:
        assert self.user is not None
        self.keys = self.store.keys(self.user)
        return self.keys

    def plan(self, host_key: str | None) -> Plan:
        assert self.user is not None
        return rotation_plan.plan(
            self.host,
            host_key,
            self.user,
            self.user_source,
            self.keys,
            self.options.keep_old,
            self.options.delete_other_active,
        )

    def resume_decision(self, found: Journal, host_key: str | None) -> ResumeDecision:
        assert self.user is not None
        host, _ = identity.where(self.target)
        record = rotation_record.lookup(self.settings.rotations_file, host)
        return rotation_plan.resume(found, self.host, host_key, self.user, self.keys, record)

    # -- the operator's record of the rotation (`quilt_ops.rotation_record`) ---------------------

    def save_record(self, old_key_id: str, new_key_id: str | None = None) -> None:
        """Records this run's rotation on the operator's machine (raises `ConfigError`)."""
        assert self.user is not None
        host, _ = identity.where(self.target)
        record = rotation_record.Record(self.user, old_key_id, new_key_id)
        rotation_record.save(self.settings.rotations_file, host, record)
        self.recorded = record

    def forget_record(self) -> None:
        """The rotation ended (finished or rolled back): its record goes."""
        host, _ = identity.where(self.target)
        rotation_record.remove(self.settings.rotations_file, host)
        self.recorded = None

    # -- the changes -----------------------------------------------------------------------------

    def user_arn(self) -> str:
        """Asked before anything changes: once the new key exists, no AWS call but the
        verification's own (bounded by --verify-timeout) comes before it is proven or deleted
        (an IAM call retried through an outage here once took 30 s, long enough for the key
        to pass afterwards)."""
        assert self.user is not None
        return self.store.user_arn(self.user)

    def retire(self, deletion: Deletion, host_key: str | None) -> None:
        assert self.user is not None
        rotation_plan.check_deletion(deletion.key_id, host_key, self.allowed)
        if deletion.deactivate_first:
            self.store.deactivate(self.user, deletion.key_id)
        self.store.delete(self.user, deletion.key_id)
        if host_key != deletion.key_id and deletion.why != RETIRING_OLD:
            self.reporter.step(f"deleted {deletion.key_id}: {deletion.why}")

    def create(self) -> NewKey:
        """The new key; when the call fails, `window` says when it was tried (IAM's clock if known)."""
        assert self.user is not None
        began = datetime.now(timezone.utc)
        try:
            new = self.store.create(self.user)
        except AwsError:
            self.window = create_window(began, datetime.now(timezone.utc), getattr(self.store, "clock_offset", None))
            raise
        self.masker.add(new.secret)
        self.allowed.add(new.id)
        if self.recorded is not None:
            try:
                self.save_record(self.recorded.old_key_id, new.id)
            except ConfigError as e:  # the next run then names the new key instead of deleting it
                self.reporter.step(f"note: {e}")
        return new

    def sweep(
        self, window: CreateWindow, before: Iterable[str], host_key: str | None, waited: timedelta
    ) -> SweepDecision:
        """After a failed CreateAccessKey: IAM's keys listed again, and what to do about the key
        IAM may have made all the same (`rotation_plan.sweep`); the key to delete is allowed."""
        assert self.user is not None
        decision = rotation_plan.sweep(window, before, host_key, self.store.keys(self.user), waited)
        if decision.key is not None:
            self.allowed.add(decision.key.id)
        return decision

    def verify(self, new: NewKey, arn: str, env: bytes) -> int:
        """Proves the new key with its own credentials; returns how many checks it took."""
        return self.store.verify(
            new, arn, EnvFile(env).get(BUCKET), self.options.verify_timeout, on_wait=self.reporter.waiting
        )

    @staticmethod
    def written(env: bytes, new: NewKey) -> bytes:
        """The env file with the new key."""
        return EnvFile(env).with_key(new.id, new.secret)

    @staticmethod
    def holds(env: bytes) -> str:
        return EnvFile(env).key_id or "no key"

    def retire_old(self, old_key_id: str, new_key_id: str, keep_old: bool) -> str:
        """Deactivates (and unless ``keep_old`` deletes) the old key; returns what was done."""
        assert self.user is not None
        self.allowed.add(old_key_id)
        if keep_old:
            rotation_plan.check_deletion(old_key_id, new_key_id, self.allowed)
            self.store.deactivate(self.user, old_key_id)
            return f"deactivated {old_key_id} (kept: --keep-old)"
        self.retire(Deletion(old_key_id, RETIRING_OLD, deactivate_first=True), new_key_id)
        return f"deactivated and deleted {old_key_id}"

    def delete_new(self, new_key_id: str, host_key: str | None, *, rolling_back: bool = False) -> None:
        """Deletes a new key the host does not run on, if this run may (checked first): one it
        made, or one the resume decision names; a rollback may delete the key it rolls back."""
        assert self.user is not None
        if rolling_back:
            self.allowed.add(new_key_id)
        rotation_plan.check_deletion(new_key_id, host_key, self.allowed)
        self.store.delete(self.user, new_key_id)


#: How far IAM's clock may be from ours once measured (`KeyStore.clock_offset`): its Date is
#: whole seconds and reaches us an answer's way late.
MEASURED_SLACK = timedelta(seconds=3)


def create_window(began: datetime, ended: datetime, offset: timedelta | None) -> CreateWindow:
    """The window of CreateAccessKey calls, in IAM's clock when ``offset`` (IAM's minus ours) is known."""
    if offset is None:
        return CreateWindow(began, ended)
    return CreateWindow(began + offset, ended + offset, MEASURED_SLACK)


def plan_lines(plan: Plan, settings: Settings, state: HostState, bucket: str | None) -> list[str]:
    """The plan as the operator reads it."""
    out = [
        f"Plan for {plan.host}:",
        f"  IAM user {plan.iam_user} ({plan.user_source}), {plan.key_count} key(s); "
        f"the host runs on {plan.old_key.id} (Active)",
    ]
    n = 1
    for deletion in plan.make_room:
        verb = "deactivate and delete" if deletion.deactivate_first else "delete"
        out.append(f"  {n}. {verb} {deletion.key_id}: {deletion.why}")
        n += 1
    env = EnvFile(state.env.content) if state.env else None
    secret = " and ".join(env.secret_names) if env and env.secret_names else "AWS_SECRET_ACCESS_KEY (added)"
    mode = f"{state.env.mode:04o} {state.env.owner}:{state.env.group}" if state.env else "?"
    via = {Access.SUDO: " (as root)", Access.OWNER: " (as its owner)"}.get(state.access, "")
    checks = "STS GetCallerIdentity" + (f" and a one-object list of s3://{printable(bucket, 70)}" if bucket else "")
    retire = (
        f"deactivate {plan.old_key.id} (kept, Inactive: --keep-old)"
        if plan.keep_old
        else f"deactivate, then delete {plan.old_key.id}"
    )
    out += [
        f"  {n}. create a new access key for {plan.iam_user}",
        f"  {n + 1}. verify it with its own credentials: {checks}, 3 passes in a row",
        f"  {n + 2}. rewrite {KEY_ID} and {secret} in {settings.env_file} atomically{via} "
        f"(kept: {mode}; backup kept until done)",
        f"  {n + 3}. docker rm -f {' '.join(settings.containers.names)}; {settings.start_script}; "
        f"require health and the new key in {settings.containers.registry}",
        f"  {n + 4}. {retire}",
    ]
    return out


def shared_key_refusal(states: dict[str, str | None]) -> str | None:
    """One line naming hosts that run on the same key, or None."""
    shared = rotation_plan.shared_keys(states)
    if not shared:
        return None
    parts = [f"{', '.join(hosts)} all run on {key}" for key, hosts in shared.items()]
    return (
        "; ".join(parts) + ": rotating one would delete the key the others run on; rotate them one at a time "
        "after giving each its own key; nothing was changed"
    )
