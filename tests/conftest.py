import os

import pytest

from tests.sandbox import bring_up


@pytest.fixture(scope="session")
def sandbox():
    """The sandbox host, brought up once per test session.

    Skips with the reason when it cannot be had (no docker, no sshd, not root),
    unless QUILT_OPS_REQUIRE_SANDBOX=1 (set by .ci/run) turns that into a failure.
    """
    box, reason = bring_up()
    if box is None:
        if os.environ.get("QUILT_OPS_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"sandbox required but unavailable: {reason}")
        pytest.skip(f"sandbox unavailable: {reason}")
    return box


@pytest.fixture
def host(sandbox):
    """The sandbox, restored to a healthy state after the test."""
    yield sandbox
    sandbox.restore()
