"""``backup`` and ``backups``' decisions: snapshot names, what ``--keep`` deletes (only quilt-ops'
own, never below N available), when a snapshot is refused, the listing; then ``backup`` with
canned AWS answers (dry run, refusal, --wait, --keep, a denied permission)."""

from datetime import datetime, timedelta, timezone

import pytest

from quilt_ops import backups
from quilt_ops.account import Database, Denied, Snapshot
from quilt_ops.backups import BackupOptions, Backups
from quilt_ops.errors import ConfigError, QuiltError, Refused
from quilt_ops.reporting import Recorder
from quilt_ops.status import ExitStatus

NOW = datetime(2026, 11, 28, 3, 10, 0, tzinfo=timezone.utc)
DB, OTHER_DB = "quilt-prod-registrydatabase-abc", "another-db"
LABEL = "quilt-prod"
TAGS = {"made-by": "quilt-ops", "quilt-ops:stack": LABEL}


@pytest.mark.parametrize(
    "label,name",
    [
        ("quilt-prod", "quilt-ops-quilt-prod-20261128-031000"),
        ("Quilt_Prod", "quilt-ops-quilt-prod-20261128-031000"),
        ("a--b", "quilt-ops-a-b-20261128-031000"),
        ("x" * 300, "quilt-ops-" + "x" * (255 - len("quilt-ops-") - 16) + "-20261128-031000"),
    ],
)
def test_snapshot_names(label, name):
    made = backups.snapshot_name(label, NOW)
    assert made == name and len(made) <= 255 and backups.IDENTIFIER.fullmatch(made)


def snap(name, hours_old, status="available", tags=TAGS, db=DB, kind="manual"):
    return Snapshot(name, db, status, NOW - timedelta(hours=hours_old), kind, 20, dict(tags))


def made(hours_old, **kw):
    """A snapshot as `backup` names it for LABEL, made ``hours_old`` ago."""
    return snap(backups.snapshot_name(LABEL, NOW - timedelta(hours=hours_old)), hours_old, **kw)


A = made(1)
B = made(2)
C = made(3)
D = made(4)
CREATING = made(0, status="creating")
FAILED = made(5, status="failed")
HAND_MADE = snap("before-upgrade", 10, tags={})
NAMED_ONLY = snap(backups.snapshot_name(LABEL, NOW - timedelta(hours=11)), 11, tags={})
TAGGED_ONLY = snap("nightly", 12)
OTHER_DBS = snap(backups.snapshot_name(LABEL, NOW - timedelta(hours=13)), 13, db=OTHER_DB)
AUTOMATED = snap(backups.snapshot_name(LABEL, NOW - timedelta(hours=14)), 14, kind="automated")
# Issue 18.2: lookalikes, tagged by someone with rds:AddTagsToResource, are never deleted.
PREFIX_ONLY = snap("quilt-ops-quilt-prod-important", 15)
OTHER_STACK_TAG = made(16, tags={"made-by": "quilt-ops", "quilt-ops:stack": "quilt-staging"})
NO_STACK_TAG = made(17, tags={"made-by": "quilt-ops"})
LONGER_LABEL = snap(backups.snapshot_name("quilt-prod-eu", NOW - timedelta(hours=18)), 18)
SUFFIXED = snap(backups.snapshot_name(LABEL, NOW - timedelta(hours=19)) + "-keep", 19)
TIME_DISAGREES = snap(backups.snapshot_name(LABEL, NOW - timedelta(hours=20)), 200)
LOOKALIKES = [PREFIX_ONLY, OTHER_STACK_TAG, NO_STACK_TAG, LONGER_LABEL, SUFFIXED, TIME_DISAGREES]
ALL = [A, B, C, D, CREATING, FAILED, HAND_MADE, NAMED_ONLY, TAGGED_ONLY, OTHER_DBS, AUTOMATED, *LOOKALIKES]

KEEP = [
    # (case, snapshots, keep, deleted)
    ("keep 2 of 4", [A, B, C, D], 2, [C, D]),
    ("keep 1", [D, A, C, B], 1, [B, C, D]),
    ("nothing beyond N", [A, B], 2, []),
    ("N above the count", [A], 5, []),
    ("a snapshot being made is not counted, nor deleted", [CREATING, A, B, C], 2, [C]),
    ("a failed one is never deleted", [A, B, FAILED], 1, [B]),
    ("only quilt-ops' own: name and tag", ALL, 1, [B, C, D]),
    ("another database's are not touched", [OTHER_DBS, A], 1, []),
    ("none of ours", [HAND_MADE, NAMED_ONLY, TAGGED_ONLY, AUTOMATED], 1, []),
    ("lookalikes are never deleted", [A, *LOOKALIKES], 1, []),
    ("lookalikes do not count among the N kept", [*LOOKALIKES, A, B], 1, [B]),
]


