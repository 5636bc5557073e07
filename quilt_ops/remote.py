"""Running commands on a registry host: one helper for every channel.

A `Target` is one host for one task. Over SSH it is one Fabric connection,
opened once; every remote step is one command on a new session of that
connection (Fabric's ``create_session``). It is never reopened behind the
task's back: a dropped connection is a `ConnectionLost`, so that no changing
step can run on a new connection without the host lock (see `quilt_ops.lock`).

Every command runs under coreutils ``timeout`` in its own process group, so it
cannot outlive its time on the host, and when quilt-ops gives up on it (its own
deadline, Ctrl-C) the whole group is killed there before anything else runs:
no orphaned start script may recreate containers later.

Secrets never go into a command line or an environment variable: content goes
through a command's stdin.
"""

from __future__ import annotations

import secrets
import select
import shlex
import threading
import time
from collections.abc import Callable
from typing import Protocol

import paramiko
from fabric import Connection
from invoke.runners import Result

from . import ssh, stopping, sudo_password
from .core_options import RunOptions, echoer, limit
from .errors import ConnectionLost, NotStarted, RemoteTimeout
from .masking import Masker

#: Seconds a timed-out command gets between TERM and KILL on the host.
KILL_AFTER = 5
#: How much longer than the command's own time quilt-ops waits for it to end.
GRACE = KILL_AFTER + 10
#: This run's mark: in the line the wrapper writes to stderr (the process group to kill)
#: and, as ``$0``, in the command line of every command it starts (so ``ps`` tells them).
NONCE = secrets.token_hex(6)
#: The line the wrapper writes to stderr first: ``quilt-ops-pgid NONCE PGID``.
PID_PREFIX = f"quilt-ops-pgid {NONCE} ".encode()
#: In every command line quilt-ops starts on a host (``$0`` of the wrapped script).
MARK = f"quilt-ops-{NONCE}"
#: ``timeout`` exits with these when it killed the command.
TIMED_OUT = (124, 137)
#: Seconds a command's output is still read after its exit status when the channel's EOF
#: does not come (a background process it left holds stdout open).
EOF_GRACE = 2.0


class RemoteResult(Result):
    """Invoke's `Result` for a command run by quilt-ops, with the raw stdout bytes
    (an env file is bytes, not text)."""

    def __init__(
        self, stdout_bytes: bytes, stderr: str, exited: int, command: str, seconds: float, complete: bool = True
    ) -> None:
        super().__init__(
            stdout=stdout_bytes.decode("utf-8", "replace"),
            stderr=stderr,
            exited=exited,
            command=command,
            hide=("stdout", "stderr"),
        )
        self.stdout_bytes = stdout_bytes
        self.seconds = seconds
        #: False when reading stopped before the end of the output: the command exited but a
        #: process it left behind kept its stdout open past `EOF_GRACE` (see `SshProcess`).
        self.complete = complete


