"""``backup`` and ``backups``: manual RDS snapshots of a registry stack's database.

The database is the stack's ``AWS::RDS::DBInstance`` resource (or ``--db-instance``).
A snapshot quilt-ops makes is named ``quilt-ops-<stack>-<UTC time>`` and tagged
``made-by=quilt-ops``; only snapshots with both are ever listed as quilt-ops' or
deleted by ``--keep``. The decisions are pure (`snapshot_name`, `refusal`,
`to_delete`, `rows`; tests/unit/test_backups.py); `Backups` makes the calls
(`quilt_ops.account.Calls`: one boto3 session, calls named by their IAM action).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from . import stopping
from .account import DB_TYPE, CallFailed, Calls, Database, Denied, Snapshot
from .containers import duration
from .errors import ConfigError, QuiltError, Refused
from .reporting import Reporter
from .status import ExitStatus

PREFIX = "quilt-ops-"
#: The tag every snapshot quilt-ops makes carries (the name prefix alone proves nothing).
TAG_KEY, TAG_VALUE = "made-by", "quilt-ops"
#: RDS's snapshot identifiers: a letter, then letters, digits and single hyphens, at most 255.
IDENTIFIER = re.compile(r"[a-z](?!.*--)[a-z0-9-]{0,254}(?<!-)")
#: Snapshot states after which waiting cannot help.
FAILED_STATES = {"failed", "error", "incompatible-restore"}
#: Seconds between polls while waiting for a snapshot (RDS takes minutes).
POLL_SECONDS = 2.0


# ----------------------------------------------------------------------------- pure decisions


def snapshot_name(label: str, now: datetime) -> str:
    """``quilt-ops-<stack>-<UTC time>`` as RDS stores it (lower case, single hyphens)."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "db"
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"{PREFIX}{slug}"[: 255 - len(stamp) - 1].rstrip("-") + f"-{stamp}"
    assert IDENTIFIER.fullmatch(name), name
    return name


#: The tag naming the stack (or database) a quilt-ops snapshot was made for.
STACK_TAG = "quilt-ops:stack"
#: How far a snapshot's creation time may be from the time in its name (RDS starts it at once).
NAME_TIME_SLACK = timedelta(hours=1)


