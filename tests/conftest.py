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

from tests.tool import AwsSide, Operator


def _worker_number(worker_id: str) -> int:
    """This worker's host number: 0 is the main host. QUILT_OPS_SANDBOX_WORKER_BASE offsets it, so
    that two test sessions on one machine (two developers' helpers) never share a host."""
    base = int(os.environ.get("QUILT_OPS_SANDBOX_WORKER_BASE", "0"))
    return (int(worker_id[2:]) if worker_id.startswith("gw") else 0) + base


@pytest.fixture(scope="session")
def sandbox_host(worker_id: str) -> Any:
    """This worker's sandbox host, brought up once per session.

    Skips with the reason when it cannot be had (no docker, no sshd, not root),
    unless QUILT_OPS_REQUIRE_SANDBOX=1 (set by .ci/run) turns that into a failure.
    """
    try:
        from registry_sandbox import MAIN, Sandbox, worker_shape

        number = _worker_number(worker_id)
        host = Sandbox().up(MAIN if number == 0 else worker_shape(number))
    except Exception as e:  # anything that stops the sandbox: say it once, skip or fail
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        if os.environ.get("QUILT_OPS_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"sandbox required but unavailable: {reason}")
        pytest.skip(f"sandbox unavailable: {reason}")
    return host


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


SUITES = ("faults", "bad_input", "leaks", "concurrency", "security")


def pytest_runtest_logreport(report: Any) -> None:
    """With QUILT_OPS_RELIABILITY_LOG set, records each reliability case's outcome (for scripts/reliability)."""
    path = os.environ.get("QUILT_OPS_RELIABILITY_LOG")
    if not path or report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    suites = [name for name in SUITES if name in report.keywords]
    if suites:
        with open(path, "a") as f:
            f.write(json.dumps({"case": report.nodeid, "suite": suites[0], "outcome": report.outcome}) + "\n")
