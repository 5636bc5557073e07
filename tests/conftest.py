import json
import os
import subprocess
import sys

import pytest

from tests.sandbox import SANDBOX, Aws, bring_up


@pytest.fixture(scope="session")
def sandbox():
    """The sandbox host, brought up once per test session.

    Skips with the reason when it cannot be had (no docker, no sshd, not root),
    unless QUILT_OPS_REQUIRE_SANDBOX=1 (set by .ci/run) turns that into a failure.
    """
    box, reason = bring_up()
    if box is None:
        if os.environ.get("QUILT_OPS_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"sandbox required but unavailable: {reason}")
        pytest.skip(f"sandbox unavailable: {reason}")
    return box


@pytest.fixture
def host(sandbox):
    """The sandbox, restored to a healthy state after the test."""
    yield sandbox
    sandbox.restore()


@pytest.fixture
def aws(host):
    """The sandbox's AWS as the operator sees it; faults cleared and IAM healed after the test."""
    client = Aws(host)
    client.clear()
    yield client
    client.clear()
    heal(host, client)


def heal(host, aws):
    """After a test: sandbox parts up, any unfinished rotation finished, keys the host does not
    use removed, so that one failure does not cascade into the next tests."""
    subprocess.run([sys.executable, str(SANDBOX), "up"], capture_output=True, timeout=600)
    if (host.env_file.parent / ".registry.quilt-ops-rotation.json").exists():
        host.run("rotate-keys")
    host_key = host.host_key_id()
    for key_id in aws.keys():
        if key_id != host_key:
            aws.iam.delete_access_key(UserName=aws.user, AccessKeyId=key_id)
    host.restore()


SUITES = ("faults", "bad_input", "leaks", "concurrency", "security")


def pytest_runtest_logreport(report):
    """With QUILT_OPS_RELIABILITY_LOG set, records each reliability case's outcome (for scripts/reliability)."""
    path = os.environ.get("QUILT_OPS_RELIABILITY_LOG")
    if not path or report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    suites = [name for name in SUITES if name in report.keywords]
    if suites:
        with open(path, "a") as f:
            f.write(json.dumps({"case": report.nodeid, "suite": suites[0], "outcome": report.outcome}) + "\n")
