"""The exporter's pure parts and its connection pool, with fake hosts (no sandbox).

The fakes stand in for `quilt_ops.remote.SshTarget`: a connection that can fail
to open, die between scrapes, or hang until it is closed (a dead SSH read), so
that the pool's promises are shown without a network: connections reused,
back-off, deadlines, and stuck hosts that cannot fill the pool.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quilt_ops import cli, output
from quilt_ops import exporter as ex
from quilt_ops.checks import Check, HostHealth, Kind
from quilt_ops.errors import ConfigError, ConnectionLost, HostError, HostKeyUnknown, MissingTool, NotStarted
from quilt_ops.status import ExitStatus
from quilt_ops.sudo_password import SudoPasswordRefused
from tests import promtool

USAGE = int(ExitStatus.USAGE)


# ----------------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    "value, host, port",
    [
        ("127.0.0.1:9877", "127.0.0.1", 9877),
        ("localhost:0", "localhost", 0),
        (":9100", "0.0.0.0", 9100),
        ("[::1]:9877", "::1", 9877),
        (" 10.0.0.5:80 ", "10.0.0.5", 80),
    ],
)
def test_listen_addresses(value, host, port):
    address = ex.parse_listen(value)
    assert (address.host, address.port) == (host, port)


@pytest.mark.parametrize(
    "value, words",
    [
        ("", "HOST:PORT"),
        ("9877", "HOST:PORT"),
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:http", "the port must be a number"),
        ("127.0.0.1:70000", "the port must be a number"),
        ("127.0.0.1:-1", "the port must be a number"),
        ("::1:9877", "in brackets"),
        ("[localhost]:9877", "not an IPv6 address"),
        ("[::1]9877", "HOST:PORT"),
        ("a b:1", "HOST:PORT"),
        ("http://127.0.0.1:9877", "HOST:PORT"),
        (None, "HOST:PORT"),
        (True, "HOST:PORT"),
    ],
)
def test_bad_listen_addresses(value, words):
    with pytest.raises(ConfigError, match=words):
        ex.parse_listen(value)


def test_listen_address_shown_as_given():
    assert str(ex.parse_listen("[::1]:9877")) == "[::1]:9877"
    assert str(ex.parse_listen("127.0.0.1:9877")) == "127.0.0.1:9877"
    assert ex.parse_listen("[::1]:1").family == socket.AF_INET6


@pytest.mark.parametrize(
    "failures, seconds", [(-1, 0), (0, 0), (1, 1), (2, 2), (3, 4), (4, 8), (6, 32), (7, 60), (8, 60), (500, 60)]
)
def test_backoff_schedule(failures, seconds):
    assert ex.backoff(failures) == seconds


def test_backoff_with_other_bounds():
    assert [ex.backoff(n, first=0.5, most=3) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]


@pytest.mark.parametrize(
    "finished, now, min_interval, served_again",
    [
        (None, 100.0, 5.0, False),  # nothing yet
        (100.0, 100.0, 5.0, True),
        (100.0, 104.9, 5.0, True),
        (100.0, 105.0, 5.0, False),  # exactly min-interval later: scrape again
        (100.0, 200.0, 5.0, False),
        (100.0, 100.0, 0.0, False),  # 0: never served again
        (100.0, 99.0, 5.0, False),  # a clock that went back: scrape again
    ],
)
def test_min_interval(finished, now, min_interval, served_again):
    assert ex.fresh(finished, now, min_interval) is served_again


@pytest.mark.parametrize("value, seconds", [(None, 5.0), ("0", 0.0), ("2.5", 2.5), ("86400", 86400.0), (7, 7.0)])
def test_interval_option(value, seconds):
    assert ex.interval("--min-interval", value, 5.0) == seconds


@pytest.mark.parametrize("value", ["-1", "x", "86401", ""])
def test_bad_interval_option(value):
    with pytest.raises(ConfigError, match="--min-interval"):
        ex.interval("--min-interval", value, 5.0)


# ----------------------------------------------------------------------------- run_bounded


def test_run_bounded_keeps_to_parallel_and_returns_results():
    running, most = [0], [0]
    lock = threading.Lock()

    def job(n):
        def run():
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= 1
            return n * 10

        return run

    ran = ex.run_bounded([(n, job(n)) for n in range(7)], parallel=3, deadline=time.monotonic() + 5)
    assert {k: f.result() for k, f in ran.done.items()} == {n: n * 10 for n in range(7)}
    assert ran.late == [] and ran.not_started == []
    assert most[0] == 3


def test_run_bounded_leaves_a_stuck_job_at_the_deadline():
    release = threading.Event()
    started = time.monotonic()
    ran = ex.run_bounded(
        [("stuck", release.wait), ("quick", lambda: True), ("queued", lambda: True)],
        parallel=1,
        deadline=started + 0.2,
    )
    assert time.monotonic() - started < 1.0
    assert ran.late == ["stuck"]
    assert ran.not_started == ["quick", "queued"]
    release.set()


def test_run_bounded_hands_back_a_job_error():
    def boom():
        raise ValueError("x")

    ran = ex.run_bounded([("a", boom)], parallel=1, deadline=time.monotonic() + 5)
    with pytest.raises(ValueError):
        ran.done["a"].result()


# ----------------------------------------------------------------------------- the pool, with fake hosts


def healthy(name: str) -> HostHealth:
    return HostHealth(name, [Check(Kind.PROBE, "registry", ExitStatus.OK, "HTTP 200")])


class FakeHost:
    """A host's behaviour across connections (shared by every FakeTarget made for it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.opens = 0
        self.checks = 0
        self.open_error: Exception | None = None
        self.check_error: Exception | None = None
        #: The check blocks until the connection is closed (a dead SSH read) ...
        self.hang = False
        #: ... or until this is set, whatever happens to the connection (a thread truly stuck).
        self.stuck: threading.Event | None = None
        self.targets: list[FakeTarget] = []


