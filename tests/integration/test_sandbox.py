"""The sandbox itself (scripts/registry_sandbox): its hosts must look and behave like the real registry host.

These tests drive the sandbox directly (never quilt-ops): the documented shape
(ec2-user without Docker socket access, passwordless sudo, `sudo docker` in
start.sh), idempotent up, reset, two isolated hosts at once, the host's own engine
against a foreign one, the hanging start, both create_admin versions, and the
other docker-access and env-file-owner shapes.

They use this worker's own host, as tests/conftest.py does: the main host without
pytest-xdist or on worker gw0 (where the real host's names are checked too), the
worker's host (same shape, other names) on gwN; so they never touch another
worker's host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from registry_sandbox import MAIN, NAMES, Host, HostShape, Sandbox, SandboxError, worker_shape  # noqa: E402
from registry_sandbox.home import sudoers_file  # noqa: E402

from tests.terminal import on_terminal as run_on_terminal  # noqa: E402

# One worker runs them all, in order (they share module fixtures: the NAMES host, the foreign engine).
pytestmark = [pytest.mark.sandbox, pytest.mark.xdist_group("sandbox-self")]

SANDBOX = ROOT / "scripts" / "sandbox"
REQUIRED = (
    "SQLALCHEMY_DATABASE_URI",
    "REGISTRY_URL",
    "CATALOG_URL",
    "PACKAGE_BUCKET_NAME",
    "SMTP_HOST",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "QUILT_SECRET_KEY",
    "QUILT_DEFAULT_SENDER",
    "ALLOW_INSECURE_CATALOG_ACCESS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def sb() -> Sandbox:
    if os.geteuid() != 0:
        if os.environ.get("QUILT_OPS_REQUIRE_SANDBOX") == "1":
            pytest.fail("sandbox required but unavailable: it needs root")
        pytest.skip("the sandbox needs root")
    return Sandbox()


def own_shape(config: pytest.Config) -> HostShape:
    """This worker's host shape: MAIN without xdist or on gw0, worker_shape(N) on gwN."""
    worker = getattr(config, "workerinput", {}).get("workerid", "master")
    number = (int(worker[2:]) if worker.startswith("gw") else 0) + int(
        os.environ.get("QUILT_OPS_SANDBOX_WORKER_BASE", "0")
    )
    return MAIN if number == 0 else worker_shape(number)


@pytest.fixture(scope="module")
def main_host(sb: Sandbox, request: pytest.FixtureRequest) -> Host:
    """This worker's own host (the main host unless xdist gave this worker another)."""
    return sb.up(own_shape(request.config))


@pytest.fixture
def host(main_host: Host) -> Iterator[Host]:
    """The main host, healthy before and after the test."""
    main_host.reset()
    yield main_host
    main_host.reset()


def ssh(host: Host, command: str, alias: str | None = None) -> subprocess.CompletedProcess:
    return host.ssh(command, alias=alias)


# ----------------------------------------------------------------------------- the documented shape


