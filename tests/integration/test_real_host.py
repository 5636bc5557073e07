"""Issue 9: the real host as it is: Docker behind sudo, root-owned env folders, slow and
hanging start scripts, both create_admin versions, gentle probing, missing tools.

Each test runs against the worker's sandbox host reshaped in place to the shape it
needs (see `registry_sandbox.Host.reshaped`); other container names, folder and
login user have their own module (test_other_host.py).
"""

import stat
import time
from pathlib import Path

import pytest

from tests.tool import one_error, wait_until

pytestmark = pytest.mark.sandbox


# ----------------------------------------------------------------------------- 9.2 Docker behind sudo


def test_point_9_2_the_default_host_needs_sudo_for_docker_and_auto_finds_it(host, tmp_path):
    probe = host.ssh("docker ps >/dev/null 2>&1 && echo direct || echo denied")
    assert probe.stdout.strip() == "denied"  # the login user cannot reach the socket
    result = host.run("health", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    plain = host.write_config(tmp_path / "plain.yaml", docker="docker")
    refused = host.run("health", config=plain)
    assert refused.returncode == 3
    assert "docker group" in one_error(refused) and "sudo" in one_error(refused)
    explicit = host.write_config(tmp_path / "sudo.yaml", docker="sudo -n docker")
    assert host.run("health", config=explicit).returncode == 0


def test_point_9_2_docker_group_without_sudo_works_directly(host):
    with host.reshaped(docker_access="group", sudo=False):
        assert host.ssh("sudo -n true 2>/dev/null && echo sudo || echo nosudo").stdout.strip() == "nosudo"
        result = host.run("health")
        assert result.returncode == 0, result.stdout + result.stderr
        restarted = host.run("restart")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr


@pytest.mark.parametrize(
    "task",
    [
        ("health",),
        ("restart",),
        ("create-admin", "--username", "nobody_here", "--email", "n@example.com", "--password-stdin"),
    ],
)
def test_point_9_2_neither_docker_group_nor_sudo_is_one_line_naming_both_fixes(host, task):
    before = host.container_states()
    with host.reshaped(docker_access="none", sudo=False):
        result = host.run(*task, input="a-good-password\n")
    line = one_error(result)
    assert "docker group" in line and "sudo" in line, line
    assert result.returncode == (3 if task[0] == "health" else result.returncode)
    assert result.returncode != 0
    assert host.container_states() == before


# ----------------------------------------------------------------------------- 9.3 files the login user cannot write


def owner_and_mode(path):
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_point_9_3_root_owned_env_file_is_rotated_through_sudo_keeping_owner_group_and_mode(host, aws, mode):
    with host.reshaped(env_owner="root", env_mode=mode):
        folder_before = owner_and_mode(host.env_dir)
        before = owner_and_mode(host.env_file)
        assert before == (0, 0, mode)
        old = host.host_key_id()
        result = host.run("rotate-keys")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "(as root)" in result.stdout
        assert owner_and_mode(host.env_file) == before
        assert owner_and_mode(host.env_dir) == folder_before
        new = host.host_key_id()
        assert new != old and aws.keys() == {new: "Active"} and host.registry_runs_with(new)
        assert host.leftovers() == []
        health = host.run("health")
        assert health.returncode == (1 if mode & 0o044 else 0), health.stdout  # a wide mode still warns


def test_point_9_3_root_owned_env_without_sudo_is_refused_before_any_change(host, aws):
    with host.reshaped(env_owner="root", env_mode=0o644, docker_access="group", sudo=False):
        before, keys = host.env_file.read_bytes(), aws.keys()
        states = host.container_states()
        result = host.run("rotate-keys")
        line = one_error(result)
        assert result.returncode == 4
        assert "passwordless sudo" in line and "nothing was changed" in line
        assert host.env_file.read_bytes() == before and aws.keys() == keys and host.container_states() == states


# ----------------------------------------------------------------------------- 9.4 slow and hanging start scripts


def test_point_9_4_a_slow_start_script_shows_it_is_still_running(host):
    with host.fault("migration-seconds", "30"):
        started = time.monotonic()
        result = host.run("restart", "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started >= 30
    assert "./start.sh still running (" in result.stdout
    assert "restarted and healthy" in result.stdout


def start_scripts(host):
    """Processes of the login user running the start script (or its docker clients)."""
    found = []
    for pid in host.login_processes():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"start.sh" in cmdline or b"db upgrade" in cmdline:
            found.append(pid)
    return found


def test_point_9_4_a_hanging_start_script_is_killed_with_its_children_and_recreates_nothing(host):
    registry = host.containers["registry"]
    with host.fault("start-hangs"):
        started = time.monotonic()
        result = host.run("restart", "--timeout", "10")
        took = time.monotonic() - started
        assert result.returncode == 4
        line = one_error(result)
        assert "did not finish within 10s" in line and "stopped there" in line
        assert took < 40
        assert start_scripts(host) == []
        # nothing the start script would have done later happens: no registry container appears
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert registry not in host.container_states()
            time.sleep(0.5)


def test_point_9_4_a_rotation_whose_start_hangs_kills_it_before_rolling_back(host, aws):
    old = host.host_key_id()
    before = host.env_file.read_bytes()
    with host.fault("start-hangs"):
        run = host.start("rotate-keys", "--timeout", "8")
        run.wait_for("rolling back", timeout=120)
        # at the first rollback step the hung start script of the rotation is gone already
        assert start_scripts(host) == []
    result = run.finish()
    assert result.returncode == 4, result.stdout + result.stderr
    assert "rolled back" in one_error(result)
    assert host.env_file.read_bytes() == before and aws.keys() == {old: "Active"}


# ----------------------------------------------------------------------------- 9.5 gentle probing


def test_point_9_5_probes_poll_at_most_twice_a_second_during_a_restart(host):
    log = host.healthcheck_log()
    with host.fault("registry-unhealthy"):
        result = host.run("restart", "--timeout", "8")
    assert result.returncode == 4
    times = host.healthcheck_times(since=log)
    assert len(times) >= 5
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.45, gaps


# ----------------------------------------------------------------------------- 9.6 both create_admin versions


def unique(name):
    return f"{name}{int(time.time() * 1000) % 10_000_000}"


def create(host, username, email, password="Tr0ub4dor-and-3", *args, **kw):
    return host.run(
        "create-admin", "--username", username, "--email", email, "--password-stdin", *args, input=password + "\n", **kw
    )


@pytest.mark.parametrize("version", ["2018", "marketplace"])
def test_point_9_6_both_versions_success_and_refusals(host, version):
    name = unique("v")
    with host.fault("create-admin-version", version):
        created = create(host, name, f"{name}@example.com")
        assert created.returncode == 0, created.stdout + created.stderr
        assert f"Admin {name} created on {host.alias}" in created.stdout
        taken = create(host, name, f"other-{name}@example.com")
        assert taken.returncode == 4  # the marketplace program exits 0 here: the text tells
        assert "Username already taken." in one_error(taken)
        email = create(host, unique("w"), f"{name}@example.com")
        assert email.returncode == 4 and "Email already taken." in one_error(email)


def test_point_9_6_a_refusal_right_after_the_password_prompt_is_reported_at_once(host, tmp_path):
    refuser = host.registry_dir / "refuses.sh"
    refuser.write_text(
        "#!/bin/sh\nprintf 'Username: '; read u; printf 'Email: '; read e\n"
        "stty -echo; printf 'Password: '; read p; stty echo; echo\n"
        "echo 'Error: Password must be at least 12 characters long.'\nexit 0\n"
    )
    refuser.chmod(0o755)
    import shutil

    shutil.chown(refuser, host.login_user, host.login_user)
    config = host.write_config(tmp_path / "c.yaml", create_admin_script="./refuses.sh")
    try:
        started = time.monotonic()
        result = create(host, unique("r"), "r@example.com", "good-password", "--timeout", "60", config=config)
        assert time.monotonic() - started < 20
    finally:
        refuser.unlink()
    assert result.returncode == 4
    assert "at least 12 characters" in one_error(result)


# ----------------------------------------------------------------------------- 9.7 missing host tools


@pytest.mark.parametrize(
    "tool,task,words",
    [
        ("curl", ("health",), "curl is not installed"),
        ("flock", ("restart",), "flock is not installed"),
        ("docker", ("health",), "docker is not installed"),
        ("docker", ("restart",), "docker is not installed"),
        ("sudo", ("health",), "sudo"),
    ],
)
def test_point_9_7_a_missing_host_tool_is_one_line_naming_it(host, tool, task, words):
    before = host.container_states()
    with host.reshaped(hidden_tools=(tool,)):
        result = host.run(*task)
    assert result.returncode == (3 if task[0] == "health" else result.returncode) and result.returncode != 0
    assert words in one_error(result), result.stdout + result.stderr
    assert host.container_states() == before


def test_health_is_one_remote_command_even_through_sudo(host):
    logins = host.accepted_logins()
    commands = host.sshd_commands()
    assert host.run("health").returncode == 0
    wait_until("sshd logged the login", lambda: host.accepted_logins() > logins, 5)
    assert host.sshd_commands() - commands == 1


def test_point_9_4_a_start_script_whose_connection_is_cut_is_stopped_on_the_host(host):
    """The host lock's holder stops what a vanished run left running, before it lets the lock go."""
    registry = host.containers["registry"]
    with host.fault("migration-seconds", "20"):
        run = host.start("restart")
        run.wait_for("still running", timeout=60)
        assert start_scripts(host)
        host.cut_ssh_connections()
        result = run.finish()
        assert result.returncode == 5 and "run restart again" in one_error(result)
        wait_until("the start script is stopped", lambda: not start_scripts(host), 10)
        deadline = time.monotonic() + 25  # the migration would have ended by now: nothing more is created
        while time.monotonic() < deadline:
            assert registry not in host.container_states()
            time.sleep(1)
