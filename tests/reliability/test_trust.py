"""Trust (issue 18): what a host says is a claim to check, never an instruction.

An attacker with a login on the registry host writes another stack's key id (and bucket)
into its env file, or values a shell would run: a routine run must refuse before any
change (nothing changes in IAM for either user), and no value may ever be executed.
"""

from __future__ import annotations

import re
import secrets
import shutil
import string

import boto3
import pytest

from quilt_ops import known_users
from tests.tool import one_error

pytestmark = [pytest.mark.sandbox, pytest.mark.trust]


def bindings(host):
    return str(host.known_hosts.parent / known_users.FILE_NAME)


def host_entry(host):
    return known_users.entry("127.0.0.1", host.ssh_port)


@pytest.fixture
def other_stack(host):
    """Stack B in the host's AWS account: its own RegistryUser (with an Active key), its own
    bucket, and an EC2InstanceIp that is another machine (192.0.2.44, TEST-NET-1)."""
    kw = host.aws_kwargs()
    cf, iam = boto3.client("cloudformation", **kw), boto3.client("iam", **kw)
    name = "forged" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(6))
    user = f"{name}-RegistryUser-" + "".join(secrets.choice(string.ascii_uppercase) for _ in range(13))
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "PackageBucket": {"Type": "AWS::S3::Bucket"},
            "RegistryUser": {"Type": "AWS::IAM::User", "Properties": {"UserName": user}},
        },
        "Outputs": {
            "EC2InstanceIp": {"Value": "192.0.2.44"},
            "PackageBucketName": {"Value": {"Ref": "PackageBucket"}},
        },
    }
    import json

    cf.create_stack(StackName=name, TemplateBody=json.dumps(template))
    resources = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cf.describe_stack_resources(StackName=name)["StackResources"]
    }
    key = iam.create_access_key(UserName=user)["AccessKey"]
    yield {
        "name": name,
        "user": user,
        "bucket": resources["PackageBucket"],
        "key": key["AccessKeyId"],
        "secret": key["SecretAccessKey"],
    }
    for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=user, AccessKeyId=k["AccessKeyId"])
    cf.delete_stack(StackName=name)


def keys_of(host, user):
    iam = host.iam_client()
    return {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}


def forge(host, other):
    """Host A's env file now names stack B's key and bucket (the secret stays A's: key ids are not secret)."""
    text = host.env_file.read_text()
    text = re.sub(r"(?m)^AWS_ACCESS_KEY_ID=.*$", f"AWS_ACCESS_KEY_ID={other['key']}", text)
    text = re.sub(r"(?m)^PACKAGE_BUCKET_NAME=.*$", f"PACKAGE_BUCKET_NAME={other['bucket']}", text)
    host.env_file.write_text(text)


@pytest.mark.parametrize("bound", [False, True], ids=["first-rotation", "bound-host"])
def test_forged_key_of_another_stack_is_refused_and_nothing_changes_in_iam(host, aws, other_stack, bound):
    """Issue 18.1 (fails on main: B's key was rotated, its new secret written on A, B's key deleted)."""
    mine_before, theirs_before = aws.keys(), keys_of(host, other_stack["user"])
    known_path = host.known_hosts.parent / known_users.FILE_NAME
    known_path.unlink(missing_ok=True)  # the host's first rotation
    if bound:
        known_users.record(bindings(host), host_entry(host), host.iam_user)
    forge(host, other_stack)
    forged = host.env_file.read_bytes()
    result = host.run("rotate-keys")
    assert result.returncode == 4, result.stdout + result.stderr
    line = one_error(result)
    assert other_stack["user"] in line and "nothing was changed" in line
    if bound:
        assert host.iam_user in line  # both users named
    else:
        assert "192.0.2.44" in line and "another registry's key" in line
    assert aws.keys() == mine_before and keys_of(host, other_stack["user"]) == theirs_before
    assert host.env_file.read_bytes() == forged
    if not bound:
        assert known_users.lookup(bindings(host), host_entry(host)) in (None, host.iam_user)


