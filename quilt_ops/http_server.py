"""The exporter's HTTP(S) server: idle connections cost a file descriptor, never a thread.

`Server` accepts connections on one thread (a selector loop). A connection
stays there, costing nothing but its socket, until its TLS handshake (with a
web config) and its request head are read; only then is it handed to one of
a few worker threads, which answer it (HTTP/1.0: one request a connection).

Bounds, so that idle or slow clients cannot stop the exporter:
- a **read timeout** per connection: a connection whose request head has not
  arrived within ``read_timeout`` seconds of its accept is closed (a deadline,
  not reset by each byte, so a trickling client gains nothing);
- a **cap** on connections (``max_connections``: waiting plus being answered).
  At the cap, a new connection closes the oldest one still waiting for its
  request, so a scrape always gets in; when every connection is being answered,
  the new one is closed at once. When the process is out of file descriptors
  (EMFILE), the oldest waiting connection is closed to make room.
- a request head larger than `MAX_HEAD` bytes is refused.
"""

from __future__ import annotations

import errno
import selectors
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

#: The largest request head read (request line and headers).
MAX_HEAD = 16384
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_READ_TIMEOUT = 10.0
#: Seconds a worker may take to write its answer (to a client that reads slowly) before giving up.
WRITE_TIMEOUT = 30.0
WORKERS = 4

#: Answers one request: the connection (blocking, with a timeout), its request head (bytes
#: up to and including the blank line), the client's address. It closes nothing.
Handle = Callable[[socket.socket, bytes, tuple[str, int]], None]


@dataclass
class Waiting:
    """A connection whose request head is not complete yet."""

    sock: socket.socket
    address: tuple[str, int]
    deadline: float
    handshaking: bool
    head: bytearray = field(default_factory=bytearray)


def head_complete(data: bytes | bytearray) -> bool:
    """Whether a request head has ended (a blank line; a bare LF is tolerated as Python's parser does)."""
    return b"\r\n\r\n" in data or b"\n\n" in data


