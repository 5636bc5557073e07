"""Security settings: env files keep their owner, group and mode exactly; backups, journals
and temp files are private (0600) while they exist and gone when done."""

import os
import stat
import threading

import pytest

pytestmark = [pytest.mark.sandbox, pytest.mark.security]


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o644])
def test_rotated_env_file_keeps_mode_and_owner(host, aws, survived, mode):
    owner = host.env_file.stat().st_uid, host.env_file.stat().st_gid
    host.env_file.chmod(mode)
    try:
        result = host.run("rotate-keys")
        assert result.returncode == 0, result.stdout + result.stderr
        st = host.env_file.stat()
        assert stat.S_IMODE(st.st_mode) == mode  # a wide mode is kept as found (health warns)
        assert (st.st_uid, st.st_gid) == owner
    finally:
        host.env_file.chmod(0o600)
    survived(compare_bytes=True)


def watch_private_files(folder, seen, stop):
    while not stop.is_set():
        for path in folder.iterdir():
            if path.name.startswith("."):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if st.st_size:  # empty files hold nothing (the lock file)
                    seen.setdefault(path.name, set()).add((stat.S_IMODE(st.st_mode), st.st_uid))


@pytest.mark.parametrize("env_owner", ["user", "root"])
def test_backup_journal_and_temp_files_are_private_while_they_exist(host, aws, survived, env_owner):
    with host.reshaped(env_owner=env_owner, env_mode=0o644):
        seen = {}
        stop = threading.Event()
        aws.fault(new_key_delay=1)
        reader = threading.Thread(target=watch_private_files, args=(host.env_dir, seen, stop), daemon=True)
        reader.start()
        try:
            result = host.run("rotate-keys")
        finally:
            stop.set()
            reader.join(timeout=10)
        assert result.returncode == 0, result.stdout + result.stderr
        owner = 0 if env_owner == "root" else host.env_file.stat().st_uid
        assert any("backup" in name for name in seen), seen
        assert any("rotation.json" in name for name in seen), seen
        for name, modes in seen.items():
            if name.startswith(".quilt-ops-tmp-"):
                # created 0600; given the env file's own mode only just before it is renamed over it
                assert modes <= {(0o600, owner), (0o644, owner)}, (name, modes)
            else:
                assert modes == {(0o600, owner)}, (name, modes)
        assert host.leftovers() == []
    survived(compare_bytes=False)


def test_audit_log_is_private(host, aws, survived):
    assert host.run("rotate-keys", "--dry-run").returncode == 0
    assert host.run("restart").returncode == 0
    assert stat.S_IMODE(host.audit_log.stat().st_mode) == 0o600
    survived()
