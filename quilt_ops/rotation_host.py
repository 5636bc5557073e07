"""A rotation's operations on the host: one round trip each, typed results, no decisions.

Each function takes the `Place` first (the host, its settings, and the lock whose guard
every changing command carries), runs one command and returns what it found; what a
result means for the rotation is decided by the driver (`quilt_ops.rotation`) and its
policy (`quilt_ops.rotation_policy`), never here. The shell these commands run is in
``quilt_ops/sh`` (through `quilt_ops.hostfiles`); exit codes are `quilt_ops.sh.Exit`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from . import containers, docker_access, health, hostfiles, journal, shell
from . import restart as restarting
from .checks import HostHealth
from .config import Settings
from .envfile import EnvFile
from .hostfiles import Access, HostFileError, RemoteFile
from .journal import Journal, JournalUnreadable
from .lock import HostLock
from .masking import Masker
from .remote import Target
from .reporting import Reporter
from .sh import Exit


@dataclass
class Place:
    """Where a rotation runs: the host, its settings, the lock, and what to mask in its output."""

    target: Target
    settings: Settings
    lock: HostLock
    masker: Masker = field(default_factory=Masker)
    #: Whether this run holds the lock (then every command is guarded by it).
    locked: bool = False

    @property
    def host(self) -> str:
        return self.target.name

    @property
    def journal_name(self) -> str:
        return hostfiles.sibling(self.settings.env_file, "quilt-ops-rotation.json")

    @property
    def backup_name(self) -> str:
        return hostfiles.sibling(self.settings.env_file, "quilt-ops-backup")

    def script(self) -> shell.Script:
        """A command that runs only while this run still holds the host lock."""
        s = shell.Script(self.settings)
        if self.locked:
            self.lock.guard(s)
        else:
            s.add(hostfiles.access_script(self.settings.env_file))
        return s


@dataclass
class Ran:
    """What one command gave back."""

    output: shell.Output
    code: int
    #: Masked.
    stderr: str


def run(place: Place, s: shell.Script, what: str, stdin: bytes | None = None, timeout: float = 60) -> Ran:
    result = place.target.run(s.text(), timeout=timeout, stdin=stdin, what=what)
    output = shell.parse(result.stdout_bytes, s.marker)
    shell.raise_for_failure(output, place.host, place.settings)
    return Ran(output, result.exited, place.masker(result.stderr))


# -- reading ----------------------------------------------------------------------------------


@dataclass
class HostState:
    """What one command read on the host before anything changes."""

    env: RemoteFile | None
    env_problem: str | None
    journal: Journal | None
    journal_problem: str | None
    access: Access
    reading: health.Reading
    health: HostHealth
    #: Why the env file cannot be replaced safely (when ``access`` is NONE).
    access_reason: str = ""

    @property
    def host_key(self) -> str | None:
        if self.env is None:
            return None
        key = EnvFile(self.env.content).key_id
        return key if key and containers.KEY_ID.fullmatch(key) else None


def gather(place: Place) -> HostState:
    """Everything a rotation needs to know, in one command: the journal, the env file (and how
    it may be changed), the containers with the key the registry runs with, the probes."""
    settings = place.settings
    s = place.script()
    if place.locked:  # only the lock holder may remove what a killed run left
        s.add(f"qfile rm -f -- {hostfiles.temp_pattern(settings.env_file)}")
    s.send_file(place.journal_name, "journal")
    s.add(hostfiles.stat_script(settings.env_file, "env"))
    s.send_file(settings.env_file, "env")
    docker = docker_access.of(place.target, settings)
    names, registry = settings.containers.names, settings.containers.registry
    docker.prepare(s)
    docker.add_inspect(s, names, key_of=registry)
    health.add_probes(s, settings)
    s.end()
    output = run(place, s, "reading the host").output
    access, access_reason = _access(output, settings.env_file)
    env, env_problem = _env_file(output, settings.env_file)
    if env is not None:
        place.masker.add(*EnvFile(env.content).values())
    found, journal_problem = _journal(output)
    reading = health.read(output, docker.answer(output, names, key_of=registry))
    report = health.evaluate(place.host, reading, settings, env_file=False)
    return HostState(env, env_problem, found, journal_problem, access, reading, report, access_reason)


def _access(output: shell.Output, env_file: str) -> tuple[Access, str]:
    section = output.first("access")
    word = section.words[0] if section and section.words else "none"
    access = Access(word) if word in Access._value2member_map_ else Access.NONE
    reason = hostfiles.refusal(section.words[1:], env_file) if section and access == Access.NONE else ""
    return access, reason


def _env_file(output: shell.Output, name: str) -> tuple[RemoteFile | None, str | None]:
    content = shell.blob(output, "env")
    stat = next((hostfiles.parse_stat(s.words[1:]) for s in output.all("stat") if s.words[:1] == ["env"]), None)
    if content is None or stat is None:
        if any(s.words[:1] == ["env"] for s in output.all("missing")):
            return None, "no such file"
        if stat is not None:  # it is there, but who reads it (see `Access`) may not
            return None, f"permission denied ({stat[3]} owns it, mode {stat[0]:04o})"
        return None, "permission denied"
    mode, uid, gid, owner, group = stat
    return RemoteFile(name, content, mode, uid, gid, owner, group), None


def _journal(output: shell.Output) -> tuple[Journal | None, str | None]:
    if any(s.words[:1] == ["journal"] for s in output.all("missing")):
        return None, None
    raw = shell.blob(output, "journal")
    if raw is None:
        return None, "it cannot be read"
    try:
        return journal.parse(raw), None
    except JournalUnreadable as e:
        return None, str(e)


def holds(place: Place) -> str | None:
    """The key ID the env file holds now ("" for none), or None when it cannot be read."""
    s = place.script()
    s.send_file(place.settings.env_file, "env")
    content = shell.blob(run(place, s, "reading the env file").output, "env")
    return None if content is None else (EnvFile(content).key_id or "")


def read_backup(place: Place) -> bytes | None:
    s = place.script()
    s.send_file(place.backup_name, "backup")
    return shell.blob(run(place, s, "reading the backup").output, "backup")


def runs_on(place: Place) -> tuple[str | None, HostHealth]:
    """The key the registry container runs with, and the host's health."""
    reading = health.look(place.target, place.settings, env_file=False, key_in_effect=True)
    return reading.key_in_effect, health.evaluate(place.host, reading, place.settings, env_file=False)


