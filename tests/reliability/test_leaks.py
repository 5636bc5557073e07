"""Leaks: every task run with known secret values; none is found in any output, the audit
log, the log files, the process lists (command lines and environments), the shell history,
or files left in temp folders."""

import time
from pathlib import Path

import pytest

from tests.checks import ProcessWatcher

pytestmark = [pytest.mark.sandbox, pytest.mark.leaks]

ADMIN_PASSWORD = "Canary-Admin-Password-7731"
TEMP_FOLDERS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


def snapshot_temp():
    files = {}
    for folder in TEMP_FOLDERS:
        for path in folder.glob("*"):
            if path.is_file():
                try:
                    files[path] = path.stat().st_mtime
                except OSError:
                    pass
    return files


def test_no_task_leaks_a_secret(host, aws, survived):
    secrets = set(host.env_values()) | {ADMIN_PASSWORD}
    logs = [host.audit_log, *(host.dir / "ssh").glob("sshd*.log"), *(host.dir / "aws").glob("*.log")]
    sizes = {log: log.stat().st_size if log.exists() else 0 for log in logs}
    temp_before = snapshot_temp()
    outputs = []
    name = f"leak{int(time.time())}"
    with ProcessWatcher() as watcher:
        runs = [
            ("health",),
            ("health", "--json"),
            ("restart", "--dry-run"),
            ("restart",),
            ("rotate-keys", "--dry-run"),
            ("rotate-keys",),
            ("create-admin", "--username", name, "--email", f"{name}@example.com", "--password-stdin"),
            ("create-admin", "--username", name, "--email", f"{name}@example.com", "--password-stdin"),
            ("create-admin", "--username", name + "x", "--email", "bad-email", "--password-stdin"),
        ]
        for args in runs:
            result = host.run(*args, input=ADMIN_PASSWORD + "\n")
            outputs.append(result.stdout + result.stderr)
        # failure paths: a verification that times out, and a rotation rolled back
        aws.fault(new_key_delay=60)
        outputs.append(host.run("rotate-keys", "--verify-timeout", "2").stderr)
        aws.clear()
        with host.fault("registry-healthy-only-with-key", host.host_key_id()):
            result = host.run("rotate-keys", "--timeout", "8")
            outputs.append(result.stdout + result.stderr)
        secrets |= set(host.env_values())  # the keys written meanwhile
    text = "\n".join(outputs)
    new_logs = b""
    for log in logs:
        if log.exists():
            with open(log, "rb") as f:
                f.seek(sizes[log])
                new_logs += f.read()
    temp_files = b""
    for path, mtime in snapshot_temp().items():
        if temp_before.get(path) != mtime and path.stat().st_size < 20_000_000:
            try:
                temp_files += path.read_bytes()
            except OSError:
                pass
    history = b"".join(p.read_bytes() for p in host.home.glob(".*history") if p.is_file())
    sudo_log = b""
    for log in (Path("/var/log/auth.log"), Path("/var/log/sudo.log")):
        if log.exists():
            sudo_log += log.read_bytes()[-200_000:]
    found = []
    for secret in secrets:
        if secret in text:
            found.append("output")
        if secret.encode() in new_logs:
            found.append("logs")
        if secret.encode() in temp_files:
            found.append("temp files")
        if secret.encode() in history:
            found.append("shell history")
        if secret.encode() in sudo_log:
            found.append("sudo's log")
        if any(secret.encode() in blob for blob in watcher.seen):
            found.append("process list or environment")
    assert len(secrets) >= 7
    assert found == [], found
    survived(compare_bytes=False)
