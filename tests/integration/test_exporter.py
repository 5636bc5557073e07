"""``exporter``: the real program serving /metrics for sandbox hosts, and a real Prometheus scraping it.

Several hosts are several sshd's in front of the worker's host (``reshaped(aliases=N)``)
or its twin (another sshd and login user in front of the same containers, which
survives ``stop_sshd``). Remote commands and logins are counted from sshd's logs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import promtool
from tests.tool import Running, wait_until

pytestmark = pytest.mark.sandbox


class Exporter:
    """A running ``fab ... exporter``: its port, scrapes, and what it printed."""

    def __init__(self, run: Running) -> None:
        self.run = run
        printed = run.wait_for("quilt-ops exporter: serving http://", timeout=60)
        self.port = int(re.search(r"serving http://127\.0\.0\.1:(\d+)/metrics", printed).group(1))
        self.stderr = ""

    def text(self, timeout: float = 60) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=timeout) as response:
            assert response.status == 200
            return response.read().decode()

    def scrape(self) -> dict[tuple[str, str | None], float]:
        """One scrape: (metric, host label) -> value."""
        return {
            (sample.name, sample.labels.get("host")): sample.value
            for family in text_string_to_metric_families(self.text())
            for sample in family.samples
        }

    def stop(self) -> subprocess.CompletedProcess:
        self.run.proc.send_signal(signal.SIGTERM)
        result = self.run.finish(timeout=30)
        self.stderr = result.stderr
        return result


@contextmanager
def exporter(host, hosts: list[str], *args: str, **kw) -> Iterator[Exporter]:
    run = host.start("exporter", "--listen", "127.0.0.1:0", *args, host=",".join(hosts), **kw)
    try:
        running = Exporter(run)
        yield running
        result = running.stop()
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.rstrip().endswith("quilt-ops exporter: stopped; connections closed")
        assert "Traceback" not in result.stdout + result.stderr
    finally:
        if run.proc.poll() is None:
            run.kill()


def ups(samples, hosts) -> dict[str, float]:
    return {h: samples[("quilt_up", h)] for h in hosts}


@pytest.fixture
def fleet(host):
    with host.reshaped(aliases=3):
        yield host


def test_every_host_checked_with_one_command_over_a_connection_kept_open(fleet):
    hosts = fleet.aliases[:4]
    logins, commands = fleet.accepted_logins(), fleet.sshd_commands()
    with exporter(fleet, hosts, "--min-interval", "0") as running:
        assert fleet.accepted_logins() == logins  # connections are opened on the first scrape, not before
        first = running.scrape()
        for h in hosts:
            assert first[("quilt_up", h)] == 1
            assert first[("quilt_health_status", h)] == 0
            assert first[("quilt_probe_http_status", h)] == 200
            assert first[("quilt_check_duration_seconds", h)] > 0
        assert first[("quilt_scrape_cached", None)] == 0
        assert 0 < first[("quilt_scrape_duration_seconds", None)] < 10
        wait_until("one login and one command per host", lambda: fleet.sshd_commands() - commands >= 4, 10)
        assert fleet.accepted_logins() - logins == 4
        assert fleet.sshd_commands() - commands == 4
        for scrape in (2, 3):
            assert ups(running.scrape(), hosts) == dict.fromkeys(hosts, 1)
            wait_until(f"scrape {scrape}'s commands", lambda n=scrape: fleet.sshd_commands() - commands >= 4 * n, 10)
            assert fleet.sshd_commands() - commands == 4 * scrape  # one remote command per host per scrape
            assert fleet.accepted_logins() - logins == 4  # the same connections
    lines = [line for line in running.stderr.splitlines() if line.strip()]
    assert sorted(lines) == sorted(f"exporter: {h} up" for h in hosts)


def test_a_second_scrape_within_min_interval_runs_no_remote_command(host):
    with exporter(host, [host.alias], "--min-interval", "60") as running:
        commands = host.sshd_commands()
        first = running.scrape()
        assert first[("quilt_scrape_cached", None)] == 0
        wait_until("the first scrape's command", lambda: host.sshd_commands() > commands, 10)
        after_first = host.sshd_commands()
        assert after_first - commands == 1
        second = running.scrape()
        assert second[("quilt_scrape_cached", None)] == 1
        assert second[("quilt_up", host.alias)] == 1
        assert second[("quilt_scrape_duration_seconds", None)] == first[("quilt_scrape_duration_seconds", None)]
        assert host.sshd_commands() == after_first


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_it_cleanly_closing_every_connection(fleet, sig):
    hosts = fleet.aliases[:2]
    wait_until("no connection left from earlier tests", lambda: fleet.ssh_sessions() == [], 10)
    run = fleet.start("exporter", "--listen", "127.0.0.1:0", host=",".join(hosts))
    try:
        running = Exporter(run)
        assert ups(running.scrape(), hosts) == dict.fromkeys(hosts, 1)
        assert fleet.ssh_sessions()  # the connections are kept open between scrapes
        run.proc.send_signal(sig)
        result = run.finish(timeout=30)
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "quilt-ops exporter: stopped; connections closed"
    assert sorted(result.stderr.splitlines()) == sorted(f"exporter: {h} up" for h in hosts)
    wait_until("every connection closed", lambda: fleet.ssh_sessions() == [], 10)


def test_a_stopped_sshd_is_quilt_up_0_within_the_scrape_timeout_and_it_reconnects(host):
    with host.twin(host.host_key_id(), host.env_secret()) as twin:
        hosts = [host.alias, twin.alias]
        with exporter(
            host, hosts, "--min-interval", "0", "--scrape-timeout", "5", ssh_config=twin.ssh_config
        ) as running:
            assert ups(running.scrape(), hosts) == {host.alias: 1, twin.alias: 1}
            host.stop_sshd()
            started = time.monotonic()
            samples = running.scrape()
            assert time.monotonic() - started < 5
            assert ups(samples, hosts) == {host.alias: 0, twin.alias: 1}
            assert samples[("quilt_health_status", host.alias)] == 3
            assert samples[("quilt_health_status", twin.alias)] == 0
            host.sandbox.up(host.shape)  # sshd back, on the same port: reconnected after the back-off
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and running.scrape()[("quilt_up", host.alias)] != 1:
                time.sleep(0.5)
            assert ups(running.scrape(), hosts) == {host.alias: 1, twin.alias: 1}
    lines = [line for line in running.stderr.splitlines() if line.startswith(f"exporter: {host.alias} ")]
    assert lines[0] == f"exporter: {host.alias} up"
    assert lines[1].startswith(f"exporter: {host.alias} down: ")
    assert lines[2:] == [f"exporter: {host.alias} up"]
    assert "Traceback" not in running.stderr


def test_a_connection_that_hangs_never_blocks_a_scrape_past_the_timeout(host):
    """The host's sshd sessions are frozen (SIGSTOP): the open connection stays up but nothing
    answers on it, as with a dead network. The scrape reports it down at its timeout, closes it
    (waking the thread reading it), and a later scrape reconnects on a new connection."""
    with host.twin(host.host_key_id(), host.env_secret()) as twin:
        hosts = [host.alias, twin.alias]
        frozen: list[int] = []
        try:
            with exporter(
                host, hosts, "--min-interval", "0", "--scrape-timeout", "3", ssh_config=twin.ssh_config
            ) as running:
                assert ups(running.scrape(), hosts) == {host.alias: 1, twin.alias: 1}
                frozen = host.ssh_sessions()
                assert frozen
                for pid in frozen:
                    os.kill(pid, signal.SIGSTOP)
                started = time.monotonic()
                samples = running.scrape()
                assert 3 <= time.monotonic() - started < 4.5
                assert ups(samples, hosts) == {host.alias: 0, twin.alias: 1}
                started = time.monotonic()
                assert ups(running.scrape(), hosts) == {host.alias: 0, twin.alias: 1}  # waits for the back-off
                assert time.monotonic() - started < 2
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and running.scrape()[("quilt_up", host.alias)] != 1:
                    time.sleep(0.3)
                assert ups(running.scrape(), hosts) == {host.alias: 1, twin.alias: 1}
        finally:
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
    lines = [line for line in running.stderr.splitlines() if line.startswith(f"exporter: {host.alias} ")]
    assert lines == [
        f"exporter: {host.alias} up",
        f"exporter: {host.alias} down: no answer within the scrape timeout (3s)",
        f"exporter: {host.alias} up",
    ]


def identity_file(host) -> str:
    return next(
        line.split(None, 1)[1]
        for line in host.ssh_config.read_text().splitlines()
        if line.strip().startswith("IdentityFile")
    )


def test_an_unknown_host_key_is_down_with_the_reason_and_the_others_are_served(fleet, tmp_path):
    known_port, unknown_port = fleet.ssh_ports[1], fleet.ssh_ports[2]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    common = f"    HostName 127.0.0.1\n    User {fleet.login_user}\n    IdentityFile {identity_file(fleet)}\n"
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host known\n{common}    Port {known_port}\n    UserKnownHostsFile {fleet.known_hosts}\n"
        f"Host unknown\n{common}    Port {unknown_port}\n    UserKnownHostsFile {empty}\n"
    )
    config = fleet.write_config(tmp_path / "c.yaml", known_hosts=str(tmp_path / "quilt_known_hosts"))
    logins = fleet.accepted_logins()
    with exporter(fleet, ["known", "unknown"], "--min-interval", "0", config=config, ssh_config=ssh_config) as running:
        for _ in range(2):
            samples = running.scrape()
            assert ups(samples, ["known", "unknown"]) == {"known": 1, "unknown": 0}
        wait_until("the known host's login", lambda: fleet.accepted_logins() > logins, 10)
        assert fleet.accepted_logins() - logins == 1  # the unknown host was never authenticated to
    lines = [line for line in running.stderr.splitlines() if line.startswith("exporter: unknown ")]
    assert lines == [
        f"exporter: unknown down: host key of [127.0.0.1]:{unknown_port} is not known "
        + lines[0].split(" is not known ", 1)[1]
    ]
    assert f"ssh-keyscan -p {unknown_port} 127.0.0.1" in lines[0]
    assert not (tmp_path / "quilt_known_hosts").exists()  # never recorded


@contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a host that never answers)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_a_host_that_never_answers_is_down_within_the_scrape_timeout(host):
    with silent_listener() as port:
        silent = f"127.0.0.1:{port}"
        with exporter(host, [host.alias, silent], "--min-interval", "0", "--scrape-timeout", "2") as running:
            started = time.monotonic()
            samples = running.scrape()
            took = time.monotonic() - started
            assert 2 <= took < 4
            assert ups(samples, [host.alias, silent]) == {host.alias: 1, silent: 0}
            started = time.monotonic()
            samples = running.scrape()  # within the back-off: reported at once, the others checked
            assert time.monotonic() - started < 2
            assert ups(samples, [host.alias, silent]) == {host.alias: 1, silent: 0}
    lines = [line for line in running.stderr.splitlines() if line.startswith(f"exporter: {silent} ")]
    assert len(lines) == 1 and lines[0].startswith(f"exporter: {silent} down: "), running.stderr
    assert "within" in lines[0]


# ----------------------------------------------------------------------------- a real Prometheus


def prometheus_binary() -> str:
    """Debian's prometheus, installed when missing (as root with apt-get), else the test is skipped
    (failed when QUILT_OPS_REQUIRE_SANDBOX=1)."""
    found = shutil.which("prometheus")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
            env=env,
            capture_output=True,
            timeout=600,
        )
        found = shutil.which("prometheus")
    if not found:
        if os.environ.get("QUILT_OPS_REQUIRE_SANDBOX") == "1":
            pytest.fail("prometheus is not installed (Debian package prometheus)")
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    return found


@contextmanager
def prometheus(tmp_path: Path, target: int, interval: float) -> Iterator[str]:
    """A Prometheus server on a loopback port scraping the exporter every ``interval`` seconds;
    yields its base URL; stopped (then killed) at the end."""
    prometheus_binary()  # skipped (or failed in CI) with its reason when missing
    jobs = [{"job_name": "quilt", "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}]
    with promtool.server(tmp_path, jobs, interval) as url:
        yield url


def query(url: str, expression: str) -> dict[str, float]:
    """Prometheus's instant query: host label -> value."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}") as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return {item["metric"].get("host", ""): float(item["value"][1]) for item in doc["data"]["result"]}


