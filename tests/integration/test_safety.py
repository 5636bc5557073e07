"""Issue 10: the holes a security review found, each shown against a sandbox host.

The pure decisions (which key may be deleted, what a journal may claim) have their
table-driven tests in tests/unit/test_rotation_plan.py; here the whole tool meets
forged host files, a stalled holder, a failing IAM, an unwritable audit log.
"""

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.tool import one_error, wait_until

pytestmark = pytest.mark.sandbox

JOURNAL = ".registry.quilt-ops-rotation.json"


def journal_path(host):
    return host.env_dir / JOURNAL


def write_journal(host, **fields):
    record = {
        "version": 2,
        "tool": "quilt-ops",
        "step": "written",
        "iam_user": host.iam_user,
        "old_key_id": "AKIAOLDOLDOLDOLD0001",
        "old_key_created": "2026-01-01T00:00:00Z",
        "new_key_id": host.host_key_id(),
        "new_key_created": "2026-01-01T00:00:00Z",
        "started": "2026-01-01T00:00:00Z",
        "who": "mallory@host",
        "keep_old": False,
        "mode": 384,
        "original_sha256": hashlib.sha256(host.env_file.read_bytes()).hexdigest(),
        "written_sha256": hashlib.sha256(host.env_file.read_bytes()).hexdigest(),
    }
    record.update(fields)
    path = journal_path(host)
    path.write_text(json.dumps(record))
    os.chown(path, *owner(host.env_file))
    path.chmod(0o600)
    return record


def owner(path):
    st = path.stat()
    return st.st_uid, st.st_gid


# ----------------------------------------------------------------------------- 10.1 journals


def test_point_10_1_a_journal_naming_another_iam_user_deletes_nothing(host, aws):
    """The forged journal names the operator's own user and its key as the 'old' one."""
    victim = aws.iam.create_access_key(UserName="quilt-operator")["AccessKey"]["AccessKeyId"]
    try:
        operator_keys = {
            k["AccessKeyId"] for k in aws.iam.list_access_keys(UserName="quilt-operator")["AccessKeyMetadata"]
        }
        write_journal(host, iam_user="quilt-operator", old_key_id=victim, step="written")
        keys = aws.keys()
        result = host.run("rotate-keys")
        assert result.returncode == 4
        assert "names IAM user quilt-operator" in one_error(result)
        after = {k["AccessKeyId"] for k in aws.iam.list_access_keys(UserName="quilt-operator")["AccessKeyMetadata"]}
        assert after == operator_keys and aws.keys() == keys
        assert journal_path(host).exists()  # refused, so left for a person to look at
    finally:
        aws.iam.delete_access_key(UserName="quilt-operator", AccessKeyId=victim)


def test_point_10_1_a_journal_naming_a_strangers_key_as_new_deletes_nothing(host, aws):
    """The journal claims the user's other (older) key was created by the rotation."""
    host_key = host.host_key_id()
    old_created = next(
        k for k in aws.iam.list_access_keys(UserName=aws.user)["AccessKeyMetadata"] if k["AccessKeyId"] == host_key
    )["CreateDate"].strftime("%Y-%m-%dT%H:%M:%SZ")
    stranger = aws.iam.create_access_key(UserName=aws.user)["AccessKey"]
    try:
        created = stranger["CreateDate"].strftime("%Y-%m-%dT%H:%M:%SZ")
        write_journal(
            host,
            step="created",
            old_key_id=host_key,
            new_key_id=stranger["AccessKeyId"],
            old_key_created=old_created,
            started="2030-01-01T00:00:00Z",
            new_key_created=created,
        )
        keys = aws.keys()
        result = host.run("rotate-keys")
        assert result.returncode == 4
        assert "not created by that rotation" in one_error(result)
        assert aws.keys() == keys
    finally:
        aws.iam.delete_access_key(UserName=aws.user, AccessKeyId=stranger["AccessKeyId"])


