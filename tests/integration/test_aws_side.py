"""`health --aws`, `backup` and `backups` against the sandbox: moto with IAM auth on, its stack
holding RegistryUser, the versioned bucket and the RDS instance. Each check passes on the
baseline and fails on a state made for it (``host.aws_state``, see registry_sandbox.aws);
``reset`` puts the baseline back."""

import json

import pytest

from tests import promtool
from tests.tool import ROOT, one_error

pytestmark = pytest.mark.sandbox


def health_aws(host, *args, **kw):
    return host.run("health", "--aws", "--json", *args, **kw)


def checks_of(result):
    doc = json.loads(result.stdout)
    return {c["name"]: c for c in doc["hosts"][0]["checks"]}


def aws_checks(result):
    return {
        n: c
        for n, c in checks_of(result).items()
        if c["kind"] in ("aws key", "aws policy", "bucket", "database", "stack")
    }


def names(host):
    return {
        "key": "aws key in use",
        "other": "aws key other",
        "policy": "aws policy",
        "bucket": f"bucket {host.bucket}",
        "stack": f"stack {host.stack}",
        "db": f"database {host.db_instance}",
    }


# ----------------------------------------------------------------------------- every check passes on the baseline


def test_every_aws_check_passes_on_the_baseline(host, aws):
    result = health_aws(host)
    assert result.returncode == 0, result.stdout + result.stderr
    found = aws_checks(result)
    assert set(found) == set(names(host).values())
    assert all(c["status"] == "OK" for c in found.values()), found
    key = found["aws key in use"]["details"]
    assert key["key_id"] == host.host_key_id() and key["user"] == host.iam_user and key["age_seconds"] < 3600
    assert found[f"bucket {host.bucket}"]["details"]["source"] == "env file"
    assert found[f"database {host.db_instance}"]["details"]["backup_retention_days"] == 7


