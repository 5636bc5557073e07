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

from . import hostfiles, shell
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
#: How long a lock may be held at most (the remote holder's own time limit).
LONGEST = 24 * 3600
ACQUIRED, BUSY, CANNOT_OPEN = "quilt-ops-lock-acquired", "quilt-ops-lock-busy", "quilt-ops-lock-cannot-open"

#: Holds the lock on $1, writes note $2 with $3, then waits for heartbeats (bash: read -t).
#: When its holder goes without saying "release" (killed, connection cut, network dead),
#: it stops the commands the run registered in $4 (process group and token $5, checked
#: against the process's own command line, which holds the token) before letting go: no
#: command of a vanished run goes on changing the host after the lock is free.
#: Run as root (on the host itself, or through sudo), the files it makes take the owner and
#: group of the env file $6, so that a run as that user can take the lock later.
_HOLDER = rf"""
umask 077
env_file=$6
own() {{ [ "$(id -u)" != 0 ] || [ ! -e "$env_file" ] || chown --reference="$env_file" -- "$@" 2>/dev/null; true; }}
exec 9>>"$1" || {{ echo {CANNOT_OPEN}; exit 3; }}
flock -n 9 || {{ echo {BUSY}; exit 4; }}
own "$1"
rm -f -- "$4" && : > "$4" && own "$4"
: > "$2.new" && own "$2.new" && printf '%s\n' "$3" > "$2.new" && mv -f -- "$2.new" "$2"
echo {ACQUIRED}
released=0
while IFS= read -r -t {SILENCE} line; do
  if [ "$line" = release ]; then released=1; break; fi
done
commands=$4; run_token=$5
if [ "$released" = 0 ] && [ -s "$commands" ]; then
  ours() {{
    while read -r pg token; do
      case "$pg" in ''|*[!0-9]*) continue ;; esac
      [ "$token" = "$run_token" ] && grep -qF -- "$run_token" "/proc/$pg/cmdline" 2>/dev/null && echo "$pg"
    done < "$commands"
  }}
  for pg in $(ours); do kill -TERM -- "-$pg" 2>/dev/null; done
  i=0; while [ -n "$(ours)" ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
  for pg in $(ours); do kill -KILL -- "-$pg" 2>/dev/null; done
fi
rm -f -- "$2" "$4"
"""

#: Kills every process that has $1 open (the holder of a lock being broken).
_BREAK = r"""
target=$(readlink -f -- "$1") || exit 0
for p in /proc/[0-9]*; do
  for fd in "$p"/fd/*; do
    if [ "$(readlink -- "$fd" 2>/dev/null)" = "$target" ]; then kill "${p#/proc/}" 2>/dev/null; break; fi
  done
done
exit 0
"""


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
        self.lost = False

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
            f"qfile bash -c {q(_HOLDER)} quilt-ops-lock {q(lock_name(self.settings))} "
            f"{q(owner_name(self.settings))} {q(self.owner_note())} {q(commands_name(self.settings))} "
            f"{q(self.token)} {q(self.settings.env_file)}"
        )
        return s

    def acquire(self) -> None:
        built = self.script()
        process = self.target.start(built.text(), timeout=LONGEST)
        received = b""
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline and not process.finished():
                out, _ = process.read(0.2)
                received += out
                if ACQUIRED.encode() in received or BUSY.encode() in received or CANNOT_OPEN.encode() in received:
                    break
        except BaseException:
            process.close()
            raise
        output = shell.parse(received, built.marker)
        access = output.word("access", "none")
        self.access = Access(access) if access in Access._value2member_map_ else Access.NONE
        if ACQUIRED.encode() in received:
            self.process = process
            self._beat = threading.Thread(target=self._heartbeat, name=f"lock-{self.target.name}", daemon=True)
            self._beat.start()
            return
        process.close()
        shell.raise_for_failure(output, self.target.name, self.settings)
        if BUSY.encode() in received:
            if self.breaking is not None:
                holder = describe_owner(self.read_note())
                if self.breaking(holder):
                    self.break_lock()
                    self.breaking = None
                    self.acquire()
                    return
            raise LockHeld(
                f"{self.target.name} is locked: {describe_owner(self.read_note())}; try again when it "
                "has finished (or --break-lock if its holder is gone)"
            )
        where = lock_name(self.settings)
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
        s.add(f"qfile sh -c {q(_BREAK)} quilt-ops-break {q(lock_name(self.settings))}; sleep 1")
        self.target.run(s.text(), timeout=30, what="breaking the lock")
        return holder

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            process = self.process
            if process is None:
                return
            try:
                process.send(b"\n")
            except ConnectionLost:
                self.lost = True
                return

    def guard(self, script: shell.Script) -> shell.Script:
        """Adds to a changing command: the check that this run still holds the lock, and the
        registration of the command, so that the holder stops it if this run vanishes."""
        script.add(hostfiles.access_script(self.settings.env_file))
        script.guard_lock(lock_name(self.settings), owner_name(self.settings), self.token)
        return script.add(
            f"printf '%s %s\\n' \"$(sed 's/.*) //' /proc/$$/stat | cut -d' ' -f3)\" {q(self.token)} | "
            f"qfile sh -c 'umask 077; cat >> \"$1\"' quilt-ops-register {q(commands_name(self.settings))} 2>/dev/null"
        )

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
