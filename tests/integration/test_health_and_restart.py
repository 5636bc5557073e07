"""`fab health` and `fab restart` against a sandbox host: real sshd, Docker (behind sudo), containers."""

import json
import subprocess

import pytest

from tests.tool import ROOT, one_error

pytestmark = pytest.mark.sandbox


def checks(result):
    return {c["name"]: c for c in json.loads(result.stdout)["hosts"][0]["checks"]}


def test_fab_list_shows_the_tasks():
    result = subprocess.run(["fab", "--list"], cwd=ROOT, capture_output=True, text=True)
    for name in ("create-admin", "rotate-keys", "restart", "health", "stacks"):
        assert name in result.stdout


def test_health_all_ok_in_one_connection(host):
    before = host.accepted_logins()
    result = host.run("health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{host.alias}: OK (6/6 checks OK)" in result.stdout
    for role in ("registry", "catalog", "nginx"):
        assert f"container {host.containers[role]}" in result.stdout
    for name in ("probe registry", "probe catalog", "env file"):
        assert name in result.stdout
    assert host.accepted_logins() - before == 1  # one SSH connection for the whole task


def test_quilt_ops_console_script_works_from_any_directory(host, tmp_path):
    result = host.run("health", "--json", tool="quilt-ops", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "OK" and doc["exit_code"] == 0
    assert len(doc["hosts"][0]["checks"]) == 6


def test_health_never_prints_env_values(host):
    secrets = host.env_values()
    assert len(secrets) >= 5
    for args in (("health",), ("health", "--json"), ("health", "--format", "prometheus")):
        result = host.run(*args)
        for secret in secrets:
            assert secret not in result.stdout + result.stderr


def test_stopped_catalog_is_critical_and_named(host):
    catalog = host.containers["catalog"]
    host.docker("stop", "-t", "1", catalog)
    result = host.run("health", "--json")
    assert result.returncode == 2
    found = checks(result)
    assert (
        found[f"container {catalog}"]["status"] == "CRITICAL" and "exited" in found[f"container {catalog}"]["summary"]
    )
    assert found["probe catalog"]["status"] == "CRITICAL"


def test_broken_registry_probe_is_critical(host):
    with host.fault("registry-unhealthy"):
        result = host.run("health", "--json")
    assert result.returncode == 2
    found = checks(result)
    assert found["probe registry"]["status"] == "CRITICAL"
    assert "HTTP 500" in found["probe registry"]["summary"]
    assert found[f"container {host.containers['registry']}"]["status"] == "OK"


def test_env_file_readable_by_others_is_a_warning(host):
    host.env_file.chmod(0o644)
    result = host.run("health")
    assert result.returncode == 1
    assert "chmod 600" in result.stdout


def test_missing_container_is_critical_by_name(host):
    nginx = host.containers["nginx"]
    host.docker("rm", "-f", nginx)
    result = host.run("health", "--json")
    assert result.returncode == 2
    found = checks(result)
    assert found[f"container {nginx}"]["summary"].startswith("missing")
    assert found["probe registry"]["status"] == "CRITICAL"  # nginx answers the registry's port


def test_restart_brings_everything_back_in_one_connection(host):
    names = host.containers
    before = host.container_states()
    host.docker("stop", "-t", "1", names["catalog"])
    host.docker("rm", "-f", names["nginx"])
    logins = host.accepted_logins()
    result = host.run("restart")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restarted and healthy" in result.stdout and "registry probe down" in result.stdout
    assert f"removing {names['registry']} {names['catalog']} {names['nginx']}" in result.stdout  # progress shown
    assert host.accepted_logins() - logins == 1
    after = host.container_states()
    assert set(after) >= set(names.values())
    assert host.health_ok()
    assert before  # the containers were there before the restart


def test_restart_dry_run_changes_nothing(host):
    before = host.docker("ps", "-aq").stdout
    result = host.run("restart", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run, nothing changed" in result.stdout
    assert host.docker("ps", "-aq").stdout == before


def test_restart_with_failing_start_script_reports_its_output(host):
    with host.fault("start-fails"):
        result = host.run("restart", "--timeout", "20")
    assert result.returncode == 4
    line = one_error(result)
    assert "./start.sh failed" in line and "start-fails" in line


def test_restart_with_registry_never_healthy_times_out_with_failing_checks(host):
    with host.fault("registry-unhealthy"):
        result = host.run("restart", "--timeout", "8")
    assert result.returncode == 4
    line = one_error(result)
    assert "did not become healthy within 8s" in line and "probe registry" in line


def test_restart_missing_start_script_changes_nothing(host, tmp_path):
    config = host.write_config(tmp_path / "c.yaml", start_script="./no-such-start.sh")
    before = host.docker("ps", "-aq").stdout
    result = host.run("restart", config=config)
    assert result.returncode == 4
    line = one_error(result)
    assert "not found" in line and "nothing was changed" in line
    assert host.docker("ps", "-aq").stdout == before


def test_environment_overrides_defaults(host):
    result = host.run("restart", "--dry-run", env={"FABRIC_QUILT_RESTART_TIMEOUT": "42"})
    assert result.returncode == 0
    assert "42s in all" in result.stdout
