"""Fixtures: one sandbox host per pytest worker, reset directly (never by the tool under test).

With pytest-xdist each worker owns a sandbox host of its own (worker 0 the main
host, in the real host's shape and names; others the same shape under other
names, users and folders), so tests on different workers never share host
state. Tests that need a host of another shape bring it up themselves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests import tool
from tests.tool import AwsSide, Operator


def _worker_number(worker_id: str) -> int:
    """This worker's host number: 0 is the main host. QUILT_OPS_SANDBOX_WORKER_BASE offsets it, so
    that two test sessions on one machine (two developers' helpers) never share a host."""
    base = int(os.environ.get("QUILT_OPS_SANDBOX_WORKER_BASE", "0"))
    return (int(worker_id[2:]) if worker_id.startswith("gw") else 0) + base


def keep_sandbox() -> bool:
    """QUILT_OPS_KEEP_SANDBOX=1: leave the hosts this session brought up running (stop them
    with ``scripts/sandbox down``); by default a session stops what it started."""
    return os.environ.get("QUILT_OPS_KEEP_SANDBOX") == "1"


def _running(sandbox: Any, name: str) -> bool:
    """Whether host ``name`` is up now (its state says so and its engine, sshd's and moto live)."""
    try:
        status = sandbox.host(name).status()
    except Exception:  # not up, or its state cannot be read: not running
        return False
    return bool(status["docker"]["ok"] and all(s["ok"] for s in status["sshd"]) and status["aws"].get("ok", True))


def _own_shape(worker_id: str) -> Any:
    from registry_sandbox import MAIN, worker_shape

    number = _worker_number(worker_id)
    return MAIN if number == 0 else worker_shape(number)


def _worker_id(config: Any) -> str:
    return str(getattr(config, "workerinput", {}).get("workerid", "master"))


#: Whether this worker's host was up when the session took it, and whether it ran sandbox tests.
_WAS_RUNNING: dict[str, bool] = {}


#: How long (seconds) a session waits for another session on the same sandbox host to end.
SESSION_WAIT = float(os.environ.get("QUILT_OPS_SANDBOX_SESSION_WAIT", 40 * 60))


def _hold_host_for_the_session(config: Any) -> None:
    """Holds this worker's host for the rest of the session (an flock beside the sandbox
    folder, never inside it: a test may remove the folder). Two sessions on one host would
    stop and restart each other's engines and moto (a CI run beside a leftover run did); the
    second one waits for the first, bounded, and then fails saying who holds it."""
    import fcntl
    import time

    from registry_sandbox import Sandbox

    name = _own_shape(_worker_id(config)).name
    path = f"{Sandbox().root}.session-{name}.lock"
    deadline = time.monotonic() + SESSION_WAIT
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder before removes the file at its end: locked a removed one, open again.
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        except BlockingIOError:
            if time.monotonic() > deadline:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                os.close(fd)
                pytest.exit(f"sandbox host {name} is held by another test session (pid {holder}): {path}", 3)
            time.sleep(1)
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _SESSION_LOCK.append(fd)  # held until this process exits
    _SESSION_LOCK_PATH.append(path)
    # Whether the host is up now, before any fixture (this file's or test_sandbox.py's own)
    # brings it up: the session stops it at its end if it was not.
    _WAS_RUNNING["host"] = _running(Sandbox(), name)


_SESSION_LOCK: list[int] = []
_SESSION_LOCK_PATH: list[str] = []


def _let_go_of_the_host() -> None:
    """Removes the session's lock file while still holding it (a waiter that locked the removed
    file sees that and opens the path again), so that no lock file is left behind."""
    for path in _SESSION_LOCK_PATH:
        try:
            os.unlink(path)
        except OSError:
            pass
    for fd in _SESSION_LOCK:
        if fd >= 0:
            os.close(fd)
    _SESSION_LOCK_PATH.clear()


def pytest_runtest_setup(item: Any) -> None:
    """Before the first sandbox test's fixtures: the worker's host held for the session."""
    if item.get_closest_marker("sandbox") is None or _SESSION_LOCK:
        return
    _WAS_RUNNING["ran_sandbox_tests"] = True
    _WAS_RUNNING["host"] = True  # unless found down below: never stop what cannot be read
    try:
        _hold_host_for_the_session(item.config)
    except ImportError:  # no sandbox code here: the fixture skips or fails with the reason
        _SESSION_LOCK.append(-1)


def pytest_sessionfinish(session: Any) -> None:
    """Stops this worker's host if the session brought it up (unless `keep_sandbox`): the suite
    leaves the machine as it found it. (Stopping it in the fixture's teardown missed a host that
    test_sandbox.py's fixtures brought up first: a fresh clone's run left a worker host running.)"""
    # Only a session that ran sandbox tests itself (not the xdist controller, not the fast tier
    # beside another session's hosts) stops anything.
    try:
        if _WAS_RUNNING.get("host", True) or not _WAS_RUNNING.get("ran_sandbox_tests") or keep_sandbox():
            return
        from registry_sandbox import Sandbox

        sandbox, name = Sandbox(), _own_shape(_worker_id(session.config)).name
        if name in sandbox.host_names():
            sandbox.down(name)
    except Exception as e:  # never hide the tests' own outcome behind a teardown problem
        print(f"conftest: could not stop sandbox host: {type(e).__name__}: {e}")
    finally:
        _let_go_of_the_host()


@pytest.fixture(scope="session")
def sandbox_host(worker_id: str) -> Iterator[Any]:
    """This worker's sandbox host, brought up once per session (and stopped at the session's end
    when it was not running before: `pytest_sessionfinish`).

    Skips with the reason when it cannot be had (no docker, no sshd, not root),
    unless QUILT_OPS_REQUIRE_SANDBOX=1 (set by .ci/run) turns that into a failure.
    """
    try:
        from registry_sandbox import Sandbox

        host = Sandbox().up(_own_shape(worker_id))
    except Exception as e:  # anything that stops the sandbox: say it once, skip or fail
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        if os.environ.get("QUILT_OPS_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"sandbox required but unavailable: {reason}")
        pytest.skip(f"sandbox unavailable: {reason}")
    yield host


@pytest.fixture
def host(sandbox_host: Any) -> Iterator[Operator]:
    """The worker's host as an operator sees it; put back to a healthy baseline after the test."""
    operator = Operator(sandbox_host)
    yield operator
    sandbox_host.reset()


@pytest.fixture
def aws(host: Operator) -> Iterator[AwsSide]:
    """The host's AWS side (moto), faults cleared before and after the test."""
    side = AwsSide(host.host)
    side.clear()
    yield side
    side.clear()


SUITES = ("faults", "bad_input", "leaks", "concurrency", "security", "trust")


def pytest_runtest_logreport(report: Any) -> None:
    """With QUILT_OPS_RELIABILITY_LOG set, records each reliability case's outcome (for scripts/reliability)."""
    path = os.environ.get("QUILT_OPS_RELIABILITY_LOG")
    if not path or report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    suites = [name for name in SUITES if name in report.keywords]
    if suites:
        with open(path, "a") as f:
            f.write(json.dumps({"case": report.nodeid, "suite": suites[0], "outcome": report.outcome}) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    """A failing test's report shows every tool run it made, with stderr (the ``Error:`` line),
    not only what the assertion message chose to show."""
    if call.when == "setup":
        tool.RUNS.clear()
    outcome = yield
    report = outcome.get_result()
    if report.failed and tool.RUNS:
        report.sections.append(("quilt-ops runs", tool.describe_runs()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if keep_sandbox():
        terminalreporter.write_line(
            "sandbox hosts left running (QUILT_OPS_KEEP_SANDBOX=1): stop them with scripts/sandbox down"
        )
