"""Fixtures of the reliability suites: every case ends by checking that nothing was lost."""

import subprocess
import sys

import pytest

from tests.sandbox import SANDBOX, Aws, losses, record_losses


def heal(host, aws):
    """Back to a known-good host after a case: sandbox parts up, any rotation finished, strays gone."""
    subprocess.run([sys.executable, str(SANDBOX), "up"], capture_output=True, timeout=600)
    if (host.env_file.parent / ".registry.quilt-ops-rotation.json").exists():
        host.run("rotate-keys")
    host_key = host.host_key_id()
    for key_id in aws.keys():
        if key_id != host_key:
            aws.iam.delete_access_key(UserName=aws.user, AccessKeyId=key_id)
    host.restore()


@pytest.fixture
def aws(host):
    client = Aws(host)
    client.clear()
    yield client
    client.clear()
    heal(host, client)


@pytest.fixture
def survived(request, host, aws):
    """Call at the end of a case: checks and records that no file, key or health was lost."""
    baseline = host.env_file.read_bytes()

    def check(compare_bytes: bool = True):
        lost = losses(host, aws, baseline if compare_bytes else None)
        record_losses(request.node.nodeid, lost)
        assert not any(lost.values()), lost

    return check
