"""Rotating RegistryUser's access key on one host, so that nothing is ever lost.

The steps: find the IAM user, pre-flight (read-only), create the new key, verify
it with its own credentials, write the env file atomically, recreate the
containers and require health on the new key, retire the old key.

Invariants kept at every instant:
- the host's env file names a key that IAM accepts: a key is deleted only after
  neither the file nor the running registry uses it;
- the env file is the complete old or the complete new file (see `hostfiles`);
- a journal on the host (next to the env file, 0600, key IDs and step only)
  says how far a run got, so the next run, from any machine, finishes it or
  rolls it back, whatever killed it.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from fabric import Connection

from . import containers, health, hostfiles, ssh
from . import restart as restarting
from .config import Settings
from .envfile import BUCKET, EnvFile, EnvFileError
from .errors import QuiltError
from .keys import AwsError, KeyStore, NewKey, VerifyTimeout
from .lock import HostLock, who_am_i
from .output import Progress
from .status import ExitStatus

REGISTRY_CONTAINER = "registry"


class RotationFailed(QuiltError):
    """The rotation did not happen; the host and IAM are as they were (or were rolled back)."""

    status = ExitStatus.FAILED


class RolledBack(RotationFailed):
    """The rotation failed after the env file was written, and was rolled back."""


class RollbackFailed(QuiltError):
    """The rotation failed and so did its rollback; the message says what to run."""

    status = ExitStatus.ROLLBACK_FAILED


@dataclass
class RotateOptions:
    iam_user: str | None = None
    stack: str | None = None
    keep_old: bool = False
    delete_other_active: bool = False
    verify_timeout: float = 60.0
    restart_timeout: float | None = None
    dry_run: bool = False


@dataclass
class Plan:
    """What a rotation will do on one host, from pre-flight."""

    host: str
    iam_user: str
    user_source: str
    user_arn: str
    old_key_id: str
    bucket: str | None
    mode: int
    new_mode: int
    secret_names: list[str]
    key_count: int
    delete_inactive: list[str] = field(default_factory=list)
    delete_active: list[str] = field(default_factory=list)
    keep_old: bool = False

    def lines(self, settings: Settings) -> list[str]:
        out = [f"Plan for {self.host}:",
               f"  IAM user {self.iam_user} ({self.user_source}), {self.key_count} key(s); "
               f"the host runs on {self.old_key_id} (Active)"]
        n = 1
        for key in self.delete_inactive:
            out.append(f"  {n}. delete {key}: Inactive and not the host's, it holds the second key slot")
            n += 1
        for key in self.delete_active:
            out.append(f"  {n}. deactivate and delete {key}: Active and not the host's (--delete-other-active)")
            n += 1
        checks = "STS GetCallerIdentity" + (f" and a one-object list of s3://{self.bucket}" if self.bucket else "")
        secret = " and ".join(self.secret_names) if self.secret_names else "AWS_SECRET_ACCESS_KEY (added)"
        mode = f"{self.mode:04o}" if self.mode == self.new_mode else f"{self.mode:04o} -> {self.new_mode:04o}"
        out += [
            f"  {n}. create a new access key for {self.iam_user}",
            f"  {n + 1}. verify it with its own credentials: {checks}, 3 passes in a row",
            f"  {n + 2}. rewrite AWS_ACCESS_KEY_ID and {secret} in {settings.env_file} atomically "
            f"(mode {mode}, backup kept until done)",
            f"  {n + 3}. docker rm -f {' '.join(settings.containers)}; {settings.start_script}; "
            f"require health and the new key in the registry container",
            f"  {n + 4}. " + (f"deactivate {self.old_key_id} (kept, Inactive: --keep-old)" if self.keep_old
                              else f"deactivate, then delete {self.old_key_id}"),
        ]
        return out


@dataclass
class RotationReport:
    host: str
    outcome: str
    iam_user: str | None = None
    old_key_id: str | None = None
    new_key_id: str | None = None
    message: str = ""


class Rotation:
    """One rotation on one host: `run` it once."""

    def __init__(self, c: Connection, settings: Settings, store: KeyStore, options: RotateOptions,
                 progress: Progress) -> None:
        self.c, self.settings, self.store, self.options, self.progress = c, settings, store, options, progress
        self.host = ssh.describe(c)
        self.journal_name = hostfiles.sibling(settings.env_file, "quilt-ops-rotation.json")
        self.backup_name = hostfiles.sibling(settings.env_file, "quilt-ops-backup")
        self.journal: dict[str, Any] = {}
        #: The audit record of this run (no secret ever goes in).
        self.audit: dict[str, Any] = {"task": "rotate-keys", "host": self.host, "steps": []}
        self.current_step = "start"

    # -- bookkeeping ------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.current_step = name
        started = time.monotonic()
        try:
            yield
        finally:
            self.audit["steps"].append({"step": name, "seconds": round(time.monotonic() - started, 3)})

    def save_journal(self, then: str = "", **changes: Any) -> None:
        """Writes the journal (and runs ``then``, a shell command, in the same round trip)."""
        self.journal.update(changes)
        hostfiles.write_private(self.c, self.settings, self.journal_name,
                                json.dumps(self.journal, sort_keys=True).encode(), then=then)

    def clear_journal(self) -> None:
        hostfiles.remove(self.c, self.settings, self.backup_name, self.journal_name)
        self.journal = {}

    def host_key(self) -> str | None:
        return EnvFile(hostfiles.read(self.c, self.settings, self.settings.env_file).content).key_id

    def registry_runs_with(self, key_id: str) -> bool:
        command = containers.env_has_command(REGISTRY_CONTAINER, "AWS_ACCESS_KEY_ID", key_id)
        result = ssh.run(self.c, ssh.in_dir(self.settings, command), timeout=30)
        return result.stdout.strip() == "1"

    def unhealthy(self) -> bool:
        """True when containers or probes fail now (so recreating the containers is called for)."""
        return bool(health.collect(self.c, self.settings, env_file=False).failing())

    def restart_on(self, key_id: str) -> None:
        """Recreates the containers and requires health with ``key_id`` in the registry."""
        restarting.restart(self.c, self.settings, self.progress, self.options.restart_timeout)
        if not self.registry_runs_with(key_id):
            raise RotationFailed(f"the recreated registry container does not run with {key_id}")
        self.progress.step(f"the registry runs with {key_id}")

    # -- the run ------------------------------------------------------------------------

    def run(self) -> RotationReport:
        try:
            if self.options.dry_run:
                return self.dry_run()
            with HostLock(self.c, self.settings, "rotate-keys"):
                self.progress.step(f"locked {self.host}")
                existing = self.load_journal(clean=True)
                if existing:
                    finished = self.resume(existing)
                    if finished:
                        return finished
                remote = hostfiles.read(self.c, self.settings, self.settings.env_file)
                plan = self.preflight(remote)
                for line in plan.lines(self.settings):
                    print(line, flush=True)
                return self.rotate(plan, remote)
        except KeyboardInterrupt:
            raise QuiltError(f"interrupted during '{self.current_step}'; run rotate-keys again to finish "
                             "or roll back", status=ExitStatus.INTERRUPTED) from None

    def load_journal(self, clean: bool = False) -> dict[str, Any] | None:
        """The journal of an unfinished run, if any; with ``clean``, also removes the temp
        files a killed run left (only while holding the lock), in the same round trip."""
        folder = posixpath.dirname(self.settings.env_file)
        pattern = shlex.quote(posixpath.join(folder, hostfiles.TEMP_PREFIX) if folder else hostfiles.TEMP_PREFIX)
        command = (f"rm -f -- {pattern}*; " if clean else "") + \
            f"if [ -e {shlex.quote(self.journal_name)} ]; then cat -- {shlex.quote(self.journal_name)}; fi"
        result = ssh.run(self.c, ssh.in_dir(self.settings, command), timeout=30)
        raw = result.stdout.strip()
        if not raw:
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or "old_key_id" not in data or "iam_user" not in data:
                raise ValueError
        except ValueError:
            raise RollbackFailed(f"the rotation journal {self.journal_name} on {self.host} is unreadable; "
                                 "check the env file by hand, then remove the journal") from None
        return data

    def dry_run(self) -> RotationReport:
        remote = hostfiles.read(self.c, self.settings, self.settings.env_file)
        existing = self.load_journal()
        if existing:
            print(f"{self.host}: an unfinished rotation ({existing.get('step')}, started {existing.get('started')} "
                  f"by {existing.get('who')}) would be finished or rolled back first")
        plan = self.preflight(remote)
        for line in plan.lines(self.settings):
            print(line)
        print(f"{self.host}: dry run, nothing changed")
        self.audit.update(iam_user=plan.iam_user, old_key_id=plan.old_key_id)
        return RotationReport(self.host, "dry-run", plan.iam_user, plan.old_key_id)

    def find_user(self, env: EnvFile) -> tuple[str, str]:
        if self.options.iam_user:
            return self.options.iam_user, "--iam-user"
        if self.settings.iam_user:
            return self.settings.iam_user, "quilt.iam_user"
        try:
            owner = self.store.user_of_key(env.key_id or "")
        except AwsError:
            if self.options.stack:
                return self.store.user_from_stack(self.options.stack), f"RegistryUser of stack {self.options.stack}"
            raise
        if "RegistryUser" not in owner:
            # A host holding someone else's key (an admin's, say) must not get it rotated by guesswork.
            raise RotationFailed(f"the host's key {env.key_id} belongs to IAM user {owner}, which is not a "
                                 f"RegistryUser; give --iam-user {owner} to rotate it anyway; nothing was changed")
        return owner, "owner of the host's key"

    def check_health(self) -> None:
        """A rotation restarts the registry: refuse to start one on a host that is already down."""
        report = health.collect(self.c, self.settings, env_file=False)
        bad = [c for c in report.checks if c.status in (ExitStatus.CRITICAL, ExitStatus.UNKNOWN)]
        if bad:
            reasons = "; ".join(f"{c.name}: {c.summary}" for c in bad[:3])
            raise RotationFailed(f"{self.host} is not healthy now ({reasons}); fix it first "
                                 "(fab restart); nothing was changed")

    def preflight(self, remote: hostfiles.RemoteFile) -> Plan:
        """Reads everything, changes nothing; raises `RotationFailed` when it cannot go on safely."""
        with self.step("preflight"):
            env = EnvFile(remote.content)
            try:
                env.check_rotatable()
            except EnvFileError as e:
                raise RotationFailed(f"{self.settings.env_file} on {self.host} cannot be rotated safely: {e}; "
                                     "nothing was changed") from None
            self.check_health()
            user, source = self.find_user(env)
            arn = self.store.user_arn(user)
            keys = self.store.keys(user)
            host_key = env.key_id
            self.audit.update(iam_user=user, old_key_id=host_key)
            mine = [k for k in keys if k.id == host_key]
            if not mine:
                raise RotationFailed(f"the host's key {host_key} does not belong to IAM user {user}; "
                                     "nothing was changed")
            if mine[0].status != "Active":
                raise RotationFailed(f"the host's key {host_key} is {mine[0].status} in IAM, so the registry "
                                     "cannot be using it; fix that first; nothing was changed")
            others = [k for k in keys if k.id != host_key]
            plan = Plan(self.host, user, source, arn, host_key, env.get(BUCKET), remote.mode,
                        (remote.mode & 0o600) or 0o600, env.secret_names, len(keys), keep_old=self.options.keep_old)
            if len(keys) >= 2:
                plan.delete_inactive = [k.id for k in others if k.status != "Active"]
                active = [k.id for k in others if k.status == "Active"]
                if active and not self.options.delete_other_active:
                    raise RotationFailed(
                        f"IAM user {user} is at the two-key limit and {', '.join(active)} is Active and not the "
                        "host's (it may be in use elsewhere); delete it yourself or rerun with "
                        "--delete-other-active; nothing was changed")
                plan.delete_active = active
            self.progress.step(f"pre-flight passed: {user}, host key {host_key}")
            return plan

    def rotate(self, plan: Plan, remote: hostfiles.RemoteFile) -> RotationReport:
        user = plan.iam_user
        # The journal first: if it cannot be written, nothing has been changed yet.
        self.journal = {"version": 1, "step": "creating", "iam_user": user, "old_key_id": plan.old_key_id,
                        "existing": [plan.old_key_id], "keep_old": plan.keep_old, "mode": plan.mode,
                        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "who": who_am_i()}
        try:
            self.save_journal()
        except hostfiles.HostFileError as e:
            raise RotationFailed(f"{e}; nothing was changed") from None
        with self.step("cleanup"):
            for key_id in plan.delete_inactive:
                self.store.delete(user, key_id)
                self.progress.step(f"deleted Inactive key {key_id}")
            for key_id in plan.delete_active:
                self.store.deactivate(user, key_id)
                self.store.delete(user, key_id)
                self.progress.step(f"deactivated and deleted {key_id}")
        with self.step("create"):
            try:
                new = self.store.create(user)
            except AwsError as e:
                self.clear_journal()
                raise RotationFailed(f"{e}; nothing was changed") from None
            self.audit["new_key_id"] = new.id
            self.progress.step(f"created {new.id}")
        try:
            self.save_journal(step="created", new_key_id=new.id)
            self.verify(plan, new)
        except hostfiles.HostFileError as e:
            self.abandon(user, new.id)
            raise RotationFailed(f"{e}; the new key was deleted and the host was not changed") from None
        self.write(plan, remote, new)
        with self.step("restart"):
            try:
                self.restart_on(new.id)
            except QuiltError as e:
                self.rollback(str(e), plan.old_key_id, new.id, plan.mode)
        self.retire(user, plan.old_key_id, plan.keep_old)
        self.clear_journal()
        message = (f"rotated {plan.old_key_id} -> {new.id} for {user}"
                   + (f"; {plan.old_key_id} kept Inactive" if plan.keep_old else f"; {plan.old_key_id} deleted"))
        return RotationReport(self.host, "rotated", user, plan.old_key_id, new.id, message)

    def verify(self, plan: Plan, new: NewKey) -> None:
        with self.step("verify"):
            started = time.monotonic()
            try:
                checks = self.store.verify(new, plan.user_arn, plan.bucket, self.options.verify_timeout,
                                           on_wait=self.progress.waiting)
            except (VerifyTimeout, AwsError) as e:
                self.progress.done()
                self.abandon(plan.iam_user, new.id)
                raise RotationFailed(f"{e}; the new key was deleted and the host was not changed") from None
            self.progress.done()
            self.progress.step(f"verified {new.id}: 3 passes in a row after {checks} checks "
                               f"({time.monotonic() - started:.1f}s)")

    def abandon(self, user: str, key_id: str) -> None:
        """Deletes a new key the host never saw, and the journal.

        If AWS cannot be reached to delete it, the journal stays, so that the next
        run deletes the key (the host still runs on the old one).
        """
        try:
            self.store.delete(user, key_id)
        except AwsError as e:
            raise RotationFailed(f"the new key {key_id} could not be deleted ({e}); the host was not changed "
                                 "and still runs on the old key; run rotate-keys again to clean up") from None
        self.clear_journal()

    def write(self, plan: Plan, remote: hostfiles.RemoteFile, new: NewKey) -> None:
        with self.step("write"):
            content = EnvFile(remote.content).with_key(new.id, new.secret)
            try:
                self.save_journal(step="writing", then=hostfiles.backup_command(self.settings.env_file,
                                                                                self.backup_name))
                hostfiles.replace(self.c, self.settings, self.settings.env_file, content, plan.new_mode)
            except hostfiles.HostFileError as e:
                # The env file is untouched (the replace is atomic): undo the key.
                self.abandon(plan.iam_user, new.id)
                raise RotationFailed(f"{e}; the new key was deleted and the host was not changed") from None
            self.save_journal(step="written")
            self.progress.step(f"wrote {self.settings.env_file} with {new.id} (backup kept until done)")

    def retire(self, user: str, old_key_id: str, keep_old: bool) -> None:
        """Deactivates, then deletes, the old key; the journal stays until both are done."""
        with self.step("retire"):
            self.save_journal(step="retiring")
            try:
                self.store.deactivate(user, old_key_id)
                if not keep_old:
                    self.store.delete(user, old_key_id)
            except AwsError as e:
                raise RotationFailed(f"{self.host} runs on the new key, but retiring {old_key_id} failed: {e}; "
                                     "run rotate-keys again to finish") from None
            self.progress.step(f"deactivated {old_key_id} (kept: --keep-old)" if keep_old
                               else f"deactivated and deleted {old_key_id}")

    # -- failure --------------------------------------------------------------------------

    def undo(self, old_key_id: str, new_key_id: str, mode: int) -> None:
        """Puts the old file back, recreates the containers on it, deletes the new key."""
        self.save_journal(step="rolling-back")
        self.progress.step("rolling back")
        if self.host_key() != old_key_id:
            hostfiles.restore(self.c, self.settings, self.backup_name, self.settings.env_file, mode)
            self.progress.step(f"restored {self.settings.env_file} from its backup")
        if not self.registry_runs_with(old_key_id) or self.unhealthy():
            self.restart_on(old_key_id)
        self.store.delete(self.journal["iam_user"], new_key_id)
        self.progress.step(f"deleted {new_key_id}")
        self.clear_journal()

    def rollback(self, reason: str, old_key_id: str, new_key_id: str, mode: int) -> None:
        """Undoes a rotation whose env file was written; always raises."""
        with self.step("rollback"):
            try:
                self.undo(old_key_id, new_key_id, mode)
            except QuiltError as e:
                raise RollbackFailed(self.stuck_message(reason, str(e), old_key_id, new_key_id)) from None
        raise RolledBack(f"rotation failed and was rolled back: {reason}")

    def stuck_message(self, reason: str, rollback_error: str, old_key_id: str, new_key_id: str) -> str:
        try:
            holds = self.host_key() or "no key"
        except QuiltError:
            holds = "an unknown key (cannot read it)"
        return (f"rotation failed ({reason}) and so did its rollback ({rollback_error}); "
                f"{self.settings.env_file} on {self.host} holds {holds}; both {old_key_id} and {new_key_id} "
                f"stay Active; to finish, run: fab -H {self.host} rotate-keys")

    # -- resume ---------------------------------------------------------------------------

    def resume(self, journal: dict[str, Any]) -> RotationReport | None:
        """Finishes or rolls back a run that died; returns a report if it finished one."""
        self.journal = dict(journal)
        user, old, new = journal["iam_user"], journal["old_key_id"], journal.get("new_key_id")
        self.audit.update(resumed=journal.get("step"), iam_user=user, old_key_id=old, new_key_id=new)
        self.progress.step(f"found an unfinished rotation (step '{journal.get('step')}', started "
                           f"{journal.get('started')} by {journal.get('who')})")
        host_key = self.host_key()
        with self.step("resume"):
            if host_key == old:
                try:
                    if not self.registry_runs_with(old) or self.unhealthy():
                        self.restart_on(old)
                    # Any key the dead run made (the new one, even if it died before recording it).
                    known = {k.id for k in self.store.keys(user)}
                    existing = set(journal.get("existing") or [old])
                    for key_id in sorted(known - existing - {old}):
                        self.store.delete(user, key_id)
                        self.progress.step(f"deleted {key_id}, left by the unfinished rotation")
                    self.clear_journal()
                except QuiltError as e:
                    raise RollbackFailed(self.stuck_message("resuming an unfinished rotation", str(e), old,
                                                            new or "the new key")) from None
                self.progress.step("rolled the unfinished rotation back; now rotating afresh")
                return None
            if new and host_key == new:
                if journal.get("step") == "rolling-back":
                    try:
                        self.undo(old, new, int(journal.get("mode", 0o600)))
                    except QuiltError as e:
                        raise RollbackFailed(self.stuck_message("resuming a rollback", str(e), old, new)) from None
                    self.progress.step("finished the interrupted rollback; now rotating afresh")
                    return None
                try:
                    if not self.registry_runs_with(new) or self.unhealthy():
                        self.restart_on(new)
                except QuiltError as e:
                    self.rollback(f"resuming: {e}", old, new, int(journal.get("mode", 0o600)))
                self.retire(user, old, bool(journal.get("keep_old")))
                self.clear_journal()
                return RotationReport(self.host, "finished", user, old, new,
                                      f"finished the unfinished rotation {old} -> {new} for {user}")
        raise RollbackFailed(
            f"{self.settings.env_file} on {self.host} holds {host_key}, neither the old key {old} nor the new "
            f"key {new} of an unfinished rotation; check it by hand, then remove {self.journal_name}")
