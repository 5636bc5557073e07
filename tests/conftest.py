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


@pytest.fixture(scope="session")
def sandbox_host(worker_id: str) -> Iterator[Any]:
    """This worker's sandbox host, brought up once per session, and stopped at the session's
    end when it was not running before (unless `keep_sandbox`): the suite leaves the machine
    as it found it.

    Skips with the reason when it cannot be had (no docker, no sshd, not root),
    unless QUILT_OPS_REQUIRE_SANDBOX=1 (set by .ci/run) turns that into a failure.
    """
    try:
        from registry_sandbox import MAIN, Sandbox, worker_shape

        number = _worker_number(worker_id)
        shape = MAIN if number == 0 else worker_shape(number)
        sandbox = Sandbox()
        was_running = _running(sandbox, shape.name)
        host = sandbox.up(shape)
    except Exception as e:  # anything that stops the sandbox: say it once, skip or fail
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        if os.environ.get("QUILT_OPS_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"sandbox required but unavailable: {reason}")
        pytest.skip(f"sandbox unavailable: {reason}")
    yield host
    if not was_running and not keep_sandbox():
        sandbox.down(shape.name)


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
