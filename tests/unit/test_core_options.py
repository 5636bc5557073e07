"""Invoke's and Fabric's core options tell the truth: honoured (-R, -e, -T, -t) or refused,
and health's bad options are UNKNOWN (3); a closed stdout ends quietly."""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
import time

import pytest
from fabric import Config, Connection

from quilt_ops import cli, core_options, ssh
from quilt_ops.config import Settings
from quilt_ops.core_options import RunOptions
from quilt_ops.errors import ConfigError, RemoteTimeout
from quilt_ops.local import LocalTarget
from quilt_ops.masking import MASK
from quilt_ops.status import ExitStatus, usage_status

USAGE, UNKNOWN = int(ExitStatus.USAGE), int(ExitStatus.UNKNOWN)


def one_error(captured) -> str:
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    "given, remainder, words",
    [
        ({}, "", None),
        ({"debug": False, "hide": None, "pty": False}, "", None),
        ({"debug": True}, "", "-d/--debug"),
        ({"hide": "both"}, "", "--hide"),
        ({"pty": True}, "", "-p/--pty"),
        ({"warn-only": True}, "", "-w/--warn-only"),
        ({"prompt-for-login-password": True}, "", "--prompt-for-login-password"),
        ({"prompt-for-sudo-password": True}, "", None),
        ({"no-dedupe": True}, "", "--no-dedupe"),
        ({}, "uname -a", "'--'"),
    ],
)
def test_refusal(given, remainder, words):
    line = core_options.refusal(given, remainder)
    if words is None:
        assert line is None
    else:
        assert line is not None and line.startswith("Error: ") and words in line


@pytest.mark.parametrize(
    "dry, tasks, refused",
    [
        (False, [("health", ["json"])], None),
        (True, [("restart", ["dry_run", "timeout"])], None),
        (True, [("health", ["json"])], "health"),
        (True, [("restart", ["dry_run"]), ("exporter", ["listen"])], "exporter"),
    ],
)
def test_dry_refusal(dry, tasks, refused):
    line = core_options.dry_refusal(dry, tasks)
    assert (line is None) if refused is None else (refused in line and "nothing was done" in line)


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), (0, None), ("", None), (5, 5.0), ("2.5", 2.5), ("x", ConfigError), (-1, ConfigError),
     (True, ConfigError), (10**6, ConfigError)],
)  # fmt: skip
def test_positive_seconds(value, expected):
    if expected is ConfigError:
        with pytest.raises(ConfigError, match="timeouts.command"):
            core_options.positive_seconds("-T/--command-timeout (timeouts.command)", value)
    else:
        assert core_options.positive_seconds("x", value) == expected


@pytest.mark.parametrize("own, cap, expected", [(60, None, 60), (60, 5, 5), (3, 5, 3)])
def test_limit(own, cap, expected):
    assert core_options.limit(own, cap) == expected


def test_run_options_from_invoke_config():
    config = Config(overrides={"run": {"echo": True}, "timeouts": {"command": 7}})
    assert RunOptions.load(config) == RunOptions(echo=True, command_timeout=7.0)
    assert RunOptions.load(Config()) == RunOptions()
    assert RunOptions.load(None) == RunOptions()


def test_echo_lines_are_masked_and_printable():
    from quilt_ops.masking import Masker

    lines = core_options.echo_lines("h", "cd x\nprintf 's3cr3tvalue'\n\x1b[2J", Masker(["s3cr3tvalue"]))
    assert lines == ["[h] $ cd x", f"[h]   printf '{MASK}'", "[h]   ?[2J"]


