"""Each host's AWS: its own moto server, the delay proxy in front of it, and what the stack holds.

The tool talks to the proxy (``files/aws_proxy.py``), which puts back IAM's
propagation delay that moto lacks and can make AWS fail for a while. The sandbox
itself (provisioning, ``reset``, test assertions) talks to moto directly, so that
proxy faults never disturb it.

boto3 is imported only where it is used: the package imports without it.
"""

from __future__ import annotations

import json
import secrets
import shutil
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .state import AwsState, Layout
from .util import SandboxError, clean_env, ensure_dir, pid_alive, port_open, stop_pid, wait_for

FILES = Path(__file__).resolve().parent / "files"
REGION = "us-east-1"
#: Credentials moto accepts before IAM auth is switched on (used only to provision).
BOOTSTRAP = ("sandbox-admin", "sandbox-admin")
OPERATOR = "quilt-operator"
#: What a host's moto holds and how it runs; a host provisioned by an older sandbox
#: (without the database, with plain ``moto_server``, or with RDS not tied to real
#: PostgreSQL servers) is restarted and provisioned anew.
AWS_VERSION = 3
#: The stack's database (the real template's logical ID is not published; quilt-ops finds
#: the database by its type, AWS::RDS::DBInstance).
DB_RESOURCE = "RegistryDatabase"
#: Days of automated backups the sandbox's database keeps (the baseline).
BACKUP_RETENTION_DAYS = 7
#: Seconds a new master password takes to apply (RDS: a minute or two; the baseline is short).
PASSWORD_RESET_SECONDS = 3.0

# The real template's inline policy of RegistryUser.
REGISTRY_POLICY_NAME = "RegistryUserS3Access"
REGISTRY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:HeadObject"],
            "Resource": "arn:aws:s3:::{bucket}/*",
        },
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "arn:aws:s3:::{bucket}"},
    ],
}


def stack_template(stack: str, db_password: str) -> dict[str, Any]:
    """The CloudFormation template of the sandbox stack: the parts of the real one the tool meets.

    RegistryUser gets the name CloudFormation would give it, ``<stack>-RegistryUser-<13
    characters>`` (moto's own generated names have 12). The database is an
    ``AWS::RDS::DBInstance`` that moto's CloudFormation creates in its RDS (named
    ``<stack>-<logical id>-<random>`` in lower case, as CloudFormation names it), whose
    master password is ``db_password`` (the deploy-time ``DBPassword``, the one in env/registry).
    """
    alphabet = string.ascii_uppercase + string.digits
    user_name = f"{stack}-RegistryUser-" + "".join(secrets.choice(alphabet) for _ in range(13))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Quilt Teams Registry (quilt-ops sandbox)",
        "Resources": {
            "PackageBucket": {
                "Type": "AWS::S3::Bucket",
                "Properties": {"VersioningConfiguration": {"Status": "Enabled"}},
            },
            "RegistryUser": {"Type": "AWS::IAM::User", "Properties": {"UserName": user_name}},
            DB_RESOURCE: {
                "Type": "AWS::RDS::DBInstance",
                "Properties": {
                    "Engine": "postgres",
                    "DBInstanceClass": "db.t3.small",
                    "AllocatedStorage": "20",
                    "MasterUsername": "quilt",
                    "DBName": "quilt",
                    "MasterUserPassword": db_password,
                    "BackupRetentionPeriod": BACKUP_RETENTION_DAYS,
                    "Port": 5432,
                },
            },
        },
        "Outputs": {
            "EC2InstanceIp": {"Value": "127.0.0.1"},
            "LoadBalancerDNSName": {"Value": f"{stack}-lb-1234567890.{REGION}.elb.amazonaws.com"},
            "PackageBucketName": {"Value": {"Ref": "PackageBucket"}},
        },
    }


# ----------------------------------------------------------------------------- processes


def moto_server() -> list[str]:
    """moto's server with the sandbox API (``files/moto_server_sandbox.py``); needs moto[server]."""
    path = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(path).exists():
        raise SandboxError("moto_server is missing: pip install 'moto[server]'")
    return [sys.executable, str(FILES / "moto_server_sandbox.py")]


def aws_alive(aws: AwsState | None) -> bool:
    return (
        aws is not None
        and aws.version == AWS_VERSION
        and pid_alive(aws.moto_pid)
        and pid_alive(aws.proxy_pid)
        and port_open(aws.proxy_port)
    )


