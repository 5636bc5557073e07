"""The AWS side's verdicts (``health --aws``): given what IAM, S3, RDS and CloudFormation said,
expect this check. Then the I/O layer with canned answers: a refused call is an UNKNOWN
check naming the IAM action, never a crash; and the host facts the checks start from."""

from datetime import datetime, timedelta, timezone

import pytest

from quilt_ops import account, health, output, shell
from quilt_ops.account import Database, Grant, LastUsed, Snapshot
from quilt_ops.checks import Check, HostHealth, Kind
from quilt_ops.rotation_plan import Key
from quilt_ops.status import ExitStatus, label
from tests import promtool

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
USER = "quilt-prod-RegistryUser-ABCDEFGHIJKLM"
HOST_KEY, OTHER = "AKIAHOSTHOSTHOST0001", "AKIAOTHEROTHEROTH002"
BUCKET = "quilt-prod-packages"


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def key(key_id=HOST_KEY, status="Active", age_days=10.0):
    return Key(key_id, status, days_ago(age_days))


# ----------------------------------------------------------------------------- the key in use

USED = LastUsed(NOW - timedelta(minutes=3), "s3", "us-east-1")
KEY_CASES = [
    # (case, host key, user, IAM keys, owner, status, words in the summary)
    ("young key", HOST_KEY, USER, [key()], USER, "OK", "10 days old, last used 3m00s ago (s3, us-east-1)"),
    ("at the maximum age", HOST_KEY, USER, [key(age_days=90)], USER, "WARNING", "90 days or older; rotate-keys"),
    ("past the maximum age", HOST_KEY, USER, [key(age_days=120)], USER, "WARNING", "120 days old"),
    ("twice the maximum age", HOST_KEY, USER, [key(age_days=180)], USER, "CRITICAL", "older than twice 90 days"),
    ("inactive", HOST_KEY, USER, [key(status="Inactive")], USER, "CRITICAL", "is Inactive in IAM"),
    ("deleted from IAM", HOST_KEY, None, None, None, "CRITICAL", "not known to IAM"),
    ("not the given user's", HOST_KEY, USER, [key(OTHER)], "someone-else", "CRITICAL", "belongs to IAM user someone"),
    ("missing from the user", HOST_KEY, USER, [key(OTHER)], USER, "CRITICAL", "is not one of"),
    ("no key on the host", None, USER, [key()], None, "UNKNOWN", "no AWS_ACCESS_KEY_ID"),
]


@pytest.mark.parametrize("case,host_key,user,keys,owner,status,words", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_key_in_use(case, host_key, user, keys, owner, status, words):
    check = account.key_check(host_key, user, keys, USED, NOW, 90, owner)
    assert (check.kind, check.subject) == (Kind.AWS_KEY, "in use")
    assert label(check.status) == status, check.summary
    assert words in check.summary


def test_key_details_carry_age_and_last_use():
    check = account.key_check(HOST_KEY, USER, [key(age_days=2)], USED, NOW, 90, USER)
    assert check.details["age_seconds"] == 2 * 86400 and check.details["last_used_seconds"] == 180
    assert check.details["last_used_service"] == "s3" and check.details["last_used_region"] == "us-east-1"


def test_last_use_unknown_when_iam_would_not_say():
    check = account.key_check(HOST_KEY, USER, [key()], None, NOW, 90, None)
    assert check.status == ExitStatus.OK and "last use not known" in check.summary


def test_never_used_key_and_a_smaller_maximum():
    check = account.key_check(HOST_KEY, USER, [key(age_days=31)], LastUsed(), NOW, 30, USER)
    assert check.status == ExitStatus.WARNING and "never used" in check.summary
    assert check.details["last_used_seconds"] is None


OTHER_CASES = [
    ("only the host's key", [key()], {}, "OK", "no other key"),
    ("inactive spare", [key(), key(OTHER, "Inactive", 40)], {}, "OK", f"Inactive spare {OTHER}"),
    (
        "active stranger",
        [key(), key(OTHER)],
        {OTHER: USED},
        "WARNING",
        f"Active key {OTHER} that the host does not use",
    ),
    ("active stranger never used", [key(), key(OTHER)], {}, "WARNING", "never used"),
]


@pytest.mark.parametrize("case,keys,used,status,words", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_other_key(case, keys, used, status, words):
    check = account.other_key_check(HOST_KEY, USER, keys, NOW, used)
    assert (check.kind, check.subject) == (Kind.AWS_KEY, "other")
    assert label(check.status) == status and words in check.summary


# ----------------------------------------------------------------------------- least privilege

DEPLOYMENT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:HeadObject"],
            "Resource": f"arn:aws:s3:::{BUCKET}/*",
        },
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"},
    ],
}