def test_a_real_prometheus_scrapes_every_host_and_sees_a_stopped_sshd(host, tmp_path):
    scrape_timeout, interval = 3.0, 4.0
    with host.reshaped(aliases=2), host.twin(host.host_key_id(), host.env_secret()) as twin:
        hosts = [*host.aliases, twin.alias]
        with (
            exporter(
                host,
                hosts,
                "--min-interval",
                "0",
                "--scrape-timeout",
                f"{scrape_timeout:g}",
                ssh_config=twin.ssh_config,
            ) as running,
            prometheus(tmp_path, running.port, interval) as url,
        ):
            wait_until(
                "quilt_health_status for every host",
                lambda: set(query(url, "quilt_health_status")) == set(hosts),
                30,
                interval=0.5,
            )
            assert query(url, "quilt_health_status") == dict.fromkeys(hosts, 0.0)
            assert query(url, "quilt_up") == dict.fromkeys(hosts, 1.0)
            assert query(url, 'up{job="quilt"}') == {"": 1.0}  # the scrape itself succeeded
            host.stop_sshd()
            stopped = time.monotonic()
            expected = {**dict.fromkeys(host.aliases, 0.0), twin.alias: 1.0}
            wait_until(
                "quilt_up 0 for the stopped host's sshd's",
                lambda: query(url, "quilt_up") == expected,
                interval + scrape_timeout + 5,
                interval=0.25,
            )
            # Prometheus saw it at its next scrape, and the scrape itself never failed.
            assert time.monotonic() - stopped <= interval + scrape_timeout + 5
            assert query(url, 'up{job="quilt"}') == {"": 1.0}
            assert query(url, "quilt_health_status")[twin.alias] == 0.0
