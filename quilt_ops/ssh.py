"""SSH connections to registry hosts: host-key checking, timeouts, clean failures.

Fabric accepts any host key silently (paramiko's ``AutoAddPolicy``). A tool that
writes credentials to a host must not, so every connection made here, and every
``ProxyJump`` hop in front of it, checks the host key against the known_hosts
files: ``quilt.known_hosts`` and any ``UserKnownHostsFile`` of the ssh_config in
use. An unknown key is refused (``reject``) or recorded (``accept-new``); a
changed key is always refused. Every hop gets the connect timeout too.

Running commands over an open connection is `quilt_ops.remote`'s business.
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

from .config import Settings
from .errors import HostError, HostKeyChanged, HostKeyUnknown

_record_lock = threading.Lock()
#: Seconds between SSH keepalives: a dead network is noticed within a minute.
KEEPALIVE = 15

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
            f"or set quilt.host_key_policy: accept-new"
        )


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
    """Puts host-key checking and the connect timeout on a not-yet-open Connection,
    and on every ``ProxyJump`` hop in front of it (Fabric builds those itself)."""
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
    # Fabric puts -t into connect_kwargs' "timeout", and then refuses to open a
    # connection that also has a connect_timeout (ValueError): -t becomes the latter.
    flag = cxn.connect_kwargs.get("timeout") if cxn.connect_kwargs else None
    if flag:
        cxn.connect_kwargs = {key: value for key, value in dict(cxn.connect_kwargs).items() if key != "timeout"}
        cxn.connect_timeout = max(1, int(flag))
    if cxn.connect_timeout is None:
        cxn.connect_timeout = max(1, int(settings.connect_timeout))
    cxn.connect_kwargs.setdefault("banner_timeout", cxn.connect_timeout)
    cxn.connect_kwargs.setdefault("auth_timeout", cxn.connect_timeout)
    if isinstance(cxn.gateway, Connection):
        prepare(cxn.gateway, settings)
    return cxn


def check_host_string(host: str) -> None:
    """Refuses host strings Fabric would misread: empty host, spaces, bad port, option-like."""
    rest = host.rsplit("@", 1)[-1]
    name, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if not name or any(ch.isspace() for ch in host) or host.startswith("-"):
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
    for hop in _hops(cxn):
        check_host_string(hop.original_host)
    return prepare(cxn, settings)


def _hops(cxn: Connection) -> list[Connection]:
    hops = []
    gateway = cxn.gateway
    while isinstance(gateway, Connection):
        hops.append(gateway)
        gateway = gateway.gateway
    return hops


def open_connection(cxn: Connection, name: str) -> paramiko.Transport:
    """Opens the SSH session (through any gateway), turning every way it can fail into
    a one-line `HostError`; returns the transport, with keepalives on."""
    where = f"{cxn.user}@{cxn.host}:{cxn.port}"
    try:
        cxn.open()
    except (HostKeyUnknown, HostKeyChanged):
        _close(cxn)
        raise
    except paramiko.BadHostKeyException as e:
        _close(cxn)
        raise HostKeyChanged(
            f"host key of {e.hostname} has CHANGED ({e.key.get_name()} {fingerprint(e.key)}, "
            f"expected {fingerprint(e.expected_key)}): refusing to connect; if the host was rebuilt, "
            f"remove its old line from known_hosts"
        ) from None
    except paramiko.AuthenticationException:
        _close(cxn)
        raise HostError(f"SSH authentication failed for {where}: the key was refused") from None
    except socket.gaierror:
        _close(cxn)
        raise HostError(f"cannot resolve host {cxn.host!r}") from None
    except TimeoutError:
        _close(cxn)
        raise HostError(f"timed out connecting to {where} after {cxn.connect_timeout}s") from None
    except paramiko.ssh_exception.NoValidConnectionsError as e:
        _close(cxn)
        reason = (
            "connection refused"
            if all(getattr(err, "errno", None) == 111 for err in e.errors.values())
            else "cannot connect"
        )
        raise HostError(f"cannot connect to {where}: {reason}") from None
    except (paramiko.SSHException, OSError, EOFError) as e:
        _close(cxn)
        text = str(e)
        if "banner" in text or "No existing session" in text:
            raise HostError(
                f"no SSH answer from {where} within {cxn.connect_timeout}s (timed out: is it an SSH port?)"
            ) from None
        raise HostError(f"SSH connection to {name} ({where}) failed: {type(e).__name__}: {e}") from None
    transport = cxn.transport
    if transport is None:  # pragma: no cover - paramiko always sets it on success
        raise HostError(f"SSH connection to {where} failed")
    transport.set_keepalive(KEEPALIVE)
    # paramiko leaves Nagle's algorithm on: each new channel then waits for a delayed ACK
    # (about 40 ms a command). Through a gateway or ProxyCommand there is no TCP socket here.
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    return transport


def _close(cxn: Connection) -> None:
    try:
        cxn.close()
    except Exception:  # a half-open connection may fail to close; nothing to keep
        pass
    for hop in _hops(cxn):
        try:
            hop.close()
        except Exception:
            pass


def close(cxn: Connection) -> None:
    """Closes the connection and every gateway hop."""
    _close(cxn)


def describe(cxn: Connection) -> str:
    """How a host is named in messages: the name the operator gave."""
    return getattr(cxn, "original_host", None) or cxn.host