def stmt(action, resource="*", effect="Allow", **more):
    return {"Version": "2012-10-17", "Statement": [{"Effect": effect, "Action": action, "Resource": resource, **more}]}


POLICY_CASES = [
    # (case, extra policies beside the deployment's, bucket, expected extra)
    ("exactly the deployment's", [], BUCKET, []),
    ("bucket unknown: actions only", [], None, []),
    ("an extra action as a string", [stmt("s3:PutBucketPolicy")], BUCKET, ["s3:PutBucketPolicy"]),
    ("extra actions as a list", [stmt(["iam:CreateUser", "sts:AssumeRole"])], BUCKET,
     ["iam:CreateUser", "sts:AssumeRole"]),
    ("service wildcard", [stmt("s3:*", f"arn:aws:s3:::{BUCKET}/*")], BUCKET, ["s3:*"]),
    ("everything", [stmt("*")], BUCKET, ["*"]),
    ("prefix wildcard", [stmt("s3:Get*")], BUCKET, ["s3:Get*"]),
    ("deployment action on every bucket", [stmt("s3:GetObject", "*")], BUCKET, ["s3:GetObject on *"]),
    ("deployment action on another bucket", [stmt("s3:GetObject", "arn:aws:s3:::other/*")], BUCKET,
     ["s3:GetObject on arn:aws:s3:::other/*"]),
    ("narrower resource is fine", [stmt("s3:GetObject", f"arn:aws:s3:::{BUCKET}/objs/*")], BUCKET, []),
    ("case of the action does not matter", [stmt("S3:getobject", f"arn:aws:s3:::{BUCKET}/*")], BUCKET, []),
    ("a Deny grants nothing", [stmt("iam:*", effect="Deny")], BUCKET, []),
    ("NotAction allows the rest", [{"Statement": {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}}], BUCKET,
     ["every action but iam:*"]),
    ("URL-encoded JSON text",
     ["%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22ec2%3A%2A%22%2C"
      "%22Resource%22%3A%22%2A%22%7D%5D%7D"], BUCKET, ["ec2:*"]),
]  # fmt: skip


@pytest.mark.parametrize("case,extra,bucket,expected", POLICY_CASES, ids=[c[0] for c in POLICY_CASES])
def test_least_privilege(case, extra, bucket, expected):
    policies = [("RegistryUserS3Access", DEPLOYMENT)] + [(f"extra{i}", doc) for i, doc in enumerate(extra)]
    check = account.policy_check(USER, policies, bucket)
    assert check.details["extra"] == expected
    assert check.status == (ExitStatus.WARNING if expected else ExitStatus.OK)
    for text in expected:
        assert text in check.summary


def test_a_policy_missing_a_needed_action_is_a_warning():
    partial = stmt(["s3:GetObject", "s3:HeadObject", "s3:DeleteObject"], f"arn:aws:s3:::{BUCKET}/*")
    check = account.policy_check(USER, [("p", partial)], BUCKET)
    assert check.status == ExitStatus.WARNING and check.details["missing"] == ["s3:PutObject", "s3:ListBucket"]
    assert "do not allow s3:PutObject, s3:ListBucket" in check.summary


def test_grants_read_every_statement_shape():
    found = account.grants(
        [("p", {"Statement": [{"Effect": "Allow", "Action": ["a:B", "c:D"], "Resource": ["x", "y"]}]})]
    )
    assert found == [Grant(a, r, "p") for a in ("a:B", "c:D") for r in ("x", "y")]


def test_no_user_is_unknown():
    assert account.policy_check(None, [], BUCKET).status == ExitStatus.UNKNOWN


# ----------------------------------------------------------------------------- bucket, database, stack

BUCKET_CASES = [
    ("enabled", BUCKET, "Enabled", True, "OK", "versioning enabled"),
    ("suspended", BUCKET, "Suspended", True, "WARNING", "versioning is suspended"),
    ("never enabled", BUCKET, None, True, "WARNING", "versioning was never enabled"),
    ("no such bucket", BUCKET, None, False, "CRITICAL", "does not exist"),
    ("no bucket known", None, None, True, "UNKNOWN", "no PACKAGE_BUCKET_NAME"),
]


