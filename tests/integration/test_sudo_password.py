"""Issue 20.3: a host whose sudo asks for the login user's password.

The worker's host is reshaped in place (``sudo_password``: the login user has a password,
its sudoers rule has no NOPASSWD; `registry_sandbox.Host.sudo_password`). quilt-ops takes
the password where Fabric users put it (``sudo.password``, ``FABRIC_SUDO_PASSWORD``,
``--prompt-for-sudo-password``) and gives it to the host only on a keeper's stdin: never on a
command line, in an environment or in any output (checked on every process of this machine,
which runs the sandbox host's sshd and everything below it, while the tasks run).
"""

import json
import time
from pathlib import Path

import pytest

from quilt_ops import sudo_password
from tests.checks import ProcessWatcher
from tests.terminal import on_terminal
from tests.tool import ROOT, executable, one_error, wait_until

pytestmark = pytest.mark.sandbox

WRONG = "not-the-password 'x' $y"
ADMIN_PASSWORD = "Canary-Admin-Password-4417"


def with_password(host, path: Path, password: str) -> Path:
    """The host's fabric config with sudo.password set (JSON is YAML)."""
    import yaml

    data = yaml.safe_load(Path(host.fabric_config).read_text())
    data["sudo"] = {"password": password}
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def keeper_folders(host) -> list[Path]:
    """The keepers' folders of the login user (in its temp folder: /tmp)."""
    return [p for p in Path("/tmp").glob("quilt-ops-sudo.*") if p.owner() == host.login_user]


@pytest.fixture
def asking(host):
    """The worker's host, its sudo asking for the login user's password."""
    with host.reshaped(sudo_password=True):
        assert host.sudo_password
        asked = host.ssh("sudo -n true 2>&1; echo rc=$?").stdout
        assert "password is required" in asked and "rc=1" in asked
        yield host
    assert "rc=0" in host.ssh("sudo -n true; echo rc=$?").stdout  # the shape back: passwordless again


def test_health_restart_rotate_keys_and_create_admin_with_sudo_password(asking, aws, tmp_path):
    host = asking
    config = with_password(host, tmp_path / "fabric.yaml", host.sudo_password)
    secret = host.sudo_password
    logs = [*(host.dir / "ssh").glob("sshd*.log"), host.audit_log]
    sizes = {log: log.stat().st_size if log.exists() else 0 for log in logs}
    sudo_log_before = len(host.sudo_log())
    outputs = []
    with ProcessWatcher() as watcher:
        name = f"sudo{int(time.time() * 1000) % 10_000_000}"
        admin = ("create-admin", "--username", name, "--email", f"{name}@example.com", "--password-stdin")
        for args in (("health", "--json"), ("restart",), ("rotate-keys",), admin, ("-e", "health")):
            result = host.run(*args, config=config, input=ADMIN_PASSWORD + "\n")
            outputs.append(result.stdout + result.stderr)
            assert result.returncode == 0, result.stdout + result.stderr
    assert secret not in "\n".join(outputs) and ADMIN_PASSWORD not in "\n".join(outputs)
    assert f"Admin {name} created" in outputs[3]  # create_admin.sh's own sudo, on its terminal, did not ask
    assert "sudo_keeper.sh" in outputs[4]  # -e shows the keeper too (the secret checked above)
    leaked = [blob[:200] for blob in watcher.seen if secret.encode() in blob]
    assert leaked == []  # no command line, no environment of any process (sshd, sudo, the scripts)
    for log in logs:
        assert secret.encode() not in log.read_bytes()[sizes[log] :], log
    sudo_log = host.sudo_log()[sudo_log_before:]
    assert "COMMAND=" in sudo_log and "docker" in sudo_log  # sudo ran docker for them, having asked
    assert "incorrect password" not in sudo_log and secret not in sudo_log
    assert host.healthy()
    wait_until("each run's keeper folder removed", lambda: keeper_folders(host) == [], 10)


def test_the_env_variable_works_too(asking):
    result = asking.run("health", env={"FABRIC_SUDO_PASSWORD": asking.sudo_password})
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "task, status",
    # rotate-keys' pre-flight health refuses a host it cannot inspect (FAILED, nothing changed), as
    # for any host whose Docker is out of reach
    [(("health",), 3), (("restart",), 3), (("rotate-keys",), 4)],
)
def test_without_a_password_it_fails_cleanly_as_before(asking, aws, task, status):
    host = asking
    before, states, keys = host.env_file.read_bytes(), host.container_states(), aws.keys()
    result = host.run(*task, timeout=60)
    line = one_error(result)
    assert result.returncode == status and "sudo.password" in line, result.stderr
    assert "Traceback" not in result.stderr
    assert host.env_file.read_bytes() == before and host.container_states() == states and aws.keys() == keys


