"""Issue 17: every byte of every remote command is read, also when sshd writes late.

The sandbox's ``sshd-slow-writes`` fault makes each of sshd's network writes wait a few
milliseconds, as an sshd short of CPU does: it then sends a command's exit status while
the command's pipe still holds output, and the client sees data, exit status, more data,
EOF. Before the fix, quilt-ops stopped reading at the exit status (a big env file "could
not be read whole", the pre-check's last lines missing, a rotation rolled back for nothing).
"""

import os
import stat

import pytest

from tests.tool import one_error

pytestmark = pytest.mark.sandbox

#: Milliseconds per sshd network write: enough to reorder every multi-packet output here.
DELAY = "3"


@pytest.fixture
def slow(host):
    host.set_fault("sshd-slow-writes", DELAY)
    yield host
    host.clear_fault("sshd-slow-writes")


@pytest.fixture
def big_env_file(host):
    """env/registry with 64 KiB of comments at its end (several SSH packets), owner and mode kept."""
    path = host.env_file
    original = path.read_bytes()
    st = path.stat()
    comments = b"".join(b"# note %05d: nothing secret here, only bytes to send\n" % i for i in range(1200))
    path.write_bytes(original + comments)
    os.chown(path, st.st_uid, st.st_gid)
    path.chmod(stat.S_IMODE(st.st_mode))
    yield path
    # reset() puts the env file back whole (as the baseline), whatever the test did


def test_a_big_env_file_is_read_whole_over_a_slow_sshd(slow, big_env_file):
    result = slow.run("rotate-keys", "--dry-run")
    assert result.returncode == 0, one_error(result) if result.returncode else ""
    assert "could not be read whole" not in result.stdout + result.stderr
    assert "Plan for" in result.stdout


def test_health_restart_and_rotation_over_a_slow_sshd(slow, aws, big_env_file):
    assert slow.run("health").returncode == 0
    restarted = slow.run("restart")
    assert restarted.returncode == 0
    old = slow.host_key_id()
    rotated = slow.run("rotate-keys")
    assert rotated.returncode == 0
    new = slow.host_key_id()
    assert new != old and aws.keys() == {new: "Active"}
    assert slow.registry_runs_with(new)
