"""Bad input that never reaches a host, run in-process through the console program.

Each case: the command line, a config, the exit status and the words of its one
``Error:`` line. Nothing here needs the sandbox: a refused option or config ends
the run before any host is contacted (the cases that do contact a host, a port
that refuses or never answers, use local sockets only).
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from quilt_ops import cli
from quilt_ops.status import ExitStatus

pytestmark = pytest.mark.bad_input

USAGE, UNKNOWN = int(ExitStatus.USAGE), int(ExitStatus.UNKNOWN)
ADMIN = ["create-admin", "--username", "valid_name", "--email", "v@example.com", "--password-stdin"]


def one_error(captured) -> str:
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


@pytest.fixture
def config(tmp_path):
    def write(**quilt) -> str:
        path = tmp_path / "fabric.yaml"
        path.write_text(
            json.dumps(
                {
                    "quilt": {
                        "known_hosts": str(tmp_path / "known_hosts"),
                        "audit_log": str(tmp_path / "audit.log"),
                        **quilt,
                    }
                }
            )
        )
        return str(path)

    return write


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith("FABRIC_QUILT_") or name.startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.chdir(tmp_path)


CASES = [
    # (id, argv after -f CONFIG, quilt settings, status, words)
    ("host-port-not-a-number", ["-H", "127.0.0.1:notaport", "health"], {}, UNKNOWN, "invalid host"),
    ("host-port-out-of-range", ["-H", "127.0.0.1:99999", "restart"], {}, UNKNOWN, "port"),
    ("host-missing", ["-H", "ec2-user@", "restart"], {}, UNKNOWN, "invalid host"),
    ("host-with-space", ["-H", "bad host", "restart"], {}, UNKNOWN, "invalid host"),
    ("host-like-an-option", ["-H", "-oProxyCommand=touch", "restart"], {}, UNKNOWN, "invalid host"),
    ("closed-port", ["-H", "127.0.0.1:1", "restart"], {}, UNKNOWN, "connection refused"),
    ("config-policy", ["-H", "h", "restart"], {"host_key_policy": "yolo"}, USAGE, "quilt.host_key_policy"),
    ("config-policy-health", ["-H", "h", "health"], {"host_key_policy": "yolo"}, UNKNOWN, "quilt.host_key_policy"),
    ("config-containers-type", ["-H", "h", "restart"], {"containers": "registry"}, USAGE, "quilt.containers"),
    ("config-containers-two", ["-H", "h", "restart"], {"containers": ["a", "b"]}, USAGE, "quilt.containers"),
    (
        "config-container-option",
        ["-H", "h", "restart"],
        {"containers": {"registry": "--rm", "catalog": "c", "nginx": "n"}},
        USAGE,
        "quilt.containers.registry",
    ),
    ("config-timeout-negative", ["-H", "h", "restart"], {"restart_timeout": -5}, USAGE, "quilt.restart_timeout"),
    ("config-probe-interval", ["-H", "h", "restart"], {"probe_interval": 0.1}, USAGE, "quilt.probe_interval"),
    ("config-probe-url", ["-H", "h", "restart"], {"probes": {"registry": "ftp://x/"}}, USAGE, "quilt.probes.registry"),
    ("config-env-file-absolute", ["-H", "h", "rotate-keys"], {"env_file": "/etc/shadow"}, USAGE, "quilt.env_file"),
    (
        "config-registry-dir-other-home",
        ["-H", "h", "restart"],
        {"registry_dir": "~root/x"},
        USAGE,
        "quilt.registry_dir",
    ),
    ("option-verify-timeout", ["-H", "h", "rotate-keys", "--verify-timeout", "abc"], {}, USAGE, "--verify-timeout"),
    ("option-parallel-zero", ["-H", "h", "restart", "--parallel", "0"], {}, USAGE, "--parallel"),
    ("option-parallel-health", ["-H", "h", "health", "--parallel", "x"], {}, UNKNOWN, "--parallel"),
    ("option-format", ["-H", "h", "health", "--format", "xml"], {}, UNKNOWN, "--format"),
    ("option-timeout", ["-H", "h", "restart", "--timeout", "soon"], {}, USAGE, "--timeout"),
    ("option-unknown", ["-H", "h", "restart", "--bogus"], {}, USAGE, "--bogus"),
    ("option-no-short-flags", ["-H", "h", "restart", "-a", "3"], {}, USAGE, "-a"),
    ("option-unknown-task", ["-H", "h", "restart-everything"], {}, USAGE, "restart-everything"),
    ("admin-username", ["-H", "h", *ADMIN[:2], "Root", *ADMIN[3:]], {}, USAGE, "Invalid username"),
    ("admin-email", ["-H", "h", *ADMIN[:4], "nope", *ADMIN[5:]], {}, USAGE, "Invalid email"),
    ("admin-no-password-source", ["-H", "h", *ADMIN[:-1]], {}, USAGE, "never a command-line option"),
    ("no-host", ["rotate-keys", "--iam-user", "x"], {}, USAGE, "no host given"),
    ("no-host-restart", ["restart"], {}, USAGE, "no host given"),
    ("aws-profile-missing", ["-H", "h", "rotate-keys", "--profile", "nope"], {}, USAGE, "profile 'nope' not found"),
]


@pytest.mark.parametrize("case_id,argv,quilt,status,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(capsys, monkeypatch, config, case_id, argv, quilt, status, words):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n" if case_id == "admin-short-password" else ""))
    code = cli.run(["-f", config(**quilt), *argv])
    captured = capsys.readouterr()
    assert code == status, captured.out + captured.err
    assert words.lower() in one_error(captured).lower()


def test_short_password_from_stdin(capsys, monkeypatch, config):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.run(["-f", config(), "-H", "h", *ADMIN]) == USAGE
    assert "at least 8" in one_error(capsys.readouterr())


# health is a Nagios plugin: a bad option or config is UNKNOWN (3), as the README says.
@pytest.mark.parametrize("tool_args, status", [(["health"], UNKNOWN), (["restart"], USAGE)])
def test_config_file_missing_or_broken(capsys, tmp_path, tool_args, status):
    assert cli.run(["-f", "/nonexistent/fabric.yaml", "-H", "h", *tool_args]) == status
    assert "not found" in one_error(capsys.readouterr())
    broken = tmp_path / "broken.yaml"
    broken.write_text("quilt: {probes: [unclosed\n")
    assert cli.run(["-f", str(broken), "-H", "h", *tool_args]) == status
    assert "broken.yaml" in one_error(capsys.readouterr())


@pytest.mark.parametrize("task, status", [("restart", USAGE), ("health", UNKNOWN)])
def test_wrong_type_in_config(capsys, config, task, status):
    assert cli.run(["-f", config(probes=["http://x/"]), "-H", "h", task]) == status
    assert "quilt.probes" in one_error(capsys.readouterr())


@pytest.mark.parametrize(
    "name,value,words",
    [
        ("FABRIC_QUILT_RESTART_TIMEOUT", "soon", "FABRIC_QUILT_RESTART_TIMEOUT"),
        ("FABRIC_QUILT_CONTAINERS", "a,b", "fabric.yaml"),
    ],
)
def test_bad_environment_variable(capsys, monkeypatch, config, name, value, words):
    monkeypatch.setenv(name, value)
    assert cli.run(["-f", config(), "-H", "h", "restart"]) == USAGE
    assert words in one_error(capsys.readouterr())


def test_environment_overrides_defaults(capsys, monkeypatch, config):
    """A dry run of restart against a closed port still says the timeout it would use... after failing to
    connect; the value is checked through Settings here."""
    from quilt_ops.config import Settings

    monkeypatch.setenv("FABRIC_QUILT_RESTART_TIMEOUT", "42")
    from fabric import Config

    from quilt_ops.tasks import ns

    c = Config(overrides={})
    c.load_collection(ns.configuration())
    c.load_shell_env()
    assert Settings.load(c).restart_timeout == 42


class Listener:
    """A TCP port on 127.0.0.1 that accepts and then says nothing (or one fixed line)."""

    def __init__(self, greeting: bytes = b""):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.conns: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            self.conns.append(conn)
            if self.greeting:
                conn.sendall(self.greeting)

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize(
    "greeting,words",
    [
        (b"", "timed out"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "SSH"),
    ],
)
def test_ports_that_do_not_speak_ssh(capsys, config, greeting, words):
    listener = Listener(greeting)
    try:
        code = cli.run(["-f", config(connect_timeout=1), "-H", f"127.0.0.1:{listener.port}", "restart"])
    finally:
        listener.close()
    assert code == UNKNOWN
    assert words in one_error(capsys.readouterr())


def test_health_of_a_closed_port_is_unknown_in_every_format(capsys, config):
    for fmt in ("table", "json", "nagios", "prometheus"):
        assert cli.run(["-f", config(), "-H", "127.0.0.1:1", "health", "--format", fmt]) == UNKNOWN
        captured = capsys.readouterr()
        assert "connection refused" in captured.out + captured.err
        assert one_error(captured).startswith("Error: 127.0.0.1:1:")


def test_version_and_help(capsys):
    assert cli.run(["--version"]) == 0
    assert capsys.readouterr().out.startswith("quilt-ops ")
    assert cli.run(["--help", "rotate-keys"]) == 0
    out = capsys.readouterr().out
    for option in (
        "--iam-user",
        "--stack",
        "--keep-old",
        "--delete-other-active",
        "--verify-timeout",
        "--timeout",
        "-n, --dry-run",
        "--profile",
        "--region",
        "--parallel",
        "--break-lock",
        "-y, --yes",
    ):
        assert option in out
    assert "-i," not in out and "-a," not in out


def test_python_m_quilt_ops(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "quilt_ops", "--list"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0 and "rotate-keys" in result.stdout


def test_fabfile_exposes_the_same_tasks():
    root = Path(__file__).resolve().parents[2]
    assert "use_with_fab()" in (root / "fabfile.py").read_text()


def refused_locally(capsys, monkeypatch, config, username, email, stdin="a-good-password\n") -> str:
    """create-admin against 127.0.0.1:1: had the host been contacted, the error would be 'connection refused'."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    argv = ["-f", config(), "-H", "127.0.0.1:1", "create-admin", "--username", username, "--email", email]
    code = cli.run([*argv, "--password-stdin"])
    assert code == USAGE
    return one_error(capsys.readouterr())