@pytest.mark.parametrize("case,bucket,versioning,exists,status,words", BUCKET_CASES, ids=[c[0] for c in BUCKET_CASES])
def test_bucket(case, bucket, versioning, exists, status, words):
    check = account.bucket_check(bucket, "env file", versioning, exists)
    assert label(check.status) == status and words in check.summary
    assert check.kind == Kind.BUCKET and check.subject == (bucket or "")


DB = "quilt-prod-registrydatabase-abc"


def db(status="available", retention=7, restorable_minutes=5.0):
    restorable = NOW - timedelta(minutes=restorable_minutes) if restorable_minutes is not None else None
    return Database(DB, status, retention, restorable)


def snap(name="quilt-ops-quilt-prod-20261127-120000", age_days=1.0):
    return Snapshot(name, DB, "available", days_ago(age_days))


DB_CASES = [
    ("backups on, recent", db(), [], "OK", "backups kept 7 days, restorable to 5m00s ago; no manual snapshot"),
    (
        "newest manual snapshot noted",
        db(),
        [snap(age_days=3), snap("b", 1)],
        "OK",
        "newest manual snapshot b, 1d00h old",
    ),
    ("retention 0", db(retention=0, restorable_minutes=None), [], "WARNING", "automated backups are off"),
    (
        "restorable time over an hour old",
        db(restorable_minutes=61),
        [],
        "WARNING",
        "latest restorable time is 1h01m old",
    ),
    ("restorable time exactly an hour old", db(restorable_minutes=60), [], "OK", "restorable to 1h00m ago"),
    ("no restorable time", db(restorable_minutes=None), [], "WARNING", "no latest restorable time"),
    ("stopped", db(status="stopped"), [], "WARNING", "the database is stopped"),
    ("storage full", db(status="storage-full"), [], "CRITICAL", "storage-full"),
]


@pytest.mark.parametrize("case,facts,manual,status,words", DB_CASES, ids=[c[0] for c in DB_CASES])
def test_database(case, facts, manual, status, words):
    check = account.database_check(facts, manual, NOW, DB)
    assert label(check.status) == status, check.summary
    assert words in check.summary
    assert check.subject == DB


def test_database_missing_is_critical():
    assert account.database_check(None, [], NOW, DB).status == ExitStatus.CRITICAL


STACK_CASES = [
    ("CREATE_COMPLETE", "OK"),
    ("UPDATE_COMPLETE", "OK"),
    ("UPDATE_IN_PROGRESS", "OK"),
    ("CREATE_FAILED", "CRITICAL"),
    ("UPDATE_ROLLBACK_FAILED", "CRITICAL"),
    ("UPDATE_ROLLBACK_COMPLETE", "CRITICAL"),
    ("ROLLBACK_COMPLETE", "CRITICAL"),
    ("ROLLBACK_IN_PROGRESS", "CRITICAL"),
    ("DELETE_IN_PROGRESS", "CRITICAL"),
    (None, "CRITICAL"),
]


@pytest.mark.parametrize("status,expected", STACK_CASES)
def test_stack_status(status, expected):
    check = account.stack_check("quilt-prod", status)
    assert label(check.status) == expected
    assert check.details["status_ok"] == (expected == "OK")


@pytest.mark.parametrize(
    "user,stack",
    [
        (USER, "quilt-prod"),
        ("a-b-c-RegistryUser-ABCDEFGHIJKL", "a-b-c"),
        ("RegistryUser-ABCDEFGHIJKLM", None),
        ("quilt-prod-OtherUser-ABCDEFGHIJKLM", None),
        (None, None),
    ],
)
def test_stack_of_user(user, stack):
    assert account.stack_of_user(user) == stack


@pytest.mark.parametrize(
    "name,ok",
    [("quilt-packages", True), ("a.b-c", True), ("ab", False), ("Quilt", False), ("a..b", False), ("-ab", False)],
)
def test_bucket_names_from_the_host_are_checked(name, ok):
    assert (account.valid_bucket(name) == name) is ok


# ----------------------------------------------------------------------------- the health script's bucket line


def test_the_health_script_reads_the_bucket_name_and_only_a_valid_one():
    m = "@@quilt-abc"
    text = (
        f"{m} envfile\nmode 600 ec2-user ec2-user\nkey AWS_ACCESS_KEY_ID 1\nkeyid {HOST_KEY}\nbucket {BUCKET}\n"
        f"exports 0\n{m} end\n"
    )
    reading = health.read(shell.parse(text.encode(), m))
    assert reading.env_file is not None and reading.env_file.bucket == BUCKET
    check = health.env_file_check("env/registry", reading.env_file)
    assert check.details["bucket"] == BUCKET and check.details["key_id"] == HOST_KEY
    bad = health.read(shell.parse(text.replace(f"bucket {BUCKET}", "bucket Bad;Name").encode(), m))
    assert bad.env_file is not None and bad.env_file.bucket is None


