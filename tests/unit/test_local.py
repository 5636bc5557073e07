"""Issue 13 part 1, in process: `--local`'s target (Invoke's local runner, a session per command,
the same wrapper, kill and lock as over SSH), the Docker access it chooses, and its command line.

Everything here runs on this machine without a sandbox host: commands are small shell scripts
in temp folders; the Docker SDK is given a fake client, or a socket with no engine behind it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import docker.errors
import invoke
import pytest

from quilt_ops import cli, containers, docker_access, health, hostfiles, hosts, remote, restart, shell
from quilt_ops.config import Settings
from quilt_ops.errors import ConfigError
from quilt_ops.local import WITHHELD, LocalTarget, again
from quilt_ops.lock import HostLock, commands_name, lock_name, owner_name
from quilt_ops.status import ExitStatus
from tests.tool import ROOT

USAGE, UNKNOWN = int(ExitStatus.USAGE), int(ExitStatus.UNKNOWN)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """$HOME, the login directory of a local run."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("FABRIC_QUILT_", "AWS_", "INVOKE_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def one_error(captured) -> str:
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


# ----------------------------------------------------------------------------- the target


def test_a_local_command_runs_in_the_login_directory_with_stdin_stdout_stderr_and_its_status(home):
    target = LocalTarget()
    assert target.name == socket.gethostname()
    target.open()
    result = target.run("pwd; cat; echo oops >&2; exit 3", timeout=10, stdin=b"in\x00put")
    assert result.stdout_bytes == f"{home}\n".encode() + b"in\x00put"
    assert result.stderr == "oops\n"  # the wrapper's process-group line is taken out
    assert result.exited == 3


def test_a_local_command_is_in_a_session_of_its_own(home):
    result = LocalTarget().run("ps -o sid= -p $$; ps -o pgid= -p $$", timeout=10)
    sid, pgid = result.stdout.split()
    # The wrapper leads a session and a process group of its own: killing the group kills
    # everything the command started, and nothing of quilt-ops.
    assert sid == pgid and int(pgid) not in (os.getpgid(0), os.getsid(0))


def test_secrets_of_quilt_ops_own_environment_never_reach_host_commands(home, monkeypatch):
    for name in WITHHELD:
        monkeypatch.setenv(name, f"secret-{name}")
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/some.sock")
    result = LocalTarget().run("env", timeout=10)
    assert "secret-" not in result.stdout
    assert "DOCKER_HOST=unix:///tmp/some.sock" in result.stdout  # the host's engine is kept


def test_a_local_command_past_its_time_is_killed_with_everything_it_started(home, tmp_path):
    pidfile = tmp_path / "child"
    started = time.monotonic()
    with pytest.raises(remote.RemoteTimeout, match="did not finish within 1s"):
        LocalTarget().run(f"sleep 60 & echo $! > {pidfile}; wait", timeout=1, what="a test command")
    assert time.monotonic() - started < 8
    child = int(pidfile.read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_a_local_terminal_for_create_admin(home):
    process = LocalTarget().start(
        '[ -t 0 ] && echo tty; printf "Name: "; read -r x; echo "got:$x"', timeout=10, pty=True
    )
    seen = b""
    deadline = time.monotonic() + 10
    while b"Name: " not in seen and time.monotonic() < deadline:
        seen += process.read(0.2)[0]
    process.send(b"alice\r")
    while not process.finished() and time.monotonic() < deadline:
        seen += process.read(0.2)[0]
    code = process.exit_code()
    process.close()
    assert b"tty" in seen and b"got:alice" in seen and code == 0


def test_a_missing_login_directory_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "gone"))
    with pytest.raises(Exception, match="cannot enter the login directory"):
        LocalTarget().open()