def test_aws_checks_setting_and_table(host, aws, tmp_path):
    config = host.write_config(tmp_path / "fabric.json", aws_checks=True)
    result = host.run("health", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in names(host).values():
        assert name in result.stdout
    assert f"{host.alias}: OK (12/12 checks OK)" in result.stdout


def test_monitoring_formats_carry_the_aws_side(host, aws):
    host.aws_state(versioning="Suspended")
    prom = host.run("health", "--aws", "--format", "prometheus")
    assert prom.returncode == 1
    alias = host.alias
    for line in (
        f'quilt_bucket_versioning_enabled{{bucket="{host.bucket}",host="{alias}"}} 0.0',
        f'quilt_db_backup_retention_seconds{{db="{host.db_instance}",host="{alias}"}} 604800.0',
        f'quilt_stack_status_ok{{host="{alias}",stack="{host.stack}"}} 1.0',
        f'quilt_policy_extra_actions{{host="{alias}"}} 0.0',
        f'quilt_up{{host="{alias}"}} 1.0',
    ):
        assert line in prom.stdout.splitlines(), prom.stdout
    assert f'quilt_key_created_timestamp_seconds{{host="{alias}"}} ' in prom.stdout
    assert f'quilt_db_latest_restorable_timestamp_seconds{{db="{host.db_instance}",host="{alias}"}} ' in prom.stdout
    promtool.check_metrics(prom.stdout)
    nagios = host.run("health", "--aws", "--format", "nagios")
    assert nagios.returncode == 1 and nagios.stdout.startswith(f"QUILT WARNING - {alias}: bucket {host.bucket}")
    assert "bucket_versioning=0;;;0" in nagios.stdout and "key_age=" in nagios.stdout


def test_bucket_from_the_stack_when_the_env_file_names_none(host, aws):
    text = host.env_file.read_text()
    host.env_file.write_text("".join(line for line in text.splitlines(True) if not line.startswith("PACKAGE_BUCKET")))
    result = health_aws(host)
    assert result.returncode == 0, result.stdout
    assert aws_checks(result)[f"bucket {host.bucket}"]["details"]["source"] == f"stack {host.stack}"


# ----------------------------------------------------------------------------- each check fails


@pytest.mark.parametrize(
    "state,status,code,which,words",
    [
        ({"key_age_days": 100}, "WARNING", 1, "key", "100 days old"),
        ({"key_age_days": 200}, "CRITICAL", 2, "key", "older than twice 90 days"),
        ({"extra_policy": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:PutBucketPolicy", "iam:CreateUser"], "Resource": "*"}]}},
         "WARNING", 1, "policy", "allow more than the registry needs: iam:CreateUser, s3:PutBucketPolicy"),
        ({"attached_policy": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}}, "WARNING", 1, "policy", "ec2:*"),
        ({"versioning": "Suspended"}, "WARNING", 1, "bucket", "versioning is suspended"),
        ({"retention_days": 0}, "WARNING", 1, "db", "automated backups are off (backup retention 0 days)"),
        ({"restorable_lag_seconds": 7200}, "WARNING", 1, "db", "latest restorable time is 2h00m old"),
        # The server is really stopped: the registry's health check, which queries it, fails too (exit 2).
        ({"db_stopped": True}, "WARNING", 2, "db", "the database is stopped"),
        ({"stack_status": "UPDATE_ROLLBACK_FAILED"}, "CRITICAL", 2, "stack", "is UPDATE_ROLLBACK_FAILED"),
        ({"stack_status": "ROLLBACK_COMPLETE"}, "CRITICAL", 2, "stack", "is ROLLBACK_COMPLETE"),
    ],
    ids=["key-old", "key-very-old", "extra-inline-action", "extra-managed-policy", "versioning-suspended",
         "retention-0", "restorable-lag", "db-stopped", "stack-failed", "stack-rolled-back"],
)  # fmt: skip
def test_each_check_fails(host, aws, state, status, code, which, words):
    host.aws_state(**state)
    result = health_aws(host)
    assert result.returncode == code, result.stdout + result.stderr
    found = aws_checks(result)
    check = found[names(host)[which]]
    assert check["status"] == status and words in check["summary"], check
    others = [c for n, c in found.items() if n != names(host)[which] and c["status"] != "OK"]
    assert others == []
    if state.get("db_stopped"):
        assert checks_of(result)["probe registry"]["status"] == "CRITICAL"


def test_key_max_age_days_setting(host, aws, tmp_path):
    host.aws_state(key_age_days=40)
    assert health_aws(host).returncode == 0
    config = host.write_config(tmp_path / "fabric.json", key_max_age_days=30)
    result = health_aws(host, config=config)
    assert result.returncode == 1 and "30 days or older" in aws_checks(result)["aws key in use"]["summary"]


def test_host_key_inactive_or_gone_is_critical(host, aws):
    key = host.host_key_id()
    aws.iam.update_access_key(UserName=host.iam_user, AccessKeyId=key, Status="Inactive")
    result = health_aws(host)
    assert result.returncode == 2 and "is Inactive in IAM" in aws_checks(result)["aws key in use"]["summary"]
    aws.iam.delete_access_key(UserName=host.iam_user, AccessKeyId=key)
    result = health_aws(host, "--stack", host.stack)  # the stack's RegistryUser names the user now
    check = aws_checks(result)["aws key in use"]
    assert result.returncode == 2 and f"{key} is not one of {host.iam_user}'s keys" in check["summary"]


def test_second_key_active_stranger_warns_inactive_spare_is_noted(host, aws):
    other = aws.iam.create_access_key(UserName=host.iam_user)["AccessKey"]["AccessKeyId"]
    result = health_aws(host)
    check = aws_checks(result)["aws key other"]
    assert result.returncode == 1 and check["status"] == "WARNING"
    assert f"Active key {other} that the host does not use" in check["summary"]
    aws.iam.update_access_key(UserName=host.iam_user, AccessKeyId=other, Status="Inactive")
    result = health_aws(host)
    check = aws_checks(result)["aws key other"]
    assert result.returncode == 0 and check["status"] == "OK" and f"Inactive spare {other}" in check["summary"]


def test_newest_manual_snapshot_is_noted(host, aws):
    host.aws_changed()
    import boto3

    boto3.client("rds", **host.aws_kwargs()).create_db_snapshot(
        DBInstanceIdentifier=host.db_instance, DBSnapshotIdentifier="before-upgrade"
    )
    result = health_aws(host)
    check = aws_checks(result)[names(host)["db"]]
    assert result.returncode == 0 and "newest manual snapshot before-upgrade" in check["summary"]


def test_missing_permission_is_unknown_naming_the_action(host, aws):
    policy = readme_policy()
    smaller = moto_view(policy, without="rds:DescribeDBInstances")
    creds = aws.operator("smaller-operator", smaller)
    try:
        result = health_aws(host, env=creds)
        assert result.returncode == 3, result.stdout + result.stderr
        check = aws_checks(result)[names(host)["db"]]
        assert check["status"] == "UNKNOWN" and check["summary"] == "needs rds:DescribeDBInstances"
        assert "Traceback" not in result.stderr
        assert result.stderr.strip() == f"Error: {host.alias}: needs rds:DescribeDBInstances"
    finally:
        aws.remove_operator("smaller-operator")


# ----------------------------------------------------------------------------- backup and backups


def backup(host, *args, **kw):
    return host.run("backup", "--stack", host.stack, *args, host="", **kw)


def snapshots(host):
    import boto3

    rds = boto3.client("rds", **host.aws_kwargs())
    found = rds.describe_db_snapshots(DBInstanceIdentifier=host.db_instance, SnapshotType="manual")["DBSnapshots"]
    return {s["DBSnapshotIdentifier"]: s for s in found}


def test_backup_waits_until_available_tagged_and_audited(host, aws):
    host.aws_state(snapshot_seconds=3)
    result = backup(host, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    made = snapshots(host)
    assert len(made) == 1
    name, snap = next(iter(made.items()))
    assert name.startswith(f"quilt-ops-{host.stack}-") and snap["Status"] == "available"
    assert {"Key": "made-by", "Value": "quilt-ops"} in snap["TagList"]
    assert "creating" in result.stdout and f"snapshot {name} available" in result.stdout
    assert f"{host.stack}: snapshot {name} of {host.db_instance} available after" in result.stdout
    records = [r for r in host.audit_records() if r["task"] == "backup"][-2:]
    assert [r["event"] for r in records] == ["start", "end"] and records[1]["outcome"] == "available"
    assert records[1]["snapshot"] == name and records[1]["db_instance"] == host.db_instance


def test_backup_keep_deletes_only_the_oldest_quilt_ops_snapshots(host, aws):
    host.aws_changed()
    from datetime import datetime, timedelta, timezone

    import boto3

    from quilt_ops.backups import snapshot_name

    rds = boto3.client("rds", **host.aws_kwargs())
    tags = [{"Key": "made-by", "Value": "quilt-ops"}, {"Key": "quilt-ops:stack", "Value": host.stack}]
    now = datetime.now(timezone.utc)
    old1, old2, old3 = (snapshot_name(host.stack, now - timedelta(minutes=m)) for m in (30, 20, 10))
    for name in (old1, old2, old3):
        rds.create_db_snapshot(DBInstanceIdentifier=host.db_instance, DBSnapshotIdentifier=name, Tags=tags)
    rds.create_db_snapshot(DBInstanceIdentifier=host.db_instance, DBSnapshotIdentifier="before-upgrade")
    rds.create_db_snapshot(DBInstanceIdentifier=host.db_instance, DBSnapshotIdentifier="quilt-ops-untagged")
    # Issue 18.2: a lookalike (prefix and made-by tag, as anyone with rds:AddTagsToResource can set) is kept.
    rds.create_db_snapshot(DBInstanceIdentifier=host.db_instance, DBSnapshotIdentifier="quilt-ops-old-0", Tags=tags[:1])
    dry = backup(host, "--keep", "2", "--dry-run")
    assert dry.returncode == 0 and "would snapshot" in dry.stdout
    assert f"delete 1 older quilt-ops snapshot(s): {old1};" in dry.stdout  # the new one not yet available
    dry = backup(host, "--wait", "--keep", "2", "--dry-run")
    assert f"delete 2 older quilt-ops snapshot(s): {old2}, {old1};" in dry.stdout
    assert len(snapshots(host)) == 6
    result = backup(host, "--wait", "--keep", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    left = set(snapshots(host))
    assert {old3, "before-upgrade", "quilt-ops-untagged", "quilt-ops-old-0"} <= left and len(left) == 5
    assert old1 not in left and old2 not in left


def test_backup_refused_when_the_database_is_not_available(host, aws):
    host.aws_state(db_stopped=True)
    result = backup(host)
    assert result.returncode == 4
    assert "is stopped, not available" in one_error(result) and snapshots(host) == {}


def test_backup_refused_while_a_snapshot_is_being_made(host, aws):
    host.aws_state(snapshot_seconds=60)
    first = backup(host)
    assert first.returncode == 0 and "started (creating)" in first.stdout, first.stdout + first.stderr
    second = backup(host)
    assert second.returncode == 4
    assert "is already being made" in one_error(second) and len(snapshots(host)) == 1


def test_backup_wait_is_bounded(host, aws):
    host.aws_state(snapshot_seconds=60)
    result = backup(host, "--wait", "--timeout", "2", "--keep", "1")
    assert result.returncode == 5
    assert "still creating after 2s" in one_error(result) and "not deleted" in result.stderr


def test_backups_lists_quilt_ops_snapshots_newest_first(host, aws):
    host.aws_changed()
    import boto3

    rds = boto3.client("rds", **host.aws_kwargs())
    rds.create_db_snapshot(DBInstanceIdentifier=host.db_instance, DBSnapshotIdentifier="before-upgrade")
    assert backup(host).returncode == 0
    empty_then = host.run("backups", "--stack", host.stack, host="")
    assert empty_then.returncode == 0
    ours = [n for n in snapshots(host) if n.startswith("quilt-ops-")]
    assert len(ours) == 1 and ours[0] in empty_then.stdout and "before-upgrade" not in empty_then.stdout
    assert "SNAPSHOT" in empty_then.stdout and "20 GiB" in empty_then.stdout
    listed = json.loads(host.run("backups", "--stack", host.stack, "--json", host="").stdout)
    assert [s["snapshot"] for s in listed] == ours and listed[0]["status"] == "available"


def test_backup_needs_a_stack_or_a_db_instance(host, aws):
    result = host.run("backup", host="")
    assert result.returncode == 64 and "no database given" in one_error(result)


# ----------------------------------------------------------------------------- the README's policy


def readme_policy() -> dict:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- aws-side policy -->", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return json.loads(block)


def moto_view(policy: dict, without: str = "") -> dict:
    """moto checks every action against resource "*" only: scoped resources widen here."""
    widened = json.loads(json.dumps(policy))
    for statement in widened["Statement"]:
        statement["Resource"] = "*"
        statement["Action"] = [a for a in statement["Action"] if a != without]
    widened["Statement"] = [s for s in widened["Statement"] if s["Action"]]
    return widened


#: moto does not check the permission that tagging at creation needs (real RDS does).
UNCHECKED_BY_MOTO = {"rds:AddTagsToResource"}


def test_the_readme_policy_is_exactly_what_the_tasks_need(host, aws):
    host.aws_changed()
    policy = readme_policy()
    creds = aws.operator("least-privilege-operator", moto_view(policy))
    # A managed policy on RegistryUser (granting nothing extra), so that reading one is exercised.
    host.aws_state(
        attached_policy={"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{host.bucket}"}]}
    )  # fmt: skip

    def runs(env):
        return {
            "health --aws": health_aws(host, env=env),
            "backup --keep 1": backup(host, "--keep", "1", env=env),
            "backups": host.run("backups", "--stack", host.stack, host="", env=env),
        }

    try:
        for name, result in runs(creds).items():
            assert result.returncode == 0, name + result.stdout + result.stderr
        actions = [a for s in policy["Statement"] for a in s["Action"]]
        for action in actions:
            if action in UNCHECKED_BY_MOTO:
                continue
            aws.iam.put_user_policy(
                UserName="least-privilege-operator",
                PolicyName="quilt-ops",
                PolicyDocument=json.dumps(moto_view(policy, without=action)),
            )
            results = runs(creds)
            failed = {name: r for name, r in results.items() if r.returncode != 0}
            assert failed, f"{action} is not needed"
            for name, result in failed.items():
                assert "Traceback" not in result.stdout + result.stderr
                assert f"needs {action}" in result.stdout + result.stderr, name + result.stdout + result.stderr
    finally:
        aws.remove_operator("least-privilege-operator")