def start_aws(layout: Layout, moto_port: int, proxy_port: int) -> AwsState:
    """Starts moto and the proxy (without waiting for them; see ``wait_aws``)."""
    root = layout.aws
    ensure_dir(root, 0o700)
    layout.aws_faults.write_text("{}")
    env = clean_env()
    # moto runs with the host's aws folder as cwd: that is how a sweep finds it without its pid.
    # moto's RDS instances are real PostgreSQL servers, kept in the host's rds folder.
    argv = [*moto_server(), "-H", "127.0.0.1", "-p", str(moto_port), "--rds-dir", str(layout.rds)]
    moto = _spawn(argv, root / "moto.log", root, env)
    proxy = _spawn(
        [sys.executable, str(FILES / "aws_proxy.py"), str(proxy_port), str(moto_port), str(layout.aws_faults)],
        root / "proxy.log",
        root,
        env,
    )
    return AwsState(
        moto_port=moto_port,
        proxy_port=proxy_port,
        moto_pid=moto.pid,
        proxy_pid=proxy.pid,
        region=REGION,
        version=AWS_VERSION,
    )


def wait_aws(aws: AwsState, timeout: float = 60) -> None:
    def answers() -> bool:
        if not pid_alive(aws.moto_pid) or not pid_alive(aws.proxy_pid):
            raise SandboxError("moto or the AWS proxy exited at start (see the host's aws/*.log)")
        return port_open(aws.moto_port) and port_open(aws.proxy_port)

    wait_for("moto", answers, timeout)


def stop_aws(aws: AwsState | None) -> None:
    if aws:
        stop_pid(aws.proxy_pid, 5)
        stop_pid(aws.moto_pid, 10)


# ----------------------------------------------------------------------------- clients


def client_kwargs(
    aws: AwsState, key_id: str | None = None, secret: str | None = None, via_proxy: bool = False
) -> dict[str, str]:
    """boto3 client arguments: the operator's key on moto directly, unless told otherwise."""
    return {
        "endpoint_url": aws.endpoint if via_proxy else aws.moto_endpoint,
        "region_name": aws.region,
        "aws_access_key_id": key_id or aws.operator_key_id,
        "aws_secret_access_key": secret or aws.operator_secret,
    }


def client(aws: AwsState, service: str, **kw: Any) -> Any:
    import boto3

    return boto3.client(service, **client_kwargs(aws, **kw))


# ----------------------------------------------------------------------------- provisioning


