"""sudo.password for hosts whose sudo asks (issue 20.3): the pure parts, and askpass.sh."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
from fabric import Config

from quilt_ops import sh, sudo_password
from quilt_ops.config import Settings
from quilt_ops.errors import ConfigError, HostError
from quilt_ops.sudo_password import SudoPasswordRefused

SECRET = "pw-Öß with 'quotes' $HOME `id` ;|"


@pytest.mark.parametrize(
    "config, expected",
    [
        ({}, None),
        ({"sudo": {"password": None}}, None),
        ({"sudo": {"password": ""}}, None),
        ({"sudo": {"password": SECRET}}, SECRET),
        (Config(overrides={"sudo": {"password": SECRET}}), SECRET),
        (Config(), None),
        (None, None),
    ],
)
def test_password_is_fabrics_sudo_password(config, expected):
    assert sudo_password.password(config) == expected


@pytest.mark.parametrize("value, words", [(12345, "must be text"), ("a\nb", "one line"), ("a\rb", "one line")])
def test_a_bad_password_value_is_a_config_error_without_the_value(value, words):
    with pytest.raises(ConfigError) as e:
        sudo_password.password({"sudo": {"password": value}})
    assert words in str(e.value) and str(value) not in str(e.value)


def test_the_env_variable_reaches_sudo_password(monkeypatch):
    """FABRIC_SUDO_PASSWORD, as Invoke reads variables for the keys it knows."""
    monkeypatch.setenv("FABRIC_SUDO_PASSWORD", SECRET)
    config = Config()
    config.load_shell_env()
    assert sudo_password.password(config) == SECRET


@pytest.mark.parametrize(
    "sudo, expected",
    [
        ("sudo -n", "sudo -A"),
        ("sudo", "sudo -A"),
        ("sudo --non-interactive", "sudo -A"),
        ("sudo -A", "sudo -A"),
        ("sudo -n -E", "sudo -A -E"),
        ("/usr/bin/sudo -n", "/usr/bin/sudo -A"),
        ("", ""),
        ("  ", ""),
    ],
)
def test_asking_replaces_never_ask_by_the_askpass_helper(sudo, expected):
    assert sudo_password.asking(sudo) == expected


@pytest.mark.parametrize("sudo", ["sudo -n '", 'sudo "-n', "sudo \\"])
def test_a_sudo_that_is_not_a_command_line_is_a_config_error(sudo):
    """Attack (review-attack): quilt.sudo with an unclosed quote and a password given was
    'Error: internal error (ValueError)', exit 70, not a configuration error."""
    with pytest.raises(ConfigError, match="quilt.sudo is not a command line"):
        Settings.load({"sudo": {"password": SECRET}, "quilt": {"sudo": sudo}})


def test_settings_sudo_asks_only_with_a_password():
    assert Settings.load({}).sudo == "sudo -n"
    assert Settings.load({"sudo": {"password": SECRET}}).sudo == "sudo -A"
    assert Settings.load({"sudo": {"password": SECRET}, "quilt": {"sudo": ""}}).sudo == ""
    assert SECRET not in repr(Settings.load({"sudo": {"password": SECRET}}))


def test_no_command_holds_the_password_or_anything_from_the_host():
    name = sudo_password.new_name()
    command = sudo_password.keeper_command(name, "sudo -A", "quilt-ops-mark")
    environment = sudo_password.environment(name)
    for text in (command, environment):
        assert SECRET not in text
    assert "SUDO_ASKPASS" in environment and name in environment
    assert sudo_password.environment(None) == ""
    # a shell reads the environment prefix as plain assignments (nothing else runs)
    out = subprocess.run(
        ["sh", "-c", environment + 'printf "%s|%s" "$SUDO_ASKPASS" "$DISPLAY"'],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "TMPDIR": "/x"},
        check=True,
    ).stdout
    assert out == f"/x/quilt-ops-sudo.{name}/askpass|{sudo_password.DISPLAY}"
    assert shlex.split(command)[-2:] == ["sudo", "-A"]


@pytest.mark.parametrize(
    "line, result, error, words",
    [
        ("ready ok", True, None, None),
        ("ready none", False, None, None),
        ("fail refused", None, SudoPasswordRefused, "did not accept the password"),
        ("fail notallowed", None, SudoPasswordRefused, "refused the login user"),
        ("fail askpass", None, HostError, "noexec"),
        ("fail mktemp", None, HostError, "private temp folder"),
        ("fail tmpdir", None, HostError, "another user's, or others can rename"),
        ("fail tty", None, HostError, "requiretty"),
        ("ready /tmp/elsewhere", None, HostError, "could not be set up"),
        ("", None, HostError, "could not be set up"),
        ("Welcome to the host!", None, HostError, "could not be set up"),
    ],
)
def test_the_keepers_answer(line, result, error, words):
    if error is None:
        assert sudo_password.ready(line, "h") is result
        return
    with pytest.raises(error) as e:
        sudo_password.ready(line, "h")
    assert words in str(e.value) and e.value.status == 3


class FakeProcess:
    def __init__(self, chunks: list[bytes], done: bool = False) -> None:
        self.chunks, self.done = chunks, done

    def read(self, wait: float) -> tuple[bytes, bytes]:
        return (self.chunks.pop(0) if self.chunks else b""), b""

    def finished(self) -> bool:
        return self.done and not self.chunks


def test_first_line_reads_to_the_first_newline_and_is_bounded():
    assert sudo_password.first_line(FakeProcess([b"rea", b"dy ok\nmore"]), "h") == "ready ok"
    assert sudo_password.first_line(FakeProcess([b"fail ref"], done=True), "h") == "fail ref"
    ticks = iter(range(100))
    with pytest.raises(HostError, match="did not answer within 5s"):
        sudo_password.first_line(FakeProcess([]), "h", timeout=5, clock=lambda: next(ticks))


def askpass(folder, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(folder / "askpass"), *args], capture_output=True, text=True, timeout=10)


def test_askpass_prints_the_file_beside_it_and_answers_once_while_checking(tmp_path):
    (tmp_path / "askpass").write_text(sh.load("askpass.sh"))
    (tmp_path / "askpass").chmod(0o700)
    (tmp_path / "password").write_text(SECRET + "\n")
    for _ in range(2):  # in use: every sudo asks it
        result = askpass(tmp_path, "[sudo] password for u: ")
        assert result.returncode == 0 and result.stdout == SECRET + "\n"
    (tmp_path / "checking").touch()  # the keeper's check: once only (a wrong password is tried once)
    assert askpass(tmp_path, "[sudo] password for u: ").stdout == SECRET + "\n"
    again = askpass(tmp_path, "[sudo] password for u: ")
    assert again.returncode != 0 and again.stdout == ""


def test_the_sandbox_shape_whose_sudo_asks():
    """The sandbox's ``sudo_password`` shape changes in place, and needs sudo at all."""
    import sys
    from pathlib import Path

    scripts = str(Path(__file__).resolve().parents[2] / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    from registry_sandbox.shapes import IN_PLACE, MAIN, HostShape

    assert "sudo_password" in IN_PLACE and MAIN.sudo_password is False
    assert MAIN.same_build(MAIN.with_changes(sudo_password=True))
    for bad in ({"docker_access": "none"}, {"docker_access": "group", "sudo": False}):
        with pytest.raises(ValueError, match="sudo_password needs sudo"):
            HostShape(sudo_password=True, **bad)


FAKE_SUDO = """#!/bin/sh
# a sudo whose password is the first line of $EXPECTED: asks SUDO_ASKPASS (sudo -A -k true)
[ "$("$SUDO_ASKPASS" '[sudo] password: ')" = "$(cat "$EXPECTED")" ] ||
    { echo 'sudo: incorrect password attempt' >&2; exit 1; }
"""


def keep(tmp_path, base, secret: str = SECRET) -> tuple[str, list[str]]:
    """The keeper run here with TMPDIR=base and a fake sudo, stdin the password then its end:
    its answer, and every file under ``base`` holding the password while it was kept."""
    tool = tmp_path / "tool"
    tool.mkdir(exist_ok=True)
    (tool / "fakesudo").write_text(FAKE_SUDO)
    (tool / "fakesudo").chmod(0o755)
    (tool / "expected").write_text(secret + "\n")
    command = sudo_password.keeper_command(sudo_password.new_name(), f"{tool}/fakesudo -A", "quilt-ops-mark")
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(base), "EXPECTED": str(tool / "expected")}
    keeper = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert keeper.stdin is not None and keeper.stdout is not None
        keeper.stdin.write(secret + "\n")
        keeper.stdin.flush()
        line = keeper.stdout.readline().strip()
        holding = [str(p) for p in base.rglob("*") if p.is_file() and secret in p.read_text(errors="replace")]
    finally:
        keeper.communicate(timeout=10)
    return line, holding


