"""Files on the host: read over SFTP, replaced atomically, backed up privately.

Secrets travel only inside SFTP writes, never in a command line (which the
host's process list shows) or a remote environment variable. Shell commands
here carry paths and modes only. A replaced file is either the complete old or
the complete new one at every instant: the new content goes into a temp file in
the same folder, created private before anything is written to it, flushed to
disk, then renamed over the original.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
import stat as stat_module
from dataclasses import dataclass

from fabric import Connection

from . import ssh
from .config import Settings
from .errors import QuiltError


class HostFileError(QuiltError):
    """A file on the host could not be read or written; nothing was replaced."""


@dataclass(frozen=True)
class RemoteFile:
    """A file's content and metadata as read from the host."""

    path: str
    content: bytes
    mode: int
    uid: int
    gid: int


def sftp_path(settings: Settings, name: str) -> str:
    """A path for SFTP (whose working directory is the login directory)."""
    return posixpath.join(settings.registry_dir, name) if settings.registry_dir else name


TEMP_PREFIX = ".quilt-ops-tmp-"


def sibling(path: str, suffix: str) -> str:
    """A hidden name next to ``path``: env/registry -> env/.registry.<suffix>."""
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}.{suffix}")


def temp_name(path: str) -> str:
    """A fresh temp file name in the folder of ``path`` (so a rename over it is atomic)."""
    return posixpath.join(posixpath.dirname(path), f"{TEMP_PREFIX}{secrets.token_hex(6)}")


def _sftp(c: Connection):
    ssh.open_connection(c)
    try:
        return c.sftp()  # Fabric keeps one SFTP session per connection
    except Exception as e:
        raise HostFileError(f"cannot open SFTP on {ssh.describe(c)}: {type(e).__name__}") from None


def _reason(e: Exception) -> str:
    text = str(e).lower()
    if getattr(e, "errno", None) == 2 or "no such file" in text:
        return "no such file"
    if getattr(e, "errno", None) == 13 or "permission denied" in text:
        return "permission denied"
    if "no space" in text or getattr(e, "errno", None) == 28:
        return "no space left on the device"
    return type(e).__name__


def _why_write_failed(c: Connection, settings: Settings, path: str, e: Exception) -> str:
    """SFTP reports a full disk as a bare "Failure": ask df when the error says no more."""
    reason = _reason(e)
    if reason not in ("OSError", "IOError", "EOFError") and "failure" not in str(e).lower():
        return reason
    folder = posixpath.dirname(path) or "."
    try:
        result = ssh.run(c, ssh.in_dir(settings, f"df -Pk -- {shlex.quote(folder)} | tail -n 1"), timeout=20)
        available = int(result.stdout.split()[3])
    except (QuiltError, ValueError, IndexError):
        return reason
    return "no space left on the device" if available < 64 else reason


def read(c: Connection, settings: Settings, name: str) -> RemoteFile:
    """Reads a file (relative to registry_dir) over SFTP; never prints it."""
    path = sftp_path(settings, name)
    sftp = _sftp(c)
    try:
        attrs = sftp.stat(path)
        if not stat_module.S_ISREG(attrs.st_mode or 0):
            raise HostFileError(f"{name} on {ssh.describe(c)} is not a regular file")
        with sftp.open(path, "rb") as f:
            content = f.read()
    except HostFileError:
        raise
    except (OSError, EOFError) as e:
        raise HostFileError(f"cannot read {name} on {ssh.describe(c)}: {_reason(e)}") from None
    return RemoteFile(name, content, stat_module.S_IMODE(attrs.st_mode), attrs.st_uid, attrs.st_gid)


def read_if_exists(c: Connection, settings: Settings, name: str) -> bytes | None:
    try:
        with _sftp(c).open(sftp_path(settings, name), "rb") as f:
            return f.read()
    except (OSError, EOFError):
        return None


def write_private(c: Connection, settings: Settings, name: str, content: bytes, then: str = "") -> None:
    """Atomically writes a small 0600 file (journal, note) that holds no secret, in one round trip.

    The content goes through the command's stdin into a temp file that is
    renamed over ``name``; ``then``, a shell command, runs after it in the same
    round trip (it must hold no secret either).
    """
    tmp, q_name = shlex.quote(temp_name(name)), shlex.quote(name)
    command = f"umask 077 && cat > {tmp} && mv -f -- {tmp} {q_name}" + (f" && {then}" if then else "")
    result = ssh.run_with_input(c, ssh.in_dir(settings, command), content, timeout=60)
    if not result.ok:
        ssh.run(c, ssh.in_dir(settings, f"rm -f -- {tmp}"), timeout=30)
        raise HostFileError(f"cannot write {name} on {ssh.describe(c)}: {_tail(result)}")


