"""Issue 18.2: create-admin never runs env/registry as shell; every value reaches create_admin.sh
literally (quilt_ops/admin_env.py and quilt_ops/sh/create_admin_env.sh, run here with bash)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from quilt_ops import admin, admin_env

#: Values Docker passes verbatim and a shell would run, expand or redirect.
PAYLOADS = {
    "QUILT_DEFAULT_SENDER": "a@b;touch {pwned}-semicolon",
    "SMTP_HOST": "smtp && touch {pwned}-and",
    "SMTP_PASSWORD": "$(touch {pwned}-dollar)",
    "SMTP_USERNAME": "`touch {pwned}-backtick`",
    "REGISTRY_URL": "http://x > {pwned}-redirect",
    "TEAM_NAME": "QA Team",
    "QUILT_SECRET_KEY": "'\"\\$HOME ${{HOME}} * ? [a] ~ | & ! #",
    "CATALOG_URL": "x; rm -rf {pwned}; echo",
}


def env_file(pwned: str) -> bytes:
    lines = [f"{name}={value.format(pwned=pwned)}" for name, value in PAYLOADS.items()]
    return ("# the registry\n" + "\n".join(lines) + "\nAWS_ACCESS_KEY_ID=AKIAEXAMPLE\nBARE_NAME\n").encode()


def run_wrapper(tmp_path, content: bytes, extra_env: dict[str, str] | None = None):
    """create_admin_env.sh as the host runs it, with a create_admin.sh that prints its environment."""
    dump = tmp_path / "environment"
    fake = tmp_path / "create_admin.sh"
    fake.write_text(f"#!/bin/sh\nenv -0 > {dump}\n")
    fake.chmod(0o755)
    data = tmp_path / "quilt-ops-admin.ABCDEFGHIJ"
    data.write_bytes(admin_env.encode(admin_env.entries(content)))
    data.chmod(0o600)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SECRET_OF_SESSION": "x", **(extra_env or {})}
    result = subprocess.run(
        ["bash", "-c", admin_env.script(), "create_admin_env", str(data), "./create_admin.sh"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=30,
    )
    got = {}
    if dump.exists():
        for entry in dump.read_bytes().split(b"\0"):
            if entry:
                name, _, value = entry.decode().partition("=")
                got[name] = value
    return result, got, data


def test_values_reach_create_admin_literally_and_run_nothing(tmp_path):
    pwned = str(tmp_path / "pwned")
    result, got, data = run_wrapper(tmp_path, env_file(pwned))
    assert result.returncode == 0, result.stderr
    for name, value in PAYLOADS.items():
        assert got[name] == value.format(pwned=pwned), name
    assert got["TEAM_NAME"] == "QA Team"
    assert got["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE"
    assert "BARE_NAME" not in got and "SECRET_OF_SESSION" not in got  # the session's own are not passed on
    assert got["HOME"] == str(tmp_path) and got["PATH"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("pwned")]
    assert not data.exists()  # the private file is gone once read


def test_a_newline_ends_a_value_as_docker_reads_it(tmp_path):
    """A newline cannot be inside a Docker env-file value: the next line is a line of its own
    (here one Docker refuses, so create-admin refuses the file rather than guess)."""
    with pytest.raises(admin_env.Unusable, match="line 2"):
        admin_env.entries(b"TEAM_NAME=QA\ntouch x; echo\n")
    assert admin_env.entries(b"TEAM_NAME=QA\r\nX=$(id)\n") == [("TEAM_NAME", b"QA"), ("X", b"$(id)")]


@pytest.mark.parametrize(
    "line",
    [
        b"PATH=/tmp/evil:/usr/bin",
        b"LD_PRELOAD=/tmp/evil.so",
        b"BASH_ENV=/tmp/evil.sh",
        b"ENV=/tmp/evil.sh",
        b"SHELLOPTS=xtrace",
        b"PS4=$(touch x)",
        b"BASH_FUNC_ls%%=() { id; }",
        b"HOME=/tmp",
        b"DOCKER_HOST=tcp://evil:2375",
        b"IFS=x",
        b"a b=c",
        b"1X=y",
        b"GCONV_PATH=/tmp/evil",
        b"NLSPATH=/tmp/evil",
        b"TMOUT=1",
        b"PYTHONSTARTUP=/tmp/evil.py",
        b"NODE_OPTIONS=--require=/tmp/evil.js",
        b"PERL5OPT=-Mevil",
    ],
)
def test_names_that_change_what_runs_are_refused(line):
    # (GCONV_PATH, NLSPATH, TMOUT, PYTHON*, NODE_OPTIONS... added after the review of issue 18)
    with pytest.raises(admin_env.Unusable) as e:
        admin_env.entries(b"TEAM_NAME=QA Team\n" + line + b"\n")
    assert "line 2" in str(e.value) and "evil" not in str(e.value)


@pytest.mark.parametrize(
    "name", ["PATH", "LD_PRELOAD", "BASH_ENV", "1X", "A-B", "GCONV_PATH", "TMOUT", "PYTHONSTARTUP", "NODE_OPTIONS"]
)
def test_the_wrapper_refuses_such_names_itself(tmp_path, name):
    """Defence in depth: even data that did not come through `entries` cannot set them."""
    dump, fake = tmp_path / "environment", tmp_path / "create_admin.sh"
    fake.write_text(f"#!/bin/sh\nenv -0 > {dump}\n")
    fake.chmod(0o755)
    data = tmp_path / "quilt-ops-admin.ABCDEFGHIJ"
    data.write_bytes(f"{name}=/tmp/evil\0".encode())
    result = subprocess.run(
        ["bash", "-c", admin_env.script(), "create_admin_env", str(data), "./create_admin.sh"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 97 and not dump.exists() and not data.exists()


def test_the_remote_commands_hold_no_value(tmp_path):
    """Only the private file's name and the script's path are arguments: no env-file value
    is ever on a command line (sudo logs command lines) or in a remote environment variable."""
    from quilt_ops.config import Settings

    settings = Settings()
    text = admin.command(settings, "/tmp/quilt-ops-admin.ABCDEFGHIJ") + admin.stage_script(settings).text()
    for value in PAYLOADS.values():
        assert value.format(pwned="p") not in text
    import re

    assert not re.search(r"(^|[;&|]|then|else)\s*\.\s", text, re.M) and "eval " not in text  # nothing sourced


def test_the_private_file_is_0600(tmp_path):
    """The staging script, run here with sh: a new 0600 file holding stdin, named on stdout."""
    from quilt_ops import shell
    from quilt_ops.config import Settings

    built = admin.stage_script(Settings())
    result = subprocess.run(
        ["sh", "-c", built.text()],
        input=b"A=1\0",
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
        capture_output=True,
        timeout=30,
    )
    path = shell.parse(result.stdout, built.marker).word("data")
    assert admin.DATA_FILE.fullmatch(path), result
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, "rb") as f:
        assert f.read() == b"A=1\0"
