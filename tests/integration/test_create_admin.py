"""`fab create-admin` against the sandbox's create_admin stand-in (a real PTY, real prompts)."""

import shutil
import time

import pytest

from tests.checks import ProcessWatcher
from tests.terminal import on_terminal
from tests.tool import ROOT, executable, one_error

pytestmark = pytest.mark.sandbox

PASSWORD = "Tr0ub4dor-and-3"


@pytest.fixture
def users(host):
    """The stand-in's user storage (the sandbox's stand-in for the RDS database)."""
    yield host.users_file


def stored(users):
    return [line.split()[:2] for line in users.read_text().splitlines()] if users.exists() else []


def unique(name):
    return f"{name}{int(time.time() * 1000) % 10_000_000}"


def create(host, username, email, password=PASSWORD, *args, **kw):
    return host.run(
        "create-admin", "--username", username, "--email", email, "--password-stdin", *args, input=password + "\n", **kw
    )


def test_creates_an_admin_then_refuses_the_same_username_and_email(host, users):
    name = unique("admin")
    result = create(host, name, f"{name}@example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Admin {name} created on {host.alias}" in result.stdout
    assert [name, f"{name}@example.com"] in stored(users)
    again = create(host, name, f"other-{name}@example.com")
    assert again.returncode == 4
    assert "Username already taken." in one_error(again)
    same_email = create(host, unique("other"), f"{name}@example.com")
    assert same_email.returncode == 4
    assert "Email already taken." in one_error(same_email)
    ends = [r for r in host.audit_records() if r["task"] == "create-admin" and r["event"] == "end"]
    record = ends[-3]
    assert record["username"] == name and record["outcome"] == "created"
    assert ends[-2]["outcome"] == "failed" and "Username already taken" in ends[-2]["error"]


def test_password_from_the_environment(host, users):
    name = unique("envpw")
    result = host.run(
        "create-admin", "--username", name, "--email", f"{name}@example.com", env={"QUILT_ADMIN_PASSWORD": PASSWORD}
    )
    assert result.returncode == 0, result.stderr
    assert [name, f"{name}@example.com"] in stored(users)


def run_on_terminal(host, args, answers, timeout=60):
    """Runs fab on a real local pseudo-terminal, typing each answer after its prompt."""
    exe = executable("fab")
    cmd = [exe, "-S", str(host.ssh_config), "-f", str(host.fabric_config), "-H", host.alias, *args]
    return on_terminal(cmd, host.tool_env(), str(ROOT), answers, timeout)


def test_everything_asked_on_the_local_terminal(host, users):
    name = unique("tty")
    code, output = run_on_terminal(
        host,
        ["create-admin"],
        [
            ("Username:", name),
            ("Email:", f"{name}@example.com"),
            ("Password:", PASSWORD),
            ("Confirm password:", PASSWORD),
        ],
    )
    assert code == 0, output
    assert f"Admin {name} created" in output
    assert PASSWORD not in output  # typed with echo off
    assert [name, f"{name}@example.com"] in stored(users)


def test_mismatched_local_confirmation_is_refused_before_the_host_is_contacted(host, users):
    logins = host.accepted_logins()
    code, output = run_on_terminal(
        host,
        ["create-admin", "--username", "mallory", "--email", "m@example.com"],
        [("Password:", PASSWORD), ("Confirm password:", PASSWORD + "x")],
    )
    assert code == 64, output
    assert "Passwords don't match!" in output
    assert host.accepted_logins() == logins


@pytest.mark.faults
def test_unreachable_database_gives_a_clear_error_and_no_hang(host, users):
    before = stored(users)
    started = time.monotonic()
    with host.fault("db-down"):
        result = create(host, unique("dbdown"), "dbdown@example.com", PASSWORD, "--timeout", "30")
    assert time.monotonic() - started < 30
    assert result.returncode == 4
    line = one_error(result)
    assert "the program ended (exit code 1) before asking 'Password:'" in line
    # The program's last lines name the cause; `docker exec -t` may drop what a program
    # prints just before it exits (seen under load), so they are not always there.
    assert "could not connect to server" in line or line.endswith("Email:"), line
    assert "@@quilt-" not in line
    assert stored(users) == before


def test_prompt_that_never_appears_times_out(host, tmp_path):
    hang = host.registry_dir / "hang.sh"
    hang.write_text("#!/bin/sh\necho 'starting...'\nsleep 30\n")
    hang.chmod(0o755)
    shutil.chown(hang, host.login_user, host.login_user)
    config = host.write_config(tmp_path / "c.yaml", create_admin_script="./hang.sh")
    try:
        started = time.monotonic()
        result = create(host, "valid_name", "v@example.com", PASSWORD, "--timeout", "3", config=config)
        assert time.monotonic() - started < 20
        assert result.returncode == 4
        line = one_error(result)
        assert "no 'Username:' prompt within 3s" in line and "starting..." in line
    finally:
        hang.unlink()


@pytest.mark.leaks
def test_password_never_leaks(host, users):
    name = unique("leak")
    password = "Leak-Canary-" + name
    audit_before = host.audit_log.read_text() if host.audit_log.exists() else ""
    with ProcessWatcher() as watcher:
        result = create(host, name, f"{name}@example.com", password=password)
        failed = create(host, name, f"{name}@example.com", password=password)  # already taken: error path
    assert result.returncode == 0 and failed.returncode == 4
    everything = result.stdout + result.stderr + failed.stdout + failed.stderr
    assert password not in everything
    assert password not in host.audit_log.read_text()[len(audit_before) :]
    assert password not in users.read_text()
    for blob in watcher.seen:
        assert password.encode() not in blob, "the password was on a command line or in an environment"
    history = host.home / ".bash_history"
    assert not history.exists() or password not in history.read_text()


def test_dry_run_changes_nothing(host, users):
    before = stored(users)
    result = create(host, "dry_run_user", "dry@example.com", PASSWORD, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run" in result.stdout
    assert stored(users) == before


def test_env_file_lines_bash_cannot_run_do_not_reach_the_output(host, tmp_path):
    """Sourcing env/registry runs each line in bash; one it cannot run must not echo a value,
    even in the output shown when the program fails."""
    failing = host.registry_dir / "fails.sh"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)
    shutil.chown(failing, host.login_user, host.login_user)
    config = host.write_config(tmp_path / "c.yaml", create_admin_script="./fails.sh")
    original = host.env_file.read_bytes()
    host.env_file.write_bytes(b"SMTP_PASSWORD=with space-canary-48151623\n" + original)
    try:
        result = create(host, unique("envleak"), "envleak@example.com", config=config)
    finally:
        host.env_file.write_bytes(original)
        failing.unlink()
    assert result.returncode == 4
    assert "the program ended (exit code 3)" in result.stderr
    assert "canary-48151623" not in result.stdout + result.stderr
