"""Fixtures of the reliability suites: every case ends by checking that nothing was lost."""

import pytest

from tests.checks import losses, record_losses


@pytest.fixture
def survived(request, host, aws):
    """Call at the end of a case: checks and records that no file, key or health was lost."""
    baseline = host.env_file.read_bytes()

    def check(compare_bytes: bool = True):
        lost = losses(host, aws, baseline if compare_bytes else None)
        record_losses(request.node.nodeid, lost)
        assert not any(lost.values()), lost

    return check