def test_the_lock_works_locally_and_root_leaves_files_owned_like_the_env_file(home):
    env = home / "env"
    env.mkdir()
    (env / "registry").write_text("AWS_ACCESS_KEY_ID=AKIAEXAMPLEEXAMPLE12\n")
    os.chmod(env / "registry", 0o600)
    if os.getuid() == 0:
        os.chown(env / "registry", 4242, 4343)
    settings = Settings()
    target = LocalTarget()
    with HostLock(target, settings, "restart") as held:
        assert held.process is not None
        second = HostLock(LocalTarget(), settings, "restart")
        with pytest.raises(Exception, match="is locked: restart by"):
            second.acquire()
        made = [home / name for name in (lock_name(settings), owner_name(settings), commands_name(settings))]
        owners = {(p.stat().st_uid, p.stat().st_gid) for p in made}
        if os.getuid() == 0:
            assert owners == {(4242, 4343)}  # a later run as the env file's owner can take the lock
    assert not (home / owner_name(settings)).exists()  # released: the note is gone


def test_root_backs_up_and_journals_as_the_env_file_s_owner(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root")
    env = tmp_path / "registry"
    env.write_bytes(b"SECRET=1\n")
    os.chmod(env, 0o600)
    os.chown(env, 4242, 4343)
    script = "\n".join(
        [
            'qfile() { "$@"; }',
            hostfiles.backup_command(str(env), str(tmp_path / "backup")),
            hostfiles.write_text_command(str(tmp_path / "journal"), '{"step": 1}', str(env)),
            hostfiles.write_text_command(str(tmp_path / "plain"), "x"),
        ]
    )
    subprocess.run(["sh", "-c", script], check=True, cwd=tmp_path)
    for name in ("backup", "journal"):
        st = (tmp_path / name).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4242, 4343, 0o600), name
    assert (tmp_path / "backup").read_bytes() == b"SECRET=1\n"
    assert (tmp_path / "plain").stat().st_uid == 0


def test_again_names_the_command_that_finishes_the_job(home):
    assert again(LocalTarget(), "rotate-keys") == "quilt-ops --local rotate-keys"
    assert again(SimpleNamespace(name="h1"), "rotate-keys") == "fab -H h1 rotate-keys"


# ----------------------------------------------------------------------------- docker access


def local_access(tmp_path, docker: str = "auto", docker_host: str | None = None):
    env = {} if docker_host is None else {"DOCKER_HOST": docker_host}
    return docker_access.for_local(Settings.load({"quilt": {"docker": docker}}), env)


def test_auto_with_a_socket_this_process_can_use_is_the_sdk(tmp_path):
    sock = tmp_path / "docker.sock"
    sock.touch()
    access = local_access(tmp_path, docker_host=f"unix://{sock}")
    assert isinstance(access, docker_access.SdkDocker) and access.base_url is None  # from DOCKER_HOST


def test_auto_with_no_socket_yet_is_the_sdk_which_says_the_engine_is_down(tmp_path):
    access = local_access(tmp_path, docker_host=f"unix://{tmp_path}/docker.sock")
    assert isinstance(access, docker_access.SdkDocker)


def test_auto_without_docker_host_is_the_default_socket(tmp_path, monkeypatch):
    monkeypatch.setattr(docker_access, "reachable", lambda url: url == docker_access.DEFAULT_HOST)
    access = local_access(tmp_path)
    assert isinstance(access, docker_access.SdkDocker) and access.base_url == docker_access.DEFAULT_HOST


@pytest.mark.parametrize("why", ["permission", "no folder"])
def test_auto_with_a_socket_out_of_reach_is_the_cli_through_sudo(tmp_path, monkeypatch, why):
    sock = tmp_path / "docker.sock"
    if why == "permission":
        sock.touch()
        monkeypatch.setattr(docker_access.os, "access", lambda path, mode: False)
        url = f"unix://{sock}"
    else:
        url = f"unix://{tmp_path}/no-such-folder/docker.sock"
    access = local_access(tmp_path, docker_host=url)
    assert isinstance(access, docker_access.ScriptDocker)
    s = shell.Script(Settings())
    access.prepare(s)
    assert "say docker sudo" in s.text()  # the script's own auto: docker directly, else sudo


