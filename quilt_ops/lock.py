"""The host lock: one changing operation at a time on a registry host.

The lock is a ``flock`` on a file next to the env file, held by a remote
process that lives exactly as long as its holder is there: it reads a
heartbeat line that quilt-ops sends every `HEARTBEAT` seconds, and lets go
when its stdin closes (the holder ended, was killed, or its connection was
closed) or when no heartbeat came for `SILENCE` seconds (the holder's network
died: sshd alone would keep a dead session, and the lock, for hours). Nothing
stale is ever left to clean up by hand.

Next to the lock file an owner note (who, from where, since when, a random
token; never a secret) tells a second operator who holds it, and lets every
changing command check, on the host and in the same round trip, that this run
still holds it (`guard`). The note is written by whoever can log in, so it is
only ever shown (sanitised), never acted on.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from . import hostfiles, sh, shell, stopping
from .config import Settings
from .errors import ConnectionLost, QuiltError
from .hostfiles import Access
from .remote import Process, Target
from .shell import q
from .status import ExitStatus

#: Seconds between heartbeats sent to the remote lock holder.
HEARTBEAT = 10
#: Seconds without a heartbeat after which the remote holder lets the lock go.
SILENCE = 45
#: How long a lock being let go by its holder (held, but its note removed) is waited for.
RELEASING = 15
#: How long a lock may be held at most (the remote holder's own time limit).
LONGEST = 24 * 3600

#: The remote lock holder (``sh/lock_holder.sh``, which says what it does and as whom) and
#: the breaker of a held lock (``sh/lock_break.sh``); values reach them only as arguments.
HOLDER = "lock_holder.sh"
BREAK = "lock_break.sh"

#: The lock's part of a step's script: ``lock_hold`` (runs the holder, or the breaker, as the
#: holder says), ``lock_folder_owner``, ``lock_register`` and ``lock_access_is`` (``sh/lock.sh``).
FUNCTIONS = "lock.sh"


class LockHeld(QuiltError):
    """Another operation holds the host lock."""

    status = ExitStatus.FAILED


class LockUnavailable(QuiltError):
    """The lock file cannot be created (no write access to the env folder, no sudo)."""

    status = ExitStatus.FAILED


def lock_name(settings: Settings) -> str:
    return hostfiles.sibling(settings.env_file, "quilt-ops.lock")


def owner_name(settings: Settings) -> str:
    return hostfiles.sibling(settings.env_file, "quilt-ops.lock.owner")


def commands_name(settings: Settings) -> str:
    """Where the lock holder's run registers its commands (process group, token)."""
    return hostfiles.sibling(settings.env_file, "quilt-ops.lock.commands")


def who_am_i() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid: still say something
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _clean(value: Any, limit: int = 60) -> str:
    """A value from the host's owner note, safe to print: printable, short."""
    text = "".join(ch for ch in str(value) if ch.isprintable())
    return text[:limit]


def describe_owner(raw: bytes | None) -> str:
    """Who holds the lock, from the owner note (untrusted: only shown, sanitised)."""
    try:
        owner = json.loads(raw or b"")
        return (
            f"{_clean(owner['task'], 20)} by {_clean(owner['who'])} (pid {_clean(owner['pid'], 10)}) "
            f"since {_clean(owner['since'], 30)}"
        )
    except (ValueError, KeyError, TypeError):
        return "another quilt-ops run (owner unknown)"


