"""The real ``quilt-ops exporter`` as Prometheus meets it, without a sandbox host: a real
Prometheus scraping it over TLS with basic auth (``/metrics`` and ``/probe?target=`` with the
README's relabelling), and 1,100 idle connections under a 1024 descriptor limit.

The hosts are ``/probe`` targets that refuse SSH (``127.0.0.1:1``): quilt_up 0 at once, and no
static host is needed (quilt.exporter_targets alone)."""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt

from tests import promtool
from tests.tool import Running, executable, wait_until
from tests.unit.test_exporter_web import tls_pair

TARGET = "127.0.0.1:1"  # nothing listens: connection refused


def write_config(folder: Path) -> Path:
    path = folder / "fabric.yaml"
    quilt = {"known_hosts": str(folder / "known_hosts"), "exporter_targets": [TARGET], "connect_timeout": 2}
    path.write_text(json.dumps({"quilt": quilt}))
    return path


@contextmanager
def exporter(folder: Path, *args: str, nofile: int | None = None) -> Iterator[tuple[int, Running]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FABRIC_", "AWS_"))}

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [executable("quilt-ops"), "-f", str(write_config(folder)), "exporter", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=limit,
    )
    run = Running(proc)
    try:
        printed = run.wait_for("quilt-ops exporter: serving ", timeout=60)
        port = int(re.search(r"serving https?://127\.0\.0\.1:(\d+)/metrics", printed).group(1))
        yield port, run
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0
        assert "".join(run.out).rstrip().endswith("quilt-ops exporter: stopped; connections closed")
    finally:
        if proc.poll() is None:
            run.kill()


@contextmanager
def prometheus(folder: Path, scrape_configs: list[dict]) -> Iterator[str]:
    """A real Prometheus with these scrape configs; yields its URL; stopped (then killed) at the end."""
    with promtool.server(folder, scrape_configs) as url:
        yield url


def query(url: str, expression: str) -> dict[tuple[str, str], float]:
    """Prometheus's instant query: (job, host) -> value."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}", timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return {
        (item["metric"].get("job", ""), item["metric"].get("host", "")): float(item["value"][1])
        for item in doc["data"]["result"]
    }


def test_a_real_prometheus_scrapes_metrics_and_probe_over_tls_with_basic_auth(tmp_path):
    crt, key = tls_pair(tmp_path)
    hashed = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(rounds=10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {crt.name}\n  key_file: {key.name}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    with exporter(tmp_path, "--web.config.file", str(web)) as (port, run):
        assert f"serving https://127.0.0.1:{port}/metrics" in "".join(run.out)
        secured = {
            "scheme": "https",
            "basic_auth": {"username": "prometheus", "password": "scrape-pw"},
            "tls_config": {"ca_file": str(crt)},
        }
        jobs = [
            {"job_name": "quilt", **secured, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
            {  # the README's multi-target relabelling
                "job_name": "quilt-probe",
                **secured,
                "metrics_path": "/probe",
                "static_configs": [{"targets": [TARGET]}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": f"127.0.0.1:{port}"},
                ],
            },
            {"job_name": "no-password", "scheme": "https", "tls_config": {"ca_file": str(crt)},
             "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
        ]  # fmt: skip
        with prometheus(tmp_path, jobs) as url:
            wait_until(
                "every job scraped once",
                lambda: {job for job, _ in query(url, "up")} == {"quilt", "quilt-probe", "no-password"},
                60,
                interval=0.5,
            )
            up = query(url, "up")
            assert up[("quilt", "")] == 1 and up[("quilt-probe", "")] == 1, up
            assert up[("no-password", "")] == 0  # 401
            wait_until("the probed host's quilt_up", lambda: query(url, "quilt_up"), 30, interval=0.5)
            assert query(url, "quilt_up") == {("quilt-probe", TARGET): 0.0}
            assert query(url, "quilt_health_status") == {("quilt-probe", TARGET): 3.0}
            assert set(query(url, "quilt_build_info")) == {("quilt", ""), ("quilt-probe", "")}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_1100_idle_connections_under_a_1024_descriptor_limit_do_not_stop_a_scrape(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1300:  # this test holds the 1,100 client ends
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    idle: list[socket.socket] = []
    try:
        with exporter(tmp_path, nofile=1024) as (port, run):
            for _ in range(1100):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.5)
            started = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as response:
                body = response.read().decode()
            assert response.status == 200 and "quilt_build_info" in body
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/probe?target={TARGET}", timeout=20) as response:
                assert f'quilt_up{{host="{TARGET}"}} 0.0' in response.read().decode()
            assert time.monotonic() - started < 10
            # the newest idle ones are still held (the cap is 100), the oldest were closed
            assert run.proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_probe_target_not_allowed_is_403_and_never_connects(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    other = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with exporter(tmp_path) as (port, _):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/probe?target={other}", timeout=10)
                raise AssertionError("served")
            except urllib.error.HTTPError as e:
                assert e.code == 403
            try:
                listener.accept()[0].close()
                raise AssertionError("the exporter connected to a target not allowed")
            except TimeoutError:
                pass
    finally:
        listener.close()
