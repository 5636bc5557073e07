"""Two operators at once: the host lock serialises what must not overlap, the loser says
so, and the end state is consistent."""

import subprocess
import time

import pytest

from tests.sandbox import ROOT

pytestmark = [pytest.mark.sandbox, pytest.mark.concurrency]


def start(host, *args, stdin=None):
    cmd = ["fab", "-S", str(host.ssh_config), "-f", str(host.fabric_config), "-H", "sandbox", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=host.tool_env(), stdin=subprocess.PIPE if stdin else None,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc, pattern):
    seen = ""
    while pattern not in seen:
        line = proc.stdout.readline()
        assert line, seen
        seen += line
    return seen


@pytest.mark.parametrize("second", ["rotate-keys", "restart", "create-admin"])
def test_second_operator_during_a_rotation(host, aws, survived, second):
    aws.fault(new_key_delay=4)
    first = start(host, "rotate-keys")
    wait_for(first, "created")
    name = f"conc{int(time.time())}"
    args = (["create-admin", "--username", name, "--email", f"{name}@example.com", "--password-stdin"]
            if second == "create-admin" else [second])
    loser = host.run(*args, input="a-good-password\n")
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert loser.returncode == 1
    errors = [line for line in loser.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "is locked: rotate-keys by" in errors[0] and "since" in errors[0]
    aws.clear()
    survived(compare_bytes=True)


def test_two_restarts_at_once(host, aws, survived):
    with host.fault("registry-unhealthy"):  # keeps the first restart waiting (and holding the lock)
        first = start(host, "restart", "--timeout", "8")
        wait_for(first, "removing registry")
        second = host.run("restart")
        out, err = first.communicate(timeout=120)
    assert first.returncode == 1 and "did not become healthy" in err
    assert second.returncode == 1 and "is locked: restart by" in second.stderr
    assert host.run("restart").returncode == 0
    survived()


def test_health_is_never_blocked_by_the_lock(host, aws, survived):
    aws.fault(new_key_delay=3)
    first = start(host, "rotate-keys")
    wait_for(first, "created")
    result = host.run("health")
    first.communicate(timeout=120)
    assert result.returncode == 0
    aws.clear()
    survived(compare_bytes=True)