@pytest.mark.parametrize("case,snapshots,keep,deleted", KEEP, ids=[k[0] for k in KEEP])
def test_what_keep_deletes(case, snapshots, keep, deleted):
    doomed = backups.to_delete(snapshots, DB, keep, LABEL)
    assert doomed == deleted
    mine = [s for s in snapshots if backups.made_by_quilt_ops(s, LABEL) and s.db_instance == DB]
    ours = [s for s in mine if s.status == "available"]
    assert len([s for s in ours if s not in doomed]) == min(keep, len(ours))  # never fewer than N available
    assert all(backups.made_by_quilt_ops(s, LABEL) and s.db_instance == DB for s in doomed)
    assert not set(map(id, doomed)) & set(map(id, LOOKALIKES))


def test_keep_zero_is_refused():
    with pytest.raises(ConfigError, match="at least 1"):
        backups.to_delete([A], DB, 0, LABEL)


@pytest.mark.parametrize(
    "db,snapshots,words",
    [
        (Database(DB, "available", 7), [A], None),
        (None, [], "does not exist"),
        (Database(DB, "stopped", 7), [], "is stopped, not available"),
        (Database(DB, "backing-up", 7), [], "is backing-up"),
        (Database(DB, "available", 7), [CREATING], f"already being made ({CREATING.identifier}"),
        (Database(DB, "available", 7), [HAND_MADE.__class__("x", DB, "creating", NOW)], "already being made (x"),
        (Database(DB, "available", 7), [snap("y", 0, status="creating", db=OTHER_DB)], None),
    ],
)
def test_refusal(db, snapshots, words):
    why = backups.refusal(db, DB, snapshots)
    assert (why is None) if words is None else (words in why)


def test_listing_rows_and_json():
    rows = backups.rows([A, CREATING.__class__("n", DB, "creating", NOW, progress=40)], NOW)
    assert rows[0] == (A.identifier, "available", "20 GiB", "1h00m", "2026-11-28 02:10:00Z")
    assert rows[1][1] == "creating 40%"
    doc = backups.as_dict(A, NOW)
    assert doc["age_seconds"] == 3600 and doc["status"] == "available" and doc["size_gib"] == 20


def test_ours_is_newest_first():
    assert backups.ours(ALL, DB, LABEL) == [CREATING, A, B, C, D, FAILED]


@pytest.mark.parametrize("value,expected", [(None, None), ("3", 3), (1, 1)])
def test_keep_option(value, expected):
    assert backups.keep_count(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "x", "1001"])
def test_bad_keep_option(value):
    with pytest.raises(ConfigError, match="--keep"):
        backups.keep_count(value)


def test_databases_to_work_on():
    assert backups.databases(["a", "b"], None) == [("a", None), ("b", None)]
    assert backups.databases([], "db1") == [(None, "db1")]
    with pytest.raises(ConfigError, match="no database given"):
        backups.databases([], None)
    with pytest.raises(ConfigError, match="at most one --stack"):
        backups.databases(["a", "b"], "db1")


# ----------------------------------------------------------------------------- backup with canned answers


def raw(s: Snapshot) -> dict:
    return {
        "DBSnapshotIdentifier": s.identifier,
        "DBInstanceIdentifier": s.db_instance,
        "Status": s.status,
        "SnapshotCreateTime": s.created,
        "SnapshotType": s.snapshot_type,
        "AllocatedStorage": 20,
        "TagList": [{"Key": k, "Value": v} for k, v in s.tags.items()],
    }


class FakeRds:
    """RDS's snapshots in memory; a new one is 'creating' for ``creating_polls`` describes."""

    def __init__(self, snapshots, db_status="available", creating_polls=0, denied=()):
        self.snapshots = {s.identifier: raw(s) for s in snapshots}
        self.db_status, self.creating_polls, self.denied = db_status, creating_polls, set(denied)
        self.made = []

    def __call__(self, action, **kw):
        self.made.append(action)
        if action in self.denied:
            raise Denied(action)
        if action == "cloudformation:DescribeStackResources":
            return {"StackResources": [{"ResourceType": "AWS::RDS::DBInstance", "PhysicalResourceId": DB}]}
        if action == "rds:DescribeDBInstances":
            return {"DBInstances": [{"DBInstanceStatus": self.db_status, "BackupRetentionPeriod": 7}]}
        if action == "rds:CreateDBSnapshot":
            made = raw(snap(kw["DBSnapshotIdentifier"], 0, status="creating"))
            made["TagList"] = kw["Tags"]
            self.snapshots[kw["DBSnapshotIdentifier"]] = made
            return {"DBSnapshot": made}
        if action == "rds:DescribeDBSnapshots":
            if "DBSnapshotIdentifier" in kw:
                found = self.snapshots[kw["DBSnapshotIdentifier"]]
                if found["Status"] == "creating":
                    if self.creating_polls <= 0:
                        found["Status"] = "available"
                    self.creating_polls -= 1
                return {"DBSnapshots": [found]}
            return {
                "DBSnapshots": [
                    s for s in self.snapshots.values() if s["DBInstanceIdentifier"] == kw["DBInstanceIdentifier"]
                ]
            }
        if action == "rds:DeleteDBSnapshot":
            del self.snapshots[kw["DBSnapshotIdentifier"]]
            return {}
        raise AssertionError(action)