def made_by_quilt_ops(snapshot: Snapshot, label: str | None = None) -> bool:
    """A manual snapshot named and tagged by quilt-ops; with ``label`` (the stack), provably
    made by ``backup`` for it: the exact name ``snapshot_name`` gives, a creation time that
    agrees with the time in the name, and both tags. A name prefix or a tag alone (anyone
    with rds:AddTagsToResource can set one) proves nothing."""
    if not (
        snapshot.snapshot_type == "manual"
        and snapshot.identifier.startswith(PREFIX)
        and snapshot.tags.get(TAG_KEY) == TAG_VALUE
    ):
        return False
    if label is None:
        return True
    if snapshot.tags.get(STACK_TAG) != label:
        return False
    stem = snapshot_name(label, datetime(2000, 1, 1, tzinfo=timezone.utc))[: -len("-20000101-000000")]
    match = re.fullmatch(re.escape(stem) + r"-(\d{8}-\d{6})", snapshot.identifier)
    if match is None:
        return False
    try:
        named = datetime.strptime(match[1], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return False
    return snapshot.created is None or abs(snapshot.created - named) <= NAME_TIME_SLACK


def ours(snapshots: list[Snapshot], db_instance: str, label: str | None = None) -> list[Snapshot]:
    """The quilt-ops snapshots of one database (made for ``label``, when given), newest first."""
    found = [s for s in snapshots if made_by_quilt_ops(s, label) and s.db_instance == db_instance]
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(found, key=lambda s: (s.created or oldest, s.identifier), reverse=True)


def to_delete(snapshots: list[Snapshot], db_instance: str, keep: int, label: str) -> list[Snapshot]:
    """What ``--keep N`` deletes: the snapshots provably made by ``backup`` for ``label`` of
    this database (`made_by_quilt_ops`) beyond the N newest available ones, oldest last. Never
    a lookalike, never one of another database or stack, never one that is not available
    (still being made, or failed): at least N available quilt-ops snapshots always remain."""
    if keep < 1:
        raise ConfigError(f"--keep must be at least 1, not {keep}")
    available = [s for s in ours(snapshots, db_instance, label) if s.status == "available"]
    return available[keep:]


def refusal(db: Database | None, identifier: str, snapshots: list[Snapshot]) -> str | None:
    """Why a snapshot cannot be made now (one line), or None."""
    if db is None:
        return f"DB instance {identifier} does not exist"
    if db.status != "available":
        return f"DB instance {identifier} is {db.status}, not available: RDS snapshots only an available database"
    running = [s for s in snapshots if s.db_instance == identifier and s.status == "creating"]
    if running:
        progress = f", {running[0].progress}%" if running[0].progress is not None else ""
        return (
            f"a snapshot of {identifier} is already being made ({running[0].identifier}{progress}); "
            "run backup again when it is available"
        )
    return None


def rows(snapshots: list[Snapshot], now: datetime) -> list[tuple[str, str, str, str, str]]:
    """``backups``' table: name, state, size, age, creation time."""
    out = []
    for s in snapshots:
        age = (now - s.created).total_seconds() if s.created else None
        size = f"{s.size_gib} GiB" if s.size_gib is not None else "-"
        state = s.status + (f" {s.progress}%" if s.status == "creating" and s.progress is not None else "")
        created = s.created.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if s.created else "-"
        out.append((s.identifier, state, size, duration(age) if age is not None else "-", created))
    return out


def as_dict(snapshot: Snapshot, now: datetime) -> dict[str, Any]:
    age = (now - snapshot.created).total_seconds() if snapshot.created else None
    return {
        "snapshot": snapshot.identifier,
        "db_instance": snapshot.db_instance,
        "status": snapshot.status,
        "size_gib": snapshot.size_gib,
        "created": snapshot.created.astimezone(timezone.utc).isoformat() if snapshot.created else None,
        "age_seconds": age,
        "progress": snapshot.progress,
    }


def snapshot_of(raw: dict[str, Any]) -> Snapshot:
    """A `Snapshot` from RDS's DescribeDBSnapshots."""
    created = raw.get("SnapshotCreateTime")
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return Snapshot(
        identifier=str(raw["DBSnapshotIdentifier"]),
        db_instance=str(raw.get("DBInstanceIdentifier", "")),
        status=str(raw.get("Status", "")),
        created=created if isinstance(created, datetime) else None,
        snapshot_type=str(raw.get("SnapshotType", "")),
        size_gib=raw.get("AllocatedStorage"),
        tags={t["Key"]: t["Value"] for t in raw.get("TagList") or [] if "Key" in t},
        progress=raw.get("PercentProgress"),
    )


# ----------------------------------------------------------------------------- I/O


@dataclass
class BackupOptions:
    wait: bool = False
    timeout: float = 1800.0
    keep: int | None = None
    dry_run: bool = False


@dataclass
class BackupReport:
    """What ``backup`` did (or would do) for one database."""

    label: str
    db_instance: str
    snapshot: str
    status: str = ""
    seconds: float | None = None
    deleted: list[str] = field(default_factory=list)
    dry_run: bool = False

    def line(self) -> str:
        if self.dry_run:
            would = f"dry run: would snapshot {self.db_instance} as {self.snapshot} (tagged {TAG_KEY}={TAG_VALUE})"
            if self.deleted:
                would += f", then delete {len(self.deleted)} older quilt-ops snapshot(s): {', '.join(self.deleted)}"
            return f"{self.label}: {would}; nothing changed"
        made = f"{self.label}: snapshot {self.snapshot} of {self.db_instance} " + (
            f"available after {self.seconds:.0f}s"
            if self.status == "available" and self.seconds is not None
            else f"started ({self.status or 'creating'})"
        )
        if self.deleted:
            made += f"; deleted {len(self.deleted)} older quilt-ops snapshot(s): {', '.join(self.deleted)}"
        return made


class Backups:
    """RDS and CloudFormation calls for one database (one thread)."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def _call(self, action: str, **kwargs: Any) -> Any:
        try:
            return self.calls(action, **kwargs)
        except Denied as e:
            raise QuiltError(f"not allowed: {e}", status=ExitStatus.FAILED) from None
        except CallFailed as e:
            raise QuiltError(str(e), status=ExitStatus.FAILED) from None

    def database_of(self, stack: str | None, db_instance: str | None) -> tuple[str, str]:
        """(DB instance ID, label for names and messages): ``--db-instance``, else the stack's
        AWS::RDS::DBInstance resource."""
        if db_instance:
            return db_instance, stack or db_instance
        if not stack:
            raise ConfigError("no database given: use --stack NAME (or quilt.stacks) or --db-instance ID")
        listed = self._call("cloudformation:DescribeStackResources", StackName=stack).get("StackResources", [])
        found = [r["PhysicalResourceId"] for r in listed if r.get("ResourceType") == DB_TYPE]
        if not found:
            raise QuiltError(f"stack {stack} has no {DB_TYPE} resource; give --db-instance ID")
        if len(found) > 1:
            raise QuiltError(f"stack {stack} has {len(found)} DB instances ({', '.join(found)}); give --db-instance ID")
        return found[0], stack

    def database(self, identifier: str) -> Database | None:
        try:
            found = self.calls("rds:DescribeDBInstances", DBInstanceIdentifier=identifier)["DBInstances"]
        except CallFailed as e:
            if e.means("DBInstanceNotFound", "DBInstanceNotFoundFault"):
                return None
            raise QuiltError(str(e), status=ExitStatus.FAILED) from None
        except Denied as e:
            raise QuiltError(f"not allowed: {e}", status=ExitStatus.FAILED) from None
        db = found[0]
        return Database(identifier, str(db.get("DBInstanceStatus")), int(db.get("BackupRetentionPeriod") or 0))

    def snapshots(self, identifier: str) -> list[Snapshot]:
        """The manual snapshots of a database (every page)."""
        found: list[Snapshot] = []
        marker = None
        while True:
            page = self._call(
                "rds:DescribeDBSnapshots",
                DBInstanceIdentifier=identifier,
                SnapshotType="manual",
                **({"Marker": marker} if marker else {}),
            )
            found += [snapshot_of(s) for s in page.get("DBSnapshots", [])]
            marker = page.get("Marker")
            if not marker:
                return found

    def one(self, name: str) -> Snapshot | None:
        try:
            found = self.calls("rds:DescribeDBSnapshots", DBSnapshotIdentifier=name)["DBSnapshots"]
        except CallFailed as e:
            if e.means("DBSnapshotNotFound", "DBSnapshotNotFoundFault"):
                return None
            raise
        return snapshot_of(found[0]) if found else None

    def backup(
        self,
        identifier: str,
        label: str,
        options: BackupOptions,
        reporter: Reporter,
        record: dict[str, Any],
        now: datetime | None = None,
    ) -> BackupReport:
        """Checks, snapshots, waits (``--wait``), then prunes (``--keep``). ``record`` is the
        audit record, filled as it goes."""
        now = now or datetime.now(timezone.utc)
        name = snapshot_name(label, now)
        report = BackupReport(label, identifier, name, dry_run=options.dry_run)
        record.update(db_instance=identifier, snapshot=name)
        existing = self.snapshots(identifier)
        why_not = refusal(self.database(identifier), identifier, existing)
        if why_not:
            raise Refused(f"{why_not}; nothing was changed")
        if options.dry_run:
            if options.keep is not None:
                # With --wait the new snapshot counts among the N newest once it is available.
                new = Snapshot(
                    name, identifier, "available", now, "manual", None, {TAG_KEY: TAG_VALUE, STACK_TAG: label}
                )
                planned = [*existing, new] if options.wait else existing
                report.deleted = [s.identifier for s in to_delete(planned, identifier, options.keep, label)]
            return report
        started = time.monotonic()
        made = self._call(
            "rds:CreateDBSnapshot",
            DBSnapshotIdentifier=name,
            DBInstanceIdentifier=identifier,
            Tags=[{"Key": TAG_KEY, "Value": TAG_VALUE}, {"Key": STACK_TAG, "Value": label}],
        )["DBSnapshot"]
        report.status = str(made.get("Status", "creating"))
        record["created"] = True
        reporter.step(f"snapshot {name} of {identifier} started")
        if options.wait:
            report.status = self.wait(name, options.timeout, reporter, started, keep=options.keep)
            report.seconds = time.monotonic() - started
        if options.keep is not None:
            try:
                doomed = to_delete(self.snapshots(identifier), identifier, options.keep, label)
                for snapshot in doomed:
                    self._call("rds:DeleteDBSnapshot", DBSnapshotIdentifier=snapshot.identifier)
                    report.deleted.append(snapshot.identifier)
                    reporter.step(f"deleted {snapshot.identifier}")
            except QuiltError as e:
                raise QuiltError(
                    f"snapshot {name} was made, but deleting older ones failed: {e}",
                    status=ExitStatus.INCOMPLETE,
                ) from None
            finally:
                record["deleted"] = report.deleted
        record["status"] = report.status
        return report

    def wait(self, name: str, timeout: float, reporter: Reporter, started: float, keep: int | None) -> str:
        """Polls the snapshot until it is available; raises when it fails or the time runs out."""
        deadline = started + timeout
        try:
            while True:
                try:
                    found = self.one(name)
                except (CallFailed, Denied) as e:
                    raise QuiltError(
                        f"snapshot {name} was started, but its state cannot be read: {e}",
                        status=ExitStatus.INCOMPLETE,
                    ) from None
                status = found.status if found else "missing"
                if status == "available":
                    reporter.done()
                    reporter.step(f"snapshot {name} available")
                    return status
                if status in FAILED_STATES or found is None:
                    raise QuiltError(f"snapshot {name} failed: RDS says it is {status}", status=ExitStatus.FAILED)
                if time.monotonic() >= deadline:
                    pruned = "; older snapshots were not deleted" if keep is not None else ""
                    raise QuiltError(
                        f"snapshot {name} is still {status} after {timeout:.0f}s; RDS goes on making it "
                        f"(see 'backups'){pruned}",
                        status=ExitStatus.INCOMPLETE,
                    )
                progress = f" {found.progress}%" if found and found.progress is not None else ""
                reporter.waiting(f"snapshot {name}: {status}{progress}, {time.monotonic() - started:.0f}s")
                stopping.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            raise QuiltError(
                f"interrupted: snapshot {name} was started and RDS goes on making it (see 'backups')",
                status=ExitStatus.INTERRUPTED,
            ) from None
        finally:
            reporter.done()


# ----------------------------------------------------------------------------- the tasks' runs


def keep_count(value: Any) -> int | None:
    """``--keep N``: a whole number from 1 to 1000 (None when not given)."""
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--keep must be a whole number, not {value!r}") from None
    if not 1 <= number <= 1000:
        raise ConfigError(f"--keep must be between 1 and 1000, not {number}")
    return number


def databases(stacks: list[str], db_instance: str | None) -> list[tuple[str | None, str | None]]:
    """(stack, --db-instance) pairs to work on: each stack, or the one DB instance given."""
    if db_instance:
        if len(stacks) > 1:
            raise ConfigError("--db-instance names one database: give at most one --stack with it")
        return [(stacks[0] if stacks else None, db_instance)]
    if not stacks:
        raise ConfigError("no database given: use --stack NAME (or quilt.stacks) or --db-instance ID")
    return [(stack, None) for stack in stacks]


def run_backup(
    audit_log: str,
    targets: list[tuple[str | None, str | None]],
    options: BackupOptions,
    profile: str | None,
    region: str | None,
    reporter_for: Any,
) -> Any:
    """``backup`` on each database in turn; one `quilt_ops.hosts.Results` entry each (by label)."""
    from . import audit, hosts

    results: hosts.Results[BackupReport] = hosts.Results()
    for stack, db_instance in targets:
        label = stack or db_instance or "?"
        try:
            store = Backups(Calls(profile, region))
            identifier, label = store.database_of(stack, db_instance)
            reporter = reporter_for(label)
            if options.dry_run:
                report = store.backup(identifier, label, options, reporter, {})
            else:
                with audit.recorded(audit_log, "backup", label, stack=stack, keep=options.keep) as record:
                    report = store.backup(identifier, label, options, reporter, record)
                    record["outcome"] = "available" if report.status == "available" else "started"
            results.append(hosts.HostResult(label, value=report))
        except QuiltError as e:
            results.append(hosts.HostResult(label, error=e))
        except KeyboardInterrupt:
            results.append(hosts.HostResult(label, error=QuiltError("interrupted", status=ExitStatus.INTERRUPTED)))
            break
    return results


def list_backups(
    targets: list[tuple[str | None, str | None]], profile: str | None, region: str | None
) -> list[tuple[str, str, list[Snapshot]]]:
    """(label, DB instance, its quilt-ops snapshots newest first) for each database."""
    found = []
    calls = Calls(profile, region)
    for stack, db_instance in targets:
        store = Backups(calls)
        identifier, label = store.database_of(stack, db_instance)
        found.append((label, identifier, ours(store.snapshots(identifier), identifier)))
    return found
