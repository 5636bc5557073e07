"""Running the tasks on the registry host itself (``--local``): the machine quilt-ops runs on is the host.

A `LocalTarget` is a `quilt_ops.remote.Target` without SSH: every step runs the
same shell script as over SSH, with ``sh``, through Invoke's local runner (the
one behind ``Context.run``), so the checks, verdicts, lock, journal, env-file
writes and exit statuses are those of the SSH path. As sshd does for a remote
command, each command starts in a session of its own, in the login directory
($HOME: ``quilt.registry_dir`` is relative to it), under the same ``timeout``
wrapper (`quilt_ops.remote.wrap`); when quilt-ops gives up on a command, its
whole process group is killed (`quilt_ops.remote.kill_command`). create-admin's
terminal is a local pseudo-terminal.

Docker is reached through the Docker SDK over the engine's socket when this
process can use it (see `quilt_ops.docker_access.for_local`), else through the
CLI inside the script as over SSH (``sudo -n docker``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import shlex
import socket
import struct
import subprocess
import termios
from typing import Any

import invoke
from invoke.runners import Local

from . import docker_access
from .config import Settings
from .core_options import RunOptions
from .errors import ConnectionLost, HostError, NotStarted
from .remote import Process, Runner, kill_command, wrap

#: Bytes read from a stream at a time.
CHUNK = 65536
#: The local terminal's size (as over SSH).
PTY_ROWS, PTY_COLUMNS = 40, 200
#: Seconds the kill of a process group may take.
KILL_TIMEOUT = 15
#: Secrets of quilt-ops' own environment that host commands never get (a remote command never
#: sees them either): the operator's AWS credentials, create-admin's password.
WITHHELD = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "QUILT_ADMIN_PASSWORD",
)


class SessionRunner(Local):
    """Invoke's local runner (`invoke.runners.Local`: its stream reading, writing, exit status
    and clean-up), starting its command in a session of its own, as sshd does for a remote
    command: the command's process group can be killed whole, and a Ctrl-C at the operator's
    terminal reaches quilt-ops only (which then kills the group itself)."""

    def start(self, command: str, shell: str, env: dict[str, Any]) -> None:
        if self.using_pty:
            # As Invoke's own pty start (pty.fork: the child leads a session, on the terminal),
            # with the terminal's size set from here, as over SSH (quilt-ops' own stdout may be
            # no terminal, nor even a file).
            self.pid, self.parent_fd = pty.fork()
            if self.pid == 0:  # pragma: no cover - the child, replaced by the shell
                try:
                    os.execve(shell, [shell, "-c", command], env)
                finally:
                    os._exit(127)
            fcntl.ioctl(self.parent_fd, termios.TIOCSWINSZ, struct.pack("HHHH", PTY_ROWS, PTY_COLUMNS, 0, 0))
            return
        self.process = subprocess.Popen(
            [shell, "-c", command],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )


class LocalProcess:
    """A command started by `SessionRunner`, read without blocking (the `quilt_ops.remote.Process`
    protocol): stdout and stderr apart, or one stream on a pseudo-terminal."""

    def __init__(self, runner: SessionRunner, name: str) -> None:
        self.runner = runner
        self.name = name
        self._exited = False
        if runner.using_pty:
            self._fds = {"out": runner.parent_fd}
        else:
            process = runner.process
            assert process is not None and process.stdout is not None and process.stderr is not None
            self._fds = {"out": process.stdout.fileno(), "err": process.stderr.fileno()}
        #: Streams not at their end yet.
        self._open = dict(self._fds)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        fd = self.runner.parent_fd if self.runner.using_pty else self._stdin_fd()
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except BrokenPipeError:
            pass  # the command has ended and reads no more; its exit status tells
        except OSError as e:
            raise ConnectionLost(
                f"cannot write to a command on {self.name} ({errno.errorcode.get(e.errno or 0)})"
            ) from None

    def _stdin_fd(self) -> int:
        process = getattr(self.runner, "process", None)
        if process is None or process.stdin is None or process.stdin.closed:
            raise ConnectionLost(f"the command on {self.name} takes no more input")
        return process.stdin.fileno()

    def close_stdin(self) -> None:
        if self.runner.using_pty:
            return  # a terminal has no end of input: the program ends by itself or is hung up
        process = getattr(self.runner, "process", None)
        if process is not None and process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass

    def read(self, wait: float) -> tuple[bytes, bytes]:
        got = {"out": b"", "err": b""}
        fds = list(self._open.values())
        if not fds:
            self.exited()
            return b"", b""
        ready, _, _ = select.select(fds, [], [], wait)
        for stream, fd in list(self._open.items()):
            if fd not in ready:
                continue
            try:
                data = os.read(fd, CHUNK)
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: the terminal's other side has closed (the program ended)
                    raise
                data = b""
            if data:
                got[stream] += data
            else:
                del self._open[stream]
        return got["out"], got["err"]

    def exited(self) -> bool:
        if not self._exited:
            self._exited = bool(self.runner.process_is_finished)
        return self._exited

    def finished(self) -> bool:
        """Exited, and nothing left to read (a child it left behind may keep a stream open: what
        it has not written by then is not waited for, as with a remote command)."""
        if not self.exited():
            return False
        if not self._open:
            return True
        ready, _, _ = select.select(list(self._open.values()), [], [], 0)
        return not ready

    def exit_code(self) -> int:
        while not self.exited():
            select.select([], [], [], 0.05)
        code = self.runner.returncode()
        return -1 if code is None else code

    def close(self) -> None:
        process = getattr(self.runner, "process", None)
        if not self.runner.using_pty and process is not None:
            for stream in (process.stdin, process.stdout, process.stderr):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
        try:
            self.runner.stop()  # closes the terminal's side (the program is hung up, as over SSH)
        except Exception:  # stopping a runner that never ran: nothing to release
            pass
        if self.runner.using_pty and not self._exited:
            try:
                os.waitpid(self.runner.pid, os.WNOHANG)
            except ChildProcessError:
                pass


class LocalTarget(Runner):
    """The registry host quilt-ops runs on, for one task."""

    #: Never found from a CloudFormation stack.
    stack: str | None = None

    def __init__(self, context: invoke.Context | None = None, name: str | None = None) -> None:
        self.context = context or invoke.Context()
        #: Named after the machine, as its reports and locks say.
        self.name = name or socket.gethostname()
        self._docker: docker_access.DockerAccess | None = None
        self._docker_for: Settings | None = None
        self.run_options = RunOptions.load(self.context.config)

    @property
    def home(self) -> str:
        """The login directory of a local run: $HOME (else the user's home in the password database)."""
        return os.path.expanduser("~")

    def open(self) -> None:
        """Checks that the login directory can be entered (every command starts there)."""
        if not os.path.isdir(self.home) or not os.access(self.home, os.X_OK):
            raise HostError(
                f"cannot enter the login directory {self.home!r} on {self.name} (set HOME, or an absolute "
                "quilt.registry_dir)"
            )

    def environment(self) -> dict[str, str]:
        """The command's environment: this process's (DOCKER_HOST, PATH...) without `WITHHELD`,
        with Invoke's ``run.env`` (config) on top."""
        run = self.context.config.run
        extra = {str(k): str(v) for k, v in dict(run.env or {}).items()}
        base = {} if run.replace_env else {k: v for k, v in os.environ.items() if k not in WITHHELD}
        return {**base, **extra}

    def start(self, script: str, *, timeout: float, pty: bool = False) -> Process:
        timeout = self.starting(script, timeout)
        runner = SessionRunner(self.context)
        runner.using_pty = pty
        command = f"cd -- {shlex.quote(self.home)} || exit 1; {wrap(script, timeout, pty)}"
        try:
            runner.start(command, shell="/bin/sh", env=self.environment())
        except OSError as e:
            raise NotStarted(f"cannot start a command on {self.name}: {e.strerror or type(e).__name__}") from None
        return LocalProcess(runner, self.name)

    def kill(self, pgid: int | None) -> None:
        """Kills a command's process group (and what it started through sudo), as over SSH."""
        if pgid is None:
            return
        try:
            subprocess.run(
                ["/bin/sh", "-c", kill_command(pgid, self.sudo)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=KILL_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired):
            pass  # the command's own timeout still applies

    def docker_access(self, settings: Settings) -> docker_access.DockerAccess:
        """Docker as ``quilt.docker`` says, on this machine (one choice, and one client, per task)."""
        if self._docker is None or self._docker_for is not settings:
            if self._docker is not None:
                self._docker.close()
            self._docker = docker_access.for_local(settings)
            self._docker_for = settings
        return self._docker

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None


def again(target: object, task: str) -> str:
    """The command that runs ``task`` again on ``target`` (for messages that say how to finish)."""
    if isinstance(target, LocalTarget):
        return f"quilt-ops --local {task}"
    return f"fab -H {shlex.quote(str(getattr(target, 'name', 'HOST')))} {task}"