class FakeTarget:
    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.name = host.name
        self.closed = threading.Event()
        self.opened = False
        host.targets.append(self)

    def open(self) -> None:
        self.host.opens += 1
        if self.host.open_error is not None:
            raise self.host.open_error
        self.opened = True

    def check_open(self) -> None:
        if self.closed.is_set() or not self.opened:
            raise NotStarted(f"lost the SSH connection to {self.name}")

    def close(self) -> None:
        self.closed.set()


def fake_check(target: FakeTarget) -> HostHealth:
    host = target.host
    host.checks += 1
    if host.stuck is not None:
        host.stuck.wait(10)
    if host.hang:
        target.closed.wait(10)
        raise ConnectionLost(f"lost the SSH connection to {target.name}")
    if host.check_error is not None:
        raise host.check_error
    return healthy(target.name)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def pool(*hosts: FakeHost, parallel: int = 10, timeout: float = 5.0, clock=None, lines=None):
    return ex.Connections(
        [FakeTarget(h) for h in hosts],
        lambda old: FakeTarget(old.host),
        fake_check,
        parallel,
        timeout,
        (lines if lines is not None else []).append,
        clock=clock or time.monotonic,
    )


def states(outcomes):
    return {o.report.host: o.up for o in outcomes}


def test_one_connection_per_host_kept_across_scrapes():
    a, b = FakeHost("a"), FakeHost("b")
    connections = pool(a, b)
    for _ in range(3):
        outcomes, _ = connections.scrape()
        assert states(outcomes) == {"a": True, "b": True}
    assert (a.opens, b.opens) == (1, 1)
    assert (a.checks, b.checks) == (3, 3)


def test_a_connection_that_died_between_scrapes_is_reopened_at_once():
    a = FakeHost("a")
    connections = pool(a)
    connections.scrape()
    a.targets[-1].close()  # the connection dropped while idle
    outcomes, _ = connections.scrape()
    assert states(outcomes) == {"a": True}
    assert a.opens == 2


def test_a_host_that_cannot_be_reached_waits_for_the_backoff():
    clock = Clock()
    a, b = FakeHost("a"), FakeHost("b")
    a.open_error = HostError("cannot connect to u@a:22: connection refused")
    connections = pool(a, b, clock=clock)
    outcomes, _ = connections.scrape()
    assert states(outcomes) == {"a": False, "b": True}
    assert outcomes[0].reason == "cannot connect to u@a:22: connection refused"
    assert outcomes[0].report.status == ExitStatus.UNKNOWN
    assert a.opens == 1 and a.targets[-1].closed.is_set()
    waits = []
    for expected in (1, 2, 4, 8):
        outcomes, _ = connections.scrape()  # within the back-off: not tried, reported down at once
        assert a.opens == len(waits) + 1
        assert "connection refused (next try in" in outcomes[0].reason
        clock.advance(expected + 0.01)
        connections.scrape()  # tried again, fails again
        waits.append(expected)
        assert a.opens == len(waits) + 1
    a.open_error = None
    clock.advance(16.01)
    outcomes, _ = connections.scrape()
    assert states(outcomes) == {"a": True, "b": True}
    assert connections.slots[0].failures == 0


