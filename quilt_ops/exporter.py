"""``quilt-ops exporter``: health as a Prometheus exporter, over SSH connections kept open.

A scrape of ``/metrics`` runs `quilt_ops.health.collect` on every host (one
remote command each), at most ``parallel`` hosts at once, and serves the metric families
``health --format prometheus`` prints (`quilt_ops.metrics`, the one
definition of those metrics), with ``quilt_up{host}`` as the scrape saw it,
plus each host's check time and the scrape's own time. A second scrape within ``min_interval`` of the
last one is served the last results without touching any host.

Connections (`Connections`): one per host, opened on the first scrape that
needs it and kept open for the next ones, host keys checked as everywhere
(`quilt_ops.ssh`: an unknown or changed key is that host's reason to be down,
never trusted). A connection that fails is closed; the host is tried again
only after a back-off (`backoff`: 1 s, 2 s, 4 s... up to a minute), and until
then reported down at once with its last reason.

Deadlines (`run_bounded`): a scrape waits for its hosts until
``scrape_timeout`` and no longer. A host still busy then is reported down,
its connection is closed (so the thread stuck reading it wakes up and ends)
and its thread is forgotten: it no longer counts against ``parallel``, and the
host gets no new thread until that one has ended, so hosts that hang can
neither fill the pool nor pile up threads (at most one per host).

``/probe?target=HOST`` (`Probes`) checks one host of quilt.exporter_targets,
each with its own `Exporter`; a target not in that list is refused before
anything is opened for it. The HTTP(S) server (`quilt_ops.http_server`, TLS
and basic auth from `quilt_ops.web_config`) is bound before any host is
contacted; SIGINT and SIGTERM stop it and close every connection. prometheus_client is imported
here only, so the other tasks do not pay for it.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qs, urlparse

from . import http_server
from .checks import HostHealth, unreachable
from .config import Settings
from .errors import ConfigError, ConnectionLost, HostError, QuiltError
from .sudo_password import SudoPasswordRefused

DEFAULT_LISTEN = "127.0.0.1:9877"
DEFAULT_SCRAPE_TIMEOUT = 10.0
#: Hosts checked at once: 20 hosts are one wave (each check costs the exporter a few ms of CPU).
DEFAULT_PARALLEL = 20
DEFAULT_MIN_INTERVAL = 5.0
#: Back-off before reconnecting to a host: the first wait, and the longest.
BACKOFF_FIRST = 1.0
BACKOFF_MOST = 60.0

K = TypeVar("K")
V = TypeVar("V")


# ----------------------------------------------------------------------------- decisions (pure)


@dataclass(frozen=True)
class ListenAddress:
    """Where the exporter listens."""

    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: Any) -> ListenAddress:
    """``--listen``: ``HOST:PORT``, ``[IPv6]:PORT``, or ``:PORT`` (every IPv4 interface).

    Port 0 takes any free port (the line printed at start says which).
    """
    text = str(value).strip() if isinstance(value, str) else ""
    bad = ConfigError(f"--listen must be HOST:PORT (for example {DEFAULT_LISTEN}), not {value!r}")
    if not text or any(ch.isspace() for ch in text) or "/" in text:
        raise bad
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise bad
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"--listen: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise bad
        if ":" in host:
            raise ConfigError(f"--listen: put an IPv6 address in brackets ([{host}]:{port}), not {value!r}")
        host = host or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen: the port must be a number from 0 to 65535, not {port!r}")
    return ListenAddress(host, int(port))


def interval(option: str, value: Any, default: float) -> float:
    """A number of seconds from 0 (0: never) to a day; ``default`` when not given."""
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be a number of seconds, not {value!r}") from None
    if not 0 <= number <= 86400:
        raise ConfigError(f"{option} must be between 0 and 86400 seconds, not {value}")
    return number


def connections_option(value: Any) -> int:
    """``--max-connections``: from 4 to 10000 (default `http_server.DEFAULT_MAX_CONNECTIONS`)."""
    if value is None:
        return http_server.DEFAULT_MAX_CONNECTIONS
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--max-connections must be a whole number, not {value!r}") from None
    if not 4 <= number <= 10000:
        raise ConfigError(f"--max-connections must be between 4 and 10000, not {number}")
    return number


def backoff(failures: int, first: float = BACKOFF_FIRST, most: float = BACKOFF_MOST) -> float:
    """Seconds to wait before reconnecting after ``failures`` failed attempts in a row:
    none before the first, then ``first``, doubling, at most ``most``."""
    if failures <= 0:
        return 0.0
    return float(min(most, first * 2 ** min(failures - 1, 32)))


def fresh(finished: float | None, now: float, min_interval: float) -> bool:
    """Whether results that were ready at ``finished`` may be served again at ``now``."""
    return finished is not None and 0 <= now - finished < min_interval


# ----------------------------------------------------------------------------- a bounded pool that forgets


@dataclass
class Bounded(Generic[K, V]):
    """How `run_bounded` ended: the jobs that finished, those still running at the
    deadline (left to end on their own), and those never started."""

    done: dict[K, Future[V]] = field(default_factory=dict)
    late: list[K] = field(default_factory=list)
    not_started: list[K] = field(default_factory=list)


def _run_into(future: Future[V], job: Callable[[], V]) -> None:
    try:
        future.set_result(job())
    except BaseException as e:  # handed to the caller through the future
        future.set_exception(e)


def run_bounded(
    jobs: Sequence[tuple[K, Callable[[], V]]],
    parallel: int,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> Bounded[K, V]:
    """Runs ``jobs`` on daemon threads, at most ``parallel`` at once, until ``deadline``.

    A job still running at the deadline is not waited for: its thread is left
    to end on its own and no longer counts against ``parallel`` (there is no
    pool for it to fill). Stopping it is the caller's business.
    """
    pending = list(jobs)
    running: dict[Future[V], K] = {}
    result: Bounded[K, V] = Bounded()
    while pending or running:
        while pending and len(running) < max(1, parallel):
            key, job = pending.pop(0)
            future: Future[V] = Future()
            future.set_running_or_notify_cancel()
            threading.Thread(target=_run_into, args=(future, job), name=f"exporter {key}", daemon=True).start()
            running[future] = key
        left = deadline - clock()
        if left <= 0:
            break
        finished, _ = wait(list(running), timeout=left, return_when=FIRST_COMPLETED)
        for future in finished:
            result.done[running.pop(future)] = future
    result.late = list(running.values())
    result.not_started = [key for key, _ in pending]
    return result


# ----------------------------------------------------------------------------- connections


class Connectable(Protocol):
    """A host's connection as the exporter uses it (`quilt_ops.remote.SshTarget`)."""

    name: str

    def open(self) -> None: ...

    def check_open(self) -> None: ...

    def close(self) -> None: ...