def test_host_comes_up_in_the_documented_shape(host: Host) -> None:
    registry, catalog, nginx = (host.containers[role] for role in ("registry", "catalog", "nginx"))
    if host.shape == MAIN:  # the real host's names
        assert (host.name, host.alias, host.login_user) == ("main", "sandbox", "ec2-user")
        assert host.registry_dir == host.home and host.env_file == host.home / "env" / "registry"
        assert (registry, catalog, nginx) == ("registry", "catalog", "registry-nginx")
    assert host.shape.docker_access == "sudo" and host.env_file == host.registry_dir / "env" / "registry"

    # ec2-user cannot reach the Docker socket, but sudo docker reaches the host's own engine.
    session = ssh(
        host,
        "id -nG; echo DOCKER_HOST=$DOCKER_HOST; docker ps 2>&1; echo docker=$?; "
        "sudo -n docker ps --format '{{.Names}}'; echo sudo=$?",
    )
    assert session.returncode == 0, session.stderr
    out = session.stdout
    assert "docker" not in out.splitlines()[0].split()
    assert f"DOCKER_HOST={host.docker_host}" in out
    assert "permission denied" in out and "docker=1" in out
    assert "sudo=0" in out
    assert {registry, catalog, nginx} <= set(out.split())

    start = (host.registry_dir / "start.sh").read_text()
    assert re.search(rf"(?m)^sudo docker run -d --name {catalog} ", start)
    assert re.search(r"(?m)^sudo docker run --rm .*\\$", start) and "flask db upgrade" in start
    assert re.search(rf"(?m)^sudo docker run -d --name {nginx} --network container:{registry} ", start)
    assert not re.search(r"(?m)^docker ", start)
    create_admin = (host.registry_dir / "create_admin.sh").read_text().splitlines()
    assert create_admin[-1] == f'exec sudo docker exec -it {registry} create_admin "$@"'
    assert f"listen 127.0.0.1:{host.ports['registry']};" in (host.registry_dir / "nginx-quilt.conf").read_text()

    env_dir, env_file = host.env_dir.stat(), host.env_file.stat()
    uid = Path(host.home).stat().st_uid
    assert (env_dir.st_uid, env_dir.st_mode & 0o777) == (uid, 0o700)
    assert (env_file.st_uid, env_file.st_mode & 0o777) == (uid, 0o600)
    names = {
        line.split("=", 1)[0]
        for line in host.env_file.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert set(REQUIRED) <= names
    assert (host.env_dir / "catalog").exists()

    assert host.healthy()
    assert re.fullmatch(rf"{host.stack}-RegistryUser-[A-Za-z0-9]{{13}}", host.iam_user)
    assert host.stack == host.shape.stack
    assert host.keys() == {host.host_key_id(): "Active"}
    assert host.registry_runs_with(host.host_key_id())

    import yaml

    config = yaml.safe_load(host.fabric_config.read_text())["quilt"]
    assert config.get("registry_dir", "") == host.shape.registry_dir
    assert config["containers"] == host.containers
    assert config["probes"] == {
        "registry": f"http://localhost:{host.ports['registry']}/healthcheck",
        "catalog": f"http://localhost:{host.ports['catalog']}/",
    }
    assert config["known_hosts"] == str(host.known_hosts)
    # Stack discovery: the stack's EC2InstanceIp (127.0.0.1) reaches this host with this ssh_config.
    assert ssh(host, "echo here", alias="127.0.0.1").stdout.strip() == "here"
    import boto3

    stack = boto3.client("cloudformation", **host.aws_kwargs()).describe_stacks(StackName=host.stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["EC2InstanceIp"] == "127.0.0.1" and outputs["PackageBucketName"] == host.bucket


def test_up_is_idempotent_and_quick(sb: Sandbox, host: Host) -> None:
    before = (
        host.engine.pid,
        [s.pid for s in host.state.sshd],
        host.docker("ps", "-q").stdout.split(),
        host.env_file.read_text(),
    )
    started = time.monotonic()
    again = sb.up(host.shape)
    took = time.monotonic() - started
    after = (
        again.engine.pid,
        [s.pid for s in again.state.sshd],
        again.docker("ps", "-q").stdout.split(),
        again.env_file.read_text(),
    )
    assert after == before
    assert took < 2, f"a second up took {took:.2f}s"


def test_reset_is_quick_when_nothing_is_wrong(host: Host) -> None:
    host.reset()
    started = time.monotonic()
    host.reset()
    took = time.monotonic() - started
    assert took < 0.5, f"reset took {took:.2f}s with nothing to do"


def test_reset_heals_removed_containers_and_a_deleted_key(host: Host) -> None:
    old_key = host.host_key_id()
    host.docker("rm", "-f", *host.containers.values())
    host.iam_client().delete_access_key(UserName=host.iam_user, AccessKeyId=old_key)
    (host.env_dir / ".registry.quilt-ops-backup").write_text("x")
    (host.env_dir / ".quilt-ops-tmp-123").write_text("x")
    host.set_fault("registry-unhealthy")
    host.aws_fault(error_500_for=60)
    host.env_file.chmod(0o644)

    host.reset()

    new_key = host.host_key_id()
    assert new_key != old_key
    assert host.keys() == {new_key: "Active"}
    assert host.registry_runs_with(new_key)
    assert host.healthy()
    assert host.leftovers() == [] and host.faults() == {}
    assert host.env_file.stat().st_mode & 0o777 == 0o600
    assert (host.dir / "aws" / "faults.json").read_text() == "{}"


def test_reset_kills_what_the_login_user_left_running(host: Host) -> None:
    proc = subprocess.Popen(["runuser", "-u", host.login_user, "--", "sleep", "300"])
    try:
        deadline = time.monotonic() + 5
        while not host.login_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert host.login_processes()
        host.reset()
        assert host.login_processes() == []
        assert proc.wait(5) != 0
    finally:
        proc.kill()
        proc.wait(10)


# ----------------------------------------------------------------------------- two hosts at once


@pytest.fixture(scope="module")
def names_host(sb: Sandbox, main_host: Host) -> Iterator[Host]:
    """The NAMES host, brought up by one process while another brings main up; removed after the module."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(SANDBOX), "up", *args],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for args in (["--host", NAMES.name], ["--host", main_host.name])
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    yield sb.host(NAMES.name)
    sb.down(NAMES.name)


def test_names_host_has_its_own_names_user_folder_and_ports(sb: Sandbox, main_host: Host, names_host: Host) -> None:
    host = names_host
    assert (host.alias, host.login_user) == (NAMES.name, NAMES.login_user)
    assert host.registry_dir == host.home / "deploy" / "quilt"
    assert host.env_file == host.home / "deploy" / "quilt" / "env" / "registry"
    assert host.containers == {"registry": "qr-app", "catalog": "qr-web", "nginx": "qr-proxy"}
    assert host.healthy() and main_host.healthy()
    assert not set(host.ports.values()) & set(main_host.ports.values())
    assert set(host.ssh_ports).isdisjoint(main_host.ssh_ports)
    assert host.docker_host != main_host.docker_host
    assert host.stack == NAMES.stack and host.iam_user.startswith(f"{NAMES.stack}-RegistryUser-")
    assert host.aws_endpoint != main_host.aws_endpoint

    # Each engine holds only its own host's containers.
    assert set(host.docker("ps", "--format", "{{.Names}}").stdout.split()) == {"qr-app", "qr-web", "qr-proxy"}
    assert set(main_host.docker("ps", "--format", "{{.Names}}").stdout.split()) == set(main_host.containers.values())
    session = ssh(host, "pwd; id -un; sudo -n docker ps --format '{{.Names}}'")
    assert session.returncode == 0, session.stderr
    assert session.stdout.split()[:2] == [str(host.home), NAMES.login_user]
    assert "qr-app" in session.stdout and main_host.containers["nginx"] not in session.stdout
    start = (host.registry_dir / "start.sh").read_text()
    assert "--name qr-app" in start and "--network container:qr-app" in start and "--name registry " not in start

    import yaml

    config = yaml.safe_load(host.fabric_config.read_text())["quilt"]
    assert config["registry_dir"] == "deploy/quilt"
    assert config["containers"] == {"registry": "qr-app", "catalog": "qr-web", "nginx": "qr-proxy"}

    # A fault on one host never touches the other.
    with host.fault("registry-unhealthy"):
        assert not host.probes_ok() and main_host.probes_ok()


def test_down_of_one_host_leaves_the_other(sb: Sandbox, main_host: Host, names_host: Host) -> None:
    sb.down(NAMES.name)
    assert NAMES.name not in sb.host_names()
    with pytest.raises(KeyError):
        __import__("pwd").getpwnam(NAMES.login_user)
    assert not sudoers_file(NAMES.login_user).exists()
    assert main_host.healthy()
    with pytest.raises(SandboxError):
        sb.host(NAMES.name)


# ----------------------------------------------------------------------------- the host's own engine


@pytest.fixture
def foreign_engine() -> Iterator[str]:
    """Another Docker Engine on another socket (what a caller's DOCKER_HOST may point at)."""
    folder = Path(tempfile.mkdtemp(prefix="qo-foreign-", dir="/tmp"))
    sock = folder / "d.sock"
    (folder / "daemon.json").write_text("{}")
    with open(folder / "dockerd.log", "wb") as logf:
        proc = subprocess.Popen(
            [
                "dockerd",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "-H",
                f"unix://{sock}",
                "--data-root",
                str(folder / "data"),
                "--exec-root",
                str(folder / "exec"),
                "--pidfile",
                str(folder / "d.pid"),
                "--config-file",
                str(folder / "daemon.json"),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    host = f"unix://{sock}"
    deadline = time.monotonic() + 60
    while subprocess.run(["docker", "-H", host, "version"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, (folder / "dockerd.log").read_text()[-2000:]
        time.sleep(0.2)
    yield host
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    subprocess.run(["sh", "-c", f"grep -o ' {folder}/[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"])
    shutil.rmtree(folder, ignore_errors=True)


def test_up_restarts_the_hosts_own_engine_whatever_docker_host_says(
    sb: Sandbox, host: Host, foreign_engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", foreign_engine)
    own = host.docker_host
    old_pid = host.engine.pid
    host.stop_engine(kill=True)

    healed = sb.up(host.shape)

    assert healed.docker_host == own
    assert healed.engine.pid != old_pid
    assert healed.healthy()
    assert set(healed.docker("ps", "--format", "{{.Names}}").stdout.split()) == set(healed.containers.values())
    foreign = subprocess.run(["docker", "-H", foreign_engine, "ps", "-aq"], capture_output=True, text=True)
    assert foreign.returncode == 0 and foreign.stdout.split() == []
    images = subprocess.run(["docker", "-H", foreign_engine, "images", "-q"], capture_output=True, text=True)
    assert images.stdout.split() == []
    sshd_config = (healed.dir / "ssh" / "sshd_config.0").read_text()
    assert f"SetEnv DOCKER_HOST={own}\n" in sshd_config
    session = ssh(healed, "echo $DOCKER_HOST; sudo -n docker ps --format '{{.Names}}'")
    assert session.stdout.split()[0] == own
    assert set(session.stdout.split()[1:]) == set(healed.containers.values())
    host.refresh()


def test_a_new_aws_forgets_the_bindings_of_the_old(sb: Sandbox, host: Host) -> None:
    """moto killed (a machine restart kills every process): up starts a new one, whose users
    have new names, so the host's recorded binding must go with the old world. A fresh clone's
    CI met exactly this: every rotation refused, "the host runs on another user's key"."""
    known_users = host.dir / "quilt_known_users"
    known_users.write_text(f"[127.0.0.1]:{host.ssh_port} {host.iam_user}\n")
    old_user = host.iam_user
    os.kill(host.aws.moto_pid or 0, 9)
    os.kill(host.aws.proxy_pid or 0, 9)

    healed = sb.up(host.shape)

    assert healed.iam_user != old_user
    assert old_user not in (known_users.read_text() if known_users.exists() else "")
    assert healed.healthy()
    host.refresh()


# ----------------------------------------------------------------------------- start.sh


def test_killed_hanging_start_creates_no_container_afterwards(host: Host) -> None:
    host.docker("rm", "-f", *host.containers.values())
    host.set_fault("start-hangs")
    started = time.monotonic()
    # timeout(1) runs start.sh in a process group of its own and signals the whole group.
    result = host.run_as_login_user(["timeout", "-s", "TERM", "4", "./start.sh"], timeout=60)
    assert result.returncode == 124, result.stderr
    assert time.monotonic() - started < 10
    at_kill = host.container_states()
    time.sleep(4)  # longer than a migration takes
    after = host.container_states()
    assert set(after) <= set(at_kill)
    assert set(after) == {host.containers["catalog"]}  # created before the migration; nothing after it
    assert not any(
        Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"/bin/bash\0./start.sh") for p in host.login_processes()
    )


def test_migration_time_comes_from_the_shape_or_the_fault(host: Host) -> None:
    host.docker("rm", "-f", *host.containers.values())
    host.set_fault("migration-seconds", "3")
    started = time.monotonic()
    result = host.run_as_login_user(["./start.sh"], timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 3


def test_start_fails_unless_the_last_key_line_names_the_key(host: Host) -> None:
    host.docker("rm", "-f", *host.containers.values())
    with host.fault("start-fails-unless-key", "AKIAOTHER"):
        result = host.run_as_login_user(["./start.sh"])
        assert result.returncode == 125 and "start-fails-unless-key" in result.stderr
    with host.fault("start-fails-unless-key", host.host_key_id()):
        result = host.run_as_login_user(["./start.sh"])
        assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- create_admin


def on_terminal(host: Host, args: list[str], answers: list[tuple[str, str]], timeout: float = 60) -> tuple[int, str]:
    """Runs create_admin.sh as the login user on a pseudo-terminal, typing each answer after its prompt."""
    argv = ["/usr/sbin/runuser", "-u", host.login_user, "--", "./create_admin.sh", *args]
    return run_on_terminal(argv, host.login_env(), str(host.registry_dir), answers, timeout)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def stored(host: Host) -> list[list[str]]:
    if not host.users_file.exists():
        return []
    return [line.split()[:2] for line in host.users_file.read_text().splitlines()]


@pytest.mark.parametrize("version,refused", [("2018", 2), ("marketplace", 0)])
def test_create_admin_versions(host: Host, version: str, refused: int) -> None:
    host.set_fault("create-admin-version", version)
    name = unique("admin")

    code, out = on_terminal(host, [], [("Username:", name), ("Email:", f"{name}@example.com"), ("Password:", "short")])
    assert code == refused
    assert "Error: Password must be at least 8 characters long." in out
    assert "Confirm password" not in out and "short" not in out

    code, out = on_terminal(
        host,
        [],
        [
            ("Username:", name),
            ("Email:", f"{name}@example.com"),
            ("Password:", PASSWORD),
            ("Confirm password:", PASSWORD),
        ],
    )
    assert code == 0 and out.rstrip().endswith("Success."), out
    assert PASSWORD not in out  # echo off
    assert [name, f"{name}@example.com"] in stored(host)
    assert ("INFO  [alembic.runtime.migration]" in out) == (version == "marketplace")

    code, out = on_terminal(
        host,
        [],
        [
            ("Username:", name),
            ("Email:", f"other-{name}@example.com"),
            ("Password:", PASSWORD),
            ("Confirm password:", PASSWORD),
        ],
    )
    assert code == refused and "Error: Username already taken." in out

    # The email comparison is exact: another case is another email.
    other = unique("admin")
    code, out = on_terminal(
        host,
        [],
        [
            ("Username:", other),
            ("Email:", f"{name.upper()}@example.com"),
            ("Password:", PASSWORD),
            ("Confirm password:", PASSWORD),
        ],
    )
    assert code == 0 and "Success." in out, out
    code, out = on_terminal(
        host,
        [],
        [
            ("Username:", unique("admin")),
            ("Email:", f"{name}@example.com"),
            ("Password:", PASSWORD),
            ("Confirm password:", PASSWORD),
        ],
    )
    assert code == refused and "Error: Email already taken." in out

    code, out = on_terminal(
        host,
        [],
        [
            ("Username:", "Bad-Name"),
            ("Email:", "not-an-email"),
            ("Password:", PASSWORD),
            ("Confirm password:", PASSWORD + "x"),
        ],
    )
    assert code == refused and "Passwords don't match!" in out and "Invalid" not in out
    code, out = on_terminal(
        host,
        [],
        [("Username:", "quilt"), ("Email:", "not an@email"), ("Password:", PASSWORD), ("Confirm password:", PASSWORD)],
    )
    assert code == refused and "Error: Invalid username." in out
    code, out = on_terminal(
        host,
        [],
        [
            ("Username:", unique("ok")),
            ("Email:", "not an@email"),
            ("Password:", PASSWORD),
            ("Confirm password:", PASSWORD),
        ],
    )
    assert code == refused and "Error: Invalid email." in out

    if version == "2018":
        code, out = on_terminal(host, ["-e", "prod"], [])
        assert code == 1 and "Usage: create_admin.py" in out
    else:
        code, out = on_terminal(host, ["--bogus"], [])
        assert code == 2 and "create_admin.py: error: unrecognized arguments: --bogus" in out
        name = unique("envarg")
        code, out = on_terminal(
            host,
            ["-e", "prod"],
            [
                ("Username:", name),
                ("Email:", f"{name}@example.com"),
                ("Password:", PASSWORD),
                ("Confirm password:", PASSWORD),
            ],
        )
        assert code == 0 and "Success." in out, out


def test_create_admin_version_from_the_shape_and_db_down(host: Host) -> None:
    with host.reshaped(create_admin_version="marketplace"):
        code, out = on_terminal(host, ["--bogus"], [])
        assert code == 2
    code, out = on_terminal(host, ["--bogus"], [])
    assert code == 1 and "Usage: create_admin.py" in out
    before = stored(host)
    with host.fault("db-down"):
        code, out = on_terminal(host, [], [("Username:", unique("down")), ("Email:", "d@example.com")])
    assert code == 1 and "Traceback (most recent call last):" in out and "Password:" not in out
    assert stored(host) == before


# ----------------------------------------------------------------------------- other shapes


def test_docker_access_group(host: Host) -> None:
    with host.reshaped(docker_access="group", sudo=False):
        session = ssh(host, "id -nG; docker ps --format '{{.Names}}'; echo docker=$?; sudo -n true; echo sudo=$?")
        out = session.stdout
        assert "docker" in out.splitlines()[0].split()
        assert "docker=0" in out and host.containers["nginx"] in out
        assert "sudo=1" in out
        assert not sudoers_file(host.login_user).exists()
        assert "sudo docker" not in (host.registry_dir / "start.sh").read_text()
        assert (host.registry_dir / "create_admin.sh").read_text().splitlines()[-1].startswith("exec docker exec -it")
        host.docker("rm", "-f", *host.containers.values())
        assert host.run_as_login_user(["./start.sh"]).returncode == 0
    session = ssh(host, "id -nG; docker ps 2>&1; sudo -n true; echo sudo=$?")
    assert "docker" not in session.stdout.splitlines()[0].split()
    assert "permission denied" in session.stdout and "sudo=0" in session.stdout
    assert sudoers_file(host.login_user).stat().st_mode & 0o777 == 0o440


def test_docker_access_none(host: Host) -> None:
    with host.reshaped(docker_access="none"):
        session = ssh(host, "docker ps 2>&1; echo docker=$?; sudo -n true; echo sudo=$?")
        assert "permission denied" in session.stdout and "docker=1" in session.stdout
        assert "sudo=1" in session.stdout
        assert not sudoers_file(host.login_user).exists()
        host.docker("rm", "-f", *host.containers.values())
        assert host.run_as_login_user(["./start.sh"]).returncode != 0
    assert host.healthy()


def test_env_owner_root(host: Host) -> None:
    with host.reshaped(env_owner="root"):
        env_dir, env_file = host.env_dir.stat(), host.env_file.stat()
        assert (env_dir.st_uid, env_dir.st_gid, env_dir.st_mode & 0o777) == (0, 0, 0o755)
        assert (env_file.st_uid, env_file.st_gid, env_file.st_mode & 0o777) == (0, 0, 0o600)
        session = ssh(
            host,
            f"cd {host.registry_dir}; cat env/registry >/dev/null 2>&1; echo cat=$?; "
            "sudo -n cat env/registry | grep -c ^AWS_",
        )
        assert "cat=1" in session.stdout and session.stdout.split()[-1] == "2"
        # start.sh still works (sudo docker reads the env file as root).
        host.docker("rm", "-f", *host.containers.values())
        assert host.run_as_login_user(["./start.sh"]).returncode == 0
    uid = host.home.stat().st_uid
    assert host.env_dir.stat().st_uid == uid and host.env_dir.stat().st_mode & 0o777 == 0o700
    assert host.env_file.stat().st_uid == uid


def test_aliases_each_have_their_own_sshd(host: Host) -> None:
    with host.reshaped(aliases=2):
        assert host.aliases == [host.alias, f"{host.alias}1", f"{host.alias}2"]
        assert len(set(host.ssh_ports)) == 3
        for alias in host.aliases:
            assert ssh(host, "id -un", alias=alias).stdout.strip() == host.login_user
        before = host.accepted_logins()
        ssh(host, "true", alias=f"{host.alias}2")
        time.sleep(0.3)  # sshd logs a login after accepting it
        assert host.accepted_logins() == before + 1
    assert host.aliases == [host.alias] and len(host.state.sshd) == 1


def test_cut_connections_and_stopped_sshd_come_back_with_reset(host: Host) -> None:
    proc = subprocess.Popen(["ssh", "-F", str(host.ssh_config), host.alias, "sleep 60"])
    try:
        deadline = time.monotonic() + 10
        while not host.ssh_sessions() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host.cut_ssh_connections() >= 1
        assert proc.wait(10) != 0
    finally:
        proc.kill()
    host.stop_sshd()
    assert ssh(host, "true").returncode == 255
    host.reset()
    assert ssh(host, "true").returncode == 0


def test_command_line(host: Host) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(SANDBOX), *args, "--host", host.name], capture_output=True, text=True, timeout=120
        )

    status = run("status")
    assert status.returncode == 0 and "registry   up" in status.stdout, status.stdout + status.stderr
    env = run("env")
    assert f"export AWS_ENDPOINT_URL={host.aws_endpoint}" in env.stdout
    assert f"# fab -S {host.ssh_config} -f {host.fabric_config} -H {host.alias} health" in env.stdout
    assert run("fault", "set", "registry-unhealthy").returncode == 0
    try:
        assert run("status").returncode == 1
    finally:
        assert run("fault", "clear", "registry-unhealthy").returncode == 0
    bad = run("fault", "set", "no-such-fault")
    assert bad.returncode == 1 and bad.stderr.startswith("sandbox: error: unknown fault")
    assert run("fault", "aws", "new_key_delay=5").returncode == 0
    assert '"new_key_delay": 5' in (host.dir / "aws" / "faults.json").read_text()
    missing = subprocess.run([sys.executable, str(SANDBOX), "status", "--host", "nosuch"], capture_output=True)
    assert missing.returncode == 1


def test_registry_sees_the_last_of_two_key_lines(host: Host) -> None:
    """What docker does with a duplicate env-file line: Config.Env lists both, the process gets the last."""
    text = host.env_file.read_text()
    key_id = host.host_key_id()
    host.env_file.write_text(
        text.replace(f"AWS_ACCESS_KEY_ID={key_id}\n", f"AWS_ACCESS_KEY_ID=AKIAFIRSTLINE\nAWS_ACCESS_KEY_ID={key_id}\n")
    )
    host.docker("rm", "-f", *host.containers.values())
    assert host.run_as_login_user(["./start.sh"]).returncode == 0
    env = host.registry_env()
    assert "AWS_ACCESS_KEY_ID=AKIAFIRSTLINE" in env and f"AWS_ACCESS_KEY_ID={key_id}" in env
    assert host.registry_runs_with(key_id)
    host.reset()
    assert "AKIAFIRSTLINE" not in host.env_file.read_text()


def test_two_threads_reset_and_up_do_not_trip_over_each_other(sb: Sandbox, host: Host) -> None:
    errors: list[BaseException] = []

    def work(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f,)) for f in (host.reset, lambda: sb.up(host.shape))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert host.healthy()
