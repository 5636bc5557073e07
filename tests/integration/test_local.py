"""Issue 13 part 1: `--local`, every task run on the registry host itself, against a sandbox host.

"On the host" here means: on this machine, as root (as AWS Systems Manager runs commands), in
the host's environment: its Docker engine (DOCKER_HOST), its settings with an absolute
registry_dir (root's login directory is not the registry folder), from "/". One test runs as
the host's login user instead (a cron job or a systemd unit of that user), with the host's own
settings unchanged. The same host is also checked over SSH, so that each local outcome is
compared with the SSH one.

The shipped examples run exactly as shipped: the systemd unit's ExecStart command line as
systemd would run it, and the SSM document's runCommand lines as the SSM agent would.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.tool import ROOT, executable, one_error, record

pytestmark = pytest.mark.sandbox

EXAMPLES = ROOT / "examples"
PASSWORD = "Tr0ub4dor-and-3"
#: Variables of the test session that a command run "on the host" must not inherit.
NOT_INHERITED = ("FABRIC_QUILT_", "AWS_", "QUILT_OPS_DEBUG", "QUILT_ADMIN", "INVOKE_", "DOCKER_")


class OnHost:
    """quilt-ops run on the sandbox host itself, as root."""

    def __init__(self, host, folder: Path) -> None:
        self.host = host
        self.folder = folder
        #: The host's settings, with registry_dir absolute (the stand-in for the host's /etc/fabric.yaml).
        self.config = host.write_config(folder / "local.yaml", registry_dir=str(host.registry_dir))

    def env(self, extra: dict[str, str] | None = None, aws: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
        env.update(HOME="/root", DOCKER_HOST=self.host.docker_host)
        if aws:  # the host's AWS environment: boto3's chain finds it (an instance profile on EC2)
            env.update(self.host.aws_env())
        env.update(extra or {})
        return env

    def command(self, *args: str, config: Path | None = None, tool: str = "quilt-ops") -> list[str]:
        return [executable(tool), "--local", "-f", str(config or self.config), *args]

    def run(
        self,
        *args: str,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        aws: bool = False,
        input: str | None = None,
        tool: str = "quilt-ops",
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        return record(
            subprocess.run(
                self.command(*args, config=config, tool=tool),
                cwd="/" if tool == "quilt-ops" else ROOT,
                env=self.env(env, aws),
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        )

    def start(self, *args: str, aws: bool = False) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*args),
            cwd="/",
            env=self.env(aws=aws),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def local(host, tmp_path):
    return OnHost(host, tmp_path)


def checks(result: subprocess.CompletedProcess) -> list[dict]:
    return json.loads(result.stdout)["hosts"][0]["checks"]


#: Details that are timings (they differ from one look to the next).
TIMINGS = {"uptime_seconds", "seconds"}


def comparable(found: list[dict]) -> list[tuple]:
    """A report apart from timings: each check's name, kind, subject, status, summary (numbers
    blanked) and details."""
    return [
        (
            c["name"],
            c["kind"],
            c["subject"],
            c["status"],
            re.sub(r"\d+(\.\d+)?", "N", c["summary"]),
            {k: v for k, v in c["details"].items() if k not in TIMINGS},
        )
        for c in found
    ]


@pytest.fixture
def docker_log(tmp_path):
    """A `docker` first on PATH that records each call; returns (PATH, the log's calls).

    ``passthrough`` False: it fails every call (the CLI as good as missing);
    True: it runs the real docker after recording the call."""
    real = shutil.which("docker")
    assert real

    def make(passthrough: bool) -> tuple[str, Path]:
        folder = tmp_path / ("bin-pass" if passthrough else "bin-fail")
        folder.mkdir()
        log = tmp_path / f"docker-calls-{folder.name}"
        stub = folder / "docker"
        then = f'exec {shlex.quote(real)} "$@"' if passthrough else "exit 1"
        stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\n{then}\n')
        stub.chmod(0o755)
        return f"{folder}:{os.environ['PATH']}", log

    return make


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# ----------------------------------------------------------------------------- health


STATES = {
    "healthy": lambda host: None,
    "catalog stopped": lambda host: host.docker("stop", "-t", "1", host.containers["catalog"]),
    "nginx missing": lambda host: host.docker("rm", "-f", host.containers["nginx"]),
    "registry unhealthy": lambda host: host.set_fault("registry-unhealthy"),
    "env file readable by others": lambda host: host.env_file.chmod(0o644),
}


@pytest.mark.parametrize("state", list(STATES))
def test_the_same_report_and_exit_status_over_ssh_and_locally(host, local, state):
    STATES[state](host.host)
    over_ssh = host.run("health", "--json")
    here = local.run("health", "--json")
    assert here.returncode == over_ssh.returncode, here.stdout + here.stderr
    assert comparable(checks(here)) == comparable(checks(over_ssh))
    assert json.loads(here.stdout)["hosts"][0]["host"] == os.uname().nodename  # named after the machine
    if state == "healthy":
        assert here.returncode == 0 and len(checks(here)) == 6


def test_local_health_asks_docker_through_the_sdk_and_runs_no_docker_cli(host, local, docker_log):
    path, log = docker_log(passthrough=False)  # any docker CLI call would fail
    result = local.run("health", env={"PATH": path})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK (6/6 checks OK)" in result.stdout
    assert calls(log) == []
    # quilt.docker: a socket: the SDK on that socket, whatever DOCKER_HOST says.
    socket = host.write_config(
        local.folder / "socket.yaml", registry_dir=str(host.registry_dir), docker=host.docker_host
    )
    pinned = local.run("health", config=socket, env={"PATH": path, "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert calls(log) == []


def test_a_docker_command_prefix_is_used_as_given_locally(host, local, docker_log):
    path, log = docker_log(passthrough=True)
    prefix = host.write_config(local.folder / "prefix.yaml", registry_dir=str(host.registry_dir), docker="docker")
    result = local.run("health", config=prefix, env={"PATH": path})
    assert result.returncode == 0, result.stdout + result.stderr
    assert [call.split()[0] for call in calls(log)] == ["inspect"]  # the CLI, one call, as over SSH


def test_a_relative_registry_dir_as_root_is_one_line(host, local):
    relative = host.write_config(local.folder / "relative.yaml", registry_dir="quilt")
    result = local.run("health", config=relative)
    assert result.returncode == 3
    assert "cannot enter quilt.registry_dir 'quilt'" in one_error(result)


def test_local_with_h_is_a_usage_error(local):
    result = local.run("-H", local.host.alias, "health")
    assert result.returncode == 3  # health, a Nagios plugin: a bad option is UNKNOWN
    assert "takes no -H" in one_error(result)


# ----------------------------------------------------------------------------- as the login user


#: The top-level modules quilt-ops imports for --local health (found with sys.modules after a run).
USER_MODULES = (
    "bcrypt",
    "certifi",
    "charset_normalizer",
    "cryptography",
    "decorator",
    "docker",
    "dotenv",
    "fabric",
    "idna",
    "invoke",
    "nacl",
    "paramiko",
    "requests",
    "urllib3",
    "yaml",
)


@pytest.fixture(scope="module")
def user_python():
    """PYTHONPATH for the system python of a user who cannot read this session's interpreter
    (it lives in root's home): the installed packages quilt-ops needs, copied where anyone can read."""
    system = Path("/usr/bin/python3")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = (
        subprocess.run(
            [str(system), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
        )
        if system.exists()
        else None
    )
    if found is None or found.stdout.strip() != version:
        pytest.skip(f"no system Python {version} for the login user (the packages' extensions are built for it)")
    site = Path(sysconfig.get_paths()["purelib"])
    folder = Path(tempfile.mkdtemp(prefix="quilt-ops-userpy-", dir="/tmp"))
    try:
        distributions = importlib.metadata.packages_distributions()
        for name in USER_MODULES:
            source = site / name if (site / name).is_dir() else site / f"{name}.py"
            if source.is_dir():
                shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, folder / source.name)
            for dist in distributions.get(name, []):
                info = Path(str(importlib.metadata.distribution(dist)._path))  # its .dist-info folder
                shutil.copytree(info, folder / info.name, dirs_exist_ok=True)
        for extension in [*site.glob("_cffi_backend*.so"), *site.glob("*__mypyc*.so")]:
            shutil.copy2(extension, folder / extension.name)
        subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
        yield f"{folder}:{ROOT}", str(system)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_as_the_login_user_auto_goes_through_sudo_when_the_socket_is_out_of_reach(host, user_python):
    pythonpath, python = user_python
    socket_path = host.docker_host.removeprefix("unix://")
    probe = host.run_as_login_user(["sh", "-c", f"test -w {shlex.quote(socket_path)} && echo yes || echo no"])
    assert probe.stdout.strip() == "no"  # the login user cannot use the socket itself

    def run(*args: str):
        return host.run_as_login_user(
            [python, "-m", "quilt_ops", "--local", *args], cwd=host.home, env={"PYTHONPATH": pythonpath}
        )

    # The host's own settings, unchanged: registry_dir relative to the login directory ($HOME).
    result = run("-f", str(host.fabric_config), "health", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c["status"] for c in checks(result)] == ["OK"] * 6  # docker inspect through sudo, in the script
    # A socket named in quilt.docker is the SDK on it, even when that user cannot use it: it says so.
    pinned = host.write_config(Path(tempfile.mkdtemp(dir="/tmp")) / "socket.yaml", docker=host.docker_host)
    try:
        pinned.chmod(0o644)
        pinned.parent.chmod(0o755)
        refused = run("-f", str(pinned), "health")
    finally:
        shutil.rmtree(pinned.parent, ignore_errors=True)
    assert refused.returncode == 3
    assert "permission denied on the Docker socket" in refused.stdout


# ----------------------------------------------------------------------------- restart


def test_local_restart_recreates_the_containers_through_the_sdk(host, local, docker_log):
    path, log = docker_log(passthrough=True)
    before = host.docker("ps", "-q").stdout.split()
    result = local.run("restart", env={"PATH": path})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restarted and healthy" in result.stdout and "registry probe down" in result.stdout
    after = host.docker("ps", "-q").stdout.split()
    assert len(after) == 3 and not set(after) & set(before)  # all three were removed and recreated
    assert not [c for c in calls(log) if c.split()[:1] in (["rm"], ["inspect"])]  # the SDK did those
    assert host.healthy()
    lock = host.env_dir / ".registry.quilt-ops.lock"
    assert lock.stat().st_uid == host.env_file.stat().st_uid  # root's run leaves the lock the owner's
    assert host.run("restart").returncode == 0  # so the next run over SSH takes it


def test_local_restart_dry_run_changes_nothing(host, local):
    before = host.docker("ps", "-aq").stdout
    result = local.run("restart", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run, nothing changed" in result.stdout and f"Would run in {host.registry_dir}" in result.stdout
    assert host.docker("ps", "-aq").stdout == before


def test_a_failing_start_script_ends_the_same_locally_and_over_ssh(host, local):
    with host.fault("start-fails"):
        here = local.run("restart", "--timeout", "20")
        over_ssh = host.run("restart", "--timeout", "20")
    assert here.returncode == over_ssh.returncode == 4
    assert "./start.sh failed" in one_error(here) and "start-fails" in one_error(here)


# ----------------------------------------------------------------------------- rotate-keys


def test_local_rotate_keys_with_the_host_s_aws_environment(host, local, aws):
    old = host.host_key_id()
    # Issue 18.1: --local has no address to match a stack's EC2InstanceIp: the operator names
    # the user once (unless already bound), and the binding is recorded.
    unbound = local.run("rotate-keys", "--dry-run", aws=True)
    assert unbound.returncode in (0, 4), unbound.stdout + unbound.stderr
    if unbound.returncode == 4:
        assert "give --iam-user or --stack" in one_error(unbound)
    dry = local.run("rotate-keys", "--dry-run", "--iam-user", host.iam_user, aws=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run, nothing changed" in dry.stdout and aws.keys() == {old: "Active"}
    result = local.run("rotate-keys", "--iam-user", host.iam_user, aws=True)
    assert result.returncode == 0, result.stdout + result.stderr
    new = host.host_key_id()
    assert new != old and aws.keys() == {new: "Active"}
    assert host.registry_runs_with(new) and host.healthy()
    assert host.leftovers() == []
    owner = host.env_file.stat().st_uid
    assert (host.env_dir / ".registry.quilt-ops.lock").stat().st_uid == owner
    ended = [r for r in host.audit_records() if r["task"] == "rotate-keys" and r["event"] == "end"][-1]
    assert ended["host"] == os.uname().nodename and ended["outcome"] == "rotated" and ended["new_key_id"] == new
    again = host.run("rotate-keys")  # over SSH, as the login user: nothing root's is in its way
    assert again.returncode == 0, again.stdout + again.stderr


def test_local_rotate_keys_without_aws_credentials_changes_nothing(host, local, aws):
    old = host.host_key_id()
    result = local.run("rotate-keys", env={"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/x"})
    assert result.returncode == 4
    assert "nothing was changed" in one_error(result)
    assert host.host_key_id() == old and aws.keys() == {old: "Active"}


def test_the_host_lock_is_shared_by_local_and_ssh_runs(host, local, aws):
    aws.fault(new_key_delay=4)
    first = host.start("rotate-keys")
    first.wait_for("created")
    loser = local.run("restart")
    result = first.finish(timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert loser.returncode == 4
    assert "is locked: rotate-keys by" in one_error(loser)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "root-only file"])
def test_local_as_root_opens_no_lock_file_its_owner_could_not(host, local, tmp_path, kind):
    """Issue 18: root (--local) in the owner's folder opens the lock file through the owner's own
    process, never the path: a FIFO, a symlink or a root-only file there is refused (a root-only
    file was opened and locked as root before: fails on main)."""
    lock = host.env_dir / ".registry.quilt-ops.lock"
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    lock.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(lock)
        shutil.chown(lock, host.env_file.stat().st_uid, host.env_file.stat().st_gid)
    elif kind == "symlink":
        lock.symlink_to(victim)
    else:
        lock.write_text("")
        lock.chmod(0o600)
    states = host.container_states()
    try:
        result = local.run("restart", timeout=60)
        assert result.returncode == 4, result.stdout + result.stderr
        assert "lock" in one_error(result) and "nothing was changed" in one_error(result)
        assert "is not a regular file of the env folder's owner" in one_error(result)
        assert victim.read_text() == "untouched\n" and host.container_states() == states
    finally:
        lock.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- create-admin


def test_local_create_admin_answers_the_prompts_on_a_local_terminal(host, local):
    name = f"local{int(time.time() * 1000) % 10_000_000}"
    args = ("create-admin", "--username", name, "--email", f"{name}@example.com", "--password-stdin")
    result = local.run(*args, input=PASSWORD + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Admin {name} created on {os.uname().nodename}" in result.stdout
    assert [name, f"{name}@example.com"] in [line.split()[:2] for line in host.users_file.read_text().splitlines()]
    again = local.run(*args, input=PASSWORD + "\n")
    over_ssh = host.run(*args, input=PASSWORD + "\n")
    assert again.returncode == over_ssh.returncode == 4
    assert "Username already taken." in one_error(again)
    assert PASSWORD not in again.stdout + again.stderr


def test_local_create_admin_dry_run(host, local):
    args = ("create-admin", "--username", "dryrun", "--email", "d@example.com", "--password-stdin", "--dry-run")
    result = local.run(*args, input=PASSWORD + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run: would create admin dryrun" in result.stdout


# ----------------------------------------------------------------------------- the shipped examples


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> values (keys may repeat: Environment=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), "no continuation lines"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_argv(line: str) -> list[str]:
    """ExecStart's words as systemd passes them: quoting as the shell's (no backslash escapes used),
    "$$" a literal "$"; the line uses no systemd variable ($NAME) or specifier (%x)."""
    assert "\\" not in line and "%" not in line
    words = shlex.split(line)
    for word in words:
        assert "$" not in word.replace("$$", ""), f"systemd would substitute in {word!r}"
    return [word.replace("$$", "$") for word in words]


def test_the_systemd_units_every_minute(tmp_path):
    service = unit_file(EXAMPLES / "systemd" / "quilt-ops-health.service")
    timer = unit_file(EXAMPLES / "systemd" / "quilt-ops-health.timer")
    assert service["Service"]["Type"] == ["oneshot"] and len(service["Service"]["ExecStart"]) == 1
    assert timer["Timer"]["OnCalendar"] == ["minutely"] and timer["Timer"]["Unit"] == ["quilt-ops-health.service"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd's own reading of both files (no running systemd needed)
        for name in ("quilt-ops-health.service", "quilt-ops-health.timer"):
            shutil.copy(EXAMPLES / "systemd" / name, tmp_path / name)
        checked = subprocess.run(
            [analyze, "verify", str(tmp_path / "quilt-ops-health.service"), str(tmp_path / "quilt-ops-health.timer")],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stderr
        calendar = subprocess.run([analyze, "calendar", "minutely"], capture_output=True, text=True)
        assert "*-*-* *:*:00" in calendar.stdout  # every minute


def run_exec_start(local: OnHost, folder: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The service's ExecStart, exactly, with the unit's Environment= lines, the textfile folder
    pointed at ``folder`` as a drop-in would (Environment=TEXTFILE_DIR=...), the host's settings
    (INVOKE_RUNTIME_CONFIG: the stand-in for /etc/fabric.yaml) and engine, as root, from /."""
    service = unit_file(EXAMPLES / "systemd" / "quilt-ops-health.service")["Service"]
    unit_env = dict(assignment.split("=", 1) for assignment in service.get("Environment", []))
    assert unit_env["TEXTFILE_DIR"] == "/var/lib/node_exporter/textfile_collector"
    env = local.env(
        {**unit_env, "TEXTFILE_DIR": str(folder), "INVOKE_RUNTIME_CONFIG": str(local.config), **(extra or {})}
    )
    return subprocess.run(systemd_argv(service["ExecStart"][0]), cwd="/", env=env, capture_output=True, text=True)


def samples(text: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_systemd_service_writes_the_metrics_atomically(host, local, tmp_path):
    folder = tmp_path / "textfile_collector"
    folder.mkdir()
    prom = folder / "quilt.prom"
    seen: list[str] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.append(prom.read_text())
            except FileNotFoundError:
                pass
            time.sleep(0.002)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        runs = [run_exec_start(local, folder) for _ in range(4)]
    finally:
        stop.set()
        thread.join(timeout=10)
    assert [r.returncode for r in runs] == [0] * 4, runs[-1].stderr
    final = samples(prom.read_text())
    me = os.uname().nodename
    assert final[("quilt_health_status", (("host", me),))] == 0
    assert len(seen) > 10 and all(samples(text).keys() == final.keys() for text in seen)  # never half a file
    assert sorted(p.name for p in folder.iterdir()) == ["quilt.prom"]  # the temp file was renamed
    assert prom.stat().st_mode & 0o044  # node_exporter (its own user) can read it

    # Something wrong: health exits 2, the file says so all the same, the unit succeeds.
    host.docker("stop", "-t", "1", host.containers["catalog"])
    degraded = run_exec_start(local, folder)
    assert degraded.returncode == 0, degraded.stderr
    assert samples(prom.read_text())[("quilt_health_status", (("host", me),))] == 2

    # A bad setting: health prints nothing; the last file stays and the unit fails, saying why.
    before = prom.read_bytes()
    broken = run_exec_start(local, folder, {"FABRIC_QUILT_PROBE_INTERVAL": "0.1"})
    assert broken.returncode == 1
    assert "quilt.probe_interval" in broken.stderr
    assert prom.read_bytes() == before


def ssm_lines() -> list[str]:
    document = json.loads((EXAMPLES / "ssm" / "quilt-ops-health.json").read_text())
    assert document["schemaVersion"] == "2.2"
    (step,) = document["mainSteps"]
    assert step["action"] == "aws:runShellScript"
    lines = step["inputs"]["runCommand"]
    assert lines[-1] == "quilt-ops --local health --format json"
    return lines


def run_ssm(local: OnHost, folder: Path) -> subprocess.CompletedProcess:
    """The runCommand lines, exactly, as the agent runs them (a script run by sh), as root from /,
    with the host's settings and engine."""
    script = folder / "_script.sh"
    script.write_text("\n".join(ssm_lines()) + "\n")
    env = local.env({"INVOKE_RUNTIME_CONFIG": str(local.config)})
    env.pop("HOME")  # the agent's commands may have no HOME: the login directory is root's own then
    return subprocess.run(["sh", str(script)], cwd="/", env=env, capture_output=True, text=True, timeout=120)


def test_the_ssm_document_prints_the_json_report(host, local, tmp_path):
    result = run_ssm(local, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "OK" and document["hosts"][0]["host"] == os.uname().nodename
    names = [c["name"] for c in document["hosts"][0]["checks"]]
    assert names == [
        *(f"container {host.containers[role]}" for role in ("registry", "catalog", "nginx")),
        "probe registry",
        "probe catalog",
        "env file",
    ]
    host.docker("stop", "-t", "1", host.containers["catalog"])
    failing = run_ssm(local, tmp_path)  # the invocation shows as Failed; its output still says why
    assert failing.returncode == 2
    assert json.loads(failing.stdout)["status"] == "CRITICAL"
