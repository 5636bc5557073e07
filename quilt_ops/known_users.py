"""``quilt.known_users``: which IAM user each host runs on, recorded at its first rotation.

Kept like an OpenSSH known_hosts file, on the operator's machine (by default beside
``quilt.known_hosts``): one line a host, ``HOST IAM_USER``, ``#`` comments. The host
is named as known_hosts names it (``name`` or ``[name]:port``). Once a host is bound,
a routine run needs no ``--iam-user``: the binding, not the host, says whose key it
is; a binding is changed only by an explicit ``--iam-user``/``--stack`` with ``--rebind``.
The file is rewritten atomically (0600) under an exclusive lock, so that hosts rotated
in parallel all get their line.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile

from .errors import ConfigError

FILE_NAME = "quilt_known_users"
#: An IAM user name (IAM's own rule) and a host as known_hosts writes it.
USER = re.compile(r"[\w+=,.@-]{1,128}")
HOST = re.compile(r"\[?[A-Za-z0-9_.:%-]+\]?(:[0-9]+)?")


def default_path(known_hosts: str) -> str:
    """The file beside known_hosts."""
    return os.path.join(os.path.dirname(os.path.abspath(known_hosts)), FILE_NAME)


def entry(host: str, port: int | None = 22) -> str:
    """The host as known_hosts names it: ``host``, or ``[host]:port`` off port 22."""
    return host if port in (None, 22) else f"[{host}]:{port}"


def parse(text: str) -> dict[str, str]:
    """Host -> IAM user; lines that are not ``HOST USER`` are skipped (as ssh skips them)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) != 2 or words[0].startswith("#"):
            continue
        host, user = words
        if HOST.fullmatch(host) and USER.fullmatch(user):
            found[host] = user
    return found


def lookup(path: str, host: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse(f.read()).get(host)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


def record(path: str, host: str, user: str) -> None:
    """Binds ``host`` to ``user`` (replacing its line, keeping every other line)."""
    if not HOST.fullmatch(host) or not USER.fullmatch(user):
        raise ConfigError(f"cannot record {host!r} -> {user!r} in {path}: not a host and an IAM user name")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = ["# quilt-ops: the IAM user each registry host runs on (HOST IAM_USER), like known_hosts"]
        kept = [line for line in lines if line.split()[:1] != [host]]
        kept.append(f"{host} {user}")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{FILE_NAME}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(kept) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None
    finally:
        os.close(lock_fd)