def remove(c: Connection, settings: Settings, *names: str) -> None:
    """Removes files if they exist (one command)."""
    if names:
        quoted = " ".join(shlex.quote(n) for n in names)
        ssh.run(c, ssh.in_dir(settings, f"rm -f -- {quoted}"), timeout=30)


def backup_command(name: str, backup_name: str) -> str:
    """Copies ``name`` to a 0600 ``backup_name``, created private before any byte is copied."""
    src, dst = shlex.quote(name), shlex.quote(backup_name)
    return f"umask 077 && rm -f -- {dst} && cp -- {src} {dst} && chmod 600 -- {dst} && (sync -- {dst} 2>/dev/null || sync)"


def _tail(result: ssh.RemoteResult) -> str:
    text = (result.stderr or result.stdout).strip().splitlines()
    line = text[-1] if text else f"exit code {result.exited}"
    if "No space left" in line:
        return "no space left on the device"
    if "Permission denied" in line:
        return "permission denied"
    return line[:200]


def replace(c: Connection, settings: Settings, name: str, content: bytes, mode: int) -> None:
    """Atomically replaces ``name`` with ``content``, with ``mode`` and the original's owner.

    The temp file is created empty with mode 0600 (umask 077) and the
    original's owner, and only then receives the content over SFTP; it is given
    ``mode`` (never looser than 0600, see the caller) and synced before the rename. On any failure the temp file is removed and ``name`` is
    untouched.
    """
    tmp = temp_name(name)
    q_tmp, q_name = shlex.quote(tmp), shlex.quote(name)
    prepare = (f"umask 077 && : > {q_tmp} && chmod 600 -- {q_tmp} && "
               f"(chown --reference={q_name} -- {q_tmp} 2>/dev/null || true)")
    result = ssh.run(c, ssh.in_dir(settings, prepare), timeout=30)
    if not result.ok:
        remove(c, settings, tmp)
        raise HostFileError(f"cannot create a temp file next to {name} on {ssh.describe(c)}: {_tail(result)}")
    sftp = _sftp(c)
    try:
        with sftp.open(sftp_path(settings, tmp), "r+b") as f:
            f.write(content)
            f.flush()
    except (OSError, EOFError) as e:
        remove(c, settings, tmp)
        raise HostFileError(f"cannot write {name} on {ssh.describe(c)}: {_why_write_failed(c, settings, name, e)}; "
                            f"the file was not changed") from None
    # The final mode comes last: it may be stricter than 0600 (0400 cannot be written).
    result = ssh.run(c, ssh.in_dir(settings, _install_command(tmp, name, mode)), timeout=60)
    if not result.ok:
        remove(c, settings, tmp)
        raise HostFileError(f"cannot replace {name} on {ssh.describe(c)}: {_tail(result)}")


def _install_command(tmp: str, name: str, mode: int) -> str:
    """Gives a written temp file its final mode and owner, syncs it, renames it over ``name``."""
    q_tmp, q_name = shlex.quote(tmp), shlex.quote(name)
    return (f"chmod {mode & 0o7777:o} -- {q_tmp} && (chown --reference={q_name} -- {q_tmp} 2>/dev/null || true) && "
            f"(sync -- {q_tmp} 2>/dev/null || sync) && mv -f -- {q_tmp} {q_name} && (sync -- {q_name} 2>/dev/null || true)")


def restore(c: Connection, settings: Settings, backup_name: str, name: str, mode: int) -> None:
    """Atomically puts a backup's content back in place of ``name``, with ``mode``."""
    tmp = temp_name(name)
    q_tmp, q_bak = shlex.quote(tmp), shlex.quote(backup_name)
    command = f"umask 077 && cp -- {q_bak} {q_tmp} && {_install_command(tmp, name, mode)}"
    result = ssh.run(c, ssh.in_dir(settings, command), timeout=60)
    if not result.ok:
        remove(c, settings, tmp)
        raise HostFileError(f"cannot restore {name} from its backup on {ssh.describe(c)}: {_tail(result)}")