class Server:
    """A listening socket and the loop serving it (`serve_forever`, `shutdown`, `server_close`,
    as socketserver's servers have them)."""

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        handle: Handle | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        tls: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handle = handle
        self.max_connections = max(1, max_connections)
        self.read_timeout = read_timeout
        self.tls = tls
        self.clock = clock
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(min(socket.SOMAXCONN, 1024))
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self._waiting: OrderedDict[int, Waiting] = OrderedDict()
        self._answering = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._running = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="exporter http")
        self._selector: selectors.BaseSelector | None = None
        self._paused_until = 0.0

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    # ------------------------------------------------------------------------- the loop

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accepts and reads until `shutdown`."""
        if self._stop.is_set():  # stopped before it started
            self._stopped.set()
            return
        selector = self._selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        listening = True
        selector.register(self.socket, selectors.EVENT_READ, "listen")
        self._running = True
        try:
            while not self._stop.is_set():
                now = self.clock()
                if not listening and now >= self._paused_until:
                    selector.register(self.socket, selectors.EVENT_READ, "listen")
                    listening = True
                timeout = poll_interval
                if self._waiting:
                    oldest = next(iter(self._waiting.values()))
                    timeout = max(0.0, min(timeout, oldest.deadline - now))
                if not listening:
                    timeout = max(0.0, min(timeout, self._paused_until - now))
                for key, _ in selector.select(timeout):
                    if key.data == "wake":
                        self._drain_wake()
                    elif key.data == "listen":
                        if not self._accept():  # out of descriptors, nothing to close: pause accepting
                            selector.unregister(self.socket)
                            listening = False
                            self._paused_until = self.clock() + 0.1
                    else:
                        self._advance(key.data)
                self._expire()
        finally:
            self._running = False
            for waiting in list(self._waiting.values()):
                self._close(waiting)
            selector.close()
            self._selector = None
            self._stopped.set()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except OSError:
            pass

    def _accept(self) -> bool:
        """Accepts every pending connection; False when out of descriptors with none to free."""
        while True:
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if self._waiting:
                        self._close(next(iter(self._waiting.values())))
                        continue
                    return False
                return True  # ECONNABORTED and the like: that client is gone
            with self._lock:
                full = len(self._waiting) + self._answering >= self.max_connections
            if full and self._waiting:
                self._close(next(iter(self._waiting.values())))  # the oldest still-silent one makes room
            elif full:
                _quietly_close(sock)
                continue
            self._start(sock, address)

    def _start(self, sock: socket.socket, address: tuple[str, int]) -> None:
        try:
            sock.setblocking(False)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError):
            _quietly_close(sock)
            return
        waiting = Waiting(sock, address, self.clock() + self.read_timeout, handshaking=self.tls is not None)
        self._waiting[sock.fileno()] = waiting
        assert self._selector is not None
        self._selector.register(sock, selectors.EVENT_READ, waiting)
        self._advance(waiting)  # the request may be there already

    def _advance(self, waiting: Waiting) -> None:
        """Goes on with the handshake, then reads what has come of the request head."""
        sock = waiting.sock
        try:
            if waiting.handshaking:
                try:
                    sock.do_handshake()  # type: ignore[attr-defined]
                except ssl.SSLWantReadError:
                    return self._want(waiting, selectors.EVENT_READ)
                except ssl.SSLWantWriteError:
                    return self._want(waiting, selectors.EVENT_WRITE)
                waiting.handshaking = False
                self._want(waiting, selectors.EVENT_READ)
            while True:
                try:
                    data = sock.recv(MAX_HEAD + 1 - len(waiting.head))
                except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    return None
                if not data:
                    return self._close(waiting)
                waiting.head += data
                if head_complete(waiting.head):
                    return self._dispatch(waiting)
                if len(waiting.head) > MAX_HEAD:
                    return self._close(waiting)
        except (OSError, ValueError):  # a failed handshake, a reset: that client is gone
            return self._close(waiting)

    def _want(self, waiting: Waiting, events: int) -> None:
        assert self._selector is not None
        self._selector.modify(waiting.sock, events, waiting)

    def _expire(self) -> None:
        now = self.clock()
        while self._waiting:
            oldest = next(iter(self._waiting.values()))
            if oldest.deadline > now:
                break
            self._close(oldest)

    def _forget(self, waiting: Waiting) -> None:
        for fd, item in list(self._waiting.items()):
            if item is waiting:
                del self._waiting[fd]
                break
        if self._selector is not None:
            try:
                self._selector.unregister(waiting.sock)
            except (KeyError, ValueError):
                pass

    def _close(self, waiting: Waiting) -> None:
        self._forget(waiting)
        _quietly_close(waiting.sock)

    def _dispatch(self, waiting: Waiting) -> None:
        self._forget(waiting)
        with self._lock:
            self._answering += 1
        try:
            self._workers.submit(self._answer, waiting.sock, bytes(waiting.head), waiting.address)
        except RuntimeError:  # shutting down
            with self._lock:
                self._answering -= 1
            _quietly_close(waiting.sock)

    def _answer(self, sock: socket.socket, head: bytes, address: tuple[str, int]) -> None:
        try:
            sock.setblocking(True)
            sock.settimeout(WRITE_TIMEOUT)
            if self.handle is not None:
                self.handle(sock, head, address)
        except (OSError, ValueError):
            pass  # the client went away, or read too slowly
        except Exception as e:  # a bug: say what kind, never its text
            print(f"exporter: a request failed ({type(e).__name__})", file=sys.stderr, flush=True)
        finally:
            _quietly_close(sock)
            with self._lock:
                self._answering -= 1

    # ------------------------------------------------------------------------- stopping

    def shutdown(self) -> None:
        """Stops `serve_forever` and waits for it to end."""
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._running:
            self._stopped.wait(10)

    def server_close(self) -> None:
        """Closes the listening socket (and what is left); answers under way finish on their own."""
        self._stop.set()
        _quietly_close(self.socket)
        self._workers.shutdown(wait=False, cancel_futures=True)
        for sock in (self._wake_r, self._wake_w):
            _quietly_close(sock)


def _quietly_close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
