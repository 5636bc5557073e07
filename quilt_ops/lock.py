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

from . import hostfiles, shell, stopping
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

#: Holds the lock on $1, writes note $2 with $3, then waits for heartbeats (bash: read -t).
#: When its holder goes without saying "release" (killed, connection cut, network dead,
#: ``--break-lock``), it stops the commands the run registered in $4 (process group and
#: token $5, checked against the group leader's command line, which holds the token)
#: before letting go: no command of a vanished run goes on changing the host after the
#: lock is free. The file opened is checked right after the open (a regular file, the inode
#: at the path): a swap of the path between the check and the open is refused. $6 is the
#: env file, $7 the command's marker (the holder answers in sections), $8 quilt.sudo (for
#: root processes in those groups: `sudo docker`).
#:
#: It runs as whoever must stop the run's commands: the login user, or root. In a folder
#: of another user ($9, the "owner" access) it runs as root and does every file operation
#: as that user; root only opens the lock file to read, never through a symbolic link.
#: Run as root in root's folder, the files it makes take the env file's owner and group,
#: so that a run as that user can take the lock later.
_HOLDER = rf"""
umask 077
IFS=$' \t\n'
lockf=$1; note=$2; text=$3; commands=$4; run_token=$5; env_file=$6; m=$7; sudo=$8; owner=$9
say() {{ printf '%s lock %s\n' "$m" "$1"; }}
asowner() {{ if [ -n "$owner" ]; then runuser -u "$owner" -- "$@"; else "$@"; fi; }}
own() {{
  [ -z "$owner" ] && [ "$(id -u)" = 0 ] && [ -e "$env_file" ] && chown --reference="$env_file" -- "$@" 2>/dev/null; true
}}
[ ! -L "$lockf" ] || {{ say cannot-open; exit 3; }}
asowner sh -c '[ -e "$1" ] || [ -L "$1" ] || : >> "$1"' quilt-ops-lock-file "$lockf" 2>/dev/null
{{ [ ! -L "$lockf" ] && [ -f "$lockf" ] && exec 9<"$lockf"; }} 2>/dev/null || {{ say cannot-open; exit 3; }}
# What was opened must be the regular file now at that path (issue 18.2: a swap between the
# check and the open made root open a file of its choosing): same device and inode.
opened=$(stat -L -c '%d:%i:%F' -- "/proc/$$/fd/9" 2>/dev/null)
there=$(stat -c '%d:%i:%F' -- "$lockf" 2>/dev/null)
case $opened in *:'regular file' | *:'regular empty file') ;; *) opened=not-regular ;; esac
[ "$opened" = "$there" ] || {{ exec 9<&-; say cannot-open; exit 3; }}
flock -n 9 || {{ say busy; exit 4; }}
own "$lockf"
asowner sh -c 'rm -f -- "$1" && : > "$1"' quilt-ops-lock-file "$commands" && own "$commands"
asowner sh -c 'rm -f -- "$1.new" && printf "%s\n" "$2" > "$1.new" && mv -f -- "$1.new" "$1"' \
  quilt-ops-lock-file "$note" "$text" && own "$note"
# A command's group may hold root processes (a start script's `sudo docker`): those through
# quilt.sudo (a prefix; empty: none).
as_root() {{ [ -n "$sudo" ] && [ "$(id -u)" != 0 ] && $sudo sh -c "$1" 2>/dev/null; }}
signal() {{ kill -"$1" "-$2" 2>/dev/null; as_root "kill -$1 -$2"; true; }}
alive() {{
  for pg in $groups; do kill -0 "-$pg" 2>/dev/null || as_root "kill -0 -$pg" && return 0; done
  return 1
}}
ours() {{
  while IFS=' ' read -r pg token; do
    case "$pg" in ''|*[!0-9]*) continue ;; esac
    [ "$token" = "$run_token" ] && grep -qF -- "$run_token" "/proc/$pg/cmdline" 2>/dev/null && echo "$pg"
  done < "$commands"
}}
finish() {{
  IFS=$' \t\n'  # (a trap runs inside `IFS= read`)
  # The note goes first: the run's guards stop at once, and a lock held without a note
  # tells the next run that it is being let go (it waits a moment instead of refusing).
  asowner rm -f -- "$note"
  if [ "$released" = 0 ] && [ -s "$commands" ]; then
    # Found once: after TERM a group may live on without its leader (whose command line
    # told it was this run's), e.g. a docker client waiting on its container.
    groups=$(ours)
    for pg in $groups; do signal TERM "$pg"; done
    i=0; while alive && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
    for pg in $groups; do signal KILL "$pg"; done
  fi
  asowner rm -f -- "$commands"
  exit 0
}}
released=0
trap finish TERM HUP
say acquired
while IFS= read -r -t {SILENCE} line; do
  if [ "$line" = release ]; then released=1; break; fi
done
finish
"""

#: Ends the holder of lock file $1 (a lock being broken): only a process that has the file
#: open and is a quilt-ops lock holder (its command line says so), never through a symlink;
#: waits (up to 10 s) until the holder has stopped its run's commands and let go.
_BREAK = r"""
[ ! -L "$1" ] || exit 0
target=$(readlink -f -- "$1") || exit 0
holders() {
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null | grep -qF ' quilt-ops-lock ' || continue
    for fd in "$p"/fd/*; do
      if [ "$(readlink -- "$fd" 2>/dev/null)" = "$target" ]; then echo "${p#/proc/}"; break; fi
    done
  done
}
for p in $(holders); do kill "$p" 2>/dev/null; done
i=0; while [ -n "$(holders)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
exit 0
"""

#: Runs the holder (and the breaker) as the user `_HOLDER` says; ``o`` is $9 of the holder.
_HOLDER_AS = 'o=; if [ "$qaccess" = owner ]; then o=$dn; hold() { as_root "$@"; }; else hold() { qfile "$@"; }; fi'


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
            _HOLDER_AS,
            f"hold bash -c {q(_HOLDER)} quilt-ops-lock {q(lock_name(self.settings))} "
            f"{q(owner_name(self.settings))} {q(self.owner_note())} {q(commands_name(self.settings))} "
            f'{q(self.token)} {q(self.settings.env_file)} "$m" {q(self.settings.sudo)} "$o"',
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
        s.add(_HOLDER_AS, f"hold sh -c {q(_BREAK)} quilt-ops-break {q(lock_name(self.settings))}")
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
        script.add(hostfiles.access_script(self.settings.env_file))
        # Registered first, checked second: a holder that goes away between the two still
        # finds the command, and one that went before is caught by the check.
        script.add(
            f"printf '%s %s\\n' \"$(sed 's/.*) //' /proc/$$/stat | cut -d' ' -f3)\" {q(self.token)} | "
            f"qfile sh -c 'umask 077; cat >> \"$1\"' quilt-ops-register {q(commands_name(self.settings))} 2>/dev/null"
        )
        script.guard_lock(lock_name(self.settings), owner_name(self.settings), self.token)
        # The folder's ownership decides who writes there (see `Access`): what was true when
        # the lock was taken must still be true for every changing command.
        return script.add(
            f'[ "$qaccess" = {q(self.access.value)} ] || {{ say fail access-changed; exit {shell.PROLOGUE_FAILED}; }}'
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