def test_point_10_1_keys_created_after_an_honest_journal_are_not_deleted(host, aws):
    """A run died while creating its key: a key made since (by someone else) is named, not deleted."""
    host_key = host.host_key_id()
    created = next(
        k for k in aws.iam.list_access_keys(UserName=aws.user)["AccessKeyMetadata"] if k["AccessKeyId"] == host_key
    )["CreateDate"]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    write_journal(
        host,
        step="creating",
        old_key_id=host_key,
        new_key_id=None,
        new_key_created=None,
        old_key_created=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        started=started,
    )
    later = aws.iam.create_access_key(UserName=aws.user)["AccessKey"]["AccessKeyId"]
    try:
        result = host.run("rotate-keys")
        assert f"note: {later} was created after the unfinished rotation started" in result.stdout
        assert later in aws.keys()  # never guessed at
        assert result.returncode == 4 and "--delete-other-active" in one_error(result)  # so the plan refuses
    finally:
        aws.iam.delete_access_key(UserName=aws.user, AccessKeyId=later)


# ----------------------------------------------------------------------------- 10.9 unreadable journal


def test_point_10_9_an_unreadable_journal_is_not_overwritten(host, aws):
    path = journal_path(host)
    path.write_text("{ this is not the journal quilt-ops wrote")
    os.chown(path, *owner(host.env_file))
    keys, before = aws.keys(), host.env_file.read_bytes()
    result = host.run("rotate-keys")
    assert result.returncode == 4
    line = one_error(result)
    assert "cannot be used (it is not JSON)" in line and "nothing was changed" in line
    assert path.read_text() == "{ this is not the journal quilt-ops wrote"
    assert aws.keys() == keys and host.env_file.read_bytes() == before


# ----------------------------------------------------------------------------- 10.4 audit log