class HostLock:
    """Holds the host lock for a ``with`` block; raises `LockHeld` at once if taken.

    ``access`` tells how the env folder can be written (found when the lock is
    taken, in the same command): later steps use it.
    """

    def __init__(
        self,
        target: Target,
        settings: Settings,
        task: str,
        timeout: float = 30,
        breaking: Callable[[str], bool] | None = None,
    ) -> None:
        self.target, self.settings, self.task, self.timeout = target, settings, task, timeout
        #: ``--break-lock``: asked (with who holds it) whether to end a held lock's holder.
        self.breaking = breaking
        self.token = secrets.token_hex(8)
        self.access = Access.NONE
        self.process: Process | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        #: Until when a lock being let go (held, no note) is waited for.
        self.releasing_until = 0.0

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def owner_note(self) -> str:
        return json.dumps(
            {
                "task": self.task,
                "who": who_am_i(),
                "pid": os.getpid(),
                "token": self.token,
                "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    def script(self) -> shell.Script:
        s = shell.Script(self.settings)
        s.add(hostfiles.access_script(self.settings.env_file))
        s.need("flock", "bash")
        s.add(
            '[ "$qaccess" != none ] || exit 0',
            sh.load(FUNCTIONS),
            f"lock_hold bash -c {q(sh.load(HOLDER))} quilt-ops-lock {q(lock_name(self.settings))} "
            f"{q(owner_name(self.settings))} {q(self.owner_note())} {q(commands_name(self.settings))} "
            f'{q(self.token)} {q(self.settings.env_file)} "$m" {q(self.settings.sudo)} "$(lock_folder_owner)" '
            f"{int(SILENCE)}",
        )
        return s

    def acquire(self) -> None:
        if self.releasing_until == 0:
            self.releasing_until = time.monotonic() + RELEASING
        built = self.script()
        process = self.target.start(built.text(), timeout=LONGEST)
        received = b""
        # The holder's answer is a section (``<marker> lock WORD``): nothing else the host
        # prints (a .bashrc, a note) can pass for it.
        answer = f"{built.marker} lock ".encode()
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline and not process.finished():
                out, _ = process.read(0.2)
                received += out
                if answer in received and received.endswith(b"\n"):
                    break
        except BaseException:
            process.close()
            raise
        output = shell.parse(received, built.marker)
        access = output.word("access", "none")
        self.access = Access(access) if access in Access._value2member_map_ else Access.NONE
        said = output.word("lock")
        if said == "acquired":
            self.process = process
            self._beat = threading.Thread(target=self._heartbeat, name=f"lock-{self.target.name}", daemon=True)
            self._beat.start()
            return
        process.close()
        shell.raise_for_failure(output, self.target.name, self.settings)
        if said == "busy":
            note = self.read_note()
            if note is None and time.monotonic() < self.releasing_until:
                # Held without a note: its holder is letting go (stopping a vanished run's
                # commands takes a few seconds). Try again shortly.
                stopping.sleep(0.5)
                self.acquire()
                return
            if self.breaking is not None:
                holder = describe_owner(note)
                if self.breaking(holder):
                    self.break_lock()
                    self.breaking = None
                    self.acquire()
                    return
            raise LockHeld(
                f"{self.target.name} is locked: {describe_owner(note)}; try again when it "
                "has finished (or --break-lock if its holder is gone)"
            )
        where = lock_name(self.settings)
        section = output.first("access")
        if section is not None and section.words[:1] == ["none"]:
            raise LockUnavailable(
                f"cannot take the host lock on {self.target.name}: "
                f"{hostfiles.refusal(section.words[1:], self.settings.env_file)}; nothing was changed"
            )
        if said == "cannot-open":
            raise LockUnavailable(
                f"cannot open the lock file {where} on {self.target.name}: it is not a regular file of the env "
                "folder's owner (a symlink, a FIFO, another user's file?), or it could not be created there; "
                "check it and remove it if it is not quilt-ops'; nothing was changed"
            )
        raise LockUnavailable(
            f"cannot create the lock file {where} on {self.target.name}: its folder is missing, or the login user "
            "cannot write it and passwordless sudo does not work (quilt-ops needs one of the two); "
            "nothing was changed"
        )

    def read_note(self) -> bytes | None:
        s = shell.Script(self.settings)
        s.add(hostfiles.access_script(self.settings.env_file))
        s.send_file(owner_name(self.settings), "note")
        try:
            result = self.target.run(s.text(), timeout=30, what="reading the lock note")
        except QuiltError:
            return None
        return shell.blob(shell.parse(result.stdout_bytes, s.marker), "note")

    def break_lock(self) -> str:
        """Ends whatever holds the lock (after the operator agreed); returns who held it."""
        holder = describe_owner(self.read_note())
        s = shell.Script(self.settings)
        s.add(hostfiles.access_script(self.settings.env_file))
        s.add(sh.load(FUNCTIONS), f"lock_hold sh -c {q(sh.load(BREAK))} quilt-ops-break {q(lock_name(self.settings))}")
        self.target.run(s.text(), timeout=30, what="breaking the lock")
        return holder

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            process = self.process
            if process is None:
                return
            try:
                process.send(b"\n")
            except ConnectionLost:  # the run's next command fails on it (and the holder lets go)
                return

    def guard(self, script: shell.Script) -> shell.Script:
        """Adds to a changing command: the check that this run still holds the lock, and the
        registration of the command, so that the holder stops it if this run vanishes."""
        script.add(hostfiles.access_script(self.settings.env_file), sh.load(FUNCTIONS))
        # Registered first, checked second (see ``sh/lock.sh``).
        script.add(f"lock_register {q(commands_name(self.settings))} {q(self.token)}")
        script.guard_lock(lock_name(self.settings), owner_name(self.settings), self.token)
        return script.add(f"lock_access_is {q(self.access.value)}")

    def release(self) -> None:
        """Closes the holder's stdin: it removes its note and lets go (no extra round trip)."""
        self._stop.set()
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.send(b"release\n")
            process.close_stdin()
            deadline = time.monotonic() + 5
            while not process.finished() and time.monotonic() < deadline:
                process.read(0.1)
        except QuiltError:
            pass
        finally:
            process.close()
