"""Two operators at once: the host lock serialises what must not overlap, the loser says
so, and the end state is consistent."""

import time

import pytest

from tests.tool import one_error

pytestmark = [pytest.mark.sandbox, pytest.mark.concurrency]


@pytest.mark.parametrize("second", ["rotate-keys", "restart", "create-admin"])
def test_second_operator_during_a_rotation(host, aws, survived, second):
    aws.fault(new_key_delay=4)
    first = host.start("rotate-keys")
    first.wait_for("created")
    name = f"conc{int(time.time())}"
    args = (
        ["create-admin", "--username", name, "--email", f"{name}@example.com", "--password-stdin"]
        if second == "create-admin"
        else [second]
    )
    loser = host.run(*args, input="a-good-password\n")
    result = first.finish(timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert loser.returncode == 4
    line = one_error(loser)
    assert "is locked: rotate-keys by" in line and "since" in line
    aws.clear()
    survived(compare_bytes=True)


def test_two_restarts_at_once(host, aws, survived):
    with host.fault("registry-unhealthy"):  # keeps the first restart waiting (and holding the lock)
        first = host.start("restart", "--timeout", "10")
        first.wait_for("removing")
        second = host.run("restart")
        result = first.finish(timeout=120)
    assert result.returncode == 4 and "did not become healthy" in result.stderr
    assert second.returncode == 4 and "is locked: restart by" in second.stderr
    assert host.run("restart").returncode == 0
    survived()


def test_health_is_never_blocked_by_the_lock(host, aws, survived):
    aws.fault(new_key_delay=3)
    first = host.start("rotate-keys")
    first.wait_for("created")
    result = host.run("health")
    first.finish(timeout=120)
    assert result.returncode == 0
    aws.clear()
    survived(compare_bytes=True)
