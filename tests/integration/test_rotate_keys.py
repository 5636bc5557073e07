"""`fab rotate-keys` against the sandbox: real sshd, Docker, moto with IAM auth on."""

import json
import re
from pathlib import Path

import pytest

from tests.checks import ProcessWatcher, key_lines_removed
from tests.tool import ROOT, one_error

pytestmark = pytest.mark.sandbox


def assert_consistent(host, aws, warning_ok=False):
    """Healthy, exactly one Active key that is the host's, the registry runs on it, nothing left over."""
    keys = aws.keys()
    host_key = host.host_key_id()
    assert keys == {host_key: "Active"}, keys
    assert host.registry_runs_with(host_key)
    assert host.leftovers() == [], host.leftovers()
    assert host.run("health").returncode in ((0, 1) if warning_ok else (0,))
    # the operator's record of the rotation in progress is gone with the journal
    record = host.known_hosts.parent / "quilt_rotations"
    assert not record.exists() or not [x for x in record.read_text().splitlines() if not x.startswith("#")]


def rotate(host, *args, **kw):
    return host.run("rotate-keys", *args, **kw)


# ----------------------------------------------------------------------------- happy path


def test_rotation_end_to_end(host, aws):
    before = host.env_file.read_bytes()
    mode = host.env_file.stat().st_mode & 0o7777
    old = host.host_key_id()
    result = rotate(host)
    assert result.returncode == 0, result.stdout + result.stderr
    new = host.host_key_id()
    assert new != old
    assert aws.keys() == {new: "Active"}
    assert host.registry_runs_with(new)
    after = host.env_file.read_bytes()
    assert key_lines_removed(after) == key_lines_removed(before)
    assert after != before
    assert host.env_file.stat().st_mode & 0o7777 == mode
    assert f"rotated {old} -> {new}" in result.stdout
    for step in (
        "locked",
        "Plan for",
        "created",
        "verified",
        "wrote env/registry",
        "the registry runs with",
        "deactivated and deleted",
    ):
        assert step in result.stdout
    assert_consistent(host, aws)
    records = [r for r in host.audit_records() if r["task"] == "rotate-keys"][-2:]
    assert [r["event"] for r in records] == ["start", "end"] and records[0]["run"] == records[1]["run"]
    record = records[1]
    assert record["outcome"] == "rotated" and record["old_key_id"] == old and record["new_key_id"] == new
    assert record["operator"].endswith(":user/quilt-operator")
    assert [s["step"] for s in record["steps"]] == [
        "preflight",
        "cleanup",
        "create",
        "verify",
        "write",
        "restart",
        "retire",
    ]