def run(rds, **options):
    record: dict = {}
    reporter = Recorder()
    report = Backups(rds).backup(DB, "quilt-prod", BackupOptions(**options), reporter, record, NOW)
    return report, record, reporter


def test_backup_dry_run_changes_nothing():
    rds = FakeRds([A, B, C])
    report, _, _ = run(rds, dry_run=True, keep=1)
    assert report.deleted == [B.identifier, C.identifier] and "rds:CreateDBSnapshot" not in rds.made
    assert "rds:DeleteDBSnapshot" not in rds.made
    assert report.line().startswith("quilt-prod: dry run: would snapshot") and "nothing changed" in report.line()


def test_backup_waits_then_keeps_n(monkeypatch):
    monkeypatch.setattr(backups, "POLL_SECONDS", 0.01)
    rds = FakeRds([A, B, C, HAND_MADE], creating_polls=2)
    report, record, reporter = run(rds, wait=True, keep=2)
    name = "quilt-ops-quilt-prod-20261128-031000"
    assert report.status == "available" and report.snapshot == name
    assert report.deleted == [B.identifier, C.identifier]
    assert set(rds.snapshots) == {name, A.identifier, HAND_MADE.identifier}
    assert rds.snapshots[name]["TagList"][0] == {"Key": "made-by", "Value": "quilt-ops"}
    assert record["snapshot"] == name and record["deleted"] == report.deleted
    assert any("available" in line for line in reporter.lines)


def test_backup_without_wait_keeps_n_available_ones():
    rds = FakeRds([A, B, C])
    report, _, _ = run(rds, keep=2)
    assert report.status == "creating" and report.deleted == [C.identifier]


def test_backup_refused_when_a_snapshot_is_running():
    rds = FakeRds([CREATING])
    with pytest.raises(Refused, match="already being made.*nothing was changed"):
        run(rds)
    assert "rds:CreateDBSnapshot" not in rds.made


def test_backup_refused_when_the_database_is_stopped():
    with pytest.raises(Refused, match="is stopped"):
        run(FakeRds([], db_status="stopped"))


def test_backup_wait_times_out_incomplete(monkeypatch):
    monkeypatch.setattr(backups, "POLL_SECONDS", 0.01)
    with pytest.raises(QuiltError, match="still creating after 0s") as e:
        run(FakeRds([A, B], creating_polls=10**6), wait=True, timeout=0.05, keep=1)
    assert e.value.status == ExitStatus.INCOMPLETE and "not deleted" in str(e.value)


def test_backup_denied_names_the_action():
    with pytest.raises(QuiltError, match="needs rds:CreateDBSnapshot") as e:
        run(FakeRds([], denied={"rds:CreateDBSnapshot"}))
    assert e.value.status == ExitStatus.FAILED


def test_pruning_denied_after_the_snapshot_is_incomplete():
    with pytest.raises(QuiltError, match="was made, but deleting older ones failed") as e:
        run(FakeRds([A, B], denied={"rds:DeleteDBSnapshot"}), keep=1)
    assert e.value.status == ExitStatus.INCOMPLETE


def test_database_from_the_stack():
    assert Backups(FakeRds([])).database_of("quilt-prod", None) == (DB, "quilt-prod")
    assert Backups(FakeRds([])).database_of(None, "db1") == ("db1", "db1")


# ----------------------------------------------------------------------------- bad input, in process (no AWS contacted)

USAGE, UNKNOWN = int(ExitStatus.USAGE), int(ExitStatus.UNKNOWN)
BAD = [
    (["backup", "--stack", "s", "--keep", "0"], {}, USAGE, "--keep must be between 1 and 1000"),
    (["backup", "--stack", "s", "--keep", "many"], {}, USAGE, "--keep must be a whole number"),
    (["backup", "--stack", "s", "--timeout", "soon"], {}, USAGE, "--timeout"),
    (["backup"], {}, USAGE, "no database given"),
    (["backups", "--stack", "a", "--stack", "b", "--db-instance", "x"], {}, USAGE, "at most one --stack"),
    (["backup", "--db-instance", "x", "--profile", "nope"], {}, USAGE, "profile 'nope' not found"),
    (["-H", "h", "health", "--aws", "--profile", "nope"], {}, UNKNOWN, "profile 'nope' not found"),
    (["-H", "h", "health"], {"key_max_age_days": -1}, UNKNOWN, "quilt.key_max_age_days"),
    (["-H", "h", "health"], {"aws_checks": "sometimes"}, UNKNOWN, "quilt.aws_checks"),
]


@pytest.mark.parametrize("argv,quilt,status,words", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input(capsys, monkeypatch, tmp_path, argv, quilt, status, words):
    import json
    import os

    from quilt_ops import cli

    for name in list(os.environ):
        if name.startswith(("FABRIC_QUILT_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "fabric.yaml"
    config.write_text(json.dumps({"quilt": {"audit_log": str(tmp_path / "audit.log"), **quilt}}))
    code = cli.run(["-f", str(config), *argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == status, captured.out + captured.err
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], captured.err
    assert "Traceback" not in captured.out + captured.err
