"""The remote scripts' sections, blobs and prologue; the remote wrapper; exit statuses."""

from pathlib import Path

import pytest

from quilt_ops import lock, remote, shell
from quilt_ops.config import Settings
from quilt_ops.errors import MissingTool, RemoteCommandError
from quilt_ops.masking import MASK, Masker
from quilt_ops.status import URGENCY, ExitStatus, worst

M = "@@quilt-0123456789ab"


def test_blob_sections_keep_exact_bytes_even_when_they_look_like_markers():
    content = f"A=1\n{M} fail nodir\nB=\x00\xff\n".encode("latin-1")
    stdout = (
        f"{M} access direct\n{M} blob env {len(content)}\n".encode()
        + content
        + f"\n{M} blobend env\n{M} end\n".encode()
    )
    output = shell.parse(stdout, M)
    assert shell.blob(output, "env") == content
    assert output.first("fail") is None and output.complete and output.word("access") == "direct"


@pytest.mark.parametrize("announced", [3, 30], ids=["grew", "shrank"])
def test_a_file_that_changed_while_it_was_sent_is_not_trusted(announced):
    """Review: its size and its bytes are read apart; a file written in between must not be
    taken (cut or padded with the script's own lines) as the file."""
    content = b"A=1\nB=2\n"
    stdout = (
        f"{M} blob env {announced}\n".encode() + content + f"\n{M} blobend env\n{M} stat env 600\n{M} end\n".encode()
    )
    output = shell.parse(stdout, M)
    assert shell.blob(output, "env") is None
    assert output.first("unreadable").words == ["env"]
    assert output.word("stat") == "env" and output.complete


def test_text_before_the_first_section_is_kept_apart():
    output = shell.parse(f"motd line\n{M} docker direct\n{M} end\n".encode(), M)
    assert output.preamble == b"motd line\n" and output.word("docker") == "direct"


@pytest.mark.parametrize(
    "words,error,text",
    [
        ("nodir", RemoteCommandError, "cannot enter quilt.registry_dir"),
        ("tool flock", MissingTool, "flock is not installed"),
        ("tool curl", MissingTool, "curl is not installed"),
        ("docker-access nosudo", shell.DockerUnreachable, "sudo is not installed"),
        ("docker-access norights", shell.DockerUnreachable, "docker group"),
        ("lock-lost", shell.LockLost, "lock"),
    ],
)
def test_point_9_7_prologue_failures_name_what_is_missing(words, error, text):
    output = shell.parse(f"{M} fail {words}\n".encode(), M)
    with pytest.raises(error, match=text):
        shell.raise_for_failure(output, "h", Settings.load({"quilt": {"registry_dir": "/srv/q"}}))


def test_configured_docker_prefix_is_used_as_given():
    text = shell.Script(Settings.load({"quilt": {"docker": "sudo -n docker"}})).docker().text()
    assert 'qdocker() { sudo -n docker "$@"; }' in text and "DOCKER_HOST" not in text


def test_auto_docker_tries_the_socket_then_sudo():
    text = shell.Script(Settings()).docker().text()
    assert text.index('qdocker() { docker "$@"; }') < text.index('qdocker() { as_root docker "$@"; }')
    assert "sudo -n" in text


def test_without_sudo_configured_nothing_runs_as_root():
    text = shell.Script(Settings.load({"quilt": {"sudo": ""}})).docker().text()
    assert "sudo" not in text.split("say docker direct")[0].split("as_root()")[1].split(";")[0]


def test_point_10_13_values_reach_the_shell_quoted():
    settings = Settings.load(
        {"quilt": {"registry_dir": "it's here", "env_file": "env/reg'istry", "start_script": "./st'art.sh"}}
    )
    from quilt_ops import restart

    text = restart.precheck_script(settings).text() + restart.script(settings).text()
    assert "cd -- 'it'\"'\"'s here'" in text
    assert "'./st'\"'\"'art.sh'" in text and "'env/reg'\"'\"'istry'" in text
    assert "echo 'start script" not in text  # messages are made locally, never echoed with values


def test_wrapper_bounds_the_command_and_reports_its_group():
    line = remote.wrap("echo hi", 12.2)
    prefix = remote.PID_PREFIX.decode()
    assert line.startswith(f"printf '{prefix}%s\\n' \"$$\" >&2; exec timeout -k 5 13 sh -c ")
    assert line.endswith(f" {remote.MARK}")
    assert "--foreground" in remote.wrap("x", 5, pty=True)


P = remote.PID_PREFIX


