"""The remote lock holder and breaker, run here with bash and dash as the host would run them.

Found in review: the holder's cleanup, run from its TERM trap inside ``IFS= read``, read the
registered commands with an empty IFS and so stopped none of them; a breaker that killed
any process holding the file.
"""

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from quilt_ops import lock, sh

TOKEN = "0123456789abcdef"
HOLDER, BREAK = sh.load(lock.HOLDER), sh.load(lock.BREAK)
SILENCE = str(lock.SILENCE)


def start_holder(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [
            "bash",
            "-c",
            HOLDER,
            "quilt-ops-lock",
            str(folder / "lock"),
            str(folder / "note"),
            "{}",
            str(folder / "commands"),
            TOKEN,
            str(folder / "env"),
            "@@m",
            "",
            "",
            SILENCE,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert holder.stdout.readline() == b"@@m lock acquired\n"
    return holder


def registered_group(folder: Path, token: str = TOKEN) -> subprocess.Popen:
    """A command of the run, as the guard registers it: its group and the token in its command line."""
    command = subprocess.Popen(["sh", "-c", f"sleep 30; : {token}"], start_new_session=True)
    threading.Thread(target=command.wait, daemon=True).start()  # reaped: a zombie counts as alive
    with open(folder / "commands", "a") as f:
        f.write(f"{command.pid} {token}\n")
    return command


def ended(process: subprocess.Popen, within: float = 8) -> bool:
    try:
        process.wait(within)
        return True
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock is not installed")
def test_a_broken_lock_stops_the_broken_runs_commands(tmp_path):
    holder = start_holder(tmp_path)
    ours, strangers = registered_group(tmp_path), registered_group(tmp_path, token="f" * 16)
    try:
        subprocess.run(["dash", "-c", BREAK, "quilt-ops-break", str(tmp_path / "lock")], timeout=20)
        assert ended(holder) and ended(ours)
        assert strangers.poll() is None  # a line without this run's token is not acted on
        assert not (tmp_path / "note").exists() and not (tmp_path / "commands").exists()
    finally:
        for process in (holder, ours, strangers):
            if process.poll() is None:
                os.killpg(process.pid, 9)


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock is not installed")
def test_a_released_lock_leaves_the_commands_alone_and_a_vanished_run_does_not(tmp_path):
    holder = start_holder(tmp_path)
    ours = registered_group(tmp_path)
    holder.stdin.write(b"release\n")
    holder.stdin.close()
    assert ended(holder) and ours.poll() is None
    ours.kill()
    holder = start_holder(tmp_path)
    ours = registered_group(tmp_path)
    holder.stdin.close()  # the run vanished without a word
    assert ended(holder) and ended(ours)


def test_the_breaker_ends_only_lock_holders_and_never_through_a_symlink(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    reader = subprocess.Popen(["sh", "-c", f"exec 9<{target}; sleep 30"], start_new_session=True)
    link = tmp_path / "link"
    link.symlink_to(target)
    try:
        time.sleep(0.2)
        for path in (target, link):
            subprocess.run(["dash", "-c", BREAK, "quilt-ops-break", str(path)], timeout=20)
        assert reader.poll() is None  # holds the file, but is no lock holder
    finally:
        reader.kill()


def test_issue_18_the_holder_refuses_a_lock_file_swapped_for_another(tmp_path, monkeypatch):
    """The holder checks `[ ! -L lock ]`, then opens it: a path swapped in between (here: the
    open goes to another file, as after the race) is refused, not locked (fails on main)."""
    other = tmp_path / "root-only"
    other.write_text("")
    # The race, made certain: `exec 9<` opens `other` while the path is then a symlink to it.
    swapped = HOLDER.replace('exec 9<"$lockf"', f'exec 9<{other} && ln -sf {other} "$lockf"')
    holder = subprocess.run(
        ["bash", "-c", swapped, "quilt-ops-lock", str(tmp_path / "lock"), str(tmp_path / "note"), "{}",
         str(tmp_path / "commands"), TOKEN, str(tmp_path / "env"), "@@m", "", "", SILENCE],
        input=b"", capture_output=True, timeout=20,
    )  # fmt: skip
    assert holder.stdout == b"@@m lock cannot-open\n" and holder.returncode == 3
    assert not (tmp_path / "note").exists()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_issue_18_the_holder_locks_only_a_regular_file(tmp_path, kind):
    path = tmp_path / "lock"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    holder = subprocess.run(
        ["timeout", "10", "bash", "-c", HOLDER, "quilt-ops-lock", str(path), str(tmp_path / "note"), "{}",
         str(tmp_path / "commands"), TOKEN, str(tmp_path / "env"), "@@m", "", "", SILENCE],
        input=b"", capture_output=True, timeout=20,
    )  # fmt: skip
    assert holder.stdout == b"@@m lock cannot-open\n", holder


# ----------------------------------------------------------------------------- a folder of another user

AS_ROOT = os.geteuid() == 0 and shutil.which("runuser") is not None and shutil.which("flock") is not None


@pytest.fixture
def owners_folder():
    """A folder of user ``nobody``, where the holder runs as root (the "owner" access)."""
    if not AS_ROOT:
        pytest.skip("needs root, runuser and flock (the holder as root in another user's folder)")
    import pwd
    import tempfile

    nobody = pwd.getpwnam("nobody")
    folder = Path(tempfile.mkdtemp(prefix="qo-lock-", dir="/tmp"))
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def hold_as_root(folder: Path) -> subprocess.CompletedProcess:
    """The holder run as root in ``folder`` for its owner ``nobody``; its stdin closed at once."""
    return subprocess.run(
        ["bash", "-c", HOLDER, "quilt-ops-lock", str(folder / "lock"), str(folder / "note"), "{}",
         str(folder / "commands"), TOKEN, str(folder / "env"), "@@m", "", "nobody", SILENCE],
        input=b"", capture_output=True, timeout=30,
    )  # fmt: skip


def test_issue_18_as_root_in_an_owners_folder_the_owners_lock_file_is_locked(owners_folder):
    held = hold_as_root(owners_folder)
    assert held.stdout.startswith(b"@@m lock acquired\n"), held
    assert (owners_folder / "lock").stat().st_uid == owners_folder.stat().st_uid


def test_issue_18_root_never_opens_a_lock_file_its_owner_could_not(owners_folder):
    """A root-only file at the lock path (a hard link, or a swap the check missed): root opened
    and locked it before (fails on main: 'acquired'); now the owner's process opens the path."""
    lock_file = owners_folder / "lock"
    lock_file.write_text("")
    lock_file.chmod(0o600)  # root's
    held = hold_as_root(owners_folder)
    assert held.stdout == b"@@m lock cannot-open\n" and held.returncode == 3, held
    assert not (owners_folder / "note").exists()


@pytest.mark.parametrize("kind", ["fifo", "symlink to a root-only file", "symlink to the owner's file"])
def test_issue_18_as_root_a_fifo_or_symlink_at_the_lock_path_is_refused(owners_folder, kind):
    lock_file, victim = owners_folder / "lock", Path(str(owners_folder) + ".victim")
    try:
        if kind == "fifo":
            os.mkfifo(lock_file)
            os.chown(lock_file, owners_folder.stat().st_uid, owners_folder.stat().st_gid)
        else:
            victim.write_text("")
            if "owner" in kind:
                os.chown(victim, owners_folder.stat().st_uid, owners_folder.stat().st_gid)
            lock_file.symlink_to(victim)
        started = time.monotonic()
        held = hold_as_root(owners_folder)
        assert held.stdout == b"@@m lock cannot-open\n" and held.returncode == 3, held
        assert time.monotonic() - started < 15
        assert not (owners_folder / "note").exists()
        if victim.exists():  # not locked: flock takes it at once
            assert subprocess.run(["flock", "-n", str(victim), "true"]).returncode == 0
    finally:
        victim.unlink(missing_ok=True)


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock is not installed")
def test_the_breaker_never_ends_another_folders_holder_through_a_swapped_path(tmp_path):
    """Attack (review-attack): the owner of folder A swaps A's lock file for a symlink to folder
    B's lock right after the breaker's `[ ! -L ]` check (made certain here: the first readlink
    run swaps it). The breaker then resolved the path (readlink -f) to B's lock and ended B's
    holder, which stopped B's run (another stack's) mid-way. Now the path's last part is never
    followed: only holders of A's own lock file are ended."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "lock").write_text("")
    tools = tmp_path / "tools"
    tools.mkdir()
    real = shutil.which("readlink")
    (tools / "readlink").write_text(
        f'#!/bin/sh\n[ -L "{a}/lock" ] || ln -sfn "{b}/lock" "{a}/lock"\nexec {real} "$@"\n'
    )
    (tools / "readlink").chmod(0o755)
    others = start_holder(b)
    try:
        env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
        subprocess.run(["dash", "-c", BREAK, "quilt-ops-break", str(a / "lock")], timeout=20, env=env)
        assert (a / "lock").is_symlink()  # the swap happened
        assert others.poll() is None and (b / "note").exists()  # B's holder lives on
    finally:
        others.kill()
        others.wait(5)


def start_root_holder(folder: Path) -> subprocess.Popen:
    """The holder as root in ``folder`` for its owner ``nobody``, left holding the lock."""
    holder = subprocess.Popen(
        ["bash", "-c", HOLDER, "quilt-ops-lock", str(folder / "lock"), str(folder / "note"), "{}",
         str(folder / "commands"), TOKEN, str(folder / "env"), "@@m", "", "nobody", SILENCE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert holder.stdout.readline() == b"@@m lock acquired\n"
    return holder


def root_processes_under(pid: int) -> list[int]:
    """``pid`` and its descendants that run as root."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            if os.stat(f"/proc/{p}").st_uid == 0:
                found.append(p)
        except OSError:
            continue
        todo.extend(parents.get(p, []))
    return found


def opened_by(pid: int) -> set[str]:
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            names.add(os.readlink(fd))
        except OSError:
            pass
    return names


def test_root_never_opens_the_lock_file_in_an_owners_folder(owners_folder):
    """Attack (adversarial review): root opened /proc/PID/fd/9 of the owner's process after
    that process had checked it; the owner, who may ptrace it (gdb: `call dup2(open(
    "/dev/watchdog", O_PATH), 9)`), swapped that fd in between, and root opened a device
    read-write. Now the owner's process holds the flock itself: no root process of the holder
    has the lock file open (fails on main: the root holder's fd 9 is the lock file), and the
    lock is held as long as the holder lives, let go when it ends."""
    lock_file = str(owners_folder / "lock")
    holder = start_root_holder(owners_folder)
    try:
        roots = root_processes_under(holder.pid)
        assert holder.pid in roots
        for pid in roots:
            assert lock_file not in opened_by(pid), pid
        assert subprocess.run(["flock", "-n", lock_file, "true"]).returncode != 0  # held
        second = hold_as_root(owners_folder)
        assert second.stdout == b"@@m lock busy\n" and second.returncode == 4, second
        holder.stdin.write(b"release\n")
        holder.stdin.close()
        assert ended(holder) and not (owners_folder / "note").exists()
        assert subprocess.run(["flock", "-n", lock_file, "true"]).returncode == 0  # let go
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, 9)


def test_the_breaker_ends_a_root_holder_in_an_owners_folder(owners_folder):
    """The holder there has no fd on the lock file (the owner's process has): the breaker finds
    it as that process's quilt-ops-lock ancestor, and the lock is free when it is done."""
    holder = start_root_holder(owners_folder)
    ours = registered_group(owners_folder)
    try:
        subprocess.run(["dash", "-c", BREAK, "quilt-ops-break", str(owners_folder / "lock")], timeout=20)
        assert ended(holder, within=1) and ended(ours)
        assert not (owners_folder / "note").exists()
        assert subprocess.run(["flock", "-n", str(owners_folder / "lock"), "true"]).returncode == 0
    finally:
        for process in (holder, ours):
            if process.poll() is None:
                os.killpg(process.pid, 9)


def owners_process(holder: subprocess.Popen) -> int:
    """The folder owner's process that holds the flock for ``holder`` (its quilt-ops-lock-owner)."""
    for entry in Path("/proc").iterdir():
        try:
            named = b"\0quilt-ops-lock-owner\0" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if named and entry.stat().st_uid != 0 and holder.pid in ancestors(int(entry.name)):
            return int(entry.name)
    raise AssertionError("no owner's process")


def ancestors(pid: int) -> list[int]:
    found = []
    while pid > 1:
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        found.append(pid)
    return found


def test_an_owner_who_stops_its_lock_process_does_not_hold_root_forever(owners_folder):
    """Attack (review 2): the folder's owner stops (SIGSTOP) its own process that holds the
    flock; root's holder, letting go, waited for it without end (runuser stops itself with its
    child): a root process hung for good. Now it waits a bounded time, then ends runuser.
    Fails without the fix (the holder has not ended after 20 s)."""
    holder = start_root_holder(owners_folder)
    owners = owners_process(holder)
    try:
        subprocess.run(["runuser", "-u", "nobody", "--", "kill", "-STOP", str(owners)], check=True, timeout=10)
        holder.stdin.write(b"release\n")
        holder.stdin.close()
        assert ended(holder, within=20)
        assert not (owners_folder / "note").exists()
    finally:
        os.kill(owners, 9)
        if holder.poll() is None:
            os.killpg(holder.pid, 9)


def test_an_owner_who_swells_the_commands_file_does_not_hold_root_forever(owners_folder):
    """Attack (review 2): the folder's owner makes the registered commands file huge (a sparse
    file: no newline, gigabytes of NULs); root's holder, letting go of a vanished run, read it
    all, byte by byte from a pipe, into one line in memory. It reads at most 64 KiB of it now.
    Fails without the fix (the holder has not ended after 20 s)."""
    holder = start_root_holder(owners_folder)
    try:
        subprocess.run(
            ["runuser", "-u", "nobody", "--", "truncate", "-s", "256M", str(owners_folder / "commands")],
            check=True,
            timeout=10,
        )
        holder.stdin.close()  # the run vanished: the holder stops its commands
        assert ended(holder, within=20)
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, 9)


#: The owner's moves between root's steps, made certain: each runs as the owner, inside the
#: snippet root's holder has it run (the owner re-creates the commands file as a FIFO between
#: its `rm` and its `>`; the owner stops the `rm` of the note when the holder lets go).
OWNERS_MOVES = {
    "a FIFO at the commands file": ('rm -f -- "$1" && : > "$1"', 'rm -f -- "$1" && mkfifo -- "$1" && : > "$1"'),
    "the note's rm stopped": ('asowner rm -f -- "$note"', "asowner sh -c 'kill -STOP $$'; asowner rm -f -- \"$note\""),
}


@pytest.mark.parametrize("move", sorted(OWNERS_MOVES))
def test_an_owner_who_stops_or_blocks_roots_file_steps_does_not_hold_root_forever(owners_folder, move):
    """Attack (adversarial review 3): as root in another user's folder, every file step runs as
    the owner (runuser), without bound: the owner stopped that process, or put a FIFO where it
    writes, and root's holder hung for good. Now each such step is killed after 10 s, and the
    holder goes on as after any failed step: the lock is taken, then let go, the holder ends.
    Fails without the fix (the holder has not ended after 20 s)."""
    old, new = OWNERS_MOVES[move]
    assert HOLDER.count(old) == 1
    holder = subprocess.Popen(
        ["bash", "-c", HOLDER.replace(old, new), "quilt-ops-lock", str(owners_folder / "lock"),
         str(owners_folder / "note"), "{}", str(owners_folder / "commands"), TOKEN, str(owners_folder / "env"),
         "@@m", "", "nobody", SILENCE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        started = time.monotonic()
        holder.stdin.close()  # the run vanished at once: the holder lets go
        assert ended(holder, within=40), "root's holder hangs"
        assert time.monotonic() - started < 40
        assert holder.stdout.read() == b"@@m lock acquired\n"
        assert subprocess.run(["flock", "-n", str(owners_folder / "lock"), "true"]).returncode == 0  # let go
        assert not (owners_folder / "commands").exists()
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, 9)


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock is not installed")
def test_the_breaker_never_ends_another_folders_holder_through_a_renamed_lock_file(tmp_path):
    """Attack (adversarial review 3): the owner of folders A and B renames B's lock file (which
    B's holder has open) to A's lock path; the fd's path then reads as A's lock, and breaking
    A's lock ended B's holder (another stack's run, stopped mid-way). Now the breaker matches
    the file (device and inode) and the holder's own lock path (its command line): B's holder
    lives on. Fails without the fix (B's holder ended)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ours, others = start_holder(a), start_holder(b)
    try:
        (b / "lock").rename(a / "lock")
        subprocess.run(["dash", "-c", BREAK, "quilt-ops-break", str(a / "lock")], timeout=20)
        assert others.poll() is None and (b / "note").exists()  # B's holder lives on
    finally:
        for holder in (ours, others):
            if holder.poll() is None:
                holder.kill()
            holder.wait(5)


def test_the_breaker_never_ends_another_folders_root_holder_through_a_renamed_lock_file(owners_folder):
    """The same rename, as root in folders of user ``nobody``: the lock file is open in the
    owner's process (quilt-ops-lock-owner), the breaker finds root's holder as its ancestor;
    B's lock file renamed to A's path, breaking A's lock leaves B's holder running."""
    a, b = owners_folder / "a", owners_folder / "b"
    for folder in (a, b):
        folder.mkdir()
        os.chown(folder, owners_folder.stat().st_uid, owners_folder.stat().st_gid)
    ours, others = start_root_holder(a), start_root_holder(b)
    try:
        rename = ["runuser", "-u", "nobody", "--", "mv", str(b / "lock"), str(a / "lock")]
        subprocess.run(rename, check=True, timeout=10)
        subprocess.run(["dash", "-c", BREAK, "quilt-ops-break", str(a / "lock")], timeout=20)
        assert others.poll() is None and (b / "note").exists()  # B's holder lives on
    finally:
        for holder in (ours, others):
            if holder.poll() is None:
                os.killpg(holder.pid, 9)
            holder.wait(5)
