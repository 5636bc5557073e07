"""Small helpers every part of the sandbox uses: commands, processes, ports, waits, locks.

Every wait here has a timeout: a sandbox that hangs is worse than one that fails
with a reason.
"""

from __future__ import annotations

import fcntl
import http.client
import logging
import os
import secrets
import signal
import socket
import string
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

log = logging.getLogger("registry_sandbox")


class SandboxError(Exception):
    """A failure to report as one line (the command line prints ``sandbox: error: ...``)."""


# ----------------------------------------------------------------------------- commands


def run(cmd: list[str], check: bool = True, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess:
    """Runs a command to completion, output captured as text; raises SandboxError on failure."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        result = subprocess.run(cmd, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise SandboxError(f"{' '.join(cmd[:3])} did not finish within {timeout:.0f}s") from e
    if check and result.returncode != 0:
        out = result.stderr or result.stdout or ""
        detail = out.strip().splitlines()[-3:] if isinstance(out, str) else []
        raise SandboxError(f"{' '.join(cmd[:3])} failed ({result.returncode}): {' / '.join(detail)}")
    return result


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would point a docker client elsewhere.

    The engine a host uses is one fact held in the host's state: a DOCKER_HOST,
    DOCKER_CONTEXT or TLS setting of the caller must never leak into it.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
            "DOCKER_CONFIG",
            "DOCKER_API_VERSION",
        )
    }
    env.update(extra)
    return env


# ----------------------------------------------------------------------------- processes


def pid_alive(pid: int | None) -> bool:
    """True when the process exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Waits (bounded) until none of ``pids`` is alive; returns those still alive."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_pids(pids: Iterable[int], timeout: float = 10.0) -> None:
    """SIGTERM, a bounded wait, then SIGKILL for what is left."""
    pids = [p for p in pids if p and p != os.getpid()]
    signal_pids(pids, signal.SIGTERM)
    left = wait_gone(pids, timeout)
    if left:
        signal_pids(left, signal.SIGKILL)
        wait_gone(left, 5)


def stop_pid(pid: int | None, timeout: float = 10.0) -> None:
    if pid and pid_alive(pid):
        stop_pids([pid], timeout)


def processes() -> Iterator[tuple[int, int, int]]:
    """(pid, parent pid, real uid) of every process."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        ppid = uid = -1
        for line in status.splitlines():
            if line.startswith("PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith("Uid:"):
                uid = int(line.split()[1])
                break
        yield int(entry.name), ppid, uid


def descendants(roots: Iterable[int]) -> set[int]:
    """The processes below ``roots`` (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in processes():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def ancestors(pid: int) -> set[int]:
    """``pid`` and every process above it (never to be killed by a sweep)."""
    parents = {p: pp for p, pp, _ in processes()}
    found = {pid}
    while parents.get(pid, 0) > 0:
        pid = parents[pid]
        found.add(pid)
    return found


def kill_user_processes(uid: int, spare: AbstractSet[int] = frozenset(), timeout: float = 3) -> list[int]:
    """TERM then KILL every process of ``uid`` and everything below them (sudo, docker clients)."""
    mine = {pid for pid, _, puid in processes() if puid == uid} - spare
    victims = (mine | descendants(mine)) - spare - {os.getpid()}
    if victims:
        stop_pids(sorted(victims), timeout)
    return sorted(victims)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


#: The programs the sandbox starts (sshd shows up as "sshd:" once it has renamed itself).
DAEMONS = (
    "postgres",
    "dockerd",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "runc",
    "docker-proxy",
    "sshd",
    "moto_server",
)


def processes_under(folder: Path) -> list[int]:
    """The sandbox's daemons that belong to ``folder``: found even when a state file is lost.

    dockerd, containerd and its shims, sshd and the AWS proxy name a path below
    ``folder`` on their command line; moto runs with its folder as cwd. Only those
    programs count: an operator's shell or editor open in the folder is left alone.
    """
    prefix = str(folder).rstrip("/") + "/"
    spared = ancestors(os.getpid())
    found = []
    for pid, _, _ in processes():
        if pid in spared:
            continue
        line = cmdline(pid)
        if prefix not in line and "moto_server" not in line:
            continue
        words = line.split()
        program = os.path.basename(words[0].rstrip(":")) if words else ""
        is_python = program.startswith("python")
        if program not in DAEMONS and not is_python:
            continue
        if is_python and "moto_server" not in line and "aws_proxy.py" not in line:
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd") + "/"
        except OSError:
            cwd = ""
        if prefix in line or cwd.startswith(prefix):
            found.append(pid)
    return found


# ----------------------------------------------------------------------------- ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int = 0, taken: Iterable[int] = ()) -> int:
    """``preferred`` when free on 127.0.0.1 and not taken, otherwise a free port >= 20000."""
    taken = set(taken)
    if preferred and preferred not in taken and port_free(preferred):
        return preferred
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken and port >= 20000:
            return port
    raise SandboxError("no free port on 127.0.0.1")


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, body: str | None = None, timeout: float = 2) -> bool:
    """True when ``url`` answers 2xx (and, when given, exactly ``body``)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300 and (body is None or r.read().decode().strip() == body)
    except Exception:
        return False


# ----------------------------------------------------------------------------- waits


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise SandboxError(f"{what} did not come up within {timeout:.0f}s")
        time.sleep(interval)


# ----------------------------------------------------------------------------- files


def random_secret(n: int = 32) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def write_file(path: Path, text: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> bool:
    """Writes ``text`` atomically with owner and mode; returns False when nothing had to change."""
    try:
        st = path.stat()
        if path.read_text() == text and st.st_uid == uid and st.st_gid == gid and st.st_mode & 0o7777 == mode:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    tmp = path.with_name(f".{path.name}.sandbox-tmp")
    tmp.write_text(text)
    os.chown(tmp, uid, gid)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def ensure_dir(path: Path, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != uid or st.st_gid != gid:
        os.chown(path, uid, gid)
    if st.st_mode & 0o7777 != mode:
        path.chmod(mode)


def unmount_below(folder: Path) -> None:
    """Unmounts whatever is mounted below ``folder`` (what a killed dockerd leaves behind)."""
    prefix = str(folder).rstrip("/") + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        run(["umount", "-l", mount], check=False, timeout=30)


# ----------------------------------------------------------------------------- locks


class FileLock:
    """An fcntl lock on a file, re-entrant within one process.

    flock() locks belong to an open file description: a second open() of the same
    file in the same process would deadlock on itself, so nested holds in one
    process only count.
    """

    _held: dict[str, tuple[int, int]] = {}
    _guard = threading.RLock()

    def __init__(self, path: Path, timeout: float = 900) -> None:
        self.path = path
        self.timeout = timeout

    def __enter__(self) -> FileLock:
        key = str(self.path)
        self._guard.acquire()
        fd, count = self._held.get(key, (-1, 0))
        if count:
            self._held[key] = (fd, count + 1)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as busy:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    self._guard.release()
                    raise SandboxError(f"{key} stayed locked by another process for {self.timeout:.0f}s") from busy
                time.sleep(0.1)
        self._held[key] = (fd, 1)
        return self

    def __exit__(self, *exc: object) -> None:
        key = str(self.path)
        fd, count = self._held[key]
        if count > 1:
            self._held[key] = (fd, count - 1)
        else:
            del self._held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._guard.release()


def http_unix_get(socket_path: Path, path: str, timeout: float = 5) -> tuple[int, bytes]:
    """GET ``path`` over a unix socket (the Docker Engine API without a client process)."""

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(socket_path))

    conn = Conn("docker", timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