# -- changing ---------------------------------------------------------------------------------


def save_journal(place: Place, current: Journal) -> None:
    """Writes the journal; raises `HostFileError` when the host cannot."""
    s = place.script()
    s.add(_journal_command(place, current, Exit.JOURNAL_NOT_SAVED))
    s.end()
    ran = run(place, s, "writing the rotation journal")
    if ran.code == Exit.JOURNAL_NOT_SAVED:
        raise HostFileError(
            f"cannot write the rotation journal {place.journal_name} on {place.host}: "
            f"{hostfiles.describe_failure(Exit.WRITE, ran.stderr)}"
        )


def _journal_command(place: Place, current: Journal, code: Exit) -> str:
    text = hostfiles.write_text_command(place.journal_name, current.to_json(), place.settings.env_file)
    return f"{text} || exit {code.value}"


def clear_journal(place: Place) -> None:
    """Removes the journal and the backup."""
    s = place.script()
    s.add(hostfiles.remove_command(place.backup_name, place.journal_name))
    run(place, s, "removing the rotation journal")


def write_env(place: Place, writing: Journal, content: bytes, original: RemoteFile) -> Ran:
    """One command: the journal at ``writing``, the backup, the env file replaced atomically by
    ``content`` (if it still is ``original``), the journal at ``written``. The exit code says
    which part failed (`Exit`); a journal that cannot be written raises `HostFileError`."""
    name = place.settings.env_file
    s = place.script()
    s.add(
        _journal_command(place, writing, Exit.JOURNAL_NOT_SAVED),
        f"{hostfiles.backup_command(name, place.backup_name)} || exit {Exit.BACKUP_FAILED.value}",
        hostfiles.replace_command(name, len(content), original.mode, hashlib.sha256(original.content).hexdigest())
        + " || exit $?",
        _journal_command(place, writing.at(journal.Step.WRITTEN), Exit.JOURNAL_NOT_UPDATED),
    )
    s.end()
    ran = run(place, s, f"writing {name}", stdin=content)
    if ran.code == Exit.JOURNAL_NOT_SAVED:
        raise HostFileError(
            f"cannot write the rotation journal {place.journal_name} on {place.host}: "
            f"{hostfiles.describe_failure(Exit.WRITE, ran.stderr)}"
        )
    return ran


def restore_env(place: Place, backup: bytes, mode: int, written_sha256: str) -> Ran:
    """Puts ``backup`` back over the env file, only if it still is the file the rotation wrote."""
    s = place.script()
    s.add(hostfiles.replace_command(place.settings.env_file, len(backup), mode, written_sha256) + " || exit $?")
    s.end()
    return run(place, s, f"restoring {place.settings.env_file}", stdin=backup)


def restart(place: Place, reporter: Reporter, timeout: float | None) -> restarting.RestartReport:
    """Recreates the containers (guarded by the lock) and reads the key the registry runs with."""
    return restarting.restart(
        place.target,
        place.settings,
        reporter,
        timeout,
        guard=place.script(),
        masker=place.masker,
        key_in_effect=True,
    )
