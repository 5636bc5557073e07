"""Issue 18.2: --local as root runs host scripts as the registry folder's owner, and refuses a
script, or a folder above it, that someone other than root and that owner can write
(quilt_ops/sh/as_folder_owner.sh, run here with sh as root)."""

from __future__ import annotations

import errno
import os
import pwd
import struct
import subprocess

import pytest

from quilt_ops import admin_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs as root (as a --local run as root does)")


def run_owned(folder, script):
    text = "say() { printf 'SAY %s\\n' \"$*\"; }\n" + admin_env.script(admin_env.OWNED) + '\nas_folder_owner "$@"\n'
    return subprocess.run(["sh", "-c", text, "t", script], cwd=folder, capture_output=True, text=True, timeout=30)


@pytest.fixture
def folder(tmp_path):
    """A registry folder owned by `nobody`, on a path only root can write."""
    nobody = pwd.getpwnam("nobody")
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path.parent, 0o755)
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    script = home / "start.sh"
    script.write_text("#!/bin/sh\nid -u\n")
    script.chmod(0o755)
    os.chown(script, nobody.pw_uid, nobody.pw_gid)
    return home, nobody


def test_runs_as_the_folder_owner_not_root(folder):
    home, nobody = folder
    result = run_owned(home, "./start.sh")
    assert result.returncode == 0, result
    assert result.stdout.strip() == str(nobody.pw_uid)


@pytest.mark.parametrize("mode", [0o757, 0o775])
def test_a_script_others_can_write_is_refused(folder, mode):
    home, _ = folder
    (home / "start.sh").chmod(mode)
    result = run_owned(home, "./start.sh")
    assert result.returncode == 96 and "SAY owned refused writable" in result.stdout
    assert "65534" not in result.stdout and "0\n" not in result.stdout


def test_a_folder_above_others_can_write_is_refused(folder):
    home, _ = folder
    os.chmod(home.parent, 0o777)
    try:
        result = run_owned(home, "./start.sh")
    finally:
        os.chmod(home.parent, 0o755)
    assert result.returncode == 96 and "SAY owned refused writable" in result.stdout


def test_a_script_of_another_user_is_refused(folder):
    home, _ = folder
    daemon = pwd.getpwnam("daemon")
    os.chown(home / "start.sh", daemon.pw_uid, daemon.pw_gid)
    result = run_owned(home, "./start.sh")
    assert result.returncode == 96 and "SAY owned refused owner" in result.stdout


def acl_letting(uid: int) -> bytes:
    """A POSIX access ACL (the xattr's binary form): the mode's entries plus user ``uid`` rw-."""
    entries = [
        (0x01, 7, 0xFFFFFFFF),
        (0x02, 6, uid),
        (0x04, 5, 0xFFFFFFFF),
        (0x10, 7, 0xFFFFFFFF),
        (0x20, 5, 0xFFFFFFFF),
    ]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_a_script_an_acl_lets_others_write_is_refused(folder):
    # Found by the review of issue 18: root:root, mode 775 through the ACL's mask, group root:
    # the mode bits alone passed it, and `daemon` could append to what root then ran.
    home, _ = folder
    script = home / "start.sh"
    os.chown(script, 0, 0)
    try:
        os.setxattr(script, "system.posix_acl_access", acl_letting(pwd.getpwnam("daemon").pw_uid))
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("this file system has no POSIX ACLs")
        raise
    result = run_owned(home, "./start.sh")
    assert result.returncode == 96 and "SAY owned refused acl" in result.stdout, result
