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
import urllib.request
from pathlib import Path
from typing import Any

from .state import AwsState, Layout
from .util import SandboxError, clean_env, ensure_dir, pid_alive, port_open, stop_pid, wait_for

FILES = Path(__file__).resolve().parent / "files"
REGION = "us-east-1"
#: Credentials moto accepts before IAM auth is switched on (used only to provision).
BOOTSTRAP = ("sandbox-admin", "sandbox-admin")
OPERATOR = "quilt-operator"

# The real template's inline policy of RegistryUser.
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


def stack_template(stack: str) -> dict[str, Any]:
    """The CloudFormation template of the sandbox stack: the parts of the real one the tool meets.

    (An ``AWS::RDS::DBInstance`` would be added here, and its outputs read in ``provision``.)
    RegistryUser gets the name CloudFormation would give it, ``<stack>-RegistryUser-<13
    characters>`` (moto's own generated names have 12).
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
        },
        "Outputs": {
            "EC2InstanceIp": {"Value": "127.0.0.1"},
            "LoadBalancerDNSName": {"Value": f"{stack}-lb-1234567890.{REGION}.elb.amazonaws.com"},
            "PackageBucketName": {"Value": {"Ref": "PackageBucket"}},
        },
    }


# ----------------------------------------------------------------------------- processes


def moto_server() -> str:
    path = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(path).exists():
        raise SandboxError("moto_server is missing: pip install 'moto[server]'")
    return path


def aws_alive(aws: AwsState | None) -> bool:
    return aws is not None and pid_alive(aws.moto_pid) and pid_alive(aws.proxy_pid) and port_open(aws.proxy_port)


def start_aws(layout: Layout, moto_port: int, proxy_port: int) -> AwsState:
    """Starts moto and the proxy (without waiting for them; see ``wait_aws``)."""
    root = layout.aws
    ensure_dir(root, 0o700)
    layout.aws_faults.write_text("{}")
    env = clean_env()
    # moto runs with the host's aws folder as cwd: that is how a sweep finds it without its pid.
    moto = _spawn([moto_server(), "-H", "127.0.0.1", "-p", str(moto_port)], root / "moto.log", root, env)
    proxy = _spawn(
        [sys.executable, str(FILES / "aws_proxy.py"), str(proxy_port), str(moto_port), str(layout.aws_faults)],
        root / "proxy.log",
        root,
        env,
    )
    return AwsState(moto_port=moto_port, proxy_port=proxy_port, moto_pid=moto.pid, proxy_pid=proxy.pid, region=REGION)


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


def provision(aws: AwsState, stack: str) -> tuple[str, str]:
    """Creates the stack and the users in a fresh moto, then switches moto's IAM auth on.

    Fills ``aws`` (stack, RegistryUser's name, bucket, operator key) and returns
    RegistryUser's first access key (id, secret): the one written into env/registry.
    """
    import boto3

    kw = {
        "endpoint_url": aws.moto_endpoint,
        "region_name": aws.region,
        "aws_access_key_id": BOOTSTRAP[0],
        "aws_secret_access_key": BOOTSTRAP[1],
    }
    cfn, iam, s3 = (boto3.client(name, **kw) for name in ("cloudformation", "iam", "s3"))
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps(stack_template(stack)))
    resources = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]
    }
    user, bucket = resources["RegistryUser"], resources["PackageBucket"]
    policy = json.dumps(REGISTRY_POLICY).replace("{bucket}", bucket)
    iam.put_user_policy(UserName=user, PolicyName="RegistryUserS3Access", PolicyDocument=policy)
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
    # From here on moto checks every request's signature and IAM policies, as AWS
    # does (it evaluates IAM actions against resource "*", and does not refuse
    # Inactive keys; deleted keys and missing permissions are refused).
    request = urllib.request.Request(
        f"{aws.moto_endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).read()
    aws.stack, aws.iam_user, aws.bucket = stack, user, bucket
    aws.operator_key_id, aws.operator_secret = operator["AccessKeyId"], operator["SecretAccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


# ----------------------------------------------------------------------------- proxy faults


def read_faults(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def set_faults(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Adds proxy fault settings; ``NAME_for=N`` is shorthand for ``NAME_until=now+N``."""
    current = read_faults(path)
    for key, value in settings.items():
        if key.endswith("_for"):
            current[key[:-4] + "_until"] = time.time() + float(value)
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