def test_a_sudo_password_refused_is_never_tried_again():
    """Attack (review-attack): with a wrong sudo.password the exporter tried it again at every
    reconnect (once a minute, after the back-off): hundreds of failed sudo logins a day, which
    pam_faillock turns into the login user locked out. Tried once, then reported down."""
    clock = Clock()
    a = FakeHost("a")
    a.open_error = SudoPasswordRefused("sudo on a did not accept the password given (sudo.password)")
    connections = pool(a, clock=clock)
    for _ in range(5):
        outcomes, _ = connections.scrape()
        assert states(outcomes) == {"a": False}
        assert "did not accept the password given" in outcomes[0].reason
        clock.advance(61)
    assert a.opens == 1 and "not tried again until the exporter restarts" in outcomes[0].reason


def test_an_unknown_host_key_is_a_reason_to_be_down_never_trusted():
    a = FakeHost("a")
    a.open_error = HostKeyUnknown("host key of [a]:22 is not known (ssh-ed25519 SHA256:x); check it")
    lines = []
    outcomes, _ = pool(a, lines=lines).scrape()
    assert states(outcomes) == {"a": False}
    assert lines == ["a down: host key of [a]:22 is not known (ssh-ed25519 SHA256:x); check it"]


def test_a_host_that_answers_but_cannot_be_inspected_keeps_its_connection():
    clock = Clock()
    a = FakeHost("a")
    a.check_error = MissingTool("curl is not installed on a (quilt-ops needs it there)")
    connections = pool(a, clock=clock)
    for _ in range(3):
        outcomes, _ = connections.scrape()
        assert states(outcomes) == {"a": False}
    assert a.opens == 1 and a.checks == 3
    assert not a.targets[0].closed.is_set()


def test_a_bug_in_a_check_is_reported_by_type_only():
    a = FakeHost("a")
    a.check_error = KeyError("secret-looking text")
    outcomes, _ = pool(a).scrape()
    assert outcomes[0].reason == "internal error (KeyError)"
    assert "secret" not in str(outcomes[0].report.as_dict())


def test_a_hanging_host_is_down_within_the_scrape_timeout_and_its_reader_woken():
    a, b = FakeHost("a"), FakeHost("b")
    connections = pool(a, b, timeout=0.3)
    connections.scrape()  # connected, both up
    a.hang = True
    started = time.monotonic()
    outcomes, seconds = connections.scrape()
    assert time.monotonic() - started < 1.0 and 0.3 <= seconds < 1.0
    assert states(outcomes) == {"a": False, "b": True}
    assert outcomes[0].reason == "no answer within the scrape timeout (0.3s)"
    # Its connection was closed, which is what wakes a thread blocked reading it.
    assert a.targets[0].closed.is_set()
    slot = connections.slots[0]
    deadline = time.monotonic() + 2
    while slot.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not slot.busy


def test_stuck_hosts_cannot_fill_the_pool():
    """parallel 1: a host whose thread stays stuck (even after its connection is closed) gets
    no second thread; the next scrape reports it down at once and checks the others."""
    stuck, b, c = FakeHost("stuck"), FakeHost("b"), FakeHost("c")
    stuck.stuck = threading.Event()
    connections = pool(stuck, b, c, parallel=1, timeout=0.3)
    outcomes, _ = connections.scrape()
    assert states(outcomes) == {"stuck": False, "b": False, "c": False}
    assert "ran out first" in outcomes[1].reason  # b and c never got their turn
    threads = threading.active_count()
    for _ in range(3):
        outcomes, seconds = connections.scrape()
        assert states(outcomes) == {"stuck": False, "b": True, "c": True}
        assert seconds < 0.3
        assert "has not ended" in outcomes[0].reason
    assert stuck.checks == 1  # one thread for it, ever
    assert threading.active_count() <= threads
    stuck.stuck.set()


def test_only_changes_are_logged():
    clock = Clock()
    a = FakeHost("a")
    lines = []
    connections = pool(a, clock=clock, lines=lines)
    connections.scrape()
    connections.scrape()
    a.targets[-1].close()
    a.open_error = HostError("cannot connect to u@a:22: connection refused")
    connections.scrape()
    connections.scrape()
    clock.advance(1.01)
    connections.scrape()
    a.open_error = None
    clock.advance(2.01)
    connections.scrape()
    assert lines == ["a up", "a down: cannot connect to u@a:22: connection refused", "a up"]


def test_close_closes_every_connection():
    a, b = FakeHost("a"), FakeHost("b")
    connections = pool(a, b)
    connections.scrape()
    connections.close()
    assert a.targets[-1].closed.is_set() and b.targets[-1].closed.is_set()


# ----------------------------------------------------------------------------- cache and metrics


def test_a_second_scrape_within_min_interval_serves_the_last_results():
    clock = Clock()
    a = FakeHost("a")
    exporter = ex.Exporter(pool(a, clock=clock), min_interval=5, clock=clock)
    first = exporter.results()
    second = exporter.results()
    assert (first.cached, second.cached) == (False, True)
    assert a.checks == 1
    clock.advance(5)
    assert exporter.results().cached is False
    assert a.checks == 2


