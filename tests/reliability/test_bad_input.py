"""Bad input that reaches a host: one `Error:` line, its documented exit code, no traceback,
and no change on the host or in IAM. (Bad input refused before any host is contacted is in
tests/unit/test_bad_input.py, run in-process in the fast tier.)"""

import subprocess

import pytest

from tests.tool import one_error

pytestmark = [pytest.mark.sandbox, pytest.mark.bad_input]

PASSWORD = "a-good-password"
ADMIN = ("create-admin", "--username", "valid_name", "--email", "v@example.com", "--password-stdin")


def ssh_config_with(host, tmp_path, **changes):
    lines = []
    for line in host.ssh_config.read_text().splitlines():
        key = line.strip().split(" ")[0]
        if key in changes:
            if changes[key] is not None:
                lines.append(f"    {key} {changes[key]}")
        else:
            lines.append(line)
    path = tmp_path / "ssh_config"
    path.write_text("\n".join(lines) + "\n")
    return path


# Each case: (id, task args, setup(host, tmp_path) -> (run kwargs, undo), expected status, words)
def cases():
    def nothing(host, tmp_path):
        return {}, lambda: None

    def with_env_file(text):
        def setup(host, tmp_path):
            original = host.env_file.read_bytes()
            host.env_file.write_text(text.format(key=host.host_key_id()))
            return {}, lambda: host.env_file.write_bytes(original)

        return setup

    def env_file_moved(host, tmp_path):
        moved = host.env_file.with_name("registry.moved")
        host.env_file.rename(moved)
        return {}, lambda: moved.rename(host.env_file)

    def env_file_mode_000_without_sudo(host, tmp_path):
        shape = host.reshaped(docker_access="group", sudo=False)
        shape.__enter__()
        host.env_file.chmod(0)
        return {}, lambda: (host.env_file.chmod(0o600), shape.__exit__(None, None, None))

    def nginx_missing(host, tmp_path):
        host.docker("rm", "-f", host.containers["nginx"])
        return {}, lambda: None

    def docker_not_permitted(host, tmp_path):
        shape = host.reshaped(docker_access="none")
        shape.__enter__()
        return {}, lambda: shape.__exit__(None, None, None)

    def tool_hidden(tool):
        def setup(host, tmp_path):
            shape = host.reshaped(hidden_tools=(tool,))
            shape.__enter__()
            return {}, lambda: shape.__exit__(None, None, None)

        return setup

    def operator_key_in_env(host, tmp_path):
        original = host.env_file.read_bytes()
        operator = host.aws_env()["AWS_ACCESS_KEY_ID"]
        host.env_file.write_bytes(original.replace(host.host_key_id().encode(), operator.encode()))
        return {}, lambda: host.env_file.write_bytes(original)

    def refused_key(host, tmp_path):
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        return {"ssh_config": ssh_config_with(host, tmp_path, IdentityFile=str(other))}, lambda: None

    def changed_host_key(host, tmp_path):
        other = tmp_path / "other_host"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{host.ssh_port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]))
        return {
            "ssh_config": ssh_config_with(host, tmp_path, UserKnownHostsFile=str(known)),
            "config": host.write_config(tmp_path / "c.yaml", known_hosts=str(known)),
        }, lambda: None

    def unknown_host_key(host, tmp_path):
        return {
            "ssh_config": ssh_config_with(host, tmp_path, UserKnownHostsFile=None, StrictHostKeyChecking=None),
            "config": host.write_config(tmp_path / "c.yaml", known_hosts=str(tmp_path / "none")),
        }, lambda: None

    def wrong_port_speaks_http(host, tmp_path):
        return {"host": f"127.0.0.1:{host.ports['catalog']}"}, lambda: None

    def folder_missing(host, tmp_path):
        return {"config": host.write_config(tmp_path / "c.yaml", registry_dir="no/such/folder")}, lambda: None

    return [
        ("wrong-port-speaks-http", ("restart",), wrong_port_speaks_http, 3, "SSH"),
        ("refused-key", ("restart",), refused_key, 3, "authentication failed"),
        ("unknown-host-key", ("rotate-keys",), unknown_host_key, 3, "ssh-keyscan"),
        ("changed-host-key", ("rotate-keys",), changed_host_key, 3, "CHANGED"),
        ("registry-dir-missing", ("restart",), folder_missing, 4, "cannot enter quilt.registry_dir"),
        ("registry-dir-missing-admin", ADMIN, folder_missing, 4, "cannot enter quilt.registry_dir"),
        ("env-file-missing", ("rotate-keys",), env_file_moved, 4, "no such file"),
        ("env-file-missing-restart", ("restart",), env_file_moved, 4, "missing or unreadable"),
        ("env-file-missing-admin", ADMIN, env_file_moved, 4, "missing or unreadable"),
        ("env-file-unreadable", ("rotate-keys",), env_file_mode_000_without_sudo, 4, "mode 0000"),
        ("env-file-no-key-lines", ("rotate-keys",), with_env_file("A=1\n"), 4, "no AWS_ACCESS_KEY_ID line"),
        ("env-file-export", ("rotate-keys",), with_env_file("export AWS_ACCESS_KEY_ID={key}\n"), 4, "line 1"),
        ("env-file-quoted", ("rotate-keys",), with_env_file('AWS_ACCESS_KEY_ID="{key}"\n'), 4, "quoted"),
        (
            "env-file-duplicate-key",
            ("rotate-keys",),
            with_env_file("AWS_ACCESS_KEY_ID={key}\nAWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY=x\n"),
            4,
            "lines 1 and 2",
        ),
        ("container-missing", ("rotate-keys",), nginx_missing, 4, "not healthy now"),
        ("container-missing-admin", ADMIN, nothing, 0, ""),
        ("docker-not-permitted", ("health",), docker_not_permitted, 3, "docker group"),
        ("docker-not-permitted-rotate", ("rotate-keys",), docker_not_permitted, 4, "passwordless sudo"),
        ("docker-not-permitted-restart", ("restart",), docker_not_permitted, 3, "docker group"),
        ("docker-missing", ("health",), tool_hidden("docker"), 3, "docker is not installed"),
        ("curl-missing", ("health",), tool_hidden("curl"), 3, "curl is not installed"),
        ("flock-missing", ("rotate-keys",), tool_hidden("flock"), 3, "flock is not installed"),
        ("iam-user-missing", ("rotate-keys", "--iam-user", "no-such-user"), nothing, 4, "no-such-user"),
        ("iam-user-other", ("rotate-keys", "--iam-user", "quilt-operator"), nothing, 4, "belongs to IAM user"),
        ("key-of-another-user", ("rotate-keys",), operator_key_in_env, 4, "belongs to IAM user quilt-operator"),
    ]


CASES = [c for c in cases() if c[3] != 0]


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_bad_input(host, aws, survived, tmp_path, case_id):
    _, args, setup, status, words = next(c for c in CASES if c[0] == case_id)
    keys, states = aws.keys(), host.container_states()
    run_kwargs, undo = setup(host, tmp_path)
    env_before = host.env_file.read_bytes() if host.env_file.exists() else None
    try:
        result = host.run(*args, input=PASSWORD + "\n", **run_kwargs)
        env_after = host.env_file.read_bytes() if host.env_file.exists() else None
    finally:
        undo()
    assert result.returncode == status, result.stdout + result.stderr
    line = one_error(result)
    assert words.lower() in line.lower(), line
    assert env_after == env_before and aws.keys() == keys
    if case_id != "container-missing":
        assert host.container_states() == states
    host.reset()
    survived(compare_bytes=True)
