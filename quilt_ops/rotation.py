"""Rotating RegistryUser's access key on one host, so that nothing is ever lost.

The steps: lock the host and read everything in one command (journal, env
file, containers, probes, the key the registry runs with); find the IAM user
afresh; finish or roll back a rotation a dead run left (`rotation_plan.resume`);
plan (`rotation_plan.plan`); create the new key, verify it with its own
credentials, write the env file atomically, recreate the containers and
require health on the new key, retire the old key.

This module is the thin executor: every decision about which key may be
deleted is made in `quilt_ops.rotation_plan`, and checked again right before
each IAM call (`rotation_plan.check_deletion`).

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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import (
    containers,
    docker_access,
    health,
    hostfiles,
    identity,
    journal,
    known_users,
    rotation_plan,
    shell,
    stopping,
)
from . import restart as restarting
from .checks import HostHealth
from .config import Settings
from .envfile import BUCKET, KEY_ID, EnvFile, EnvFileError
from .errors import ConnectionLost, NotStarted, QuiltError, Refused, RemoteTimeout
from .hostfiles import Access, RemoteFile
from .journal import Journal, JournalUnreadable
from .keys import AwsError, KeyStore, NewKey, VerifyRefused, VerifyTimeout
from .local import again
from .lock import HostLock, who_am_i
from .masking import Masker, printable
from .remote import Target
from .reporting import Reporter
from .rotation_plan import Deletion, Key, Plan, Resume, ResumeDecision
from .status import ExitStatus


class RotationFailed(QuiltError):
    """The rotation did not happen; the host and IAM are as they were (or were rolled back)."""

    status = ExitStatus.FAILED


class RolledBack(RotationFailed):
    """The rotation failed after the env file was written, and was rolled back."""


class Unfinished(QuiltError):
    """The rotation stopped part-way (connection lost, old key not retired); the next run finishes it."""

    status = ExitStatus.INCOMPLETE


class RollbackFailed(QuiltError):
    """The rotation failed and so did its rollback; the message says what to run."""

    status = ExitStatus.ROLLBACK_FAILED


class Interrupted(QuiltError):
    """Ctrl-C; the message says what was left and how to finish."""

    status = ExitStatus.INTERRUPTED


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


@dataclass
class HostState:
    """What one command read on the host before anything changes."""

    env: RemoteFile | None
    env_problem: str | None
    journal: Journal | None
    journal_problem: str | None
    access: Access
    reading: health.Reading
    health: HostHealth
    #: Why the env file cannot be replaced safely (when ``access`` is NONE).
    access_reason: str = ""

    @property
    def host_key(self) -> str | None:
        if self.env is None:
            return None
        key = EnvFile(self.env.content).key_id
        return key if key and containers.KEY_ID.fullmatch(key) else None


@dataclass
class RotationReport:
    host: str
    outcome: str
    iam_user: str | None = None
    old_key_id: str | None = None
    new_key_id: str | None = None
    message: str = ""
    lines: list[str] = field(default_factory=list)


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
    out += [
        f"  {n}. create a new access key for {plan.iam_user}",
        f"  {n + 1}. verify it with its own credentials: {checks}, 3 passes in a row",
        f"  {n + 2}. rewrite {KEY_ID} and {secret} in {settings.env_file} atomically{via} "
        f"(kept: {mode}; backup kept until done)",
        f"  {n + 3}. docker rm -f {' '.join(settings.containers.names)}; {settings.start_script}; "
        f"require health and the new key in {settings.containers.registry}",
        f"  {n + 4}. "
        + (
            f"deactivate {plan.old_key.id} (kept, Inactive: --keep-old)"
            if plan.keep_old
            else f"deactivate, then delete {plan.old_key.id}"
        ),
    ]
    return out


class Rotation:
    """One rotation on one host: `prepare`, then `execute` (or `dry_run`), then `close`."""

    def __init__(
        self, target: Target, settings: Settings, store: KeyStore, options: RotateOptions, reporter: Reporter
    ) -> None:
        self.target, self.settings, self.store, self.options, self.reporter = (
            target,
            settings,
            store,
            options,
            reporter,
        )
        self.host = target.name
        #: The command that finishes what this run leaves (in its messages).
        self.again = again(target, "rotate-keys")
        self.journal_name = hostfiles.sibling(settings.env_file, "quilt-ops-rotation.json")
        self.backup_name = hostfiles.sibling(settings.env_file, "quilt-ops-backup")
        self.lock = HostLock(target, settings, "rotate-keys")
        self.locked = False
        self.journal: Journal | None = None
        self.masker = Masker()
        self.state: HostState | None = None
        #: The audit record of this run (no secret ever goes in).
        self.audit: dict[str, Any] = {"steps": []}
        self.current_step = "start"
        #: Keys this run may retire: filled from the plan or the resume decision only.
        self.allowed: set[str] = set()
        self.iam_user: str | None = None
        self.user_source = ""
        self.identity: identity.Identity | None = None
        self.keys: list[Key] = []

    # -- bookkeeping ------------------------------------------------------------------

    def step(self, name: str) -> _Step:
        self.current_step = name
        return _Step(self, name)

    def script(self) -> shell.Script:
        """A command that runs only while this run still holds the host lock."""
        s = shell.Script(self.settings)
        if self.locked:
            self.lock.guard(s)
        else:
            s.add(hostfiles.access_script(self.settings.env_file))
        return s

    def run_script(
        self, s: shell.Script, what: str, stdin: bytes | None = None, timeout: float = 60
    ) -> tuple[shell.Output, int, str]:
        result = self.target.run(s.text(), timeout=timeout, stdin=stdin, what=what)
        output = shell.parse(result.stdout_bytes, s.marker)
        shell.raise_for_failure(output, self.host, self.settings)
        return output, result.exited, self.masker(result.stderr)

    def save_journal(
        self, current: Journal, extra: str = "", stdin: bytes | None = None, what: str = "writing the rotation journal"
    ) -> tuple[shell.Output, int, str]:
        """Writes the journal (and runs ``extra`` in the same round trip)."""
        self.journal = current
        s = self.script()
        s.add(
            hostfiles.write_text_command(self.journal_name, current.to_json(), self.settings.env_file) + " || exit 40"
        )
        if extra:
            s.add(extra)
        s.end()
        output, code, stderr = self.run_script(s, what, stdin=stdin)
        if code == 40:
            raise hostfiles.HostFileError(
                f"cannot write the rotation journal {self.journal_name} on {self.host}: "
                f"{hostfiles.describe_failure(27, stderr)}"
            )
        return output, code, stderr

    def clear_journal(self) -> None:
        s = self.script()
        s.add(hostfiles.remove_command(self.backup_name, self.journal_name))
        self.run_script(s, "removing the rotation journal")
        self.journal = None

    # -- reading the host ---------------------------------------------------------------

    def prepare(self) -> HostState:
        """Takes the lock (unless a dry run) and reads everything in one command."""
        if not self.options.dry_run:
            self.lock.acquire()
            self.locked = True
            self.reporter.step(f"locked {self.host}")
        self.state = self.gather()
        if self.state.access == Access.NONE and not self.options.dry_run:
            raise Refused(
                f"{self.settings.env_file} on {self.host} cannot be replaced safely: "
                f"{self.state.access_reason}; nothing was changed"
            )
        return self.state

    def gather(self) -> HostState:
        s = self.script()
        if self.locked:  # only the lock holder may remove what a killed run left
            s.add(f"qfile rm -f -- {hostfiles.temp_pattern(self.settings.env_file)}")
        s.send_file(self.journal_name, "journal")
        s.add(hostfiles.stat_script(self.settings.env_file, "env"))
        s.send_file(self.settings.env_file, "env")
        docker = docker_access.of(self.target, self.settings)
        names, registry = self.settings.containers.names, self.settings.containers.registry
        docker.prepare(s)
        docker.add_inspect(s, names, key_of=registry)
        health.add_probes(s, self.settings)
        s.end()
        output, _, _ = self.run_script(s, "reading the host")
        access_section = output.first("access")
        access_word = access_section.words[0] if access_section and access_section.words else "none"
        access = Access(access_word) if access_word in Access._value2member_map_ else Access.NONE
        access_reason = (
            hostfiles.refusal(access_section.words[1:], self.settings.env_file)
            if access_section and access == Access.NONE
            else ""
        )
        env, env_problem = self._env_file(output)
        if env is not None:
            self.masker.add(*EnvFile(env.content).values())
        found, journal_problem = self._journal(output)
        reading = health.read(output, docker.answer(output, names, key_of=registry))
        report = health.evaluate(self.host, reading, self.settings, env_file=False)
        return HostState(env, env_problem, found, journal_problem, access, reading, report, access_reason)

    def _env_file(self, output: shell.Output) -> tuple[RemoteFile | None, str | None]:
        name = self.settings.env_file
        content = shell.blob(output, "env")
        stat = next((hostfiles.parse_stat(s.words[1:]) for s in output.all("stat") if s.words[:1] == ["env"]), None)
        if content is None or stat is None:
            if any(s.words[:1] == ["env"] for s in output.all("missing")):
                return None, "no such file"
            if stat is not None:  # it is there, but who reads it (see `Access`) may not
                return None, f"permission denied ({stat[3]} owns it, mode {stat[0]:04o})"
            return None, "permission denied"
        mode, uid, gid, owner, group = stat
        return RemoteFile(name, content, mode, uid, gid, owner, group), None

    def _journal(self, output: shell.Output) -> tuple[Journal | None, str | None]:
        if any(s.words[:1] == ["journal"] for s in output.all("missing")):
            return None, None
        raw = shell.blob(output, "journal")
        if raw is None:
            return None, "it cannot be read"
        try:
            return journal.parse(raw), None
        except JournalUnreadable as e:
            return None, str(e)

    # -- the IAM user ---------------------------------------------------------------------

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

    def load_keys(self) -> list[Key]:
        assert self.iam_user is not None
        self.keys = self.store.keys(self.iam_user)
        return self.keys

    # -- pre-flight -------------------------------------------------------------------------

    def preflight(self) -> Plan | None:
        """Reads everything, changes nothing; raises `Refused` when it cannot go on safely.

        Returns the plan, or None when an unfinished rotation must be resumed
        first (the plan is made after that, from what IAM then holds).
        """
        state = self.state
        assert state is not None
        with self.step("preflight"):
            name = self.settings.env_file
            if state.journal_problem:
                raise Refused(
                    f"a rotation journal {self.journal_name} exists on {self.host} but cannot be used "
                    f"({state.journal_problem}); check {name} by hand, then remove the journal; "
                    "nothing was changed"
                )
            if state.env is None:
                raise Refused(f"cannot read {name} on {self.host}: {state.env_problem}; nothing was changed")
            env = EnvFile(state.env.content)
            try:
                env.check_rotatable()
            except EnvFileError as e:
                raise Refused(f"{name} on {self.host} cannot be rotated safely: {e}; nothing was changed") from None
            try:
                self.iam_user, self.user_source = self.find_user(state.host_key, env.get(BUCKET))
                self.audit.update(iam_user=self.iam_user, old_key_id=state.host_key)
                self.load_keys()
            except AwsError as e:
                raise RotationFailed(f"{e}; nothing was changed") from None
            if state.journal is not None:
                # Checked against IAM before anything is done (and shown by a dry run).
                decision = rotation_plan.resume(state.journal, self.host, state.host_key, self.iam_user, self.keys)
                self.reporter.step(
                    f"an unfinished rotation (step '{state.journal.step}') will be: {decision.action.value}"
                )
                return None
            self.check_health(state.health)
            return rotation_plan.plan(
                self.host,
                state.host_key,
                self.iam_user,
                self.user_source,
                self.keys,
                self.options.keep_old,
                self.options.delete_other_active,
            )

    def check_health(self, report: HostHealth) -> None:
        """A rotation restarts the registry: refuse to start one on a host that is already down."""
        bad = [c for c in report.checks if c.status in (ExitStatus.CRITICAL, ExitStatus.UNKNOWN)]
        if bad:
            reasons = "; ".join(f"{c.name}: {c.summary}" for c in bad[:3])
            raise Refused(
                f"{self.host} is not healthy now ({reasons}); fix it first (fab restart); nothing was changed"
            )

    # -- the run ------------------------------------------------------------------------------

    def execute(self, plan: Plan | None) -> RotationReport:
        """Finishes what a dead run left (if anything), then rotates."""
        state = self.state
        assert state is not None and state.env is not None and self.iam_user is not None
        try:
            self.bind()
            if plan is None and state.journal is not None:
                finished = self.resume(state.journal)
                if finished is not None:
                    return finished
                # The resume may have put the old file back: plan from what the host holds now.
                state = self.state = self.gather()
                if state.env is None or state.journal is not None:
                    raise Refused(
                        f"{self.settings.env_file} on {self.host} changed while it was being resumed; "
                        "run rotate-keys again"
                    )
                plan = rotation_plan.plan(
                    self.host,
                    state.host_key,
                    self.iam_user,
                    self.user_source,
                    self.load_keys(),
                    self.options.keep_old,
                    self.options.delete_other_active,
                )
                self.check_health(health.collect(self.target, self.settings, env_file=False))
            assert plan is not None and state.env is not None
            self.reporter.show(plan_lines(plan, self.settings, state, EnvFile(state.env.content).get(BUCKET)))
            return self.rotate(plan)
        except KeyboardInterrupt:
            with stopping.cleaning_up():
                raise self.interrupted() from None

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
            return RotationReport(self.host, "dry-run", self.iam_user, state.journal.old_key_id)
        assert state.env is not None
        self.reporter.show(
            plan_lines(plan, self.settings, state, EnvFile(state.env.content).get(BUCKET))
            + [f"{self.host}: dry run, nothing changed"]
        )
        return RotationReport(self.host, "dry-run", plan.iam_user, plan.old_key.id)

    def rotate(self, plan: Plan) -> RotationReport:
        state = self.state
        assert state is not None and state.env is not None
        user = plan.iam_user
        self.allowed = {d.key_id for d in plan.make_room}
        # Asked before anything changes: once the new key exists, no AWS call but the
        # verification's own (bounded by --verify-timeout) comes before it is proven or
        # deleted (an IAM call retried through an outage here once took 30 s, long enough
        # for the key to pass afterwards).
        try:
            arn = self.store.user_arn(user)
        except AwsError as e:
            raise RotationFailed(f"{e}; nothing was changed") from None
        started = datetime.now(timezone.utc).replace(microsecond=0)
        record = Journal(
            step="creating",
            iam_user=user,
            old_key_id=plan.old_key.id,
            started=started,
            who=who_am_i(),
            keep_old=plan.keep_old,
            mode=state.env.mode,
            old_key_created=plan.old_key.created,
            original_sha256=hashlib.sha256(state.env.content).hexdigest(),
        )
        # The journal first: if it cannot be written, nothing has been changed yet.
        try:
            self.save_journal(record)
        except (hostfiles.HostFileError, ConnectionLost, shell.NotRun) as e:
            raise RotationFailed(f"{e}; nothing was changed") from None
        with self.step("cleanup"):
            for deletion in plan.make_room:
                self.retire_key(user, deletion, state.host_key)
        with self.step("create"):
            try:
                new = self.store.create(user)
            except AwsError as e:
                self.forget()
                raise RotationFailed(f"{e}; nothing was changed") from None
            self.masker.add(new.secret)
            self.allowed.add(new.id)
            self.audit["new_key_id"] = new.id
        try:
            self.save_journal(record.at("created", new_key_id=new.id, new_key_created=new.created))
        except (hostfiles.HostFileError, ConnectionLost, shell.NotRun) as e:
            self.abandon(user, new.id)
            raise RotationFailed(f"{e}; the new key was deleted and the host was not changed") from None
        self.reporter.step(f"created {new.id}")
        self.verify(plan, new, arn)
        self.write(new)
        with self.step("restart"):
            try:
                self.restart_on(new.id)
            except ConnectionLost as e:
                raise self.unfinished(f"{e} while recreating the containers", plan.old_key.id, new.id) from None
            except QuiltError as e:
                self.rollback(str(e), plan.old_key.id, new.id)
        self.finish(user, plan.old_key.id, new.id, plan.keep_old)
        message = f"rotated {plan.old_key.id} -> {new.id} for {user}" + (
            f"; {plan.old_key.id} kept Inactive" if plan.keep_old else f"; {plan.old_key.id} deleted"
        )
        return RotationReport(self.host, "rotated", user, plan.old_key.id, new.id, message)

    def verify(self, plan: Plan, new: NewKey, arn: str) -> None:
        state = self.state
        assert state is not None and state.env is not None
        with self.step("verify"):
            started = time.monotonic()
            try:
                checks = self.store.verify(
                    new,
                    arn,
                    EnvFile(state.env.content).get(BUCKET),
                    self.options.verify_timeout,
                    on_wait=self.reporter.waiting,
                )
            except (VerifyTimeout, VerifyRefused, AwsError) as e:
                self.reporter.done()
                self.abandon(plan.iam_user, new.id, str(e))
                raise RotationFailed(f"{e}; the new key was deleted and the host was not changed") from None
            self.reporter.done()
            self.reporter.step(
                f"verified {new.id}: 3 passes in a row after {checks} checks ({time.monotonic() - started:.1f}s)"
            )

    def write(self, new: NewKey) -> None:
        state = self.state
        assert state is not None and state.env is not None and self.journal is not None
        name = self.settings.env_file
        with self.step("write"):
            content = EnvFile(state.env.content).with_key(new.id, new.secret)
            self.journal = self.journal.at(self.journal.step, written_sha256=hashlib.sha256(content).hexdigest())
            extra = "\n".join(
                [
                    hostfiles.backup_command(name, self.backup_name) + " || exit 41",
                    hostfiles.replace_command(
                        name, len(content), state.env.mode, hashlib.sha256(state.env.content).hexdigest()
                    )
                    + " || exit $?",
                    hostfiles.write_text_command(self.journal_name, self.journal.at("written").to_json(), name)
                    + " || exit 42",
                ]
            )
            try:
                _, code, stderr = self.save_journal(
                    self.journal.at("writing"), extra=extra, stdin=content, what=f"writing {name}"
                )
            except hostfiles.HostFileError as e:
                self.abandon(self.journal.iam_user, new.id)
                raise RotationFailed(f"{e}; the new key was deleted and the host was not changed") from None
            except (NotStarted, shell.NotRun) as e:
                # The write never ran: the host still has the old file.
                self.abandon(self.journal.iam_user, new.id)
                raise RotationFailed(
                    f"{e} before writing {name}; the new key was deleted and the host was not "
                    "changed (its journal is cleared by the next run)"
                ) from None
            except (ConnectionLost, RemoteTimeout) as e:
                # It may have got as far as the rename: only the host's key tells, so the next run decides.
                raise self.unfinished(f"{e} while writing {name}", self.journal.old_key_id, new.id) from None
            if code in (41, *hostfiles.FAILURES):
                # The replace is atomic: the env file is untouched. Undo the key.
                why = hostfiles.describe_failure(code, stderr)
                what = "back up" if code == 41 else "write"
                self.abandon(self.journal.iam_user, new.id)
                raise RotationFailed(
                    f"cannot {what} {name} on {self.host}: {why}; the new key was deleted and the host was not changed"
                )
            self.journal = self.journal.at("written")
            if code != 0:
                # The file is replaced but the journal's last word failed: the next run reads the host's key.
                raise self.unfinished(
                    f"{name} was written but the journal was not updated ({stderr[:100]})",
                    self.journal.old_key_id,
                    new.id,
                )
            self.reporter.step(f"wrote {name} with {new.id} (backup kept until done)")

    def restart_on(self, key_id: str) -> None:
        """Recreates the containers and requires health with ``key_id`` in the registry container."""
        guard = self.script()
        report = restarting.restart(
            self.target,
            self.settings,
            self.reporter,
            self.options.restart_timeout,
            guard=guard,
            masker=self.masker,
            key_in_effect=True,
        )
        self.require_key(report.key_in_effect, report.health, key_id)

    def require_key(self, in_effect: str | None, report: HostHealth, key_id: str) -> None:
        registry = self.settings.containers.registry
        check = report.find(health.Kind.CONTAINER, registry)
        if check is not None and not check.details.get("exists", True):
            raise RotationFailed(f"the registry container {registry} is missing on {self.host}")
        if in_effect != key_id:
            raise RotationFailed(f"the registry container {registry} runs with {in_effect or 'no key'}, not {key_id}")
        self.reporter.step(f"the registry runs with {key_id}")

    def runs_healthy_on(self, key_id: str) -> bool:
        reading = health.look(self.target, self.settings, env_file=False, key_in_effect=True)
        report = health.evaluate(self.host, reading, self.settings, env_file=False)
        return reading.key_in_effect == key_id and not report.failing()

    def finish(self, user: str, old_key_id: str, new_key_id: str, keep_old: bool) -> None:
        """Retires the old key (the host runs healthy on the new one), then clears the journal."""
        assert self.journal is not None
        with self.step("retire"):
            try:
                self.save_journal(self.journal.at("retiring"))
                old = Deletion(old_key_id, "the rotated host no longer uses it", deactivate_first=True)
                self.allowed.add(old_key_id)
                if keep_old:
                    rotation_plan.check_deletion(old_key_id, new_key_id, self.allowed)
                    self.store.deactivate(user, old_key_id)
                else:
                    self.retire_key(user, old, new_key_id)
            except (AwsError, ConnectionLost, hostfiles.HostFileError, shell.NotRun) as e:
                raise Unfinished(
                    f"{self.host} now runs on {new_key_id} and is healthy, but retiring {old_key_id} "
                    f"failed ({e}): {old_key_id} is still Active; to retire it, run: "
                    f"{self.again}"
                ) from None
            self.reporter.step(
                f"deactivated {old_key_id} (kept: --keep-old)" if keep_old else f"deactivated and deleted {old_key_id}"
            )
        try:
            self.clear_journal()
        except (ConnectionLost, QuiltError) as e:
            raise Unfinished(
                f"{self.host} runs on {new_key_id} and {old_key_id} was retired, but the journal could "
                f"not be removed ({e}); the next rotate-keys removes it"
            ) from None

    def retire_key(self, user: str, deletion: Deletion, host_key: str | None) -> None:
        rotation_plan.check_deletion(deletion.key_id, host_key, self.allowed)
        if deletion.deactivate_first:
            self.store.deactivate(user, deletion.key_id)
        self.store.delete(user, deletion.key_id)
        if host_key != deletion.key_id and deletion.why != "the rotated host no longer uses it":
            self.reporter.step(f"deleted {deletion.key_id}: {deletion.why}")

    # -- failure ----------------------------------------------------------------------------

    def forget(self) -> None:
        """The key was not created: remove the journal (best effort: the next run clears it anyway)."""
        try:
            self.clear_journal()
        except QuiltError:
            pass

    def abandon(self, user: str, key_id: str, why: str = "") -> None:
        """Deletes a new key the host never saw, and the journal.

        If AWS cannot be reached to delete it, the journal stays, so that the next
        run deletes the key (the host still runs on the old one). ``why`` (the reason it
        is given up) leads the message then.
        """
        try:
            rotation_plan.check_deletion(key_id, self.state.host_key if self.state else None, self.allowed)
            self.store.delete(user, key_id)
        except (AwsError, Refused) as e:
            raise RotationFailed(
                (f"{why}; " if why else "")
                + f"the new key {key_id} could not be deleted ({e}); the host was not changed "
                "and still runs on the old key; run rotate-keys again to clean up"
            ) from None
        self.forget()

    def restore_old_file(self, old_key_id: str) -> None:
        """Puts the backup back in place, after checking it holds the old key."""
        assert self.journal is not None
        # The backup is a file on the host: check it holds the old key before putting it back.
        check = self.script()
        check.send_file(self.backup_name, "backup")
        output, _, _ = self.run_script(check, "reading the backup")
        backup = shell.blob(output, "backup")
        if (
            backup is None
            or hashlib.sha256(backup).hexdigest() != self.journal.original_sha256
            or EnvFile(backup).key_id != old_key_id
        ):
            raise QuiltError(
                f"the backup {self.backup_name} on {self.host} is missing or is not the file the rotation began "
                f"with (holding {old_key_id}): it is not put back"
            )
        if not self.journal.written_sha256:
            raise QuiltError(
                f"the rotation journal on {self.host} does not say what was written to {self.settings.env_file}: "
                "the backup is not put back"
            )
        # The bytes just checked go back (not the backup file again), and only over the file
        # this rotation wrote: an edit made since is never overwritten.
        restore = self.script()
        restore.add(
            hostfiles.replace_command(
                self.settings.env_file, len(backup), self.journal.mode, self.journal.written_sha256
            )
            + " || exit $?"
        )
        restore.end()
        _, code, stderr = self.run_script(restore, f"restoring {self.settings.env_file}", stdin=backup)
        if code != 0:
            why = (
                "it changed since the rotation wrote it (edited meanwhile?)"
                if code == 28
                else hostfiles.describe_failure(code, stderr)
            )
            raise QuiltError(f"cannot restore {self.settings.env_file} from its backup on {self.host}: {why}")
        self.reporter.step(f"restored {self.settings.env_file} from its backup")

    def undo(self, old_key_id: str, new_key_id: str, host_key: str | None) -> None:
        """Puts the old file back, recreates the containers on it, deletes the new key."""
        assert self.journal is not None and self.iam_user is not None
        self.save_journal(self.journal.at("rolling-back"))
        self.reporter.step("rolling back")
        if host_key != old_key_id:
            self.restore_old_file(old_key_id)
        if not self.runs_healthy_on(old_key_id):
            self.restart_on(old_key_id)
        self.allowed.add(new_key_id)
        rotation_plan.check_deletion(new_key_id, old_key_id, self.allowed)
        self.store.delete(self.iam_user, new_key_id)
        self.reporter.step(f"deleted {new_key_id}")
        self.clear_journal()

    def rollback(self, reason: str, old_key_id: str, new_key_id: str) -> None:
        """Undoes a rotation whose env file was written; always raises."""
        with self.step("rollback"):
            try:
                self.undo(old_key_id, new_key_id, new_key_id)
            except ConnectionLost as e:
                raise self.unfinished(
                    f"rotation failed ({reason}); then {e} while rolling back", old_key_id, new_key_id
                ) from None
            except QuiltError as e:
                raise RollbackFailed(self.stuck_message(reason, str(e), old_key_id, new_key_id)) from None
        raise RolledBack(f"rotation failed and was rolled back: {reason}")

    def holds(self) -> str:
        try:
            s = self.script()
            s.send_file(self.settings.env_file, "env")
            output, _, _ = self.run_script(s, "reading the env file")
            content = shell.blob(output, "env")
            return (EnvFile(content).key_id or "no key") if content is not None else "an unknown key"
        except QuiltError:
            return "an unknown key (cannot read it)"

    def stuck_message(self, reason: str, rollback_error: str, old_key_id: str, new_key_id: str) -> str:
        return (
            f"rotation failed ({reason}) and so did its rollback ({rollback_error}); "
            f"{self.settings.env_file} on {self.host} holds {self.holds()}; both {old_key_id} and {new_key_id} "
            f"stay Active; to finish, run: {self.again}"
        )

    def unfinished(self, what: str, old_key_id: str, new_key_id: str) -> Unfinished:
        return Unfinished(
            f"{what}; {self.settings.env_file} on {self.host} holds {old_key_id} or {new_key_id}, "
            f"both stay Active; the journal on the host lets the next run finish or roll back: "
            f"run {self.again}"
        )

    def interrupted(self) -> QuiltError:
        """Ctrl-C: delete a key the host never saw; otherwise say how to finish."""
        current = self.journal
        if current is None:
            return Interrupted(f"interrupted during {self.current_step}; nothing was changed on {self.host}")
        if current.step in ("creating", "created") and current.new_key_id and self.iam_user:
            try:
                self.abandon(self.iam_user, current.new_key_id)
                return Interrupted(
                    f"interrupted during {self.current_step}; the new key {current.new_key_id} was "
                    f"deleted and {self.host} was not changed"
                )
            except QuiltError:
                pass
        return Interrupted(
            f"interrupted during {self.current_step}; {self.host} may hold the old or the new key; "
            f"run {self.again} again to finish or roll back"
        )

    # -- resume -------------------------------------------------------------------------------

    def resume(self, found: Journal) -> RotationReport | None:
        """Finishes or rolls back a run that died; returns a report if it finished one."""
        state = self.state
        assert state is not None and self.iam_user is not None
        self.journal = found
        self.reporter.step(
            f"found an unfinished rotation (step '{found.step}', started "
            f"{found.started:%Y-%m-%dT%H:%M:%SZ} by {found.who})"
        )
        decision = rotation_plan.resume(found, self.host, state.host_key, self.iam_user, self.keys)
        self.audit.update(
            resumed=found.step, decision=decision.action.value, old_key_id=found.old_key_id, new_key_id=found.new_key_id
        )
        self.allowed |= {k for k in (decision.delete_new, decision.retire_old) if k}
        with self.step("resume"):
            if decision.action == Resume.ROLL_BACK:
                self.resume_roll_back(found, decision)
                return None
            if decision.action == Resume.FINISH_ROLLBACK:
                try:
                    self.undo(found.old_key_id, found.new_key_id or "", state.host_key)
                except QuiltError as e:
                    raise RollbackFailed(
                        self.stuck_message(
                            "resuming a rollback", str(e), found.old_key_id, found.new_key_id or "the new key"
                        )
                    ) from None
                self.reporter.step("finished the interrupted rollback; now rotating afresh")
                return None
            new = decision.runs_on
            try:
                if not self.runs_healthy_on(new):
                    self.restart_on(new)
            except ConnectionLost as e:
                raise self.unfinished(str(e), found.old_key_id, new) from None
            except QuiltError as e:
                self.rollback(f"resuming: {e}", found.old_key_id, new)
            if decision.retire_old:
                self.finish(self.iam_user, decision.retire_old, new, found.keep_old)
            else:
                self.clear_journal()
            return RotationReport(
                self.host,
                "finished",
                self.iam_user,
                found.old_key_id,
                new,
                f"finished the unfinished rotation {found.old_key_id} -> {new} for {self.iam_user}",
            )

    def resume_roll_back(self, found: Journal, decision: ResumeDecision) -> None:
        assert self.iam_user is not None
        try:
            if not self.runs_healthy_on(decision.runs_on):
                self.restart_on(decision.runs_on)
            if decision.delete_new:
                self.retire_key(
                    self.iam_user, Deletion(decision.delete_new, "left by the unfinished rotation"), decision.runs_on
                )
            self.clear_journal()
        except QuiltError as e:
            raise RollbackFailed(
                self.stuck_message(
                    "resuming an unfinished rotation", str(e), found.old_key_id, found.new_key_id or "the new key"
                )
            ) from None
        for key_id in decision.unproven:
            self.reporter.step(
                f"note: {key_id} was created after the unfinished rotation started but it did not "
                f"record it; if it is that run's, delete it: aws iam delete-access-key "
                f"--user-name {self.iam_user} --access-key-id {key_id}"
            )
        self.reporter.step("rolled the unfinished rotation back; now rotating afresh")

    def close(self) -> None:
        self.lock.release()


class _Step:
    """Times a step for the audit record."""

    def __init__(self, rotation: Rotation, name: str) -> None:
        self.rotation, self.name = rotation, name

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.rotation.audit["steps"].append({"step": self.name, "seconds": round(time.monotonic() - self.started, 3)})


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