@pytest.mark.parametrize(
    "username",
    [
        "Alice",
        "1alice",
        "team",
        "quilt",
        "$(touch /tmp/quilt-ops-pwned)",
        "a;b",
        "a'b",
        'a"b',
        "a\nb",
        "a`touch /tmp/quilt-ops-pwned`",
    ],
)
def test_invalid_usernames_are_refused_before_any_host_is_contacted(capsys, monkeypatch, config, username):
    assert "Invalid username" in refused_locally(capsys, monkeypatch, config, username, "ok@example.com")
    assert not Path("/tmp/quilt-ops-pwned").exists()


@pytest.mark.parametrize(
    "email", ["no-at-sign", "a@b@c", "a b@c", "@example.com", "$(touch /tmp/quilt-ops-pwned)", "a\x13b@c"]
)
def test_invalid_emails_are_refused_before_any_host_is_contacted(capsys, monkeypatch, config, email):
    assert "Invalid email" in refused_locally(capsys, monkeypatch, config, "valid_name", email)


@pytest.mark.parametrize("password", ["short", "control\x11chars", "control\x1achars"])
def test_bad_passwords_are_refused_before_any_host_is_contacted(capsys, monkeypatch, config, password):
    line = refused_locally(capsys, monkeypatch, config, "valid_name", "v@example.com", password + "\n")
    assert "at least 8" in line or "control characters" in line