@pytest.mark.parametrize(
    "stderr,pid,rest",
    [
        (P + b"4242\nwarning\n", 4242, b"warning\n"),
        (P + b"1; reboot\n", None, b""),
        (P + b"0\n", None, b""),
        (b"something else\n", None, b"something else\n"),
        # review: a .bashrc's own lines come first; a line without this run's nonce is not ours
        (b"bashrc says hi\n" + P + b"4242\n", 4242, b"bashrc says hi\n"),
        (b"quilt-ops-pgid 0123456789ab 77\n" + P + b"4242\n", 4242, b"quilt-ops-pgid 0123456789ab 77\n"),
        (P + b"4242", None, P + b"4242"),  # cut short: not a whole line
    ],
    ids=["ours", "not a number", "zero", "other", "after a bashrc", "another run's", "cut short"],
)
def test_the_group_to_kill_is_checked(stderr, pid, rest):  # (ids: the nonce differs per process)
    assert remote.split_pid(stderr) == (pid, rest)


def test_kill_command_takes_only_a_number():
    command = remote.kill_command(4242)
    assert "kill -TERM -4242" in command and "sudo -n sh -c 'kill -TERM -4242'" in command
    assert " -- " not in command  # dash's kill refuses it (and then killed nothing)
    assert "sudo" not in remote.kill_command(4242, "")


@pytest.mark.parametrize("shell_name", ["dash", "bash", "busybox"])
def test_kill_command_ends_the_wrapped_group_in_any_login_shell(shell_name, tmp_path):
    """Found in review: ``kill -TERM -- -PGID`` is an error in dash, so nothing was killed."""
    import shutil
    import subprocess
    import threading
    import time

    if shutil.which(shell_name) is None:
        pytest.skip(f"{shell_name} is not installed")
    argv = [shell_name, "sh"] if shell_name == "busybox" else [shell_name]
    wrapped = subprocess.Popen(
        ["sh", "-c", remote.wrap("sleep 30", 60)], stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        pgid, _ = remote.split_pid(wrapped.stderr.readline())
        assert pgid == wrapped.pid
        deadline = time.monotonic() + 5
        while not Path(f"/proc/{pgid}/cmdline").read_text().startswith("timeout") and time.monotonic() < deadline:
            time.sleep(0.02)  # until the wrapper has exec'd timeout
        reaper = threading.Thread(target=wrapped.wait)  # a zombie would still count as alive
        reaper.start()
        subprocess.run([*argv, "-c", remote.kill_command(pgid, "")], timeout=15)
        reaper.join(5)
        assert wrapped.returncode is not None  # ended by the kill, long before its 30 s
    finally:
        if wrapped.poll() is None:
            wrapped.kill()


class Slow:
    """A process that never ends (its host never answers again)."""

    def send(self, data):
        pass

    def close_stdin(self):
        pass

    def read(self, wait):
        return b"", b""

    def finished(self):
        return False

    def exit_code(self):
        return 0

    def close(self):
        pass


class SlowTarget(remote.Runner):
    name = "h"

    def __init__(self):
        self.killed = []

    def start(self, script, timeout, pty=False):
        return Slow()

    def kill(self, pgid):
        self.killed.append(pgid)


def test_a_command_past_its_time_is_killed_and_reported(monkeypatch):
    monkeypatch.setattr(remote, "GRACE", 0.3)
    target = SlowTarget()
    with pytest.raises(remote.RemoteTimeout, match="did not finish within 0s"):
        target.run("sleep 100", timeout=0.1)
    assert target.killed == [None]


def test_owner_note_from_the_host_is_only_shown_sanitised():
    note = b'{"task": "rotate-keys\\u001b[2J", "who": "eve@x", "pid": "1; rm", "since": "now"}'
    shown = lock.describe_owner(note)
    assert "\x1b" not in shown and "rotate-keys" in shown
    assert lock.describe_owner(b"garbage") == "another quilt-ops run (owner unknown)"


def test_masker_hides_longer_values_first():
    mask = Masker(["secret", "secret-longer", "ab"])
    assert mask("x secret-longer y secret ab") == f"x {MASK} y {MASK} ab"


def test_point_10_7_exit_statuses_are_distinct_and_a_failed_rollback_is_never_hidden():
    values = [int(s) for s in ExitStatus]
    assert len(values) == len(set(values))
    assert set(URGENCY) == set(ExitStatus)
    assert worst([ExitStatus.UNKNOWN, ExitStatus.ROLLBACK_FAILED, ExitStatus.INTERNAL]) == ExitStatus.ROLLBACK_FAILED
    assert worst([ExitStatus.FAILED, ExitStatus.UNKNOWN]) == ExitStatus.FAILED
    assert ExitStatus.FAILED != ExitStatus.WARNING