T = TypeVar("T", bound=Connectable)


class Abandoned(QuiltError):
    """The scrape gave up on this check; nothing it finds is used."""


@dataclass
class Outcome:
    """One host's part of a scrape."""

    report: HostHealth
    up: bool
    seconds: float
    #: Why the host is down (for the log; never a secret: a QuiltError's message).
    reason: str = ""
    #: The connection failed and was closed: reconnecting waits for the back-off.
    dropped: bool = False


class Slot(Generic[T]):
    """One host: its open connection (if any), and how its last attempts went."""

    def __init__(self, first: T, reopen: Callable[[T], T], opened: Callable[[T], None]) -> None:
        self.name = first.name
        self._prepared: T | None = first
        self._reopen = reopen
        self._opened = opened
        self._first = first
        self.target: T | None = None
        self.lock = threading.Lock()
        #: A check of this host is running (perhaps one a scrape gave up on).
        self.busy = False
        self.busy_since = 0.0
        self.abandoned = False
        self.failures = 0
        self.retry_at = 0.0
        self.reason = ""
        #: Why the host's sudo refused the password given (`SudoPasswordRefused`): it is never
        #: tried again (a wrong password tried at every reconnect can lock the login user out).
        self.refused = ""
        #: Up at the last check (None: never checked), for logging changes only.
        self.up: bool | None = None

    def _new_target(self) -> T:
        """The prepared target of the start (used once), then a fresh one each time."""
        target, self._prepared = self._prepared, None
        return target if target is not None else self._reopen(self._first)

    def connected(self) -> T:
        """The open connection: the one kept from earlier scrapes while it is alive, else a new
        one (opened here; raises `HostError` naming why it could not be)."""
        with self.lock:
            target = self.target
        if target is not None:
            try:
                target.check_open()
                return target
            except HostError:
                self.drop(target)  # it died since the last scrape: reconnect at once, once
        if self.refused:
            raise SudoPasswordRefused(f"{self.refused}; not tried again until the exporter restarts")
        target = self._new_target()
        with self.lock:
            if self.abandoned:
                raise Abandoned("given up")
            self.target = target
        try:
            target.open()
        except SudoPasswordRefused as e:
            self.refused = str(e)
            raise
        self._opened(target)
        return target

    def drop(self, target: T | None = None) -> None:
        """Closes the connection (``target``, or whichever is open)."""
        with self.lock:
            if target is None or self.target is target:
                target, self.target = self.target, None
        if target is not None:
            target.close()


