"""Issue 10: the holes a security review found, each shown against a sandbox host.

The pure decisions (which key may be deleted, what a journal may claim) have their
table-driven tests in tests/unit/test_rotation_plan.py; here the whole tool meets
forged host files, a stalled holder, a failing IAM, an unwritable audit log.
"""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.tool import one_error

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


def test_point_10_11_ctrl_c_in_a_parallel_run_stops_every_host_cleanly(host, aws):
    from registry_sandbox.twin import registry_user, remove_registry_user

    user, key_id, secret = registry_user(host, "quilt-twin")
    try:
        with host.twin(key_id, secret) as twin:
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
