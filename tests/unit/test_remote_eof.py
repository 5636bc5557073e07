"""The SSH runner reads a command's output to the channel's EOF, not to its exit status.

A real paramiko transport pair over a socket pair: the server side plays sshd under
load, sending data, then the exit status, then more data, then EOF (the order OpenSSH
produces when it reaps the command while its pipe still holds output). Before the fix,
the runner stopped at the exit status and lost the tail.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import paramiko
import pytest

from quilt_ops import remote
from quilt_ops.remote import Process, Runner, SshProcess

Script = Callable[[paramiko.Channel], None]


class ScriptedServer(paramiko.ServerInterface):
    """Accepts anyone, and answers every exec request by running ``script`` on the channel."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=self.play, args=(channel,), daemon=True).start()
        return True

    def play(self, channel: paramiko.Channel) -> None:
        try:
            self.script(channel)
        except OSError:  # the client closed the channel first (the grace-period case)
            pass


@pytest.fixture(scope="module")
def server_key() -> paramiko.RSAKey:
    return paramiko.RSAKey.generate(1024)


class PairTarget(Runner):
    """A `Runner` whose commands go to a scripted in-process SSH server."""

    name = "pair"

    def __init__(self, client: paramiko.Transport) -> None:
        self.client = client
        self.processes: list[SshProcess] = []

    def start(self, script: str, *, timeout: float, pty: bool = False) -> Process:
        channel = self.client.open_session()
        channel.exec_command(script)
        process = SshProcess(channel, self.name)
        self.processes.append(process)
        return process

    def kill(self, pgid: int | None) -> None:
        pass


@pytest.fixture
def pair(server_key: paramiko.RSAKey) -> Iterator[Callable[[Script], PairTarget]]:
    transports: list[paramiko.Transport] = []

    def connect(script: Script) -> PairTarget:
        here, there = socket.socketpair()
        server = paramiko.Transport(there)
        server.add_server_key(server_key)
        server.start_server(event=threading.Event(), server=ScriptedServer(script))  # in its thread
        client = paramiko.Transport(here)
        client.start_client(timeout=10)
        client.auth_none("operator")
        transports.extend((client, server))
        return PairTarget(client)

    yield connect
    for transport in transports:
        transport.close()


def data_status_data_eof(channel: paramiko.Channel) -> None:
    channel.sendall(b"first part\n")
    channel.sendall_stderr(b"an error line\n")
    channel.send_exit_status(3)
    time.sleep(0.5)  # sshd still draining the pipe after it reaped the command
    channel.sendall(b"second part\n")
    channel.sendall_stderr(b"the last error line\n")
    channel.shutdown_write()  # EOF
    channel.close()


def test_output_after_the_exit_status_is_read(pair: Callable[[Script], PairTarget]) -> None:
    result = pair(data_status_data_eof).run("anything", timeout=10)
    assert result.stdout_bytes == b"first part\nsecond part\n"
    assert result.stderr == "an error line\nthe last error line\n"
    assert result.exited == 3
    assert result.complete


def test_the_exit_status_may_come_after_the_eof(pair: Callable[[Script], PairTarget]) -> None:
    def eof_then_status(channel: paramiko.Channel) -> None:
        channel.sendall(b"all of it\n")
        channel.shutdown_write()
        time.sleep(0.3)
        channel.send_exit_status(0)
        channel.close()

    result = pair(eof_then_status).run("anything", timeout=10)
    assert (result.stdout_bytes, result.exited, result.complete) == (b"all of it\n", 0, True)


def test_a_process_left_holding_stdout_is_given_a_grace_period(
    pair: Callable[[Script], PairTarget], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command exited, but something it started keeps stdout open: reading stops
    EOF_GRACE after the exit status, and the result says its output may be cut."""
    monkeypatch.setattr(remote, "EOF_GRACE", 0.5)
    release = threading.Event()

    def never_eof(channel: paramiko.Channel) -> None:
        channel.sendall(b"started\n")
        channel.send_exit_status(0)
        release.wait(10)
        channel.close()

    target = pair(never_eof)
    started = time.monotonic()
    result = target.run("anything", timeout=10)
    took = time.monotonic() - started
    release.set()
    assert result.stdout_bytes == b"started\n"
    assert not result.complete
    assert 0.4 < took < 5


def test_reading_after_the_exit_status_does_not_spin(pair: Callable[[Script], PairTarget]) -> None:
    """Once the exit status is in and the EOF is not, `read` waits for data instead of
    returning at once (counted: a spinning loop calls it thousands of times in 0.5 s)."""
    calls = 0
    original = SshProcess.read

    def counting(self: SshProcess, wait: float) -> tuple[bytes, bytes]:
        nonlocal calls
        calls += 1
        return original(self, wait)

    SshProcess.read = counting  # type: ignore[method-assign]
    try:
        pair(data_status_data_eof).run("anything", timeout=10)
    finally:
        SshProcess.read = original  # type: ignore[method-assign]
    assert calls < 50


class CutChannel:
    """A channel whose connection was cut while the command ran: closed, no exit status."""

    closed = True
    eof_received = False

    class DeadTransport:
        def is_active(self) -> bool:
            return False

    def recv_ready(self) -> bool:
        return False

    def recv_stderr_ready(self) -> bool:
        return False

    def exit_status_ready(self) -> bool:
        return False

    def recv_exit_status(self) -> int:
        return -1  # what paramiko says for a channel closed without one

    def get_transport(self) -> object:
        return self.DeadTransport()

    def close(self) -> None:
        pass


def test_a_channel_closed_by_a_cut_connection_is_a_lost_connection() -> None:
    """Reading stops at the channel's close; if the connection is gone then, with no exit status,
    the command did not end: it may have done anything. A CPU-hog run met it as "could not start
    ./start.sh: no output" (exit 4, as if nothing had run) instead of "run restart again" (5)."""
    process = SshProcess(CutChannel(), "cut")  # type: ignore[arg-type]
    assert process.finished()
    with pytest.raises(remote.ConnectionLost):
        process.exit_code()
