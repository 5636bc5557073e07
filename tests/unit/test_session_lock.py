"""Two test sessions on one sandbox host would stop and restart each other's engines and moto:
CI on a fresh clone failed that way beside a run left going on the same machine (every sandbox
test of one worker: "Cannot connect to the Docker daemon", bindings of another moto). A session
holds its worker's host from its first sandbox test (tests/conftest.py); a second one waits,
bounded, and then stops with exit status 3 naming the holder.
"""

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SESSION = """
import pytest
from tests.conftest import *  # noqa: F403  (the suite's own hooks)

"""
TEST = """
import pytest

@pytest.mark.sandbox
def test_needs_the_host():
    pass
"""


def run_session(tmp_path: Path, wait: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(SESSION)
    (tmp_path / "test_one.py").write_text(TEST)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'scripts'}",
        "QUILT_OPS_SANDBOX_DIR": str(tmp_path / "sb"),
        "QUILT_OPS_SANDBOX_SESSION_WAIT": wait,
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_second_session_on_a_held_host_stops_naming_the_holder(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "sb.session-main.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        result = run_session(tmp_path, "1")
    finally:
        os.close(fd)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "held by another test session (pid 4242)" in result.stdout + result.stderr


def test_a_free_host_is_taken_and_given_back_leaving_no_file(tmp_path: Path) -> None:
    result = run_session(tmp_path, "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "sb.session-main.lock").exists()  # the machine as it was found


def test_a_waiting_session_takes_the_host_when_the_holder_lets_go(tmp_path: Path) -> None:
    """The holder removes the file as it lets go: the waiter, which may have locked the removed
    file, must open the path again and hold the file that is there."""
    path = tmp_path / "sb.session-main.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242\n")
    (tmp_path / "conftest.py").write_text(SESSION)
    (tmp_path / "test_one.py").write_text(TEST)
    waiter = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{ROOT}:{ROOT / 'scripts'}",
            "QUILT_OPS_SANDBOX_DIR": str(tmp_path / "sb"),
            "QUILT_OPS_SANDBOX_SESSION_WAIT": "60",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(2)  # the waiter is waiting (or about to): either way it must end well
        os.unlink(path)
        os.close(fd)
        out, _ = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, out
    assert not path.exists()