@pytest.mark.parametrize("task", [("health",), ("restart",), ("rotate-keys",)])
def test_a_wrong_password_is_one_error_line_tried_once(asking, aws, tmp_path, task):
    host = asking
    before = host.env_file.read_bytes()
    states = host.container_states()
    keys = aws.keys()
    config = with_password(host, tmp_path / "fabric.yaml", WRONG)
    sudo_log_before = len(host.sudo_log())
    result = host.run(*task, config=config, timeout=60)
    line = one_error(result)
    assert "did not accept the password" in line and result.returncode == 3, result.stderr
    sudo_log = host.sudo_log()[sudo_log_before:]
    assert "1 incorrect password attempt" in sudo_log and sudo_log.count("incorrect password") == 1  # tried once
    assert WRONG not in sudo_log
    assert WRONG not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert host.env_file.read_bytes() == before and host.container_states() == states and aws.keys() == keys
    wait_until("the keeper folder removed", lambda: keeper_folders(host) == [], 10)


def run_on_terminal(host, args, answers, timeout=120):
    exe = executable("fab")
    cmd = [exe, "-S", str(host.ssh_config), "-f", str(host.fabric_config), "-H", host.alias, *args]
    return on_terminal(cmd, host.tool_env(), str(ROOT), answers, timeout)


def test_prompt_for_sudo_password_on_a_terminal(asking):
    host = asking
    prompt = "Desired 'sudo.password' config value:"
    code, output = run_on_terminal(host, ["--prompt-for-sudo-password", "restart"], [(prompt, host.sudo_password)])
    assert code == 0, output
    assert host.sudo_password not in output  # typed with echo off, never shown
    code, output = run_on_terminal(host, ["--prompt-for-sudo-password", "health"], [(prompt, WRONG)])
    assert code == 3, output
    assert "did not accept the password" in output and WRONG not in output


def test_a_killed_runs_folder_is_removed_by_the_next(asking, tmp_path):
    """The keeper's folder goes with its connection; one left behind (its keeper gone) by the next."""
    host = asking
    stale = Path("/tmp") / f"quilt-ops-sudo.{sudo_password.new_name()}"
    host.ssh(f"mkdir -m 700 {stale} && echo x > {stale}/password && touch -d '-5 minutes' {stale}")
    assert stale.exists()
    config = with_password(host, tmp_path / "fabric.yaml", host.sudo_password)
    result = host.run("health", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not stale.exists()
    wait_until("the keeper folder removed", lambda: keeper_folders(host) == [], 10)


def test_a_passwordless_host_with_a_password_given_works(host, tmp_path):
    config = with_password(host, tmp_path / "fabric.yaml", WRONG)
    result = host.run("health", config=config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_exporter_keeps_one_keeper_per_connection(asking, tmp_path):
    """The exporter's kept connection keeps its keeper (and folder) while it is open; both go with it."""
    from tests.integration.test_exporter import exporter

    host = asking
    config = with_password(host, tmp_path / "fabric.yaml", host.sudo_password)
    with exporter(host, [host.alias], "--min-interval", "0", config=config) as running:
        for _ in range(2):
            samples = running.scrape()
            assert samples[("quilt_up", host.alias)] == 1
            assert samples[("quilt_health_status", host.alias)] == 0  # docker through sudo, with the password
        assert len(keeper_folders(host)) == 1
    assert host.sudo_password not in running.stderr
    wait_until("the keeper's folder removed", lambda: keeper_folders(host) == [], 10)


def test_a_killed_run_leaves_no_password_on_the_host(asking, tmp_path):
    """quilt-ops killed (SIGKILL) while its connection is open: sshd ends the session, the
    keeper's stdin ends, and its folder is removed with the password."""
    from tests.integration.test_exporter import Exporter

    host = asking
    config = with_password(host, tmp_path / "fabric.yaml", host.sudo_password)
    run = host.start("exporter", "--listen", "127.0.0.1:0", "--min-interval", "0", config=config)
    try:
        running = Exporter(run)
        assert running.scrape()[("quilt_up", host.alias)] == 1
        assert len(keeper_folders(host)) == 1
    finally:
        run.kill()
    wait_until("the killed run's keeper folder removed", lambda: keeper_folders(host) == [], 15)