def test_forged_key_is_refused_by_health_aws_too(host, aws, other_stack):
    """`health --aws` reports on the host's user, never on the one the host's file names."""
    forge(host, other_stack)
    result = host.run("health", "--aws", "--format", "json")
    assert result.returncode != 0
    assert other_stack["user"] in result.stdout + result.stderr


def test_routine_rotation_binds_the_host_and_a_changed_binding_is_refused(host, aws, tmp_path):
    """The first rotation records HOST -> USER beside known_hosts; an explicit other user is then
    refused with the command that re-binds."""
    result = host.run("rotate-keys")
    assert result.returncode == 0, result.stdout + result.stderr
    assert known_users.lookup(bindings(host), host_entry(host)) == host.iam_user
    result = host.run("rotate-keys", "--iam-user", "quilt-operator", "--dry-run")
    assert result.returncode == 4
    line = one_error(result)
    assert host.iam_user in line and "quilt-operator" in line


# ----------------------------------------------------------------------------- create-admin: values are data

PAYLOADS = {
    "QUILT_DEFAULT_SENDER": "a@b;touch {pwned}-semicolon",
    "SMTP_HOST": "smtp && touch {pwned}-and",
    "SMTP_USERNAME": "$(touch {pwned}-dollar)",
    "STRIPE_KEY": "`touch {pwned}-backtick`",
    "UWSGI_HOST": "x > {pwned}-redirect",
    "TEAM_NAME": "QA Team",
}


def test_create_admin_runs_no_env_file_value(host, tmp_path):
    """Issue 18.2 (fails on main: `. env/registry` ran each payload as the login user)."""
    pwned = str(host.registry_dir / "pwned")
    for stale in host.registry_dir.glob("pwned*"):  # left by a run against an older build
        stale.unlink()
    dump = host.registry_dir / "seen-environment"
    spy = host.registry_dir / "spy_admin.sh"
    spy.write_text(f'#!/bin/sh\nenv -0 > {dump}\nexec ./create_admin.sh "$@"\n')
    spy.chmod(0o755)
    shutil.chown(spy, host.login_user, host.login_user)
    config = host.write_config(tmp_path / "c.yaml", create_admin_script="./spy_admin.sh")
    original = host.env_file.read_bytes()
    extra = "".join(f"{name}={value.format(pwned=pwned)}\n" for name, value in PAYLOADS.items())
    host.env_file.write_bytes(original + extra.encode())
    try:
        result = host.run(
            "create-admin",
            "--username",
            "trust" + secrets.token_hex(3),
            "--email",
            f"trust{secrets.token_hex(3)}@example.com",
            "--password-stdin",
            input="Tr0ub4dor-and-3\n",
            config=config,
        )
        seen = {}
        if dump.exists():
            for entry in dump.read_bytes().split(b"\0"):
                name, _, value = entry.decode().partition("=")
                seen[name] = value
    finally:
        host.env_file.write_bytes(original)
        spy.unlink()
        dump.unlink(missing_ok=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list(host.registry_dir.glob("pwned*"))
    for name, value in PAYLOADS.items():
        assert seen.get(name) == value.format(pwned=pwned), name
    assert not list(host.registry_dir.glob("quilt-ops-admin.*"))


@pytest.mark.parametrize("line", ["LD_PRELOAD=/tmp/evil.so", "BASH_ENV=/tmp/evil.sh", "PATH=/tmp/evil"])
def test_create_admin_refuses_names_that_change_what_runs(host, line):
    """A host's env file cannot choose what create_admin.sh's shell or loader runs: refused
    before the program starts (dry run included), naming the line, never the value."""
    original = host.env_file.read_bytes()
    host.env_file.write_bytes(original + line.encode() + b"\n")
    try:
        args = ("--username", "trustx", "--email", "trustx@example.com", "--password-stdin")
        dry = host.run("create-admin", *args, "--dry-run", input="Tr0ub4dor-and-3\n")
        real = host.run("create-admin", *args, input="Tr0ub4dor-and-3\n")
    finally:
        host.env_file.write_bytes(original)
    for result in (dry, real):
        assert result.returncode == 4, result.stdout + result.stderr
        error = one_error(result)
        assert line.split("=")[0] in error and "/tmp/evil" not in error
