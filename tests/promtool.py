"""Prometheus's own tools for the tests: ``promtool`` and the ``prometheus`` server (Debian's
``prometheus`` package, in scripts/debian-packages). Missing, a test using them is skipped,
or failed when QUILT_OPS_REQUIRE_SANDBOX=1 (CI): they are never silently left out there."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(folder: Path, scrape_configs: list[dict], interval: float = 1.0) -> Iterator[str]:
    """A real Prometheus on a loopback port with these scrape configs, scraping every
    ``interval`` seconds; yields its base URL; stopped (then killed) at the end."""
    from tests.tool import wait_until

    port = free_port()
    config = folder / "prometheus.yml"
    every = f"{interval:g}s"
    config.write_text(
        json.dumps({"global": {"scrape_interval": every, "scrape_timeout": every}, "scrape_configs": scrape_configs})
    )
    log_path = folder / "prometheus.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until("prometheus ready", ready, 60, interval=0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