def test_concurrent_scrapes_share_one_run():
    a = FakeHost("a")
    gate = threading.Event()
    a.stuck = gate
    exporter = ex.Exporter(pool(a), min_interval=5)
    results = []
    threads = [threading.Thread(target=lambda: results.append(exporter.results())) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join(5)
    assert a.checks == 1
    assert sorted(r.cached for r in results) == [False, True, True]


def scrape_text(exporter: ex.Exporter) -> str:
    registry = CollectorRegistry()
    registry.register(ex.Collector(exporter))
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_are_healths_own_plus_up_and_durations():
    a, down = FakeHost("a"), FakeHost("down")
    down.open_error = HostError("cannot connect to u@down:22: connection refused")
    exporter = ex.Exporter(pool(a, down), min_interval=5)
    text = scrape_text(exporter)
    got = samples(text)
    reports = [healthy("a"), HostHealth("down", [Check(Kind.HOST, "ssh", ExitStatus.UNKNOWN, "x")])]
    # One definition: every sample of `health --format prometheus` is served as it is.
    for key, value in samples(output.health_prometheus(reports)).items():
        assert got[key] == value, key
    assert got[("quilt_up", (("host", "a"),))] == 1
    assert got[("quilt_up", (("host", "down"),))] == 0
    assert got[("quilt_health_status", (("host", "down"),))] == 3
    assert ("quilt_check_duration_seconds", (("host", "a"),)) in got
    assert got[("quilt_scrape_duration_seconds", ())] >= 0
    assert got[("quilt_scrape_cached", ())] == 0
    assert samples(scrape_text(exporter))[("quilt_scrape_cached", ())] == 1
    assert "# TYPE quilt_up gauge" in text
    promtool.check_metrics(text)


# ----------------------------------------------------------------------------- the HTTP server


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_serve_answers_metrics_and_stops_cleanly(capsys):
    a = FakeHost("a")
    exporter = ex.Exporter(pool(a), min_interval=5)
    server = ex.bind(ex.parse_listen("127.0.0.1:0"))
    port = server.server_address[1]
    stop = threading.Event()
    thread = threading.Thread(target=ex.serve, args=(server, exporter, 1, "test", stop))
    thread.start()
    try:
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and 'quilt_up{host="a"} 1.0' in body
        assert "process_resident_memory_bytes" in body
        promtool.check_metrics(body)
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        assert get(f"http://127.0.0.1:{port}/other")[0] == 404
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert a.targets[-1].closed.is_set()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"quilt-ops exporter: serving http://127.0.0.1:{port}/metrics for 1 host(s) (test)"
    assert out[-1] == "quilt-ops exporter: stopped; connections closed"


# ----------------------------------------------------------------------------- the command line


@pytest.fixture
def config(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith(("FABRIC_QUILT_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    path = tmp_path / "fabric.yaml"
    path.write_text(f'{{"quilt": {{"known_hosts": "{tmp_path / "known_hosts"}"}}}}')
    return str(path)


def one_error(captured) -> str:
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--listen", "9877"], "--listen must be HOST:PORT"),
        (["--listen", "127.0.0.1:99999"], "the port must be a number"),
        (["--listen", "203.0.113.7:9877"], "cannot listen on 203.0.113.7:9877: not an address of this machine"),
        (["--parallel", "0"], "--parallel must be between 1 and 200"),
        (["--scrape-timeout", "soon"], "--scrape-timeout must be a number of seconds"),
        (["--min-interval", "-1"], "--min-interval must be between 0 and 86400"),
    ],
)
def test_bad_options_are_one_error_line(config, capsys, args, words):
    code = cli.run(["-f", config, "-H", "127.0.0.1:1", "exporter", *args])
    assert code == USAGE
    assert words in one_error(capsys.readouterr())


def test_no_host_is_one_error_line(config, capsys):
    assert cli.run(["-f", config, "exporter", "--listen", "127.0.0.1:0"]) == USAGE
    assert "no host given" in one_error(capsys.readouterr())


def test_a_listen_address_in_use_is_one_error_line(config, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = cli.run(["-f", config, "-H", "127.0.0.1:1", "exporter", "--listen", f"127.0.0.1:{port}"])
    assert code == USAGE
    assert one_error(capsys.readouterr()) == f"Error: cannot listen on 127.0.0.1:{port}: address already in use"


def test_a_host_given_twice_is_one_error_line(config, capsys):
    code = cli.run(["-f", config, "-H", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:1", "exporter", "--listen", "127.0.0.1:0"])
    assert code == USAGE
    assert one_error(capsys.readouterr()) == "Error: host 127.0.0.1:1 is given more than once"
