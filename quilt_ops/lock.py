"""The host lock: one changing operation at a time on a registry host.

The lock is a ``flock`` held by a remote process that lives exactly as long as
the holder's SSH channel: if the holder is killed, loses its connection or its
machine goes off, sshd closes the channel, the process ends and the lock is free
again. Nothing stale is ever left to clean up by hand. Next to the lock file an
owner note (who, from where, since when; never a secret) lets a second operator
be told who holds it.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import socket
import time
from datetime import datetime, timezone
from typing import Any

from fabric import Connection

from . import hostfiles, ssh
from .config import Settings
from .errors import HostError, QuiltError

ACQUIRED = b"quilt-ops-lock-acquired"


class LockHeld(QuiltError):
    """Another operation holds the host lock."""


def lock_name(settings: Settings) -> str:
    return hostfiles.sibling(settings.env_file, "quilt-ops.lock")


def owner_name(settings: Settings) -> str:
    return hostfiles.sibling(settings.env_file, "quilt-ops.lock.owner")


def who_am_i() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def describe_owner(raw: bytes | None) -> str:
    try:
        owner = json.loads(raw or b"")
        return f"{owner['task']} by {owner['who']} (pid {owner['pid']}) since {owner['since']}"
    except (ValueError, KeyError, TypeError):
        return "another quilt-ops run (owner unknown)"


class HostLock:
    """Holds the host lock for a ``with`` block; raises `LockHeld` at once if taken."""

    def __init__(self, c: Connection, settings: Settings, task: str, timeout: float = 15) -> None:
        self.c, self.settings, self.task, self.timeout = c, settings, task, timeout
        self.channel = None

    def __enter__(self) -> "HostLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        ssh.open_connection(self.c)
        owner = json.dumps({"task": self.task, "who": who_am_i(), "pid": os.getpid(),
                            "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        lock, note = shlex.quote(lock_name(self.settings)), shlex.quote(owner_name(self.settings))
        # Inside the flock: write the owner note, say so, then hold the lock until our
        # channel closes (cat sees EOF), and remove the note on the way out.
        inner = (f'printf "%s" "$1" > {note} 2>/dev/null; echo {ACQUIRED.decode()}; cat >/dev/null; '
                 f"rm -f -- {note}")
        command = ssh.in_dir(self.settings, f"umask 077; exec flock -n {lock} sh -c {shlex.quote(inner)} "
                                            f"quilt-ops-lock {shlex.quote(owner)}")
        try:
            channel = self.c.client.get_transport().open_session()
            channel.settimeout(self.timeout)
            channel.exec_command(command)
        except Exception as e:
            raise HostError(f"cannot take the host lock on {ssh.describe(self.c)}: {type(e).__name__}") from None
        received = b""
        deadline = time.monotonic() + self.timeout
        while ACQUIRED not in received and time.monotonic() < deadline:
            try:
                chunk = channel.recv(256)
            except socket.timeout:
                break
            if not chunk:
                break
            received += chunk
        if ACQUIRED not in received:
            errors = b""
            if channel.recv_stderr_ready():
                errors = channel.recv_stderr(4096)
            channel.close()
            if b"not found" in errors:
                raise QuiltError(f"flock is not installed on {ssh.describe(self.c)}")
            if b"cannot open" in errors or b"ermission denied" in errors:
                raise QuiltError(f"cannot create the lock file {lock_name(self.settings)} on "
                                 f"{ssh.describe(self.c)}: permission denied; nothing was changed")
            holder = hostfiles.read_if_exists(self.c, self.settings, owner_name(self.settings))
            raise LockHeld(f"{ssh.describe(self.c)} is locked: {describe_owner(holder)}; "
                           "try again when it has finished")
        self.channel = channel

    def release(self) -> None:
        """Closes the lock's stdin: the remote side removes its note and lets go (one round trip)."""
        if self.channel is not None:
            try:
                self.channel.shutdown_write()
                self.channel.settimeout(5)
                self.channel.recv_exit_status()
                self.channel.close()
            except Exception:
                pass
            self.channel = None
