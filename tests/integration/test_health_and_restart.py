"""`fab health` and `fab restart` against the sandbox host: real sshd, Docker and containers."""

import json
import subprocess

import pytest

pytestmark = pytest.mark.sandbox


def no_traceback(result):
    return "Traceback" not in result.stdout + result.stderr


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_fab_list_shows_the_four_tasks(sandbox):
    result = subprocess.run(["fab", "--list"], cwd=sandbox.info.get("root") or None, capture_output=True,
                            text=True, env=sandbox.tool_env())
    from tests.sandbox import ROOT
    result = subprocess.run(["fab", "--list"], cwd=ROOT, capture_output=True, text=True)
    for name in ("create-admin", "rotate-keys", "restart", "health"):
        assert name in result.stdout


def test_health_all_ok(host):
    before = host.accepted_logins()
    result = host.run("health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sandbox: OK (6/6 checks OK)" in result.stdout
    for name in ("container registry", "container catalog", "container registry-nginx", "probe registry",
                 "probe catalog", "env file"):
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
    for args in (("health",), ("health", "--json")):
        result = host.run(*args)
        for secret in secrets:
            assert secret not in result.stdout + result.stderr


def test_stopped_catalog_is_critical_and_named(host):
    host.docker("stop", "-t", "1", "catalog")
    result = host.run("health")
    assert result.returncode == 2
    line = next(line for line in result.stdout.splitlines() if "container catalog" in line)
    assert "CRITICAL" in line and "exited" in line
    probe = next(line for line in result.stdout.splitlines() if "probe catalog" in line)
    assert "CRITICAL" in probe


def test_broken_registry_probe_is_critical(host):
    with host.fault("registry-unhealthy"):
        result = host.run("health", "--json")
    assert result.returncode == 2
    checks = {c["name"]: c for c in json.loads(result.stdout)["hosts"][0]["checks"]}
    assert checks["probe registry"]["status"] == "CRITICAL"
    assert "HTTP 500" in checks["probe registry"]["summary"]
    assert checks["container registry"]["status"] == "OK"


def test_env_file_readable_by_others_is_a_warning(host):
    host.env_file.chmod(0o644)
    result = host.run("health")
    assert result.returncode == 1
    assert "chmod 600" in result.stdout


def test_missing_container_is_critical(host):
    host.docker("rm", "-f", "registry-nginx")
    result = host.run("health", "--json")
    assert result.returncode == 2
    checks = {c["name"]: c for c in json.loads(result.stdout)["hosts"][0]["checks"]}
    assert checks["container registry-nginx"]["summary"].startswith("missing")
    assert checks["probe registry"]["status"] == "CRITICAL"  # nginx answers the registry's port


def test_restart_brings_everything_back(host):
    before = host.container_ids()
    host.docker("stop", "-t", "1", "catalog")
    host.docker("rm", "-f", "registry-nginx")
    logins = host.accepted_logins()
    result = host.run("restart")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restarted and healthy" in result.stdout
    assert "registry probe down" in result.stdout
    assert "removing registry catalog registry-nginx" in result.stdout  # progress shown
    assert host.accepted_logins() - logins == 1
    after = host.container_ids()
    for name in ("registry", "catalog"):
        assert after[name] != before[name]  # recreated, not restarted
    assert host.run("health").returncode == 0


def test_restart_dry_run_changes_nothing(host):
    before = host.container_ids()
    result = host.run("restart", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run, nothing changed" in result.stdout
    assert host.container_ids() == before


def test_restart_with_failing_start_script_reports_its_output(host):
    with host.fault("start-fails"):
        result = host.run("restart", "--timeout", "5")
    assert result.returncode == 1
    line = error_line(result)
    assert "./start.sh failed" in line and "start-fails" in line
    assert no_traceback(result)


def test_restart_with_registry_never_healthy_times_out_with_failing_checks(host):
    with host.fault("registry-unhealthy"):
        result = host.run("restart", "--timeout", "3")
    assert result.returncode == 1
    line = error_line(result)
    assert "did not become healthy within 3s" in line and "probe registry" in line


def test_restart_missing_start_script_changes_nothing(host, tmp_path):
    config = host.write_config(tmp_path / "c.yaml", start_script="./no-such-start.sh")
    before = host.container_ids()
    result = host.run("restart", config=config)
    assert result.returncode == 1
    assert "not found" in error_line(result) and "nothing was changed" in result.stderr
    assert host.container_ids() == before