def test_point_10_4_an_unwritable_audit_log_is_a_warning_and_never_the_outcome(host, aws, tmp_path):
    blocked = tmp_path / "audit-is-a-folder"
    blocked.mkdir()
    config = host.write_config(tmp_path / "c.yaml", audit_log=str(blocked))
    result = host.run("rotate-keys", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("Warning: cannot write the audit log")
    with host.fault("start-fails"):
        failed = host.run("rotate-keys", "--timeout", "10", config=config)
    assert failed.returncode == 6  # the failed rollback stays the outcome
    assert "so did its rollback" in failed.stderr


def test_point_10_4_a_killed_run_leaves_its_start_record(host, aws):
    aws.fault(new_key_delay=30)
    run = host.start("rotate-keys")
    run.wait_for("verifying", timeout=60)
    run.kill()
    records = host.audit_records()
    assert records[-1]["event"] == "start" and records[-1]["task"] == "rotate-keys"
    aws.clear()


# ----------------------------------------------------------------------------- 10.5 the lock


def test_point_10_5_a_lock_whose_holder_is_gone_is_free_within_a_minute(host, aws):
    """The holder's process stops (as if its network died): no heartbeat, the host lets go."""
    aws.fault(new_key_delay=300)
    run = host.start("rotate-keys", "--verify-timeout", "600")
    run.wait_for("verifying", timeout=60)
    os.kill(run.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        while True:
            second = host.run("restart", "--dry-run")  # a dry run takes no lock: use a real one below
            result = host.run("rotate-keys", "--verify-timeout", "5")
            if "is locked" not in result.stderr:
                break
            assert time.monotonic() - started < 75, result.stderr
            time.sleep(5)
        assert time.monotonic() - started <= 75
        assert "found an unfinished rotation" in result.stdout, result.stdout + result.stderr
        assert second.returncode == 0
    finally:
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=30)
    aws.clear()


def test_point_10_5_break_lock_shows_the_holder_and_asks(host):
    with host.fault("start-hangs"):
        first = host.start("restart", "--timeout", "300")
        first.wait_for("still running", timeout=60)
        refused = host.run("restart")
        assert refused.returncode == 4 and "is locked: restart by" in one_error(refused)
        no_tty = host.run("restart", "--break-lock")
        assert no_tty.returncode == 64 and "--yes" in one_error(no_tty)
    broke = host.run("restart", "--break-lock", "--yes")
    assert broke.returncode == 0, broke.stdout + broke.stderr
    assert "breaking the lock held by restart by" in broke.stderr
    first.kill()


# ----------------------------------------------------------------------------- 10.8 retiring fails


def test_point_10_8_a_failure_retiring_the_old_key_says_what_is_true(host, aws):
    old = host.host_key_id()
    aws.fault(fail_actions=["UpdateAccessKey", "DeleteAccessKey"])
    result = host.run("rotate-keys")
    new = host.host_key_id()
    assert result.returncode == 5, result.stdout + result.stderr
    line = one_error(result)
    assert f"now runs on {new} and is healthy" in line and f"{old} is still Active" in line
    assert f"fab -H {host.alias} rotate-keys" in line and "left as it was" not in line
    assert host.registry_runs_with(new)
    aws.clear()
    again = host.run("rotate-keys")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "finished the unfinished rotation" in again.stdout
    assert aws.keys() == {new: "Active"}


# ----------------------------------------------------------------------------- 10.10 verification


def test_point_10_10_a_policy_that_refuses_the_key_stops_verification_at_once(host, aws):
    policy = aws.iam.get_user_policy(UserName=aws.user, PolicyName="RegistryUserS3Access")["PolicyDocument"]
    aws.iam.delete_user_policy(UserName=aws.user, PolicyName="RegistryUserS3Access")
    try:
        keys, before = aws.keys(), host.env_file.read_bytes()
        started = time.monotonic()
        result = host.run("rotate-keys", "--verify-timeout", "120")
        assert time.monotonic() - started < 40
        assert result.returncode == 4
        line = one_error(result)
        assert "AccessDenied" in line and "policy" in line and "the new key was deleted" in line
        assert aws.keys() == keys and host.env_file.read_bytes() == before
    finally:
        aws.iam.put_user_policy(
            UserName=aws.user,
            PolicyName="RegistryUserS3Access",
            PolicyDocument=json.dumps(policy) if isinstance(policy, dict) else policy,
        )


# ----------------------------------------------------------------------------- 10.12, 10.13, 10.14


def test_point_10_12_nothing_runs_when_the_registry_folder_cannot_be_entered(host, tmp_path):
    config = host.write_config(tmp_path / "c.yaml", registry_dir="/no/such/folder")
    before = host.container_states()
    for task in ("restart", "rotate-keys", "health"):
        result = host.run(task, config=config)
        assert result.returncode != 0
        assert "cannot enter quilt.registry_dir '/no/such/folder'" in one_error(result)
    assert host.container_states() == before


def test_point_10_13_a_value_with_an_apostrophe_runs_nothing(host, tmp_path):
    canary = Path("/tmp/quilt-ops-pwned")
    canary.unlink(missing_ok=True)
    evil = "./x'; touch /tmp/quilt-ops-pwned; echo '"
    admin = ("create-admin", "--username", "nobody_here", "--email", "n@example.com", "--password-stdin")
    for key, task in (
        ("start_script", ("restart",)),
        ("env_file", ("restart",)),
        ("env_file", ("rotate-keys",)),
        ("create_admin_script", admin),
        ("env_file", admin),
    ):
        config = host.write_config(tmp_path / f"{key}.yaml", **{key: evil if key != "env_file" else f"env/{evil}"})
        result = host.run(*task, config=config, input="a-good-password\n")
        assert result.returncode == 4, (key, task, result.stdout + result.stderr)
        one_error(result)
        assert not canary.exists(), (key, task)


def test_point_10_14_output_from_the_host_is_masked(host, tmp_path):
    leaky = host.registry_dir / "leaky-start.sh"
    leaky.write_text("#!/bin/sh\necho \"starting with $(grep '^SMTP_PASSWORD=' env/registry)\"\nexit 3\n")
    leaky.chmod(0o755)
    import shutil

    shutil.chown(leaky, host.login_user, host.login_user)
    secret = next(line.split("=", 1)[1] for line in host.env_text().splitlines() if line.startswith("SMTP_PASSWORD="))
    config = host.write_config(tmp_path / "c.yaml", start_script="./leaky-start.sh")
    try:
        result = host.run("restart", config=config)
    finally:
        leaky.unlink()
    assert result.returncode == 4
    line = one_error(result)
    assert "SMTP_PASSWORD=********" in line
    assert secret not in result.stdout + result.stderr
    assert secret not in host.audit_log.read_text()


# ----------------------------------------------------------------------------- 10.6 and 10.11: two hosts


def test_point_10_6_two_hosts_on_one_key_are_refused_before_any_change(host, aws):
    key_id = host.host_key_id()
    with host.twin(key_id, host.env_secret()) as twin:
        before, keys, states = host.env_file.read_bytes(), aws.keys(), host.container_states()
        result = host.run(
            "rotate-keys", "--parallel", "2", host=f"{host.alias},{twin.alias}", ssh_config=twin.ssh_config
        )
        assert result.returncode == 4, result.stdout + result.stderr
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 2 and all(line.startswith("Error: ") for line in errors)
        assert f"{host.alias}, {twin.alias} all run on {key_id}" in errors[0]
        assert "nothing was changed" in errors[0]
        assert host.env_file.read_bytes() == before and aws.keys() == keys and host.container_states() == states
        assert twin.env_file.read_bytes() == before


def bind(host, twin, user):
    """Records twin -> user in quilt.known_users, as a first rotation with --iam-user would."""
    import re

    from quilt_ops import known_users

    port = int(
        re.search(rf"Host {re.escape(twin.alias)}\n(?:\s+\S.*\n)*?\s+Port (\d+)", twin.ssh_config.read_text())[1]
    )
    known_users.record(str(host.known_hosts.parent / known_users.FILE_NAME), known_users.entry("127.0.0.1", port), user)


def test_point_10_11_ctrl_c_in_a_parallel_run_stops_every_host_cleanly(host, aws):
    from registry_sandbox.twin import registry_user, remove_registry_user

    user, key_id, secret = registry_user(host, "quilt-twin")
    try:
        with host.twin(key_id, secret) as twin:
            bind(host, twin, user)  # no stack names the twin: the operator bound it (issue 18.1)
            aws.fault(new_key_delay=120)
            run = host.start(
                "rotate-keys",
                "--parallel",
                "2",
                "--verify-timeout",
                "300",
                host=f"{host.alias},{twin.alias}",
                config=None,
                ssh_config=twin.ssh_config,
            )
            run.wait_for(f"] {host.alias}: verifying", timeout=60)
            if f"] {twin.alias}: verifying" not in "".join(run.out):
                run.wait_for(f"] {twin.alias}: verifying", timeout=60)
            import signal as signals

            run.proc.send_signal(signals.SIGINT)
            result = run.finish(timeout=120)
            assert result.returncode == 130, result.stdout + result.stderr
            errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
            assert len(errors) == 2, result.stderr
            for line in errors:
                assert "interrupted during verify" in line and "was deleted" in line, line
            assert "Traceback" not in result.stderr
            assert aws.keys() == {host.host_key_id(): "Active"}
            twin_keys = [k["AccessKeyId"] for k in aws.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
            assert twin_keys == [key_id]
            assert not (twin.env_file.parent / ".registry.quilt-ops-rotation.json").exists()
    finally:
        remove_registry_user(host, user)


# ----------------------------------------------------------------------------- the second review


def test_review_a_journal_without_creation_times_deletes_nothing(host, aws):
    """Times are what tie a journal's key IDs to the keys that rotation saw; without them a
    forged journal could name any of the user's keys as the one to delete."""
    host_key = host.host_key_id()
    stranger = aws.iam.create_access_key(UserName=aws.user)["AccessKey"]["AccessKeyId"]
    try:
        write_journal(host, step="created", old_key_id=host_key, new_key_id=stranger, new_key_created=None)
        keys, before = aws.keys(), host.env_file.read_bytes()
        result = host.run("rotate-keys")
        assert result.returncode == 4, result.stdout + result.stderr
        assert "new_key_created" in one_error(result)
        assert aws.keys() == keys and host.env_file.read_bytes() == before
    finally:
        aws.iam.delete_access_key(UserName=aws.user, AccessKeyId=stranger)


def test_review_an_env_line_docker_refuses_stops_restart_before_anything_is_removed(host):
    """Docker refuses the whole env file for one bad line: removing the containers first would
    leave the registry down (and Docker's error quotes the line, secret and all)."""
    before_env, states = host.env_file.read_bytes(), host.container_states()
    secret = "a-secret-nobody-may-see-42"
    host.env_file.write_bytes(before_env + f"SMTP PASS={secret}\n".encode())
    try:
        result = host.run("restart")
        assert result.returncode == 4, result.stdout + result.stderr
        line = one_error(result)
        assert "Docker would refuse env file" in line and "a name with a space" in line
        assert "nothing was changed" in line
        assert secret not in result.stdout + result.stderr
        assert host.container_states() == states
    finally:
        host.env_file.write_bytes(before_env)


def test_review_a_start_script_named_without_a_folder_is_run_from_the_registry_folder(host, tmp_path):
    """``start.sh`` in fabric.yaml means the registry folder's start.sh (sh would otherwise
    look it up on PATH)."""
    import yaml

    start = yaml.safe_load(Path(host.fabric_config).read_text())["quilt"].get("start_script", "./start.sh")
    config = host.write_config(tmp_path / "c.yaml", start_script=start.removeprefix("./"))
    result = host.run("restart", config=config)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_review_a_symlinked_lock_file_is_neither_followed_nor_broken(host, tmp_path, kind):
    """Whoever can write the env folder could point the lock file at another file, or put a
    FIFO there (issue 18: opening one blocks)."""
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    lock = host.env_dir / f".{host.env_file.name}.quilt-ops.lock"
    lock.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(lock)
        shutil.chown(lock, host.login_user, host.login_user)
    else:
        lock.symlink_to(victim)
    states = host.container_states()
    try:
        for args in (("restart",), ("restart", "--break-lock", "--yes")):
            result = host.run(*args)
            assert result.returncode == 4, result.stdout + result.stderr
            assert "lock" in one_error(result) and "nothing was changed" in one_error(result)
            assert "is not a regular file of the env folder's owner" in one_error(result)
        assert victim.read_text() == "untouched\n" and host.container_states() == states
    finally:
        lock.unlink()


def test_review_break_lock_ends_the_broken_runs_commands_too(host):
    """The broken run's start script (hung on the database) is stopped with its lock holder,
    not left to go on changing the host beside the new run."""

    def hung_clients():
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if "db upgrade" in text and str(host.faults_dir) in text:
                found.append(text)
        return found

    with host.fault("start-hangs"):
        first = host.start("restart", "--timeout", "300")
        first.wait_for("still running", timeout=60)
        assert hung_clients()
        broke = host.run("restart", "--break-lock", "--yes", "--timeout", "5")
        assert "breaking the lock held by restart by" in broke.stderr
        assert broke.returncode == 4  # its own start script hangs too, and is stopped at 5 s
        wait_until("every hung start script to end", lambda: not hung_clients(), timeout=20)
    first.kill()
    assert host.run("restart").returncode == 0


def test_review_an_env_file_edited_during_the_rotation_is_not_overwritten(host, aws):
    """Someone edits the env file while the new key is being verified: the rotation must not
    put back the copy it read (the edit would be lost); it stops and deletes the new key."""
    keys = aws.keys()
    aws.fault(new_key_delay=8)
    try:
        run = host.start("rotate-keys", "--verify-timeout", "120")
        run.wait_for("verifying", timeout=60)
        edited = host.env_file.read_bytes() + b"# edited by a person during the rotation\n"
        host.env_file.write_bytes(edited)
        result = run.finish()
    finally:
        aws.clear()
    assert result.returncode == 4, result.stdout + result.stderr
    line = one_error(result)
    assert "changed since it was read" in line and "the new key was deleted" in line
    assert host.env_file.read_bytes() == edited and aws.keys() == keys


# Who writes next to the env file follows who owns its folder (hostfiles.access_script).


@pytest.mark.parametrize(
    "change,words",
    [
        ("folder-open", "can be written by other users"),
        ("file-of-root", "give the file and its folder one owner"),
        ("file-symlink", "is a symbolic link"),
    ],
)
def test_review_a_folder_root_must_not_write_in_is_refused_before_any_change(host, aws, change, words):
    """Review: root wrote (through sudo) in folders a user could change, where a planted
    symlink redirects the write. Such folders are refused with the reason; nothing changes."""
    env_dir, env_file = host.env_dir, host.env_file
    dir_mode, file_stat, content = env_dir.stat().st_mode & 0o7777, env_file.stat(), env_file.read_bytes()
    keys, states = aws.keys(), host.container_states()
    real = env_dir / "registry.real"
    if change == "folder-open":
        env_dir.chmod(0o777)
    elif change == "file-of-root":
        os.chown(env_file, 0, 0)
    else:
        env_file.rename(real)
        env_file.symlink_to(real.name)
    try:
        for task in ("rotate-keys", "restart"):
            result = host.run(task)
            assert result.returncode == 4, (task, result.stdout + result.stderr)
            line = one_error(result)
            assert words in line and "nothing was changed" in line, (task, line)
        assert aws.keys() == keys and host.container_states() == states
        assert (real if change == "file-symlink" else env_file).read_bytes() == content
        assert not [p.name for p in env_dir.iterdir() if "quilt-ops" in p.name and "lock" not in p.name]
    finally:
        if change == "file-symlink":
            env_file.unlink()
            real.rename(env_file)
        env_dir.chmod(dir_mode)
        os.chown(env_file, file_stat.st_uid, file_stat.st_gid)


def test_review_a_folder_of_another_user_is_written_as_that_user(host, aws):
    """The env folder and file belong to a user other than the login user: the rotation
    writes there as that user (never as root), and everything it leaves is that user's."""
    import pwd

    other = pwd.getpwnam("nobody")
    env_dir, env_file = host.env_dir, host.env_file
    before = [(p, p.stat().st_uid, p.stat().st_gid) for p in (env_dir, env_file, env_dir / "catalog")]
    for path, _, _ in before:
        os.chown(path, other.pw_uid, other.pw_gid)
    # The folder above the env folder, closed to others: its owner cannot reach the env
    # folder (from the registry folder, where the tool works, or from /), so nothing is done.
    above = env_dir.parent
    modes = {above: above.stat().st_mode & 0o7777}
    try:
        above.chmod(modes[above] & ~0o001)
        refused = host.run("rotate-keys")
        assert refused.returncode == 4 and "who cannot reach it" in one_error(refused), refused.stdout
        above.chmod(modes[above] | 0o001)
        result = host.run("rotate-keys")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "(as its owner)" in result.stdout
        assert host.registry_runs_with(host.host_key_id())
        owners = {(p.name, p.stat().st_uid) for p in env_dir.iterdir()}
        assert all(uid == other.pw_uid for _, uid in owners), owners
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
        for path, uid, gid in before:
            os.chown(path, uid, gid)
        for path in env_dir.iterdir():
            if path.name.startswith(".registry.quilt-ops"):
                os.chown(path, before[1][1], before[1][2])


# ----------------------------------------------------------------------------- the operator's record of rotations


def test_review_a_forged_written_journal_does_not_delete_a_kept_key(host, aws):
    """The journal is the host's: forged at step 'written' with the key the operator kept
    (--keep-old) as its old key and the host's key as its new one, with IAM's own creation
    times, it had the next routine run delete the kept key. Without the operator's record of
    that rotation (quilt_rotations) nothing is deleted: one Error line names the key."""
    kept = host.host_key_id()
    result = host.run("rotate-keys", "--keep-old")
    assert result.returncode == 0, result.stdout + result.stderr
    current = host.host_key_id()
    try:
        created = {
            k["AccessKeyId"]: k["CreateDate"] for k in aws.iam.list_access_keys(UserName=aws.user)["AccessKeyMetadata"]
        }
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        write_journal(
            host,
            step="written",
            old_key_id=kept,
            old_key_created=created[kept].strftime(stamp),
            new_key_id=current,
            new_key_created=created[current].strftime(stamp),
            started=time.strftime(stamp, time.gmtime(created[current].timestamp() - 2)),
        )
        result = host.run("rotate-keys")
        assert result.returncode == 4, result.stdout + result.stderr
        line = one_error(result)
        assert f"without deleting {kept}" in line
        assert f"aws iam delete-access-key --user-name {aws.user} --access-key-id {kept}" in line
        assert aws.keys() == {current: "Active", kept: "Inactive"}
        assert host.registry_runs_with(current)
        assert not journal_path(host).exists()  # the env file was finished: only the deletion is left
    finally:
        aws.iam.delete_access_key(UserName=aws.user, AccessKeyId=kept)