class Connections(Generic[T]):
    """Every host's slot; runs the checks of a scrape within its deadline."""

    def __init__(
        self,
        targets: Sequence[T],
        reopen: Callable[[T], T],
        check: Callable[[T], HostHealth],
        parallel: int,
        scrape_timeout: float,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        opened: Callable[[T], None] = lambda target: None,
    ) -> None:
        self.slots = [Slot(target, reopen, opened) for target in targets]
        self.check = check
        self.parallel = parallel
        self.scrape_timeout = scrape_timeout
        self.log = log
        self.clock = clock

    def _run(self, slot: Slot[T]) -> Outcome:
        """One host's check, in its own thread; never raises."""
        started = self.clock()
        # The connection is closed (and reopened after the back-off) when it could not be
        # opened, when it dropped, or on a bug; a host that answered but could not be
        # inspected (Docker out of reach, a missing tool) keeps it.
        dropped = True
        try:
            target = slot.connected()  # HostError: connection, host key, authentication
            try:
                return Outcome(self.check(target), True, self.clock() - started)
            except ConnectionLost:
                raise
            except QuiltError:
                dropped = False
                raise
        except QuiltError as e:
            reason = str(e)
        except Exception as e:  # a bug: say what kind, never its text
            reason = f"internal error ({type(e).__name__})"
        if dropped:
            slot.drop()
        return Outcome(unreachable(slot.name, reason), False, self.clock() - started, reason, dropped)

    def _job(self, slot: Slot[T]) -> Callable[[], Outcome]:
        def job() -> Outcome:
            try:
                return self._run(slot)
            finally:
                with slot.lock:
                    slot.busy = False
                    late = slot.abandoned
                if late:  # the scrape gave up on this check: close what it may have opened since
                    slot.drop()

        return job

    def scrape(self) -> tuple[list[Outcome], float]:
        """Every host's outcome, in host order, and the seconds the scrape took."""
        started = self.clock()
        deadline = started + self.scrape_timeout
        outcomes: dict[str, Outcome] = {}
        jobs: list[tuple[str, Callable[[], Outcome]]] = []
        by_name = {slot.name: slot for slot in self.slots}
        for slot in self.slots:
            with slot.lock:
                busy, since = slot.busy, slot.busy_since
                if not busy and (slot.target is not None or started >= slot.retry_at):
                    slot.busy, slot.busy_since, slot.abandoned = True, started, False
                    jobs.append((slot.name, self._job(slot)))
                    continue
            if busy:
                reason = f"its check from {started - since:.0f}s ago has not ended"
            else:
                reason = f"{slot.reason} (next try in {max(0.0, slot.retry_at - started):.0f}s)"
            outcomes[slot.name] = Outcome(unreachable(slot.name, reason), False, 0.0, reason)
        ran = run_bounded(jobs, self.parallel, deadline, self.clock)
        now = self.clock()
        for name, future in ran.done.items():
            outcomes[name] = future.result()
        for name in ran.late:
            slot = by_name[name]
            with slot.lock:
                slot.abandoned = True
            slot.drop()  # wakes the thread reading a dead connection
            reason = f"no answer within the scrape timeout ({self.scrape_timeout:g}s)"
            outcomes[name] = Outcome(unreachable(name, reason), False, now - started, reason, dropped=True)
        for name in ran.not_started:
            slot = by_name[name]
            with slot.lock:
                slot.busy = False
            reason = f"not checked: the scrape timeout ({self.scrape_timeout:g}s) ran out first (raise --parallel)"
            outcomes[name] = Outcome(unreachable(name, reason), False, 0.0, reason)
        for name in (n for n, _ in jobs):
            self._settle(by_name[name], outcomes[name], now)
        for slot in self.slots:
            self._log_change(slot, outcomes[slot.name])
        return [outcomes[slot.name] for slot in self.slots], now - started

    def _settle(self, slot: Slot[T], outcome: Outcome, now: float) -> None:
        """Back-off bookkeeping after a host's check."""
        with slot.lock:
            if outcome.up:
                slot.failures, slot.retry_at, slot.reason = 0, 0.0, ""
            elif outcome.dropped:
                slot.failures += 1
                slot.retry_at = now + backoff(slot.failures)
                slot.reason = outcome.reason

    def _log_change(self, slot: Slot[T], outcome: Outcome) -> None:
        if slot.up is outcome.up:
            return
        slot.up = outcome.up
        self.log(f"{slot.name} up" if outcome.up else f"{slot.name} down: {outcome.reason}")

    def close(self) -> None:
        """Closes every connection (a check still running fails and ends)."""
        for slot in self.slots:
            with slot.lock:
                slot.abandoned = True
            slot.drop()


