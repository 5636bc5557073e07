"""Failures a user can cause: one `Error:` line, a documented exit status, no traceback."""

import pytest

pytestmark = pytest.mark.sandbox


def single_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.mark.parametrize("task,status", [("health", 3), ("restart", 2)])
def test_unknown_policy_is_refused_naming_the_key(host, tmp_path, task, status):
    config = host.write_config(tmp_path / "c.yaml", host_key_policy="trust-everyone")
    result = host.run(task, config=config)
    assert result.returncode == status
    assert "quilt.host_key_policy" in single_error(result)


def test_wrong_type_in_config_is_refused(host, tmp_path):
    config = host.write_config(tmp_path / "c.yaml", containers={"a": 1})
    result = host.run("restart", config=config)
    assert result.returncode == 2
    assert "quilt.containers" in single_error(result)


@pytest.mark.parametrize("tool", ["fab", "quilt-ops"])
def test_unreadable_config_file_is_one_line(host, tmp_path, tool):
    config = tmp_path / "broken.yaml"
    config.write_text("quilt: {probes: [unclosed\n")
    result = host.run("health", config=config, tool=tool)
    assert result.returncode == 2
    assert "broken.yaml" in single_error(result)


def test_bad_number_in_environment_is_refused(host):
    result = host.run("health", env={"FABRIC_QUILT_CONNECT_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "FABRIC_QUILT_CONNECT_TIMEOUT" in single_error(result)


def test_environment_overrides_defaults(host):
    result = host.run("restart", "--dry-run", env={"FABRIC_QUILT_RESTART_TIMEOUT": "42"})
    assert result.returncode == 0
    assert "wait up to 42s" in result.stdout


def test_closed_port_is_unknown(host):
    result = host.run("health", host="127.0.0.1:1")
    assert result.returncode == 3
    assert "connection refused" in result.stdout


def test_no_host_is_a_usage_error(host):
    result = host.run("restart", host="")
    assert result.returncode == 2
    assert "no host given" in single_error(result)


def test_bad_timeout_option(host):
    result = host.run("restart", "--timeout", "soon")
    assert result.returncode == 2
    assert "--timeout" in single_error(result)
