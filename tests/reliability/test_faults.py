"""Faults during every task that changes something: the outcome is a clear error or a
completed job, and after the next run nothing is lost (file, keys, health)."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.sandbox import ROOT, SANDBOX, cut_ssh_connections, key_lines_removed, ssh_sessions

pytestmark = [pytest.mark.sandbox, pytest.mark.faults]


def clear_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[-1]


def start(host, *args, env=None):
    cmd = ["fab", "-S", str(host.ssh_config), "-f", str(host.fabric_config), "-H", "sandbox", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=host.tool_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_line(proc, pattern, timeout=60):
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if pattern in line:
            return seen
    raise AssertionError(f"never saw {pattern!r}: {seen}")


def finish(proc):
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ----------------------------------------------------------------------------- SSH cut mid-command


@pytest.mark.parametrize("task,pattern", [
    ("restart", "removing registry"),
    ("rotate-keys", "verifying"),
    ("rotate-keys", "wrote env/registry"),
    ("rotate-keys", "removing registry"),
])
def test_ssh_connection_cut_mid_command(host, aws, survived, task, pattern):
    aws.fault(new_key_delay=2)
    proc = start(host, task)
    wait_for_line(proc, pattern)
    assert cut_ssh_connections() >= 1
    result = finish(proc)
    assert result.returncode in (0, 1, 2, 3)
    if result.returncode:
        clear_error(result)
    aws.clear()
    again = host.run(task)
    assert again.returncode == 0, again.stdout + again.stderr
    survived()


def test_ssh_connection_cut_during_create_admin(host, aws, survived):
    name = f"cut{int(time.time())}"
    users = host.dir / "db" / "users"
    proc = subprocess.Popen(
        ["fab", "-S", str(host.ssh_config), "-f", str(host.fabric_config), "-H", "sandbox", "create-admin",
         "--username", name, "--email", f"{name}@example.com", "--password-stdin"],
        cwd=ROOT, env=host.tool_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    proc.stdin.write("a-good-password\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ssh_sessions():
        time.sleep(0.01)
    cut_ssh_connections()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 1, 3), err
    if proc.returncode:
        assert err.strip().splitlines()[-1].startswith("Error: ") and "Traceback" not in err
    created = users.exists() and name in users.read_text()
    if not created:
        again = host.run("create-admin", "--username", name, "--email", f"{name}@example.com", "--password-stdin",
                         input="a-good-password\n")
        assert again.returncode == 0, again.stderr
    assert name in users.read_text()
    survived()


# ----------------------------------------------------------------------------- sshd gone


def stop_sshd(host):
    pid = host.info["sshd"]["pid"]
    os.kill(pid, signal.SIGTERM)
    cut_ssh_connections()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


def sandbox_up(host):
    subprocess.run([sys.executable, str(SANDBOX), "up"], check=True, capture_output=True, timeout=600)
    status = subprocess.run([sys.executable, str(SANDBOX), "status", "--json"], capture_output=True, text=True)
    import json

    host.info.update(json.loads(status.stdout))


@pytest.mark.parametrize("task,args", [("health", ()), ("restart", ()), ("rotate-keys", ()),
                                       ("create-admin", ("--username", "nobody_here", "--email", "n@example.com",
                                                         "--password-stdin"))])
def test_sshd_gone(host, aws, survived, task, args):
    before, keys = host.env_file.read_bytes(), aws.keys()
    stop_sshd(host)
    try:
        result = host.run(task, *args, input="a-good-password\n")
        assert result.returncode == 3
        if task == "health":
            assert "connection refused" in result.stdout
        else:
            assert "connection refused" in clear_error(result)
        assert host.env_file.read_bytes() == before and aws.keys() == keys
    finally:
        sandbox_up(host)
    survived()


# ----------------------------------------------------------------------------- Docker engine stopped


def stop_docker(host):
    pid_file = host.dir / "docker" / "docker.pid"
    if not pid_file.exists():
        pytest.skip("the sandbox uses a Docker Engine it does not own")
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)


@pytest.mark.parametrize("task,args,status", [
    ("health", (), 2),
    ("restart", ("--timeout", "3"), 1),
    ("rotate-keys", (), 1),
    ("create-admin", ("--username", "nobody_here", "--email", "n@example.com", "--password-stdin"), 1),
])
def test_docker_engine_stopped(host, aws, survived, task, args, status):
    before, keys = host.env_file.read_bytes(), aws.keys()
    stop_docker(host)
    try:
        result = host.run(task, *args, input="a-good-password\n")
        assert result.returncode == status, result.stdout + result.stderr
        if task == "health":
            assert "Docker engine is not running" in result.stdout
        else:
            clear_error(result)
        assert host.env_file.read_bytes() == before and aws.keys() == keys
    finally:
        sandbox_up(host)
    if task == "restart":
        assert host.run("restart").returncode == 0
    survived()


# ----------------------------------------------------------------------------- AWS failing for a while


@pytest.mark.parametrize("fault", ["error_500_for", "throttle_for", "down_for"])
def test_aws_failing_for_a_while(host, aws, survived, fault):
    subprocess.run([sys.executable, str(SANDBOX), "fault", "aws", f"{fault}=4"], check=True)
    result = host.run("rotate-keys", "--verify-timeout", "20")
    if result.returncode:
        clear_error(result)
    aws.clear()
    if result.returncode:
        again = host.run("rotate-keys")
        assert again.returncode == 0, again.stdout + again.stderr
    survived(compare_bytes=True)


def test_aws_unreachable_mid_rotation(host, aws, survived):
    aws.fault(new_key_delay=3)
    proc = start(host, "rotate-keys", "--verify-timeout", "4")
    wait_for_line(proc, "created")
    subprocess.run([sys.executable, str(SANDBOX), "fault", "aws", "down_for=30", "new_key_delay=3"], check=True)
    result = finish(proc)
    assert result.returncode == 1
    line = clear_error(result)
    assert "the host was not changed" in line
    aws.clear()
    again = host.run("rotate-keys")
    assert again.returncode == 0, again.stdout + again.stderr
    survived()


# ----------------------------------------------------------------------------- disk full


def test_disk_full_when_writing_the_env_file(host, aws, survived):
    env_dir = host.env_file.parent
    saved = {p.name: p.read_bytes() for p in env_dir.iterdir() if p.is_file()}
    before, keys = host.env_file.read_bytes(), aws.keys()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700,uid=ec2-user,gid=ec2-user", "tmpfs",
                    str(env_dir)], check=True)
    try:
        for name, data in saved.items():
            (env_dir / name).write_bytes(data)
            shutil.chown(env_dir / name, "ec2-user", "ec2-user")
            (env_dir / name).chmod(0o644 if name == "catalog" else 0o600)
        # Leave a few pages: the journal may fit, the backup and the new file's temp copy do not.
        filler = env_dir / ".filler"
        free = os.statvfs(env_dir)
        filler.write_bytes(b"x" * ((free.f_bavail - 2) * free.f_frsize))
        result = host.run("rotate-keys")
        assert result.returncode == 1, result.stdout + result.stderr
        line = clear_error(result)
        assert "no space left" in line and "env/" in line
        assert host.env_file.read_bytes() == before and aws.keys() == keys, result.stdout + result.stderr
        filler.unlink()
        current = {p.name: p.read_bytes() for p in env_dir.iterdir() if p.is_file()}
    finally:
        subprocess.run(["umount", str(env_dir)], check=True)
    for name, data in current.items():
        if not name.startswith(".quilt-ops-tmp-"):
            (env_dir / name).write_bytes(data)
    survived()


# ----------------------------------------------------------------------------- killed


@pytest.mark.parametrize("pattern", ["removing registry", "finished in"])
def test_restart_killed_then_rerun(host, aws, survived, pattern):
    proc = start(host, "restart")
    wait_for_line(proc, pattern)
    proc.kill()
    proc.wait(timeout=30)
    result = host.run("restart")
    assert result.returncode == 0, result.stdout + result.stderr
    survived()


def test_env_file_is_always_whole_while_rotations_are_killed(host, aws, survived):
    """A reader polling the file sees only the complete old or the complete new file."""
    stable = key_lines_removed(host.env_file.read_bytes())
    bad = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                content = host.env_file.read_bytes()
            except OSError as e:
                bad.append(f"unreadable: {e}")
                continue
            if key_lines_removed(content) != stable or b"AWS_SECRET_ACCESS_KEY=" not in content:
                bad.append("partial or foreign content")

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        for delay in (0.0, 0.02, 0.05, 0.1, 0.15):
            proc = start(host, "rotate-keys")
            wait_for_line(proc, "verified")
            time.sleep(delay)
            proc.kill()
            proc.wait(timeout=30)
        result = host.run("rotate-keys")
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        stop.set()
        reader.join(timeout=10)
    assert bad == []
    survived()
