"""SSH connections to registry hosts: host-key checking, timeouts, remote commands.

Fabric accepts any host key silently (paramiko's ``AutoAddPolicy``). A tool that
writes credentials to a host must not, so every connection made here checks the
host key against the known_hosts files: ``quilt.known_hosts`` and any
``UserKnownHostsFile`` of the ssh_config in use. An unknown key is refused
(``reject``) or recorded (``accept-new``); a changed key is always refused.

One `fabric.Connection` per host per task; every remote step is a single
command string run over it (shell-quoted here, never holding a secret).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shlex
import socket
import threading
from typing import Any

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from .config import Settings
from .errors import HostError, HostKeyChanged, HostKeyUnknown

_record_lock = threading.Lock()

# paramiko logs transport failures with tracebacks, which Python's last-resort
# handler would print to stderr; the failure reaches the operator as one Error line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a host key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_and_port(known_name: str) -> tuple[str, int]:
    if known_name.startswith("[") and "]:" in known_name:
        host, port = known_name[1:].split("]:", 1)
        return host, int(port)
    return known_name, 22


class RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """``reject``: an unknown host key ends the connection with a trust hint."""

    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        host, port = _host_and_port(hostname)
        scan = f"ssh-keyscan -p {port} {host}" if port != 22 else f"ssh-keyscan {host}"
        raise HostKeyUnknown(
            f"host key of {hostname} is not known ({key.get_name()} {fingerprint(key)}); "
            f"check it, then trust it with '{scan} >> {self.known_hosts}' "
            f"or set quilt.host_key_policy: accept-new")


class RecordNewHostKey(paramiko.MissingHostKeyPolicy):
    """``accept-new``: a first-seen key is accepted and appended to known_hosts."""

    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _record_lock:
            folder = os.path.dirname(self.known_hosts)
            if folder:
                os.makedirs(folder, mode=0o700, exist_ok=True)
            fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line)


def known_hosts_files(cxn: Connection, settings: Settings) -> list[str]:
    """quilt.known_hosts plus the ssh_config's UserKnownHostsFile entries, if any."""
    files = [settings.known_hosts]
    configured = cxn.ssh_config.get("userknownhostsfile")
    if configured:
        entries = configured if isinstance(configured, list) else shlex.split(configured)
        files += [os.path.expanduser(entry) for entry in entries]
    return files


def prepare(cxn: Connection, settings: Settings) -> Connection:
    """Puts host-key checking and the connect timeout on a not-yet-open Connection."""
    client = cxn.client
    for path in known_hosts_files(cxn, settings)[1:]:
        if os.path.isfile(path):
            client.load_system_host_keys(path)
    if os.path.isfile(settings.known_hosts):
        client.get_host_keys().load(settings.known_hosts)
    if settings.host_key_policy == "accept-new":
        client.set_missing_host_key_policy(RecordNewHostKey(settings.known_hosts))
    else:
        client.set_missing_host_key_policy(RefuseUnknownHostKey(settings.known_hosts))
    # Fabric's own default waits forever; -t / ConnectTimeout still win. A host
    # that accepts TCP but never speaks SSH is bounded by the same timeout.
    if cxn.connect_timeout is None:
        cxn.connect_timeout = int(settings.connect_timeout) or 1
    cxn.connect_kwargs.setdefault("banner_timeout", cxn.connect_timeout)
    cxn.connect_kwargs.setdefault("auth_timeout", cxn.connect_timeout)
    return cxn


def check_host_string(host: str) -> None:
    """Refuses host strings Fabric would misread: empty host, spaces, bad port."""
    rest = host.rsplit("@", 1)[-1]
    name, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if not name or any(ch.isspace() for ch in host):
        raise HostError(f"invalid host {host!r}: expected [user@]host[:port]")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise HostError(f"invalid host {host!r}: the port must be a number from 1 to 65535")