# ----------------------------------------------------------------------------- results and metrics


@dataclass
class Snapshot:
    """The results of one scrape."""

    outcomes: list[Outcome]
    seconds: float
    finished: float
    cached: bool = False


class Exporter:
    """Scrapes on demand; serves the last results again within ``min_interval``."""

    def __init__(
        self, connections: Connections[Any], min_interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.connections = connections
        self.min_interval = min_interval
        self.clock = clock
        self._last: Snapshot | None = None
        self._lock = threading.Lock()

    def results(self) -> Snapshot:
        """Fresh results, or the last ones when they are recent enough. Scrapes that arrive
        together wait for the one running, then share its results."""
        with self._lock:
            last = self._last
            if last is not None and fresh(last.finished, self.clock(), self.min_interval):
                return dataclasses.replace(last, cached=True)
            outcomes, seconds = self.connections.scrape()
            self._last = Snapshot(outcomes, seconds, self.clock())
            return self._last

    def close(self) -> None:
        self.connections.close()


def families(snapshot: Snapshot) -> Iterator[Any]:
    """The metric families of a scrape: health's own (`quilt_ops.metrics.families`, with each
    host's ``quilt_up`` as this scrape saw it), then the exporter's."""
    from prometheus_client.core import GaugeMetricFamily

    from . import metrics

    reports = [outcome.report for outcome in snapshot.outcomes]
    yield from metrics.families(reports, {outcome.report.host: outcome.up for outcome in snapshot.outcomes})
    took = GaugeMetricFamily(
        "quilt_check_duration_seconds", "Seconds the host's check took on this scrape.", labels=["host"]
    )
    for outcome in snapshot.outcomes:
        took.add_metric([outcome.report.host], round(outcome.seconds, 6))
    yield took
    yield GaugeMetricFamily(
        "quilt_scrape_duration_seconds", "Seconds the checks of these results took, all hosts.", value=snapshot.seconds
    )
    yield GaugeMetricFamily(
        "quilt_scrape_cached",
        "1 when these results are an earlier scrape's, served again within --min-interval.",
        value=1 if snapshot.cached else 0,
    )


class Collector:
    """The prometheus_client collector: one scrape (or the cached one) per collection."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def describe(self) -> Iterable[Any]:
        return []  # registering must not scrape

    def collect(self) -> Iterator[Any]:
        return families(self.exporter.results())


# ----------------------------------------------------------------------------- /probe?target=


class NotAllowed(QuiltError):
    """A ``/probe`` target that is not in quilt.exporter_targets."""


def probe_target(query: str, allowed: Sequence[str]) -> str:
    """The target of a ``/probe`` query string, if the allow-list has it exactly (pure).

    Raises `ConfigError` for a missing or repeated ``target`` and `NotAllowed` for one
    not listed: the exporter never opens an SSH connection to a host it was not given.
    """
    values = parse_qs(query, keep_blank_values=True).get("target", [])
    if len(values) != 1 or not values[0]:
        raise ConfigError("give one target: /probe?target=HOST")
    target = values[0]
    if target not in allowed:
        raise NotAllowed("target not allowed: it is not in quilt.exporter_targets")
    return target


class Probes:
    """The ``/probe`` targets: each one's own `Exporter` (one SSH connection kept open, a
    back-off, a cache of ``min_interval``), made on its first probe. The allow-list bounds them."""

    def __init__(self, allowed: Sequence[str], make: Callable[[str], Exporter]) -> None:
        self.allowed = tuple(allowed)
        self._make = make
        self._registries: dict[str, Any] = {}
        self._exporters: list[Exporter] = []
        self._lock = threading.Lock()
        self._closed = False

    def registry(self, query: str) -> Any:
        """The registry of the target the query names (`probe_target`'s errors otherwise)."""
        from prometheus_client import CollectorRegistry

        target = probe_target(query, self.allowed)
        with self._lock:
            if self._closed:
                raise NotAllowed("the exporter is stopping")
            found = self._registries.get(target)
            if found is None:
                exporter = self._make(target)
                self._exporters.append(exporter)
                found = self._registries[target] = CollectorRegistry(auto_describe=False)
                found.register(Collector(exporter))
            return found

    def close(self) -> None:
        with self._lock:
            self._closed = True
            exporters, self._exporters = self._exporters, []
        for exporter in exporters:
            exporter.close()


# ----------------------------------------------------------------------------- the HTTP server


INDEX = b"quilt-ops exporter: metrics at /metrics, one allowed host at /probe?target=HOST\n"


def handler(registry: Any, probes: Probes | None = None, auth: Any = None, server: Any = None) -> http_server.Handle:
    """What answers a request: basic auth first (with a web config's users), then ``/metrics``
    (every host of -H), ``/probe?target=`` (one host of quilt.exporter_targets) or ``/``."""
    from prometheus_client.exposition import MetricsHandler

    class Handler(MetricsHandler):
        def setup(self) -> None:
            self.connection, head = self.request
            self.rfile = io.BytesIO(head)
            self.wfile = self.connection.makefile("wb")

        def text(self, code: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if auth is not None and not auth.allows(self.headers.get("Authorization")):
                from .web_config import REALM

                self.text(401, b"unauthorized\n", [("WWW-Authenticate", f'Basic realm="{REALM}"')])
                return
            url = urlparse(self.path)
            if url.path == "/metrics":
                self.registry = registry
            elif url.path == "/probe" and probes is not None:
                try:
                    self.registry = probes.registry(url.query)
                except NotAllowed as e:
                    self.text(403, f"{e}\n".encode())
                    return
                except ConfigError as e:
                    self.text(400, f"{e}\n".encode())
                    return
            else:
                self.text(*((200, INDEX) if url.path == "/" else (404, b"not found\n")))
                return
            super().do_GET()

    def handle(sock: socket.socket, head: bytes, address: tuple[str, int]) -> None:
        Handler((sock, head), address, server)  # type: ignore[arg-type]

    return handle


def bind(
    address: ListenAddress,
    tls: Any = None,
    max_connections: int = http_server.DEFAULT_MAX_CONNECTIONS,
    read_timeout: float = http_server.DEFAULT_READ_TIMEOUT,
) -> http_server.Server:
    """The HTTP(S) server on ``address``, not yet serving (`serve` gives it its handler);
    `ConfigError` when it cannot listen there."""
    try:
        return http_server.Server(
            (address.host, address.port),
            address.family,
            max_connections=max_connections,
            read_timeout=read_timeout,
            tls=tls,
        )
    except socket.gaierror:
        raise ConfigError(f"cannot listen on {address}: cannot resolve {address.host!r}") from None
    except OSError as e:
        reasons = {
            errno.EADDRINUSE: "address already in use",
            errno.EADDRNOTAVAIL: "not an address of this machine",
            errno.EACCES: "permission denied (ports below 1024 need root)",
        }
        reason = reasons.get(e.errno or 0) or e.strerror or type(e).__name__
        raise ConfigError(f"cannot listen on {address}: {reason}") from None


def registry_for(exporter: Exporter) -> Any:
    """A registry holding the exporter's collector and the process's own metrics (memory, CPU)."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry()
    registry.register(Collector(exporter))
    ProcessCollector(registry=registry)
    return registry


def serve(
    server: http_server.Server,
    exporter: Exporter,
    hosts: int,
    describe: str,
    stop: threading.Event | None = None,
    probes: Probes | None = None,
    auth: Any = None,
) -> None:
    """Serves until SIGINT or SIGTERM (or ``stop``), then closes the server and every connection."""
    import signal

    server.handle = handler(registry_for(exporter), probes, auth, server)
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="exporter http", daemon=True)
    try:
        thread.start()
        shown = str(ListenAddress(str(server.server_address[0]), int(server.server_address[1])))
        targets = f" and /probe for {len(probes.allowed)} allowed target(s)" if probes is not None else ""
        print(
            f"quilt-ops exporter: serving {server.scheme}://{shown}/metrics for {hosts} host(s){targets} ({describe})",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        exporter.close()
        if probes is not None:
            probes.close()
        for sig, handler_ in previous.items():
            signal.signal(sig, handler_)
        thread.join(timeout=5)
    print("quilt-ops exporter: stopped; connections closed", flush=True)


def no_delay(target: Any) -> None:
    """Turns Nagle's algorithm off on a host's TCP connection. With it on, opening each
    command's channel waits for the server's delayed ACK (40 ms on Linux), every scrape."""
    transport = getattr(getattr(target, "cxn", None), "transport", None)
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):  # through a ProxyJump hop it is a channel, not a socket
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a proxy command's socket pair): nothing to tune
            pass


def log_line(text: str) -> None:
    """A host's up/down change, one line on stderr."""
    print(f"exporter: {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the task's body


def run(
    c: Any,
    settings: Settings,
    listen: Any,
    parallel: int,
    scrape_timeout: float,
    min_interval: float,
    stacks: list[str] | None,
    stop: threading.Event | None = None,
    web_config_file: str | None = None,
    max_connections: int = http_server.DEFAULT_MAX_CONNECTIONS,
) -> None:
    """Binds ``listen``, finds the hosts (no connection yet), then serves until stopped.

    Connections are prepared with a connect timeout no longer than the scrape
    timeout, so that opening one cannot outlast the scrape that needs it. The
    hosts of ``/metrics`` are -H (quilt.hosts) or the stacks'; with
    quilt.exporter_targets, ``/probe?target=`` serves each of those on its own,
    and the static list may be empty.
    """
    from fabric import Connection

    from . import health, hosts, ssh
    from . import web_config as web
    from .remote import SshTarget

    address = parse_listen(listen)
    settings = dataclasses.replace(settings, connect_timeout=min(settings.connect_timeout, scrape_timeout))
    config = web.load(web_config_file) if web_config_file else web.WebConfig()
    server = bind(address, config.ssl_context(), max_connections)
    try:
        static = settings.hosts or stacks or settings.stacks or isinstance(c, Connection)
        targets = hosts.targets(c, settings, stacks=stacks) if static or not settings.exporter_targets else []
        names = [target.name for target in targets]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # one host label, one set of samples: Prometheus refuses a scrape with duplicates
            raise ConfigError(f"host {', '.join(twice)} is given more than once")
        auth = web.BasicAuth(config.users) if config.users else None
    except BaseException:
        server.server_close()
        raise

    def reopen(old: SshTarget) -> SshTarget:
        # A new Connection, so that known_hosts is read again (a key trusted since is accepted);
        # user and port as the first one resolved them (ssh_config still applies to the alias).
        cxn = old.cxn
        again = Connection(cxn.original_host, user=cxn.user, port=cxn.port, config=cxn.config)
        target = SshTarget(ssh.prepare(again, settings), old.name, stack=old.stack)
        target.sudo = settings.sudo  # as the first one (quilt.sudo; -A with sudo.password)
        return target

    def exporter_of(found: Sequence[SshTarget]) -> Exporter:
        connections = Connections(
            found,
            reopen,
            lambda target: health.collect(target, settings),
            parallel,
            scrape_timeout,
            log_line,
            opened=no_delay,
        )
        return Exporter(connections, min_interval)

    def probed(name: str) -> Exporter:
        # Prepared only (host keys checked as everywhere); connected on its first check.
        target = SshTarget(ssh.connection(name, c.config, settings), name)
        target.sudo = settings.sudo
        return exporter_of([target])

    probes = Probes(settings.exporter_targets, probed) if settings.exporter_targets else None
    serve(
        server,
        exporter_of(targets),
        len(targets),
        f"parallel {parallel}, scrape timeout {scrape_timeout:g}s, min interval {min_interval:g}s"
        + (", TLS" if config.tls else "")
        + (f", basic auth ({len(config.users)} user(s))" if config.users else "")
        + f", at most {max_connections} connections",
        stop,
        probes,
        auth,
    )
