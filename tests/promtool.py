"""Prometheus's own tools for the tests: ``promtool`` and the ``prometheus`` server (Debian's
``prometheus`` package, in scripts/debian-packages). Missing, a test using them is skipped,
or failed when QUILT_OPS_REQUIRE_SANDBOX=1 (CI): they are never silently left out there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        why = f"{name} is not installed (Debian package prometheus, scripts/install)"
        if os.environ.get("QUILT_OPS_REQUIRE_SANDBOX") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return found


def check_metrics(text: str) -> None:
    """``promtool check metrics``: no problem at all (its lint included)."""
    result = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr + "\n" + text
    )


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """promtool with these arguments (bounded)."""
    return subprocess.run([binary("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)