@pytest.mark.parametrize(
    "tasks, status", [(["health"], ExitStatus.UNKNOWN), (["restart"], ExitStatus.USAGE),
                      (["health", "restart"], ExitStatus.USAGE), ([], ExitStatus.USAGE)]
)  # fmt: skip
def test_usage_status(tasks, status):
    assert usage_status(tasks) == status


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "argv, status, words",
    [
        (["-R", "health"], UNKNOWN, "health has no --dry-run"),
        (["-R", "exporter"], USAGE, "exporter has no --dry-run"),
        (["-R", "stacks"], USAGE, "stacks has no --dry-run"),
        (["-d", "health"], UNKNOWN, "-d/--debug"),
        (["health", "-d"], UNKNOWN, "-d/--debug"),
        (["-d", "restart"], USAGE, "-d/--debug"),
        (["-w", "restart"], USAGE, "-w/--warn-only"),
        (["-p", "restart"], USAGE, "-p/--pty"),
        (["--hide", "both", "restart"], USAGE, "--hide"),
        (["--prompt-for-login-password", "restart"], USAGE, "--prompt-for-login-password"),
        (["-H", "h", "restart", "--", "uname"], USAGE, "'--'"),
        (["health", "--no-such-option"], UNKNOWN, "--no-such-option"),
        (["restart", "--no-such-option"], USAGE, "--no-such-option"),
        (["health", "--parallel", "many"], UNKNOWN, "--parallel must be a whole number"),
        (["health", "--parallel=many"], UNKNOWN, "--parallel must be a whole number"),
        (["health", "--parallel", "0", "-H", "h"], UNKNOWN, "--parallel must be between"),
        (["health", "--format", "xml", "-H", "h"], UNKNOWN, "--format"),
        (["-T", "soon", "health"], UNKNOWN, "-T must be a whole number"),
        (["-f", "/nonexistent/fabric.yaml", "health"], UNKNOWN, "not found"),
    ],
)
def test_refused_on_the_command_line(capsys, monkeypatch, argv, status, words):
    monkeypatch.setattr("getpass.getpass", lambda prompt="": pytest.fail("prompted"))
    assert cli.run(argv) == status
    assert words in one_error(capsys.readouterr())


def test_dry_is_the_task_dry_run(monkeypatch):
    """-R reaches the task as --dry-run=True (the task itself is not run here)."""
    from quilt_ops import tasks

    seen = {}

    def fake(c, dry_run=False, **kwargs):
        seen["dry_run"] = dry_run

    monkeypatch.setattr(tasks.restart, "body", functools.wraps(tasks.restart.body)(fake))
    assert cli.run(["-R", "restart"]) == 0
    assert seen == {"dry_run": True}
    seen.clear()
    assert cli.run(["restart", "-R"]) == 0
    assert seen == {"dry_run": True}


def test_prompt_for_sudo_password_asks_once_into_sudo_password(monkeypatch):
    """--prompt-for-sudo-password is no longer refused: Invoke asks once (getpass), before the
    task, and the answer is sudo.password; quilt.sudo then asks the askpass helper (-A)."""
    from quilt_ops import tasks

    prompts, seen = [], {}
    monkeypatch.setattr("getpass.getpass", lambda prompt="": prompts.append(prompt) or "pw from the prompt")

    def fake(c, dry_run=False, **kwargs):
        seen["password"] = c.config.sudo.password
        seen["sudo"] = Settings.load(c.config).sudo

    monkeypatch.setattr(tasks.restart, "body", functools.wraps(tasks.restart.body)(fake))
    assert cli.run(["--prompt-for-sudo-password", "restart"]) == 0
    assert len(prompts) == 1 and "sudo.password" in prompts[0]
    assert seen == {"password": "pw from the prompt", "sudo": "sudo -A"}


def test_help_leaves_out_refused_flags_and_tells_what_the_rest_do(capsys):
    assert cli.run(["--help"]) == 0
    out = capsys.readouterr().out
    for gone in ("--debug", "--hide", "--pty", "--warn-only", "--prompt-for-login-password"):
        assert gone not in out
    assert "--prompt-for-sudo-password" in out and "sudo.password" in out
    assert "the task's own --dry-run" in out and "secrets masked" in out
    assert "-T INT, --command-timeout=INT" in out and "-t INT, --connect-timeout=INT" in out


@pytest.mark.parametrize("task, option", [("health", "--parallel=INT"), ("restart", "--parallel=INT"),
                                          ("backup", "--keep=INT")])  # fmt: skip