def connection(host: str, config: Any, settings: Settings) -> Connection:
    """A prepared (not yet opened) Connection to ``host`` ([user@]host[:port] or an ssh_config alias)."""
    check_host_string(host)
    try:
        cxn = Connection(host, config=config)
    except (ValueError, TypeError) as e:
        raise HostError(f"invalid host {host!r}: {e}") from None
    return prepare(cxn, settings)


def describe(cxn: Connection) -> str:
    """How a host is named in messages: the name the operator gave."""
    return getattr(cxn, "original_host", None) or cxn.host


def open_connection(cxn: Connection) -> None:
    """Opens the SSH session, turning every way it can fail into a one-line `HostError`."""
    if cxn.is_connected:
        return
    where = f"{cxn.user}@{cxn.host}:{cxn.port}"
    try:
        cxn.open()
    except (HostKeyUnknown, HostKeyChanged):
        cxn.close()
        raise
    except paramiko.BadHostKeyException as e:
        cxn.close()
        raise HostKeyChanged(
            f"host key of {cxn.host}:{cxn.port} has CHANGED ({e.key.get_name()} {fingerprint(e.key)}, "
            f"expected {fingerprint(e.expected_key)}): refusing to connect; if the host was rebuilt, "
            f"remove its old line from known_hosts") from None
    except paramiko.AuthenticationException:
        cxn.close()
        raise HostError(f"SSH authentication failed for {where}: the key was refused") from None
    except socket.gaierror:
        cxn.close()
        raise HostError(f"cannot resolve host {cxn.host!r}") from None
    except (socket.timeout, TimeoutError):
        cxn.close()
        raise HostError(f"timed out connecting to {where} after {cxn.connect_timeout}s") from None
    except paramiko.ssh_exception.NoValidConnectionsError as e:
        cxn.close()
        reason = "connection refused" if all(
            getattr(err, "errno", None) == 111 for err in e.errors.values()) else "cannot connect"
        raise HostError(f"cannot connect to {where}: {reason}") from None
    except (paramiko.SSHException, OSError, EOFError) as e:
        cxn.close()
        raise HostError(f"SSH connection to {where} failed: {type(e).__name__}: {e}") from None


class RemoteResult:
    """What a remote command printed and how it exited."""

    def __init__(self, stdout: str, stderr: str, exited: int) -> None:
        self.stdout, self.stderr, self.exited = stdout, stderr, exited

    @property
    def ok(self) -> bool:
        return self.exited == 0


def run(cxn: Connection, command: str, timeout: float | None = None) -> RemoteResult:
    """Runs one command on the host and returns its output; never echoes it.

    The command line must not hold a secret: it is visible in the host's
    process list.
    """
    open_connection(cxn)
    try:
        result = cxn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
    except CommandTimedOut:
        raise HostError(f"a command on {describe(cxn)} did not finish within {timeout:.0f}s") from None
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise HostError(f"lost the SSH connection to {describe(cxn)}: {type(e).__name__}") from None
    return RemoteResult(result.stdout, result.stderr, result.exited)


def run_with_input(cxn: Connection, command: str, data: bytes, timeout: float = 60) -> RemoteResult:
    """Runs one command with ``data`` on its stdin (then EOF): one round trip where SFTP takes several.

    For content that is not secret (journals, notes); secrets go over SFTP only.
    """
    open_connection(cxn)
    try:
        channel = cxn.client.get_transport().open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.exec_command(command)
        channel.sendall(data)
        channel.shutdown_write()
        stdout, stderr = b"", b""
        while True:
            chunk = channel.recv(65536)
            if not chunk:
                break
            stdout += chunk
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(65536)
        code = channel.recv_exit_status()
        channel.close()
    except (socket.timeout, TimeoutError):
        raise HostError(f"a command on {describe(cxn)} did not finish within {timeout:.0f}s") from None
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise HostError(f"lost the SSH connection to {describe(cxn)}: {type(e).__name__}") from None
    return RemoteResult(stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"), code)


def in_dir(settings: Settings, command: str) -> str:
    """Prefixes a command with the cd into quilt.registry_dir ("" = login directory)."""
    if not settings.registry_dir:
        return command
    return f"cd -- {shlex.quote(settings.registry_dir)} && {command}"