def test_dry_run_changes_nothing(host, aws):
    before, keys = host.env_file.read_bytes(), aws.keys()
    ids = host.container_states()
    result = rotate(host, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"Plan for {host.alias}:" in result.stdout and "dry run, nothing changed" in result.stdout
    assert host.env_file.read_bytes() == before and aws.keys() == keys and host.container_states() == ids


# ----------------------------------------------------------------------------- env file shapes


def shape(host, kind: str) -> bytes:
    current = host.env_file.read_bytes().decode()
    key_id = host.host_key_id()
    secret = re.search(r"(?m)^AWS_SECRET_ACCESS_KEY=(\S+)", current) or re.search(r"(?m)^AWS_SECRET_KEY=(\S+)", current)
    secret = secret.group(1)
    body = re.sub(r"(?m)^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SECRET_KEY)=.*\n?", "", current).rstrip("\n") + "\n"
    if kind == "only_legacy_secret":
        text = body + f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_KEY={secret}\n"
    elif kind == "both_names":
        text = body + f"AWS_SECRET_KEY={secret}\nAWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n"
    elif kind == "crlf":
        text = (body + f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n").replace("\n", "\r\n")
    elif kind == "no_final_newline":
        text = body + f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}"
    elif kind == "comments_next_to_keys":
        text = (
            f"# RegistryUser's key, see the ops page\nAWS_ACCESS_KEY_ID={key_id}\n# the secret:\n"
            f"AWS_SECRET_ACCESS_KEY={secret}\n# end of keys\n\n" + body
        )
    elif kind == "no_secret_line":
        text = body + f"AWS_ACCESS_KEY_ID={key_id}\n"
    else:
        raise ValueError(kind)
    host.env_file.write_bytes(text.encode())
    return text.encode()


@pytest.mark.parametrize(
    "kind", ["only_legacy_secret", "both_names", "crlf", "no_final_newline", "comments_next_to_keys", "no_secret_line"]
)
def test_env_file_shapes_keep_every_other_byte(host, aws, kind, usual_shape_after):
    before = shape(host, kind)
    result = rotate(host)
    assert result.returncode == 0, result.stdout + result.stderr
    after = host.env_file.read_bytes()
    if kind == "no_secret_line":
        assert after.count(b"AWS_SECRET_ACCESS_KEY=") == 1
        after = re.sub(rb"(?m)^AWS_SECRET_ACCESS_KEY=.*\n", b"", after)
    assert key_lines_removed(after) == key_lines_removed(before)
    assert after.endswith(b"\n") == before.endswith(b"\n")
    assert (b"\r\n" in after) == (b"\r\n" in before)
    assert_consistent(host, aws, warning_ok=kind == "only_legacy_secret")


@pytest.fixture
def usual_shape_after(host):
    """Puts the env file back in the sandbox's usual shape (keeping the current key) after a test."""
    yield
    normal = host.env_file.read_bytes().replace(b"\r\n", b"\n")
    secret = re.search(rb"(?m)^AWS_SECRET(?:_ACCESS)?_KEY=(\S+)", normal).group(1)
    normal = re.sub(rb"(?m)^AWS_SECRET(_ACCESS)?_KEY=.*\n?", b"", normal).rstrip(b"\n") + b"\n"
    host.env_file.write_bytes(normal + b"AWS_SECRET_ACCESS_KEY=" + secret + b"\n")


@pytest.mark.parametrize(
    "content,words",
    [
        ("export AWS_ACCESS_KEY_ID={key}\n", "a name with a space"),
        ('AWS_ACCESS_KEY_ID="{key}"\n', "quoted"),
        ("A=1\n", "no AWS_ACCESS_KEY_ID line"),
        # point 10.2: identical duplicate key lines are refused with their line numbers
        (
            "AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY=x\nAWS_ACCESS_KEY_ID={key}\n",
            "AWS_ACCESS_KEY_ID appears on lines 1 and 3",
        ),
    ],
)
def test_unsafe_env_files_are_refused_with_nothing_changed(host, aws, content, words):
    original = host.env_file.read_bytes()
    keys, states = aws.keys(), host.container_states()
    try:
        host.env_file.write_text(content.format(key=host.host_key_id()))
        broken = host.env_file.read_bytes()
        result = rotate(host)
        assert result.returncode == 4
        assert words in one_error(result) and "nothing was changed" in one_error(result)
        assert host.env_file.read_bytes() == broken and aws.keys() == keys
        assert host.container_states() == states  # refused before any restart
    finally:
        host.env_file.write_bytes(original)


# ----------------------------------------------------------------------------- two-key limit


def test_inactive_spare_key_is_cleaned_up(host, aws):
    spare = aws.iam.create_access_key(UserName=aws.user)["AccessKey"]["AccessKeyId"]
    aws.iam.update_access_key(UserName=aws.user, AccessKeyId=spare, Status="Inactive")
    result = rotate(host)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"deleted {spare}: Inactive" in result.stdout
    assert_consistent(host, aws)


def test_active_stranger_stops_the_run_with_nothing_changed(host, aws):
    stranger = aws.iam.create_access_key(UserName=aws.user)["AccessKey"]["AccessKeyId"]
    try:
        before, keys, ids = host.env_file.read_bytes(), aws.keys(), host.container_states()
        result = rotate(host)
        assert result.returncode == 4
        line = one_error(result)
        assert stranger in line and "--delete-other-active" in line
        assert host.env_file.read_bytes() == before and aws.keys() == keys and host.container_states() == ids
        assert host.leftovers() == []
    finally:
        aws.iam.delete_access_key(UserName=aws.user, AccessKeyId=stranger)


def test_delete_other_active_removes_the_stranger(host, aws):
    stranger = aws.iam.create_access_key(UserName=aws.user)["AccessKey"]["AccessKeyId"]
    result = rotate(host, "--delete-other-active")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stranger not in aws.keys()
    assert_consistent(host, aws)


def test_keep_old_leaves_it_inactive_and_the_next_rotation_removes_it(host, aws):
    old = host.host_key_id()
    assert rotate(host, "--keep-old").returncode == 0
    assert aws.keys()[old] == "Inactive"
    assert len(aws.keys()) == 2
    result = rotate(host)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"deleted {old}: Inactive" in result.stdout
    assert_consistent(host, aws)


# ----------------------------------------------------------------------------- failures


@pytest.mark.faults
def test_verify_timeout_deletes_the_new_key_and_leaves_the_host(host, aws):
    before, keys, ids = host.env_file.read_bytes(), aws.keys(), host.container_states()
    aws.fault(new_key_delay=60)
    result = rotate(host, "--verify-timeout", "3")
    assert result.returncode == 4
    line = one_error(result)
    assert "not accepted within 3s" in line and "the host was not changed" in line
    assert host.env_file.read_bytes() == before and aws.keys() == keys and host.container_states() == ids
    assert_consistent(host, aws)


def test_propagation_delay_shorter_than_the_timeout_succeeds_after_retries(host, aws):
    aws.fault(new_key_delay=4, flaky=True)
    result = rotate(host, "--verify-timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    verified = re.search(r"verified \S+: 3 passes in a row after (\d+) checks \(([\d.]+)s\)", result.stdout)
    assert int(verified.group(1)) > 3 and float(verified.group(2)) >= 4
    assert_consistent(host, aws)


@pytest.mark.faults
def test_start_script_failing_on_the_new_file_is_rolled_back(host, aws):
    before, old = host.env_file.read_bytes(), host.host_key_id()
    with host.fault("start-fails-unless-key", old):
        result = rotate(host, "--timeout", "30")
    assert result.returncode == 4
    line = one_error(result)
    assert line.startswith("Error: rotation failed and was rolled back: ./start.sh failed")
    assert host.env_file.read_bytes() == before
    assert aws.keys() == {old: "Active"}
    assert_consistent(host, aws)


@pytest.mark.faults
def test_registry_unhealthy_on_the_new_key_is_rolled_back(host, aws):
    before, old = host.env_file.read_bytes(), host.host_key_id()
    with host.fault("registry-healthy-only-with-key", old):
        result = rotate(host, "--timeout", "8")
    assert result.returncode == 4
    assert "rolled back" in one_error(result) and "probe registry" in result.stderr
    assert host.env_file.read_bytes() == before
    record = host.audit_records()[-1]
    assert record["event"] == "end" and record["outcome"] == "failed" and "rolled back" in record["error"]
    assert_consistent(host, aws)


@pytest.mark.faults
def test_failed_rollback_keeps_both_keys_and_the_next_run_finishes(host, aws):
    old = host.host_key_id()
    with host.fault("start-fails"):
        result = rotate(host, "--timeout", "10")
        assert result.returncode == 6
        line = one_error(result)
        assert "so did its rollback" in line and f"fab -H {host.alias} rotate-keys" in line
        keys = aws.keys()
        assert len(keys) == 2 and set(keys.values()) == {"Active"} and old in keys
    result = rotate(host)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "found an unfinished rotation" in result.stdout
    assert_consistent(host, aws)


@pytest.mark.faults
def test_env_folder_not_writable_is_written_through_sudo(host, aws):
    host.env_file.parent.chmod(0o500)
    try:
        result = rotate(host)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "(as root)" in result.stdout
        assert host.env_file.parent.stat().st_mode & 0o777 == 0o500
    finally:
        host.env_file.parent.chmod(0o700)
    assert_consistent(host, aws)


def test_wrong_iam_user_is_refused(host, aws):
    result = rotate(host, "--iam-user", "quilt-operator")
    assert result.returncode == 4
    line = one_error(result)
    assert f"belongs to IAM user {host.iam_user}" in line and "quilt-operator's (--iam-user)" in line
    result = rotate(host, "--iam-user", "no-such-user")
    assert result.returncode == 4
    assert "no-such-user" in one_error(result)
    assert_consistent(host, aws)


# ----------------------------------------------------------------------------- resume and concurrency


@pytest.mark.faults
@pytest.mark.parametrize(
    "pattern",
    [
        "locked",
        "Plan for",
        "created",
        "verifying",
        "wrote env/registry",
        "removing",
        "still running",
        "healthy after",
        "the registry runs with",
    ],
)
def test_killed_at_any_step_the_next_run_ends_consistent(host, aws, pattern):
    aws.fault(new_key_delay=2)
    run = host.start("rotate-keys")
    seen = run.wait_for(pattern, timeout=120)
    run.kill()
    aws.clear()
    result = rotate(host)
    assert result.returncode == 0, seen + result.stdout + result.stderr
    assert_consistent(host, aws)


# ----------------------------------------------------------------------------- leaks and privilege


@pytest.mark.leaks
def test_no_secret_leaks_anywhere(host, aws, tmp_path):
    before_secrets = host.env_values()
    audit_before = host.audit_log.read_text() if host.audit_log.exists() else ""
    tmp_before = set(Path("/tmp").iterdir())
    with ProcessWatcher() as watcher:
        result = rotate(host)
    assert result.returncode == 0, result.stderr
    assert len(watcher.seen) > 50
    secrets = set(before_secrets) | set(host.env_values())
    new_secret = re.search(r"(?m)^AWS_SECRET_ACCESS_KEY=(\S+)", host.env_file.read_text()).group(1)
    assert new_secret in secrets
    audit_text = host.audit_log.read_text()[len(audit_before) :]
    tmp_files = b""
    for path in set(Path("/tmp").iterdir()) - tmp_before:
        if path.is_file() and path.stat().st_size < 10_000_000:
            tmp_files += path.read_bytes()
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr
        assert secret not in audit_text
        assert secret.encode() not in tmp_files
        for blob in watcher.seen:
            assert secret.encode() not in blob, "a secret was on a command line or in an environment"


def readme_policy() -> dict:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- rotate-keys policy -->", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return json.loads(block)


def moto_view(policy: dict) -> dict:
    """moto checks IAM actions against resource "*" only, so scoped IAM resources must widen here."""
    widened = json.loads(json.dumps(policy))
    for statement in widened["Statement"]:
        if any(action.startswith("iam:") for action in statement["Action"]):
            statement["Resource"] = "*"
    return widened


def test_rotation_with_exactly_the_readme_policy(host, aws):
    policy = readme_policy()
    creds = aws.operator("least-privilege-operator", moto_view(policy))
    try:
        (host.known_hosts.parent / "quilt_known_users").unlink(missing_ok=True)  # the first rotation
        result = rotate(host, env=creds)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_consistent(host, aws)
        # every action is needed: without any one, the run fails and leaves nothing behind
        iam_actions = [a for s in policy["Statement"] for a in s["Action"] if a.startswith("iam:")]
        for action in iam_actions:
            smaller = moto_view(policy)
            for statement in smaller["Statement"]:
                statement["Action"] = [a for a in statement["Action"] if a != action]
            aws.iam.put_user_policy(
                UserName="least-privilege-operator", PolicyName="quilt-ops", PolicyDocument=json.dumps(smaller)
            )
            # A host's first rotation (issue 18.1: a bound host needs no owner lookup, its binding names the user)
            (host.known_hosts.parent / "quilt_known_users").unlink(missing_ok=True)
            result = rotate(host, env=creds)
            assert result.returncode != 0, action
            assert "Traceback" not in result.stderr
            aws.iam.put_user_policy(
                UserName="least-privilege-operator",
                PolicyName="quilt-ops",
                PolicyDocument=json.dumps(moto_view(policy)),
            )
            finish = rotate(host, env=creds)  # finishes what the denied run left, if anything
            assert finish.returncode == 0, action + finish.stdout + finish.stderr
            assert_consistent(host, aws)
    finally:
        aws.remove_operator("least-privilege-operator")


@pytest.mark.faults
def test_killed_while_rolling_back_the_next_run_finishes_the_rollback_then_rotates(host, aws):
    """Killed right after the rollback began: the host may still hold the new key (journal at
    'rolling-back'); the next run puts the old file back, deletes the new key, then rotates afresh."""
    old = host.host_key_id()
    with host.fault("start-fails-unless-key", old):
        run = host.start("rotate-keys", "--timeout", "30")
        run.wait_for("rolling back", timeout=120)
        run.kill()
    result = rotate(host)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "found an unfinished rotation (step 'rolling-back'" in result.stdout
    assert f"rotated {old} -> " in result.stdout
    assert_consistent(host, aws)
