"""Several hosts at once, stack discovery, monitoring formats."""

import json
import subprocess
import sys
import time

import pytest

from tests.sandbox import SANDBOX

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def fleet(sandbox):
    """The sandbox with three host aliases (sandbox1..3), each with its own sshd."""
    subprocess.run([sys.executable, str(SANDBOX), "up", "--hosts", "3"], check=True, capture_output=True,
                   timeout=600)
    return sandbox


def test_health_on_three_hosts_one_summary(fleet):
    before = fleet.accepted_logins()
    result = fleet.run("health", host="sandbox1,sandbox2,sandbox3")
    assert result.returncode == 0, result.stdout + result.stderr
    for alias in ("sandbox1", "sandbox2", "sandbox3"):
        assert f"{alias}: OK (6/6 checks OK)" in result.stdout
    assert result.stdout.count("HOST ") == 1  # one table for all hosts
    time.sleep(0.3)  # sshd logs a login after accepting it
    assert fleet.accepted_logins() - before == 3  # one connection per host


def test_worst_host_sets_the_exit_code(fleet):
    result = fleet.run("health", "--json", host="sandbox1,127.0.0.1:1,sandbox2")
    assert result.returncode == 3
    doc = json.loads(result.stdout)
    assert [h["status"] for h in doc["hosts"]] == ["OK", "UNKNOWN", "OK"]
    assert doc["status"] == "UNKNOWN"


def test_hosts_from_config_when_no_h(fleet, tmp_path):
    config = fleet.write_config(tmp_path / "c.yaml", hosts=["sandbox1", "sandbox2"])
    result = fleet.run("health", config=config, host="")
    assert result.returncode == 0, result.stderr
    assert "sandbox1: OK" in result.stdout and "sandbox2: OK" in result.stdout


def test_stack_discovery(fleet):
    result = fleet.run("health", "--stack", "quilt-registry", host="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "127.0.0.1: OK" in result.stdout or "ec2-user@127.0.0.1: OK" in result.stdout


def test_stacks_lists_the_registry_stack(fleet):
    result = fleet.run("stacks", "--json", host="")
    assert result.returncode == 0, result.stderr
    stacks = json.loads(result.stdout)
    assert [s["name"] for s in stacks] == ["quilt-registry"]
    assert stacks[0]["host"] == "127.0.0.1"
    assert stacks[0]["iam_user"] == fleet.info["aws"]["iam_user"]
    table = fleet.run("stacks", host="")
    assert "quilt-registry" in table.stdout and "RegistryUser" in table.stdout


def test_unknown_stack_is_one_error(fleet):
    result = fleet.run("health", "--stack", "no-such-stack", host="")
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "no-such-stack" in lines[0]


def test_nagios_format(fleet):
    result = fleet.run("health", "--format", "nagios", host="sandbox1")
    assert result.returncode == 0
    assert result.stdout.startswith("QUILT OK - sandbox1: 6/6 checks OK | checks_ok=6")
    assert len(result.stdout.strip().splitlines()) == 1


def test_prometheus_format(fleet):
    result = fleet.run("health", "--format", "prometheus", host="sandbox1,sandbox2")
    assert result.returncode == 0
    assert 'quilt_health_status{host="sandbox1"} 0' in result.stdout
    assert 'quilt_health_status{host="sandbox2"} 0' in result.stdout
    assert 'quilt_probe_http_status{host="sandbox1",probe="registry"} 200' in result.stdout


def test_bad_format_is_refused(fleet):
    result = fleet.run("health", "--format", "xml", host="sandbox1")
    assert result.returncode == 3
    assert "--format" in result.stderr