def test_the_keeper_keeps_the_password_in_a_private_folder(tmp_path):
    base = tmp_path / "tmp"
    base.mkdir(mode=0o1777)
    base.chmod(0o1777)  # sticky, as /tmp
    line, holding = keep(tmp_path, base)
    assert line == "ready ok" and len(holding) == 1 and "/quilt-ops-sudo." in holding[0]
    assert list(base.iterdir()) == []  # removed at stdin's end


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_the_keeper_refuses_a_temp_folder_others_can_rename_in(tmp_path, mode):
    """Attack (review-attack): TMPDIR names a folder another user can write into, without the
    sticky bit: that user can rename the keeper's private folder away between its mkdir and the
    password's write and put one of their own there (a 'password' file of theirs in it, opened
    by the keeper's '>'): the password is written where they read it. The keeper refuses it."""
    base = tmp_path / "shared"
    base.mkdir()
    base.chmod(mode)
    line, holding = keep(tmp_path, base)
    assert line == "fail tmpdir" and holding == [] and list(base.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another user's folder (root)")
def test_the_keeper_refuses_a_temp_folder_of_another_user(tmp_path):
    base = tmp_path / "theirs"
    base.mkdir(mode=0o755)
    os.chown(base, 65534, 65534)
    line, holding = keep(tmp_path, base)
    assert line == "fail tmpdir" and holding == []
    link = tmp_path / "link"  # a symlink of another user's (they can point it elsewhere later)
    link.symlink_to(tmp_path)
    os.lchown(link, 65534, 65534)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    line, holding = keep(tmp_path, link / "sticky")
    assert line == "ready ok"  # the symlink is a path component above, not the folder named
    target = tmp_path / "target"
    target.symlink_to(sticky)
    os.lchown(target, 65534, 65534)
    line, holding = keep(tmp_path, target)
    assert line == "fail tmpdir" and holding == []


class _Transport:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class _Channel:
    def __init__(self, started: list[str]) -> None:
        self.started = started

    def exec_command(self, command: str) -> None:
        self.started.append(command)

    def close(self) -> None:
        pass


class _Connection:
    """A fake connection: records each command started, and calls ``during_close`` when it closes."""

    def __init__(self, events: list[str], started: list[str]) -> None:
        self.transport, self.gateway = _Transport(), None
        self.config = Config(overrides={"sudo": {"password": SECRET}})
        self.events, self.started = events, started
        self.during_close = lambda: None

    def create_session(self) -> _Channel:
        if not self.transport.active:
            raise OSError("closed")
        return _Channel(self.started)

    def close(self) -> None:
        self.during_close()
        self.events.append("connection closed")
        self.transport.active = False


class _Keeper:
    def __init__(self, events: list[str], during_close) -> None:
        self.events, self.during_close = events, during_close

    def close(self) -> None:  # its stdin ends: on the host, the keeper removes its folder
        self.during_close()
        self.events.append("keeper ended")


def test_no_command_starts_with_the_askpass_once_close_began():
    """Attack (adversarial review): SshTarget.close() ended the keeper (which removes its folder)
    before closing the connection; a command another thread started in between got SUDO_ASKPASS
    naming a path in /tmp that anyone could create by then (the name is on the keeper's command
    line): an askpass planted by another user. Now the connection closes first, and once close()
    has begun no command starts (fails on main: a command started with the askpass while the
    keeper ended, the connection still open)."""
    from quilt_ops.errors import NotStarted
    from quilt_ops.remote import SshTarget

    events: list[str] = []
    started: list[str] = []
    cxn = _Connection(events, started)
    target = SshTarget(cxn, "host")  # type: ignore[arg-type]
    target._transport = cxn.transport  # type: ignore[assignment]
    target._askpass = "0123456789abcdef01234567"

    def another_thread_starts() -> None:
        for way in (lambda: target.start("true", timeout=5), lambda: target.kill(123)):
            try:
                way()
            except NotStarted:
                pass

    target.start("true", timeout=5)
    assert "quilt-ops-sudo.0123456789abcdef01234567/askpass" in started[0]  # a command before close
    target._keeper = _Keeper(events, another_thread_starts)  # type: ignore[assignment]
    cxn.during_close = another_thread_starts
    del started[:]
    target.close()
    assert not [command for command in started if "SUDO_ASKPASS" in command], started
    assert events == ["connection closed", "keeper ended"]
    with pytest.raises(NotStarted):
        target.start("true", timeout=5)
