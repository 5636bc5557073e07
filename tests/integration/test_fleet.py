"""Several hosts at once, stack discovery, monitoring formats."""

import json

import pytest

from tests import promtool
from tests.tool import one_error, wait_until

pytestmark = pytest.mark.sandbox


@pytest.fixture
def fleet(host):
    """The worker's host with three more sshd's in front of it (aliases <alias>1..3)."""
    with host.reshaped(aliases=3):
        yield host


def test_health_on_three_hosts_one_summary(fleet):
    aliases = fleet.aliases[1:4]
    before = fleet.accepted_logins()
    result = fleet.run("health", host=",".join(aliases))
    assert result.returncode == 0, result.stdout + result.stderr
    for alias in aliases:
        assert f"{alias}: OK (6/6 checks OK)" in result.stdout
    assert result.stdout.count("HOST ") == 1  # one table for all hosts
    wait_until("three logins", lambda: fleet.accepted_logins() - before >= 3, 5)
    assert fleet.accepted_logins() - before == 3  # one connection per host


def test_worst_host_sets_the_exit_code(fleet):
    a, b = fleet.aliases[1:3]
    result = fleet.run("health", "--json", host=f"{a},127.0.0.1:1,{b}")
    assert result.returncode == 3
    doc = json.loads(result.stdout)
    assert [h["status"] for h in doc["hosts"]] == ["OK", "UNKNOWN", "OK"]
    assert doc["status"] == "UNKNOWN"


def test_hosts_from_config_when_no_h(fleet, tmp_path):
    a, b = fleet.aliases[1:3]
    config = fleet.write_config(tmp_path / "c.yaml", hosts=[a, b])
    result = fleet.run("health", config=config, host="")
    assert result.returncode == 0, result.stderr
    assert f"{a}: OK" in result.stdout and f"{b}: OK" in result.stdout


def test_stack_discovery(host):
    result = host.run("health", "--stack", host.stack, host="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "127.0.0.1: OK" in result.stdout


def test_stacks_lists_the_registry_stack(host):
    result = host.run("stacks", "--json", host="")
    assert result.returncode == 0, result.stderr
    stacks = json.loads(result.stdout)
    assert [s["name"] for s in stacks] == [host.stack]
    assert stacks[0]["host"] == "127.0.0.1"
    assert stacks[0]["iam_user"] == host.iam_user
    table = host.run("stacks", host="")
    assert host.stack in table.stdout and "RegistryUser" in table.stdout


def test_unknown_stack_is_one_error(host):
    result = host.run("health", "--stack", "no-such-stack", host="")
    assert result.returncode == 3
    assert "no-such-stack" in one_error(result)


def test_nagios_format(host):
    result = host.run("health", "--format", "nagios")
    assert result.returncode == 0
    assert result.stdout.startswith(f"QUILT OK - {host.alias}: 6/6 checks OK | checks_ok=6")
    assert len(result.stdout.strip().splitlines()) == 1


def test_prometheus_format(fleet):
    a, b = fleet.aliases[1:3]
    result = fleet.run("health", "--format", "prometheus", host=f"{a},{b}")
    assert result.returncode == 0
    assert f'quilt_health_status{{host="{a}"}} 0' in result.stdout
    assert f'quilt_health_status{{host="{b}"}} 0' in result.stdout
    assert f'quilt_probe_http_status{{host="{a}",probe="registry"}} 200' in result.stdout
    assert f'quilt_up{{host="{a}"}} 1.0' in result.stdout
    promtool.check_metrics(result.stdout)


def test_point_10_3_a_failing_host_does_not_stop_the_others_and_every_host_is_reported(host, aws):
    old = host.host_key_id()
    result = host.run("rotate-keys", "--parallel", "2", host=f"127.0.0.1:1,{host.alias}")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"{host.alias}: rotated {old} -> " in result.stdout
    assert "Error: 127.0.0.1:1: cannot connect" in result.stderr
    assert aws.keys() == {host.host_key_id(): "Active"}


def test_point_10_7_a_failed_rollback_is_never_hidden_by_an_unreachable_host(host, aws):
    with host.fault("start-fails"):
        result = host.run("rotate-keys", "--timeout", "10", host=f"127.0.0.1:1,{host.alias}")
    assert result.returncode == 6, result.stdout + result.stderr
    assert "so did its rollback" in result.stderr
