"""Invoke's and Fabric's core options against a sandbox host (issue 20.3): -R is a dry run
that changes nothing, -T bounds a command that hangs on the host, -e echoes what runs there
with no secret in it."""

import time

import pytest

from tests.tool import one_error

pytestmark = pytest.mark.sandbox


def started_at(host) -> dict[str, str]:
    names = list(host.containers.values())
    found = host.docker("inspect", "--format", "{{.Name}} {{.Id}} {{.State.StartedAt}}", *names)
    return dict(line.split(" ", 1) for line in found.stdout.splitlines() if line.strip())


@pytest.mark.parametrize("where", [("-R", "restart"), ("restart", "-R")])
def test_dry_restart_changes_nothing(host, where):
    before, audited = started_at(host), len(host.audit_records())
    result = host.run(*where, tool="quilt-ops")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run, nothing changed" in result.stdout
    assert started_at(host) == before
    assert len(host.audit_records()) == audited  # a dry run is no change: nothing audited


def test_dry_is_refused_by_a_task_without_a_dry_run(host):
    result = host.run("-R", "health", tool="quilt-ops")
    assert result.returncode == 3 and "health has no --dry-run" in one_error(result)


def test_command_timeout_bounds_a_hanging_start_script(host):
    with host.fault("start-hangs"):
        started = time.monotonic()
        result = host.run("-T", "3", "restart", tool="quilt-ops", timeout=120)
        took = time.monotonic() - started
    assert result.returncode != 0 and took < 60, (took, result.stdout + result.stderr)
    assert "within 3s" in result.stderr, result.stderr


def test_echo_shows_the_commands_and_no_secret(host):
    secrets = host.env_values()
    for args in (("-e", "health"), ("-e", "restart", "--dry-run")):
        result = host.run(*args, tool="quilt-ops")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"[{host.alias}] $ " in result.stderr
        for secret in secrets:
            assert secret not in result.stdout + result.stderr
    quiet = host.run("health", tool="quilt-ops")
    assert f"[{host.alias}] $ " not in quiet.stderr


def test_echo_during_a_rotation_shows_no_key(host, aws):
    before = host.env_values()
    result = host.run("-e", "rotate-keys", tool="quilt-ops")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"[{host.alias}] $ " in result.stderr
    for secret in [*before, *host.env_values()]:  # the old key's secret and the new one's
        assert secret not in result.stdout + result.stderr
