"""The shell quilt-ops runs on hosts is package data, checked by shellcheck (issue 18.3)."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

from quilt_ops import sh

PACKAGE = Path(sh.__file__).parent


def test_every_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (scripts/install installs it from scripts/debian-packages)")
    scripts = [str(PACKAGE / name) for name in sh.names()]
    assert scripts
    result = subprocess.run(
        # each script's dialect from its #! line or its `shellcheck shell=` directive
        ["shellcheck", "--severity=style", *scripts],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_names_its_shell():
    for name in sh.names():
        text = (PACKAGE / name).read_text()
        assert text.startswith(("#!/bin/sh\n", "#!/bin/bash\n")) or "# shellcheck shell=sh" in text, name


@pytest.mark.parametrize(
    "name",
    [
        "replace.sh",
        "backup.sh",
        "write_private.sh",
        "access.sh",
        "lock_holder.sh",
        "lock_break.sh",
        "restart.sh",
        "health.sh",
    ],
)
def test_scripts_load_from_the_package(name):
    text = sh.load(name)
    assert text.endswith("\n")
    assert name in sh.names()


def test_the_scripts_take_values_only_as_arguments():
    """Nothing is formatted into a script: no Python placeholder and no template marker."""
    for name in sh.names():
        text = sh.load(name)
        assert "{" + "q(" not in text and "%(" not in text, name


def test_setup_cfg_ships_the_scripts():
    setup = (Path(__file__).parents[2] / "setup.cfg").read_text()
    assert "[options.package_data]" in setup
    assert "quilt_ops.sh = *.sh" in setup


def test_remote_exit_codes_are_distinct():
    values = [int(e) for e in sh.Exit]
    assert len(values) == len(set(values))


@pytest.mark.parametrize("name", ["rotation.py", "rotation_host.py", "key_rotation_steps.py"])
def test_no_remote_exit_code_literal_in_the_rotation(name):
    """Every exit code the rotation reads is named in `sh.Exit`."""
    source = (PACKAGE.parent / name).read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(c, ast.Constant) and c.value in (40, 41, 42, 28) for c in node.comparators
        ):
            pytest.fail(f"exit code literal in {name} at line {node.lineno}")


def test_the_scripts_stop_with_the_prologue_s_exit_code():
    """lock.sh's access check stops a guarded command as the prologue does (`Exit.PROLOGUE_FAILED`)."""
    assert f"exit {sh.Exit.PROLOGUE_FAILED.value}; }}" in sh.load("lock.sh")
