"""The sandbox tier relies on ``--dist loadgroup``: the modules marked ``xdist_group("sandbox-self")``
share one host (NAMES) and must run on one worker. pytest 9.2 names items from ``Node._id``, so
pytest-xdist 3.8's renaming of ``item._nodeid`` (how it marks a group) stopped working: the group's
tests were spread over all workers, which brought the NAMES host down under each other (a fresh
clone's .ci/run failed that way). This runs a tiny session the way scripts/test does and checks
that a group stays on one worker.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

MODULE = textwrap.dedent(
    """
    import os
    import pytest

    pytestmark = [pytest.mark.xdist_group("together")]

    @pytest.mark.parametrize("i", range(6))
    def test_{name}(i):
        with open(os.environ["WORKERS_LOG"], "a") as log:
            log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
    """
)

LOOSE = textwrap.dedent(
    """
    import pytest

    @pytest.mark.parametrize("i", range(12))
    def test_loose(i):
        pass
    """
)


def test_a_group_runs_on_one_worker(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(MODULE.replace("{name}", name))
    (tmp_path / "test_loose.py").write_text(LOOSE)
    log = tmp_path / "workers.log"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "3",
            "--dist",
            "loadgroup",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={"WORKERS_LOG": str(log), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    workers = log.read_text().split()
    assert len(workers) == 12
    assert len(set(workers)) == 1, f"one group ran on {sorted(set(workers))}"
