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


def test_a_free_host_is_taken_and_given_back(tmp_path: Path) -> None:
    result = run_session(tmp_path, "1")
    assert result.returncode == 0, result.stdout + result.stderr
    fd = os.open(tmp_path / "sb.session-main.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the session ended
    finally:
        os.close(fd)