class Process(Protocol):
    """A command started on the host: write its stdin, read what it prints."""

    def send(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def read(self, wait: float) -> tuple[bytes, bytes]:
        """What arrived on stdout and stderr within ``wait`` seconds (maybe nothing)."""
        ...

    def finished(self) -> bool:
        """True once the command has exited and everything it printed was read (to the end
        of its output, not only to its exit status)."""
        ...

    def exit_code(self) -> int: ...

    def close(self) -> None: ...


class Target(Protocol):
    """One host, for one task."""

    name: str

    @property
    def masker(self) -> Masker:
        """The secrets known for this host (a task adds them): masked in what ``-e`` echoes."""
        ...

    def start(self, script: str, *, timeout: float, pty: bool = False) -> Process: ...

    def run(
        self,
        script: str,
        *,
        timeout: float,
        stdin: bytes | None = None,
        on_wait: Callable[[float], None] | None = None,
        what: str = "a command",
    ) -> RemoteResult: ...

    def close(self) -> None: ...


def wrap(script: str, timeout: float, pty: bool = False) -> str:
    """The command line that runs ``script`` bounded by ``timeout`` in its own process group.

    It first writes its process group to stderr (`PID_PREFIX`). On a terminal,
    ``timeout --foreground`` keeps the program in the terminal's foreground group
    (else reading from the terminal would stop it); the hang-up when the session
    closes ends that one.
    """
    seconds = max(1, int(timeout + 0.999))
    foreground = "--foreground " if pty else ""
    return (
        f"printf '{PID_PREFIX.decode()}%s\\n' \"$$\" >&2; "
        f"exec timeout {foreground}-k {KILL_AFTER} {seconds} sh -c {shlex.quote(script)} {MARK}"
    )


def split_pid(stderr: bytes) -> tuple[int | None, bytes]:
    """The wrapper's process group and stderr without the wrapper's line.

    The line may come after whatever the login shell printed first (a .bashrc); only a
    whole line (newline included) with this run's nonce counts, the last one if several.
    """
    pgid: int | None = None
    kept: list[bytes] = []
    for line in stderr.splitlines(keepends=True):
        if line.startswith(PID_PREFIX) and line.endswith(b"\n"):
            value = line[len(PID_PREFIX) :].strip()
            if value.isdigit() and 1 < int(value) < 2**22:
                pgid = int(value)
            continue
        kept.append(line)
    return pgid, b"".join(kept)


def kill_command(pgid: int, sudo: str = "sudo -n") -> str:
    """Kills a process group on the host and waits until it is gone: TERM, up to 3 s, then
    KILL, up to 2 s more; also through ``sudo`` (quilt.sudo; "" never), for the root
    processes a script started with sudo. The group ID came from the host: the one its own
    wrapper wrote last, after anything the login shell printed. The group's leader (the
    wrapper) has usually ended by now (``timeout`` ended it), so it cannot be asked who it
    was; a login shell that forged the line could already do as much itself (sudo is
    passwordless for it, or not used)."""
    group = f"-{int(pgid)}"

    # `kill -SIG -PGID`, never `kill -SIG -- -PGID`: dash's builtin refuses the `--`.
    # Signals go both ways (the login user's kill succeeds when it reached any process of
    # the group, root's ones included or not); the group is alive if either sees it.
    def kill(signal: str) -> str:
        as_root = f"{sudo} sh -c 'kill -{signal} {group}'" if sudo.strip() else "false"
        then = "||" if signal == "0" else ";"
        return f"{{ kill -{signal} {group} 2>/dev/null {then} {as_root} 2>/dev/null; }}"

    return (
        f"{kill('TERM')}; i=0; while {kill('0')} && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; "
        f"{kill('KILL')}; i=0; while {kill('0')} && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; true"
    )


class Runner:
    """`Target.run` on top of `Target.start`: one loop for every command."""

    name: str
    #: quilt.sudo: how a command given up on is killed when it started root processes.
    sudo: str = "sudo -n"
    #: ``-e`` and ``-T`` (Invoke's ``run.echo`` and ``timeouts.command``).
    run_options: RunOptions = RunOptions()
    #: Where ``-e`` writes (stderr).
    echo = staticmethod(echoer())

    @property
    def masker(self) -> Masker:
        """The secrets known for this host, masked in what ``-e`` echoes (one per target)."""
        found = self.__dict__.get("_masker")
        if found is None:
            found = self.__dict__["_masker"] = Masker()
        return found

    def starting(self, script: str, timeout: float) -> float:
        """Called by `start` before a command starts: echoes it with ``-e``; returns its time,
        bounded by ``-T``."""
        if self.run_options.echo:
            self.echo(self.name, script, self.masker)
        return limit(timeout, self.run_options.command_timeout)

    def start(self, script: str, *, timeout: float, pty: bool = False) -> Process:  # pragma: no cover
        raise NotImplementedError

    def kill(self, pgid: int | None) -> None:  # pragma: no cover
        raise NotImplementedError

    def run(
        self,
        script: str,
        *,
        timeout: float,
        stdin: bytes | None = None,
        on_wait: Callable[[float], None] | None = None,
        what: str = "a command",
    ) -> RemoteResult:
        """Runs ``script`` with ``stdin`` (then EOF); returns when it exits.

        ``on_wait(elapsed)`` is called about once a second while it runs.
        Raises `RemoteTimeout` (after killing it on the host) when it runs past
        ``timeout``, `ConnectionLost` when the connection drops.
        """
        started = time.monotonic()
        timeout = limit(timeout, self.run_options.command_timeout)
        process = self.start(script, timeout=timeout)
        out, err = bytearray(), bytearray()
        pgid: int | None = None
        try:
            if stdin:
                process.send(stdin)
            process.close_stdin()
            ticked = started
            while not process.finished():
                chunk_out, chunk_err = process.read(0.2)
                out += chunk_out
                err += chunk_err
                if pgid is None:
                    pgid, _ = split_pid(bytes(err))
                now = time.monotonic()
                if on_wait is not None and now - ticked >= 1.0:
                    on_wait(now - started)
                    ticked = now
                if stopping.stopping():
                    raise stopping.Stopped()
                if now - started > timeout + GRACE:
                    self.kill(pgid)
                    raise RemoteTimeout(
                        f"{what} on {self.name} did not finish within {timeout:.0f}s; it was stopped there"
                    )
            code = process.exit_code()
        except KeyboardInterrupt:
            pgid = pgid or split_pid(bytes(err))[0]
            self.kill(pgid)
            raise
        finally:
            process.close()
        seconds = time.monotonic() - started
        _, rest = split_pid(bytes(err))
        # No exit status at all (-1: ended by a signal, as timeout(1) re-raises the one that
        # killed its command) after the whole time is a timeout too.
        if (code in TIMED_OUT or code < 0) and seconds >= timeout - 0.5:
            # timeout(1) killed its own child; the rest of the group (docker clients under sudo)
            # may still be going: nothing else runs until the whole group is gone.
            self.kill(pgid)
            raise RemoteTimeout(
                f"{what} on {self.name} did not finish within {timeout:.0f}s; "
                "it was stopped there, with everything it started"
            )
        complete = getattr(process, "complete", True)
        return RemoteResult(bytes(out), rest.decode("utf-8", "replace"), code, script, seconds, complete)


class SshProcess:
    """A command on a paramiko channel, read to the channel's end of file.

    sshd sends a command's exit status when it reaps the command, and may still be
    draining the command's pipe then (OpenSSH does so on purpose): the packets can
    arrive as data, exit status, more data, EOF. So the exit status never ends the
    reading; the channel's EOF (or its close) does. A leftover background process that
    keeps stdout open would hold the EOF back for as long as it lives: once the exit
    status is in, it gets `EOF_GRACE` seconds, then reading stops and the result says
    its output may be cut (`RemoteResult.complete`).
    """

    def __init__(self, channel: paramiko.Channel, host: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.channel = channel
        self.host = host
        self.clock = clock
        #: When the exit status was first seen without the EOF (the grace period's start).
        self._status_at: float | None = None
        #: False when reading stopped at the grace period, before the channel's EOF.
        self.complete = True

    def _lost(self, e: BaseException) -> ConnectionLost:
        return ConnectionLost(f"lost the SSH connection to {self.host} ({type(e).__name__})")

    def send(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._lost(e) from None

    def close_stdin(self) -> None:
        try:
            self.channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._lost(e) from None

    def _at_end(self) -> bool:
        channel = self.channel
        return bool(channel.eof_received or channel.closed)

    def read(self, wait: float) -> tuple[bytes, bytes]:
        """What arrived within ``wait`` seconds. It waits for data or the EOF (the channel's
        pipe is set by either); after the EOF, for the exit status."""
        channel = self.channel
        try:
            if not (channel.recv_ready() or channel.recv_stderr_ready()):
                if not self._at_end():
                    select.select([channel], [], [], wait)
                elif not channel.exit_status_ready():
                    channel.status_event.wait(wait)
            out = channel.recv(65536) if channel.recv_ready() else b""
            err = channel.recv_stderr(65536) if channel.recv_stderr_ready() else b""
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._lost(e) from None
        transport = channel.get_transport()
        if not out and not err and (transport is None or not transport.is_active()):
            raise ConnectionLost(f"lost the SSH connection to {self.host}")
        return out, err

    def finished(self) -> bool:
        """True once everything the command printed was read (EOF, nothing buffered) and its
        exit status is in; or `EOF_GRACE` seconds after the exit status when the EOF is held back."""
        channel = self.channel
        if channel.recv_ready() or channel.recv_stderr_ready():
            return False
        if self._at_end():
            return channel.exit_status_ready() or bool(channel.closed)
        if not channel.exit_status_ready():
            return False
        now = self.clock()
        if self._status_at is None:
            self._status_at = now
        if now - self._status_at < EOF_GRACE:
            return False
        self.complete = False
        return True

    def exit_code(self) -> int:
        channel = self.channel
        if not channel.exit_status_ready():
            # Closed with no exit status because the connection died (paramiko would say -1):
            # the command may have done anything, it did not end.
            transport = channel.get_transport()
            if transport is None or not transport.is_active():
                raise ConnectionLost(f"lost the SSH connection to {self.host}")
        return channel.recv_exit_status()

    def close(self) -> None:
        try:
            self.channel.close()
        except Exception:  # closing a channel of a dead transport: nothing left to do
            pass


class SshTarget(Runner):
    """A registry host over one SSH connection for the whole task."""

    def __init__(self, cxn: Connection, name: str | None = None, stack: str | None = None) -> None:
        self.cxn = cxn
        self.name = name or ssh.describe(cxn)
        #: The CloudFormation stack this host was found from, if any.
        self.stack = stack
        self._transport: paramiko.Transport | None = None
        self.run_options = RunOptions.load(getattr(cxn, "config", None))
        #: sudo.password (Fabric's config), for a host whose sudo asks (`quilt_ops.sudo_password`).
        self.sudo_password = sudo_password.password(getattr(cxn, "config", None))
        #: The keeper of that password on the host (its channel open while the connection is),
        #: and its folder's name: every command gets its askpass helper.
        self._keeper: SshProcess | None = None
        self._askpass: str | None = None
        #: Set when `close` begins (under ``_closing``): from then on no command starts, so none
        #: can start with the askpass path once the keeper may have removed its folder.
        self._closed = False
        self._closing = threading.Lock()

    def open(self) -> None:
        """Opens the connection (once; a second call checks it is still the same one)."""
        if self._transport is None:
            self._transport = ssh.open_connection(self.cxn, self.name)
            self._keep_sudo_password()
        self.check_open()

    def _keep_sudo_password(self) -> None:
        """With sudo.password, starts the connection's keeper before any other command, and
        waits for its answer (`quilt_ops.sudo_password`); without it, does nothing."""
        secret = self.sudo_password
        if secret is None or not self.sudo.strip():
            return
        try:
            channel = self.cxn.create_session()
            name = sudo_password.new_name()
            command = sudo_password.keeper_command(name, sudo_password.asking(self.sudo), MARK)
            if self.run_options.echo:
                self.echo(self.name, command, self.masker)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise NotStarted(f"lost the SSH connection to {self.name} ({type(e).__name__})") from None
        keeper = SshProcess(channel, self.name)
        self.masker.add(secret)  # masked too in anything the host prints back
        try:
            keeper.send(secret.encode() + b"\n")
            if sudo_password.ready(sudo_password.first_line(keeper, self.name, check=stopping.check), self.name):
                self._askpass = name
        except BaseException:
            keeper.close()
            raise
        self._keeper = keeper

    def check_open(self) -> None:
        """Raises `NotStarted` unless the connection opened first is still up."""
        if self._transport is None or self.cxn.transport is not self._transport or not self._transport.is_active():
            raise NotStarted(f"lost the SSH connection to {self.name}")

    def start(self, script: str, *, timeout: float, pty: bool = False) -> Process:
        timeout = self.starting(script, timeout)
        if self._transport is None:
            self.open()
        self.check_open()
        environment = self._environment()
        try:
            channel = self.cxn.create_session()
            if pty:
                channel.get_pty(term="dumb", width=200, height=40)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise NotStarted(f"lost the SSH connection to {self.name} ({type(e).__name__})") from None
        try:
            channel.exec_command(environment + wrap(script, timeout, pty))
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ConnectionLost(f"lost the SSH connection to {self.name} ({type(e).__name__})") from None
        return SshProcess(channel, self.name)

    def kill(self, pgid: int | None) -> None:
        """Best effort: kills a command's process group on the host over a new session."""
        if pgid is None or self._transport is None or not self._transport.is_active():
            return
        try:
            channel = self.cxn.create_session()
            channel.settimeout(15)
            channel.exec_command(self._environment() + kill_command(pgid, self.sudo))
            channel.status_event.wait(15)
            channel.close()
        except Exception:  # the connection is going away; the host's own timeout still applies
            pass

    def _environment(self) -> str:
        """The askpass setting a command starts with; raises `NotStarted` once `close` began."""
        with self._closing:
            if self._closed:
                raise NotStarted(f"the SSH connection to {self.name} is closed")
            return sudo_password.environment(self._askpass)

    def close(self) -> None:
        """Closes the connection, and only then lets the keeper end (its stdin ends: it removes
        the password's folder). The other way round, a command another thread started in
        between got SUDO_ASKPASS naming a path in the temp folder that anyone could create by
        then (the name is on the keeper's command line): an askpass planted by another user.
        Commands on the connection are started in order before its end reaches the host."""
        with self._closing:
            self._closed, self._askpass = True, None
        ssh.close(self.cxn)
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None
