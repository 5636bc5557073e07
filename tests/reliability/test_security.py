"""Security settings: env files keep 0600 (or a stricter original mode) and their owner;
backups and journals are 0600 while they exist and gone when done."""

import os
import stat
import threading

import pytest

pytestmark = [pytest.mark.sandbox, pytest.mark.security]


@pytest.mark.parametrize("mode,expected", [(0o600, 0o600), (0o400, 0o400), (0o640, 0o600), (0o644, 0o600)])
def test_rotated_env_file_mode_and_owner(host, aws, survived, mode, expected):
    owner = host.env_file.stat().st_uid, host.env_file.stat().st_gid
    host.env_file.chmod(mode)
    try:
        result = host.run("rotate-keys")
        assert result.returncode == 0, result.stdout + result.stderr
        st = host.env_file.stat()
        assert stat.S_IMODE(st.st_mode) == expected
        assert (st.st_uid, st.st_gid) == owner
    finally:
        host.env_file.chmod(0o600)
    survived(compare_bytes=True)


def test_backup_journal_and_temp_files_are_private_while_they_exist(host, aws, survived):
    env_dir = host.env_file.parent
    seen = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for path in env_dir.iterdir():
                if path.name.startswith("."):
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    if st.st_size:  # empty files hold nothing (the lock file)
                        seen.setdefault(path.name, set()).add(stat.S_IMODE(st.st_mode))

    aws.fault(new_key_delay=1)
    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        result = host.run("rotate-keys")
    finally:
        stop.set()
        reader.join(timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert any("backup" in name for name in seen), seen
    assert any("rotation.json" in name for name in seen), seen
    for name, modes in seen.items():
        assert modes == {0o600}, (name, modes)
    assert host.leftovers() == []
    survived(compare_bytes=True)


def test_audit_log_is_private(host, aws, survived):
    assert host.run("rotate-keys", "--dry-run").returncode == 0
    log = host.dir / "audit.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    survived()