def test_the_health_script_prints_only_a_valid_bucket_name():
    from quilt_ops.config import Settings

    text = health.script(Settings()).text()
    assert "PACKAGE_BUCKET_NAME=([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])" in text


# ----------------------------------------------------------------------------- the I/O layer, with canned answers


class FakeCalls:
    """AWS answers by IAM action; an action in ``denied`` is refused as AWS would."""

    def __init__(self, answers, denied=()):
        self.answers, self.denied, self.made = answers, set(denied), []

    def __call__(self, action, **kwargs):
        self.made.append(action)
        if action in self.denied:
            raise account.Denied(action)
        answer = self.answers.get(action)
        if isinstance(answer, Exception):
            raise answer
        return answer(**kwargs) if callable(answer) else answer


STACK = "quilt-prod"


def answers(**changes):
    base = {
        "iam:GetAccessKeyLastUsed": {"UserName": USER, "AccessKeyLastUsed": {"LastUsedDate": NOW, "ServiceName": "s3",
                                                                             "Region": "us-east-1"}},
        "iam:ListAccessKeys": {"AccessKeyMetadata": [{"AccessKeyId": HOST_KEY, "Status": "Active",
                                                      "CreateDate": days_ago(5)}]},
        "iam:ListUserPolicies": {"PolicyNames": ["RegistryUserS3Access"]},
        "iam:GetUserPolicy": {"PolicyDocument": DEPLOYMENT},
        "iam:ListAttachedUserPolicies": {"AttachedPolicies": []},
        "s3:GetBucketVersioning": {"Status": "Enabled"},
        "cloudformation:DescribeStacks": {"Stacks": [{"StackStatus": "CREATE_COMPLETE", "Outputs": [
            {"OutputKey": "EC2InstanceIp", "OutputValue": "10.0.0.1"}]}]},
        "cloudformation:DescribeStackResources": {"StackResources": [
            {"LogicalResourceId": "RegistryUser", "ResourceType": "AWS::IAM::User", "PhysicalResourceId": USER},
            {"LogicalResourceId": "Db", "ResourceType": "AWS::RDS::DBInstance", "PhysicalResourceId": DB},
            {"LogicalResourceId": "Bucket", "ResourceType": "AWS::S3::Bucket", "PhysicalResourceId": BUCKET},
        ]},
        "rds:DescribeDBInstances": {"DBInstances": [{"DBInstanceStatus": "available", "BackupRetentionPeriod": 7,
                                                     "LatestRestorableTime": NOW - timedelta(minutes=5)}]},
        "rds:DescribeDBSnapshots": {"DBSnapshots": []},
    }  # fmt: skip
    base.update(changes)
    return base


def look(calls, stack=None, user=None):
    found = account.AwsLook("h", stack, account.AwsOptions(iam_user=user), ("h", frozenset({"10.0.0.1"})))
    found.calls = calls
    from concurrent.futures import ThreadPoolExecutor

    found.fan = ThreadPoolExecutor(max_workers=4)
    return found


def by_name(checks):
    return {c.name: c for c in checks}


def test_every_check_passes_from_the_hosts_key_alone():
    calls = FakeCalls(answers())
    checks = by_name(look(calls).checks(HOST_KEY, BUCKET, NOW))
    assert {n: label(c.status) for n, c in checks.items()} == {
        "aws key in use": "OK",
        "aws key other": "OK",
        "aws policy": "OK",
        f"bucket {BUCKET}": "OK",
        f"stack {STACK}": "OK",
        f"database {DB}": "OK",
    }


def test_the_bucket_comes_from_the_stack_when_the_env_file_has_none():
    checks = by_name(look(FakeCalls(answers())).checks(HOST_KEY, None, NOW))
    assert checks[f"bucket {BUCKET}"].details["source"] == f"stack {STACK}"


REFUSALS = [
    ("iam:GetAccessKeyLastUsed", "aws key in use"),
    ("iam:ListAccessKeys", "aws key other"),
    ("iam:ListUserPolicies", "aws policy"),
    ("iam:GetUserPolicy", "aws policy"),
    ("iam:ListAttachedUserPolicies", "aws policy"),
    ("s3:GetBucketVersioning", f"bucket {BUCKET}"),
    ("cloudformation:DescribeStacks", f"stack {STACK}"),
    ("rds:DescribeDBInstances", f"database {DB}"),
    ("rds:DescribeDBSnapshots", f"database {DB}"),
]