def provision(aws: AwsState, stack: str, db_password: str) -> tuple[str, str]:
    """Creates the stack and the users in a fresh moto, then switches moto's IAM auth on.

    Fills ``aws`` (stack, RegistryUser's name, bucket, operator key, the database and
    its endpoint, once its server answers) and returns RegistryUser's first access key
    (id, secret): the one written into env/registry.
    """
    import boto3

    kw = {
        "endpoint_url": aws.moto_endpoint,
        "region_name": aws.region,
        "aws_access_key_id": BOOTSTRAP[0],
        "aws_secret_access_key": BOOTSTRAP[1],
    }
    cfn, iam, s3 = (boto3.client(name, **kw) for name in ("cloudformation", "iam", "s3"))
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps(stack_template(stack, db_password)))
    resources = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]
    }
    user, bucket, db = resources["RegistryUser"], resources["PackageBucket"], resources[DB_RESOURCE]
    policy = json.dumps(REGISTRY_POLICY).replace("{bucket}", bucket)
    iam.put_user_policy(UserName=user, PolicyName=REGISTRY_POLICY_NAME, PolicyDocument=policy)
    # moto's CloudFormation ignores the bucket's VersioningConfiguration: applied here.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="objs/README", Body=b"quilt package objects\n")
    key = iam.create_access_key(UserName=user)["AccessKey"]
    iam.create_user(UserName=OPERATOR)
    iam.put_user_policy(
        UserName=OPERATOR,
        PolicyName="QuiltOperator",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    operator = iam.create_access_key(UserName=OPERATOR)["AccessKey"]
    aws.db_address, aws.db_port = wait_db_instance(boto3.client("rds", **kw), db)
    # From here on moto checks every request's signature and IAM policies, as AWS
    # does (it evaluates IAM actions against resource "*", and does not refuse
    # Inactive keys; deleted keys and missing permissions are refused).
    request = urllib.request.Request(
        f"{aws.moto_endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).read()
    aws.stack, aws.iam_user, aws.bucket, aws.db_instance = stack, user, bucket, db
    aws.operator_key_id, aws.operator_secret = operator["AccessKeyId"], operator["SecretAccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def wait_db_instance(rds: Any, identifier: str, timeout: float = 90) -> tuple[str, int]:
    """Waits until the instance's server is up ("available"); its endpoint (address, port)."""
    found: dict[str, Any] = {}

    def available() -> bool:
        found.update(rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0])
        if found["DBInstanceStatus"] == "failed":
            raise SandboxError(f"the database server of {identifier} did not come up (see the host's aws/moto.log)")
        return found["DBInstanceStatus"] == "available" and bool(found.get("Endpoint"))

    wait_for(f"DB instance {identifier}", available, timeout, interval=0.2)
    return found["Endpoint"]["Address"], int(found["Endpoint"]["Port"])


# ----------------------------------------------------------------------------- states of the AWS side

#: What ``set_state`` can change; ``restore_baseline`` puts each back.
STATES = (
    "key_age_days",
    "stack_status",
    "restorable_lag_seconds",
    "snapshot_seconds",
    "versioning",
    "retention_days",
    "db_stopped",
    "extra_policy",
    "attached_policy",
    "password_reset_seconds",
)


def sandbox_api(aws: AwsState, name: str, **body: Any) -> None:
    """One call of the sandbox API of the host's moto (``files/moto_server_sandbox.py``)."""
    request = urllib.request.Request(
        f"{aws.moto_endpoint}/sandbox-api/{name}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(request, timeout=10).read()
    except urllib.error.HTTPError as e:
        raise SandboxError(f"sandbox API {name}: {e.read().decode(errors='replace')}") from None


def _changed_marker(layout: Layout) -> Path:
    return layout.aws / "changed"


def mark_changed(layout: Layout) -> None:
    """Says that a test changed the AWS side, so that ``restore_baseline`` runs at the next reset."""
    _changed_marker(layout).write_text("1")


def set_state(aws: AwsState, layout: Layout, key_id: str = "", **changes: Any) -> None:
    """Puts the host's AWS side in a state a check must see (``reset`` puts the baseline back).

    key_age_days N          the key ``key_id`` was created N days ago (sandbox API: moto has no way)
    stack_status S          the stack is in state S, e.g. UPDATE_ROLLBACK_FAILED (sandbox API)
    restorable_lag_seconds  the database's latest restorable time lags that much (sandbox API)
    snapshot_seconds N      new manual snapshots stay "creating" N seconds (sandbox API)
    versioning S            the bucket's versioning: Suspended (PutBucketVersioning)
    retention_days N        automated backups kept N days, 0 = off (ModifyDBInstance)
    db_stopped True         the database is stopped (StopDBInstance)
    extra_policy DOC        RegistryUser gets a second inline policy, ``extra`` (PutUserPolicy)
    attached_policy DOC     RegistryUser gets a managed policy attached (CreatePolicy, AttachUserPolicy)
    password_reset_seconds  a new master password takes that long to apply (sandbox API)
    """
    from datetime import datetime, timedelta, timezone

    unknown = set(changes) - set(STATES)
    if unknown:
        raise SandboxError(f"unknown AWS states: {sorted(unknown)}")
    mark_changed(layout)
    now = datetime.now(timezone.utc)
    if "key_age_days" in changes:
        created = now - timedelta(days=float(changes["key_age_days"]))
        sandbox_api(aws, "access-key", access_key_id=key_id, create_date=created.isoformat())
    if "stack_status" in changes:
        sandbox_api(aws, "stack-status", stack_name=aws.stack, status=changes["stack_status"])
    if "restorable_lag_seconds" in changes:
        lagging = now - timedelta(seconds=float(changes["restorable_lag_seconds"]))
        sandbox_api(
            aws, "db-instance", db_instance_identifier=aws.db_instance, latest_restorable_time=lagging.isoformat()
        )
    if "snapshot_seconds" in changes:
        sandbox_api(aws, "snapshot-seconds", seconds=float(changes["snapshot_seconds"]))
    if "password_reset_seconds" in changes:
        sandbox_api(aws, "rds-settings", password_reset_seconds=float(changes["password_reset_seconds"]))
    if "versioning" in changes:
        client(aws, "s3").put_bucket_versioning(
            Bucket=aws.bucket, VersioningConfiguration={"Status": changes["versioning"]}
        )
    rds = client(aws, "rds")
    if "retention_days" in changes:
        rds.modify_db_instance(
            DBInstanceIdentifier=aws.db_instance,
            BackupRetentionPeriod=int(changes["retention_days"]),
            ApplyImmediately=True,
        )
    if changes.get("db_stopped"):
        rds.stop_db_instance(DBInstanceIdentifier=aws.db_instance)
    iam = client(aws, "iam")
    if "extra_policy" in changes:
        iam.put_user_policy(
            UserName=aws.iam_user, PolicyName="extra", PolicyDocument=json.dumps(changes["extra_policy"])
        )
    if "attached_policy" in changes:
        name = f"sandbox-attached-{secrets.token_hex(4)}"
        arn = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(changes["attached_policy"]))["Policy"]["Arn"]
        iam.attach_user_policy(UserName=aws.iam_user, PolicyArn=arn)


def restore_baseline(aws: AwsState, layout: Layout) -> bool:
    """Puts back what ``set_state`` (or a test that called ``mark_changed``) changed; quick when
    nothing was. RegistryUser's keys older than a day are deleted (reset then makes a fresh one).
    Returns whether anything was looked at."""
    from datetime import datetime, timedelta, timezone

    marker = _changed_marker(layout)
    if not marker.exists():
        return False
    sandbox_api(aws, "snapshot-seconds", seconds=0)
    sandbox_api(aws, "rds-settings", password_reset_seconds=PASSWORD_RESET_SECONDS)
    sandbox_api(aws, "stack-status", stack_name=aws.stack, status="CREATE_COMPLETE")
    sandbox_api(aws, "db-instance", db_instance_identifier=aws.db_instance, latest_restorable_time=None)
    rds = client(aws, "rds")
    db = rds.describe_db_instances(DBInstanceIdentifier=aws.db_instance)["DBInstances"][0]
    if db["DBInstanceStatus"] == "stopped":
        rds.start_db_instance(DBInstanceIdentifier=aws.db_instance)
    if db["BackupRetentionPeriod"] != BACKUP_RETENTION_DAYS:
        rds.modify_db_instance(
            DBInstanceIdentifier=aws.db_instance, BackupRetentionPeriod=BACKUP_RETENTION_DAYS, ApplyImmediately=True
        )
    delete_other_instances(aws)
    manual = rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    for snapshot in manual:
        rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot["DBSnapshotIdentifier"])
    client(aws, "s3").put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    iam = client(aws, "iam")
    for name in iam.list_user_policies(UserName=aws.iam_user)["PolicyNames"]:
        if name != REGISTRY_POLICY_NAME:
            iam.delete_user_policy(UserName=aws.iam_user, PolicyName=name)
    policy = json.dumps(REGISTRY_POLICY).replace("{bucket}", aws.bucket)
    iam.put_user_policy(UserName=aws.iam_user, PolicyName=REGISTRY_POLICY_NAME, PolicyDocument=policy)
    for attached in iam.list_attached_user_policies(UserName=aws.iam_user)["AttachedPolicies"]:
        iam.detach_user_policy(UserName=aws.iam_user, PolicyArn=attached["PolicyArn"])
    old = datetime.now(timezone.utc) - timedelta(days=1)
    for key in iam.list_access_keys(UserName=aws.iam_user)["AccessKeyMetadata"]:
        if key["CreateDate"] < old:
            iam.delete_access_key(UserName=aws.iam_user, AccessKeyId=key["AccessKeyId"])
    marker.unlink(missing_ok=True)
    return True


def delete_other_instances(aws: AwsState) -> list[str]:
    """Deletes the DB instances other than the stack's (restored ones): their servers go with them."""
    rds = client(aws, "rds")
    others = [
        d["DBInstanceIdentifier"]
        for d in rds.describe_db_instances()["DBInstances"]
        if d["DBInstanceIdentifier"] != aws.db_instance
    ]
    for identifier in others:
        rds.delete_db_instance(DBInstanceIdentifier=identifier, SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
    return others


# ----------------------------------------------------------------------------- proxy faults


def read_faults(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def set_faults(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Adds proxy fault settings; ``NAME_for=N`` is shorthand for ``NAME_until=now+N``,
    ``NAME_next=N`` refuses the next N requests (a fresh id, so each setting is spent once)."""
    current = read_faults(path)
    for key, value in settings.items():
        if key.endswith("_for"):
            current[key[:-4] + "_until"] = time.time() + float(value)
        elif key.endswith("_next"):
            current[key] = {"count": int(value), "id": uuid.uuid4().hex, "since": time.time()}
        else:
            current[key] = value
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(current))
    tmp.replace(path)
    return current


def clear_faults(path: Path) -> None:
    if read_faults(path) or not path.exists():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("{}")
        tmp.replace(path)


def _spawn(argv: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """A daemon of the host's AWS side, in its own session, logging to ``log``."""
    with open(log, "ab") as logf:
        return subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