def test_whole_number_options_show_as_int(capsys, task, option):
    assert cli.run(["--help", task]) == 0
    assert option in capsys.readouterr().out


# ---------------------------------------------------------------- -t, -T, -e on the runner


def test_connect_timeout_flag_becomes_the_connections_timeout():
    """Fabric puts -t into connect_kwargs and then refuses to open (ValueError: both given)."""
    config = Config(overrides={"connect_kwargs": {"timeout": 3}})
    cxn = ssh.prepare(Connection("h", config=config), Settings())
    assert cxn.connect_timeout == 3 and "timeout" not in cxn.connect_kwargs
    assert cxn.connect_kwargs["banner_timeout"] == 3
    assert ssh.prepare(Connection("h", config=Config()), Settings()).connect_timeout == 10


def test_connect_timeout_bounds_a_connect_that_never_answers(capsys):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts TCP, never speaks SSH
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        code = cli.run(["-t", "1", "-H", f"u@127.0.0.1:{port}", "restart", "--dry-run"])
        took = time.monotonic() - started
    finally:
        listener.close()
    line = one_error(capsys.readouterr())
    assert code == UNKNOWN and took < 8, (took, line)
    assert "within 1s" in line


def test_command_timeout_bounds_a_command():
    target = LocalTarget()
    target.run_options = RunOptions(command_timeout=1)
    started = time.monotonic()
    with pytest.raises(RemoteTimeout, match="within 1s"):
        target.run("sleep 30", timeout=60)
    assert time.monotonic() - started < 10


def test_echo_writes_each_command_masked(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    target = LocalTarget()
    target.run_options = RunOptions(echo=True)
    target.masker.add("hunter2-secret")
    result = target.run("echo done # hunter2-secret", timeout=10)
    assert result.stdout.strip() == "done"
    assert f"$ echo done # {MASK}" in err.getvalue() and "hunter2" not in err.getvalue()


# ---------------------------------------------------------------- a closed stdout


def test_a_closed_stdout_ends_quietly(tmp_path):
    config = tmp_path / "fabric.yaml"
    config.write_text(f"quilt:\n  registry_dir: {tmp_path / 'none'}\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    for argv in (["--local", "-f", str(config), "health", "--json"], ["--help"]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written (| head -c0)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "quilt_ops", *argv], stdout=write, stderr=subprocess.PIPE, text=True,
                env=env, timeout=60,
            )  # fmt: skip
        finally:
            os.close(write)
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
        assert "BrokenPipe" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
        assert done.returncode == (UNKNOWN if "health" in argv else 0), done.stderr


@pytest.mark.parametrize(
    "argv, status, words",
    [(["-w", "restart"], USAGE, "-w/--warn-only"), (["-R", "health"], UNKNOWN, "health has no --dry-run"),
     (["-d", "restart"], USAGE, "-d/--debug")],
)  # fmt: skip
def test_fab_in_a_checkout_refuses_the_same(argv, status, words):
    from pathlib import Path

    fab = Path(sys.executable).parent / "fab"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([str(fab), *argv], cwd=root, capture_output=True, text=True, timeout=60)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == status and last.startswith("Error: ") and words in last, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("variable, read", [("FABRIC_SUDO_PASSWORD", True), ("INVOKE_SUDO_PASSWORD", False)])
def test_sudo_password_from_the_environment_as_fabric_reads_it(monkeypatch, variable, read):
    """quilt-ops is a Fabric program: FABRIC_SUDO_PASSWORD is sudo.password (Invoke's own prefix is not read)."""
    from quilt_ops import tasks

    seen = {}
    monkeypatch.setenv(variable, "pw-from-the-environment")
    monkeypatch.setattr("getpass.getpass", lambda prompt="": pytest.fail("prompted"))

    def fake(c, dry_run=False, **kwargs):
        seen["pw"] = c.config.sudo.password

    monkeypatch.setattr(tasks.restart, "body", functools.wraps(tasks.restart.body)(fake))
    assert cli.run(["restart"]) == 0
    assert (seen["pw"] == "pw-from-the-environment") is read