def test_a_socket_setting_is_the_sdk_on_that_socket_and_a_prefix_is_that_cli(tmp_path):
    sdk = local_access(tmp_path, docker="unix:///srv/docker.sock", docker_host="unix:///elsewhere.sock")
    assert isinstance(sdk, docker_access.SdkDocker) and sdk.base_url == "unix:///srv/docker.sock"
    for prefix in ("docker", "sudo -n docker", "docker -H unix:///x.sock"):
        assert isinstance(local_access(tmp_path, docker=prefix), docker_access.ScriptDocker)


def test_a_socket_setting_over_ssh_is_the_cli_on_that_socket():
    text = shell.Script(Settings.load({"quilt": {"docker": "unix:///srv/docker.sock"}})).docker().text()
    assert 'qdocker() { docker -H unix:///srv/docker.sock "$@"; }' in text


def test_with_the_sdk_no_docker_command_is_in_any_script():
    sdk = docker_access.SdkDocker("unix:///x.sock")
    texts = [
        health.script(Settings(), key_in_effect=True, docker=sdk).text(),
        restart.precheck_script(Settings(), docker=sdk).text(),
    ]
    for text in texts:
        assert "qdocker" not in text and "docker " not in text
    assert texts[1].rstrip().endswith("say ready")  # the SDK removes the containers, then:
    assert "./start.sh" in restart.start_script(Settings()).text()
    cli_text = restart.script(Settings()).text()  # over SSH: the removal and the start together
    assert "qdocker rm -f" in cli_text and cli_text.index("say removing") < cli_text.index("say script")


SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def attrs(name, running=True, env=()):
    return {
        "Id": "0123",
        "Name": f"/{name}",
        "State": {"Status": "running" if running else "exited", "Running": running, "ExitCode": 0 if running else 1},
        "RestartCount": 2,
        "Created": "2026-11-28T10:00:00Z",
        "Image": "sha256:abc",
        "Config": {"Image": "quiltdata/registry", "Env": list(env)},
        "HostConfig": {"Binds": []},
    }


class FakeContainers:
    def __init__(self, found):
        self.found = found

    def get(self, name):
        if name not in self.found:
            raise docker.errors.NotFound(f"No such container: {name}")
        return SimpleNamespace(attrs=self.found[name])


def test_the_sdk_gives_docker_inspect_s_document_without_the_environment():
    sdk = docker_access.SdkDocker("unix:///x.sock")
    env = [
        f"AWS_SECRET_ACCESS_KEY={SECRET}",
        "AWS_ACCESS_KEY_ID=AKIAOLDOLDOLDOLDOLD1",
        "AWS_ACCESS_KEY_ID=AKIANEWNEWNEWNEWNEW2",
    ]
    sdk._client = SimpleNamespace(
        containers=FakeContainers({"registry": attrs("registry", env=env), "catalog": attrs("catalog", running=False)})
    )
    answer = sdk.answer(shell.Output(), ["registry", "catalog", "registry-nginx"], key_of="registry")
    assert answer.how == "sdk" and answer.containers.problem is None
    assert set(answer.containers.documents) == {"registry", "catalog"}  # the missing one has no document
    assert SECRET not in json.dumps(answer.containers.documents) and "Env" not in json.dumps(
        answer.containers.documents
    )
    assert answer.key_in_effect == "AKIANEWNEWNEWNEWNEW2"  # Docker keeps the last entry
    checks = containers.verdicts(answer.containers, Settings().containers)
    assert [c.status for c in checks] == [ExitStatus.OK, ExitStatus.CRITICAL, ExitStatus.CRITICAL]
    assert checks[2].summary.startswith("missing")


def test_the_sdk_document_has_the_fields_of_the_cli_template():
    template = json.loads(re.sub(r"\{\{json [^}]*\}\}", "null", containers.INSPECT_TEMPLATE))
    document = docker_access.document(attrs("registry", env=[f"X={SECRET}"]))

    def shape(value):
        return {k: shape(v) for k, v in value.items()} if isinstance(value, dict) and value else None

    assert shape(template) == shape({**document, "State": None})