@pytest.mark.parametrize("action,name", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_missing_permission_is_unknown_naming_the_action(action, name):
    # Else the stack is found from the user; a stack that cannot be read proves no user (issue 18.1).
    stack = STACK if action in ("iam:GetAccessKeyLastUsed", "cloudformation:DescribeStacks") else None
    checks = by_name(look(FakeCalls(answers(), denied={action}), stack=stack).checks(HOST_KEY, BUCKET, NOW))
    assert checks[name].status == ExitStatus.UNKNOWN
    assert checks[name].summary.startswith(f"needs {action}")
    others = [c for n, c in checks.items() if n != name and c.status != ExitStatus.OK]
    assert all(c.status == ExitStatus.UNKNOWN for c in others), others


def test_the_stack_unknown_without_a_cloudformation_user_name():
    calls = FakeCalls(answers(**{"iam:GetAccessKeyLastUsed": {"UserName": "registry", "AccessKeyLastUsed": {}}}))
    calls.answers["iam:ListAccessKeys"] = {"AccessKeyMetadata": [{"AccessKeyId": HOST_KEY, "Status": "Active"}]}
    checks = by_name(look(calls).checks(HOST_KEY, BUCKET, NOW))
    assert checks["stack"].status == ExitStatus.UNKNOWN and "--stack" in checks["stack"].summary


def test_a_stack_named_after_the_user_must_hold_it():
    calls = FakeCalls(answers())
    calls.answers["cloudformation:DescribeStackResources"] = {"StackResources": []}
    checks = by_name(look(calls).checks(HOST_KEY, BUCKET, NOW))
    assert checks["stack"].status == ExitStatus.UNKNOWN and "no CloudFormation stack known" in checks["stack"].summary
    gone = account.CallFailed("ValidationError: Stack with id quilt-prod does not exist", "ValidationError")
    calls = FakeCalls(answers(**{"cloudformation:DescribeStacks": gone}))
    assert by_name(look(calls).checks(HOST_KEY, BUCKET, NOW))["stack"].status == ExitStatus.UNKNOWN
    given = by_name(
        look(FakeCalls(answers(**{"cloudformation:DescribeStacks": gone})), stack=STACK).checks(HOST_KEY, BUCKET, NOW)
    )
    assert given[f"stack {STACK}"].status == ExitStatus.CRITICAL  # a stack named with --stack must exist


def test_a_key_iam_does_not_know_is_critical():
    gone = account.CallFailed("iam:GetAccessKeyLastUsed failed: NoSuchEntity: no", "NoSuchEntity")
    keys = {"AccessKeyMetadata": [{"AccessKeyId": OTHER, "Status": "Active", "CreateDate": days_ago(1)}]}
    calls = FakeCalls(answers(**{"iam:GetAccessKeyLastUsed": gone, "iam:ListAccessKeys": keys}))
    checks = by_name(look(calls, stack=STACK).checks(HOST_KEY, BUCKET, NOW))  # the user: the stack's RegistryUser
    assert checks["aws key in use"].status == ExitStatus.CRITICAL
    assert f"is not one of {USER}'s keys" in checks["aws key in use"].summary
    alone = by_name(look(FakeCalls(answers(**{"iam:GetAccessKeyLastUsed": gone}))).checks(HOST_KEY, BUCKET, NOW))
    assert (
        alone["aws key in use"].status == ExitStatus.CRITICAL and "not known to IAM" in alone["aws key in use"].summary
    )


def test_add_to_takes_key_and_bucket_from_the_env_file_check():
    report = HostHealth(
        "h", [Check(Kind.ENV_FILE, "env/registry", ExitStatus.OK, "ok", {"key_id": HOST_KEY, "bucket": BUCKET})]
    )
    found = look(FakeCalls(answers())).add_to(report, NOW)
    assert len(found.checks) == 7 and found.status == ExitStatus.OK


# ----------------------------------------------------------------------------- monitoring formats


def aws_report():
    return HostHealth(
        "reg1",
        [
            account.key_check(HOST_KEY, USER, [key(age_days=100)], USED, NOW, 90, USER),
            account.policy_check(USER, [("p", DEPLOYMENT), ("x", stmt("s3:*"))], BUCKET),
            account.bucket_check(BUCKET, "env file", "Suspended"),
            account.database_check(db(retention=0), [snap()], NOW, DB),
            account.stack_check(STACK, "UPDATE_ROLLBACK_FAILED"),
        ],
    )


def prometheus_samples(text):
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_prometheus_has_the_aws_gauges():
    text = output.health_prometheus([aws_report()])
    got = prometheus_samples(text)
    host = (("host", "reg1"),)
    db, bucket = (("db", DB), ("host", "reg1")), (("bucket", BUCKET), ("host", "reg1"))
    for key_, value in (
        (("quilt_key_created_timestamp_seconds", host), (NOW - timedelta(days=100)).timestamp()),
        (("quilt_key_last_used_timestamp_seconds", host), (NOW - timedelta(minutes=3)).timestamp()),
        (("quilt_key_max_age_seconds", host), 90 * 86400),
        (("quilt_policy_extra_actions", host), 1),
        (("quilt_bucket_versioning_enabled", bucket), 0),
        (("quilt_db_backup_retention_seconds", db), 0),
        (("quilt_db_latest_restorable_timestamp_seconds", db), (NOW - timedelta(minutes=5)).timestamp()),
        (("quilt_db_newest_manual_snapshot_timestamp_seconds", db), (NOW - timedelta(days=1)).timestamp()),
        (("quilt_stack_status_ok", (("host", "reg1"), ("stack", STACK))), 0),
        (("quilt_check_status", (("check", "aws key in use"), ("host", "reg1"))), 1),
    ):
        assert got[key_] == value, key_
    assert "# TYPE quilt_key_created_timestamp_seconds gauge" in text
    names = {name for name, _ in got}
    for gone in ("quilt_key_age_seconds", "quilt_key_last_used_seconds", "quilt_db_backup_retention_days",
                 "quilt_db_latest_restorable_age_seconds", "quilt_db_manual_snapshot_age_seconds"):  # fmt: skip
        assert gone not in names
    promtool.check_metrics(text)


def test_nagios_has_the_aws_perfdata():
    line = output.health_nagios([aws_report()])
    assert line.startswith("QUILT CRITICAL - reg1: ")
    assert "key_age=8640000s;7776000;15552000;0" in line
    assert "bucket_versioning=0;;;0" in line and "db_backup_retention_days=0;;;0" in line
    assert "stack_status_ok=0;;;0" in line


def test_table_and_json_hold_every_aws_check():
    import json

    report = aws_report()
    table = output.health_table([report])
    doc = json.loads(output.health_json([report]))
    for check in report.checks:
        assert check.name in table
    assert [c["kind"] for c in doc["hosts"][0]["checks"]] == ["aws key", "aws policy", "bucket", "database", "stack"]


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "raw,aws,days",
    [
        ({}, False, 90.0),
        ({"aws_checks": True, "key_max_age_days": 30}, True, 30.0),
        ({"aws_checks": "yes"}, True, 90.0),
    ],
)
def test_aws_settings(raw, aws, days):
    from quilt_ops.config import Settings

    settings = Settings.load({"quilt": raw})
    assert (settings.aws_checks, settings.key_max_age_days) == (aws, days)


@pytest.mark.parametrize(
    "raw,key", [({"aws_checks": "maybe"}, "aws_checks"), ({"key_max_age_days": 0}, "key_max_age_days")]
)
def test_bad_aws_settings(raw, key):
    from quilt_ops.config import Settings
    from quilt_ops.errors import ConfigError

    with pytest.raises(ConfigError, match=f"quilt.{key}"):
        Settings.load({"quilt": raw})


def test_issue_18_a_forged_key_of_another_stack_is_critical_and_its_user_not_looked_at():
    """The host's key is a claim: the owner's stack must name this very host (fails on main:
    health --aws reported on the forged key's user as the host's own)."""
    calls = FakeCalls(answers())
    calls.answers["cloudformation:DescribeStacks"] = {
        "Stacks": [
            {"StackStatus": "CREATE_COMPLETE", "Outputs": [{"OutputKey": "EC2InstanceIp", "OutputValue": "10.9.9.9"}]}
        ]
    }
    checks = by_name(look(calls).checks(HOST_KEY, BUCKET, NOW))
    owner = checks["aws key owner"]
    assert owner.status == ExitStatus.CRITICAL and USER in owner.summary and "10.9.9.9" in owner.summary
    assert "iam:ListUserPolicies" not in calls.made  # the forged user's policies are not reported as the host's