def test_the_sdk_with_no_engine_behind_the_socket_says_so(tmp_path):
    sdk = docker_access.SdkDocker(f"unix://{tmp_path}/docker.sock")
    answer = sdk.answer(shell.Output(), ["registry"])
    assert answer.containers.problem == "the Docker engine is not running"
    sdk.remove(["registry"])  # like `docker rm -f ... || true`: the start script says what is wrong
    sdk.close()


# ----------------------------------------------------------------------------- the command line


@pytest.fixture
def config(tmp_path):
    def write(**quilt) -> str:
        path = tmp_path / "fabric.yaml"
        path.write_text(json.dumps({"quilt": {"audit_log": str(tmp_path / "audit.log"), **quilt}}))
        return str(path)

    return write


@pytest.mark.parametrize(
    "task, status", [(["health"], UNKNOWN), (["restart", "--dry-run"], USAGE), (["rotate-keys", "--dry-run"], USAGE)]
)
def test_local_with_h_is_a_usage_error(capsys, clean_environment, config, task, status):
    # health, a Nagios plugin, says UNKNOWN for a bad option or config
    assert cli.run(["--local", "-H", "somehost", "-f", config(), *task]) == status
    line = one_error(capsys.readouterr())
    assert "--local" in line and "-H" in line


def test_quilt_local_in_the_config_with_h_is_a_usage_error(capsys, clean_environment, config):
    assert cli.run(["-H", "somehost", "-f", config(local=True), "health"]) == UNKNOWN
    assert "-H" in one_error(capsys.readouterr())


def test_a_false_looking_flag_variable_is_refused(capsys, clean_environment, config, monkeypatch):
    monkeypatch.setenv("FABRIC_QUILT_LOCAL", "false")  # invoke would read it as true
    assert cli.run(["-f", config(), "health"]) == UNKNOWN
    assert "FABRIC_QUILT_LOCAL=false" in one_error(capsys.readouterr())


def test_local_health_runs_here_named_after_the_machine(capsys, clean_environment, config, home, tmp_path):
    missing = str(tmp_path / "no-such-registry")
    assert cli.run(["--local", "-f", config(registry_dir=missing), "health"]) == UNKNOWN
    line = one_error(capsys.readouterr())
    assert line.startswith(f"Error: {socket.gethostname()}: ") and "cannot enter quilt.registry_dir" in line


def test_fab_local_in_a_checkout(clean_environment, config, home, tmp_path):
    missing = str(tmp_path / "no-such-registry")
    result = subprocess.run(
        ["fab", "--local", "-f", config(registry_dir=missing), "health"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == UNKNOWN, result.stdout + result.stderr
    assert "cannot enter quilt.registry_dir" in result.stderr
    again = subprocess.run(["fab", "--local", "-H", "h", "health"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == UNKNOWN and again.stderr.startswith("Error: --local")


def test_ssh_only_callers_refuse_local():
    with pytest.raises(ConfigError, match="--local"):
        hosts.targets(None, Settings(local=True))
    assert [t.name for t in hosts.task_targets(None, Settings(local=True))] == [socket.gethostname()]


def test_readme_says_how_to_run_on_the_host_and_read_ssm_results():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## On the host") :]
    section = section[: section.index("\n## ", 1)]
    for words in (
        "--local",
        "examples/systemd/quilt-ops-health.service",
        "examples/ssm/quilt-ops-health.json",
        "aws ssm send-command",
        "--targets Key=tag:quilt-registry,Values=true",
        "aws ssm list-command-invocations",
        "--details",
        "instance profile",
    ):
        assert words in section, words


def test_local_refuses_a_sudo_password():
    """sudo.password is for hosts over SSH (issue 20.3): --local says so, before anything runs."""
    context = invoke.Context(invoke.Config(overrides={"sudo": {"password": "pw-local-secret"}}))
    with pytest.raises(ConfigError, match="--local: sudo.password") as e:
        hosts.task_targets(context, Settings(local=True))
    assert "pw-local-secret" not in str(e.value)
