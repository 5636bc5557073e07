"""Bad input across all tasks: one `Error:` line, its documented exit code, no traceback,
and no change on the host or in IAM."""

import socket
import subprocess
import threading
from pathlib import Path

import pytest

pytestmark = [pytest.mark.sandbox, pytest.mark.bad_input]

PASSWORD = "a-good-password"


class BlackHole:
    """A TCP listener on 127.0.0.1 that accepts and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


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


# Each case: (id, task args, setup(host, tmp_path) -> dict of run kwargs and an undo, expected status, words)
def cases(host):
    def run_kw(**kw):
        return lambda tmp_path: (kw, lambda: None)

    def with_config(**quilt):
        return lambda tmp_path: ({"config": host.write_config(tmp_path / "c.yaml", **quilt)}, lambda: None)

    def with_ssh(**changes):
        return lambda tmp_path: ({"ssh_config": ssh_config_with(host, tmp_path, **changes)}, lambda: None)

    def with_env_file(text):
        def setup(tmp_path):
            original = host.env_file.read_bytes()
            host.env_file.write_text(text.format(key=host.host_key_id()))
            return {}, lambda: host.env_file.write_bytes(original)
        return setup

    def env_file_moved(tmp_path):
        moved = host.env_file.with_name("registry.moved")
        host.env_file.rename(moved)
        return {}, lambda: moved.rename(host.env_file)

    def env_file_mode_000(tmp_path):
        host.env_file.chmod(0)
        return {}, lambda: host.env_file.chmod(0o600)

    def nginx_missing(tmp_path):
        host.docker("rm", "-f", "registry-nginx")
        return {}, lambda: host.run("restart")

    def docker_not_permitted(tmp_path):
        subprocess.run(["gpasswd", "-d", "ec2-user", "docker"], check=True, capture_output=True)
        return {}, lambda: subprocess.run(["gpasswd", "-a", "ec2-user", "docker"], check=True, capture_output=True)

    def docker_missing(tmp_path):
        hidden = []
        for path in ("/usr/local/bin/docker", "/usr/bin/docker"):
            if Path(path).exists():
                Path(path).rename(path + ".hidden")
                hidden.append(path)
        return {}, lambda: [Path(p + ".hidden").rename(p) for p in hidden]

    def operator_key_in_env(tmp_path):
        original = host.env_file.read_bytes()
        operator = host.aws_env()["AWS_ACCESS_KEY_ID"]
        host.env_file.write_bytes(original.replace(host.host_key_id().encode(), operator.encode()))
        return {}, lambda: host.env_file.write_bytes(original)

    def refused_key(tmp_path):
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        return {"ssh_config": ssh_config_with(host, tmp_path, IdentityFile=str(other))}, lambda: None

    def changed_host_key(tmp_path):
        other = tmp_path / "other_host"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{host.ssh_port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]))
        return {"ssh_config": ssh_config_with(host, tmp_path, UserKnownHostsFile=str(known)),
                "config": host.write_config(tmp_path / "c.yaml", known_hosts=str(known))}, lambda: None

    def unknown_host_key(tmp_path):
        return {"ssh_config": ssh_config_with(host, tmp_path, UserKnownHostsFile=None, StrictHostKeyChecking=None),
                "config": host.write_config(tmp_path / "c.yaml", known_hosts=str(tmp_path / "none"))}, lambda: None

    def black_hole(tmp_path):
        hole = BlackHole()
        return {"host": f"127.0.0.1:{hole.port}",
                "config": host.write_config(tmp_path / "c.yaml", connect_timeout=2)}, hole.close

    def broken_yaml(tmp_path):
        path = tmp_path / "broken.yaml"
        path.write_text("quilt: [unclosed\n")
        return {"config": path}, lambda: None

    admin = ("create-admin", "--username", "valid_name", "--email", "v@example.com", "--password-stdin")
    return [
        # host strings, reachability, SSH
        ("host-port-not-a-number", ("health",), run_kw(host="127.0.0.1:notaport"), 3, "invalid host"),
        ("host-port-out-of-range", ("restart",), run_kw(host="127.0.0.1:99999"), 3, "port"),
        ("host-missing", ("restart",), run_kw(host="ec2-user@"), 3, "invalid host"),
        ("host-with-space", ("restart",), run_kw(host="bad host"), 3, "invalid host"),
        ("closed-port", ("restart",), run_kw(host="127.0.0.1:1"), 3, "connection refused"),
        ("closed-port-health", ("health",), run_kw(host="127.0.0.1:1"), 3, "connection refused"),
        ("wrong-port-speaks-http", ("restart",), lambda t: ({"host": f"127.0.0.1:{host.ports['catalog']}"},
                                                          lambda: None), 3, "SSH"),
        ("silent-port", ("restart",), black_hole, 3, ""),
        ("refused-key", ("restart",), refused_key, 3, "authentication failed"),
        ("unknown-host-key", ("rotate-keys",), unknown_host_key, 3, "ssh-keyscan"),
        ("changed-host-key", ("rotate-keys",), changed_host_key, 3, "CHANGED"),
        # the env file
        ("env-file-missing", ("rotate-keys",), env_file_moved, 1, "no such file"),
        ("env-file-missing-restart", ("restart",), env_file_moved, 1, "missing or unreadable"),
        ("env-file-unreadable", ("rotate-keys",), env_file_mode_000, 1, "permission denied"),
        ("env-file-no-key-lines", ("rotate-keys",), with_env_file("A=1\n"), 1, "no AWS_ACCESS_KEY_ID line"),
        ("env-file-export", ("rotate-keys",), with_env_file("export AWS_ACCESS_KEY_ID={key}\n"), 1, "export"),
        ("env-file-quoted", ("rotate-keys",), with_env_file('AWS_ACCESS_KEY_ID="{key}"\n'), 1, "quoted"),
        # containers and docker
        ("container-missing", ("rotate-keys",), nginx_missing, 1, "not healthy now"),
        ("docker-not-permitted", ("health",), docker_not_permitted, 3, "permission denied"),
        ("docker-not-permitted-rotate", ("rotate-keys",), docker_not_permitted, 1, "not healthy now"),
        ("docker-missing", ("health",), docker_missing, 3, "docker is not installed"),
        # IAM
        ("iam-user-missing", ("rotate-keys", "--iam-user", "no-such-user"), run_kw(), 1, "does not exist"),
        ("iam-user-other", ("rotate-keys", "--iam-user", "quilt-operator"), run_kw(), 1, "does not belong"),
        ("key-of-another-user", ("rotate-keys",), operator_key_in_env, 1, "not a RegistryUser"),
        ("aws-profile-missing", ("rotate-keys", "--profile", "nope"), run_kw(), 2, "profile 'nope' not found"),
        # config
        ("config-policy", ("restart",), with_config(host_key_policy="yolo"), 2, "quilt.host_key_policy"),
        ("config-policy-health", ("health",), with_config(host_key_policy="yolo"), 3, "quilt.host_key_policy"),
        ("config-containers-type", ("restart",), with_config(containers="registry"), 2, "quilt.containers"),
        ("config-timeout-negative", ("restart",), with_config(restart_timeout=-5), 2, "quilt.restart_timeout"),
        ("config-probe-url", ("restart",), with_config(probes={"registry": "ftp://x/"}), 2, "quilt.probes.registry"),
        ("config-env-file-absolute", ("rotate-keys",), with_config(env_file="/etc/shadow"), 2, "quilt.env_file"),
        ("config-file-missing", ("restart",), run_kw(config=Path("/nonexistent/fabric.yaml")), 2, "not found"),
        ("config-file-broken", ("restart",), broken_yaml, 2, "cannot read config file"),
        ("config-env-var", ("restart",), run_kw(env={"FABRIC_QUILT_RESTART_TIMEOUT": "soon"}), 2,
         "FABRIC_QUILT_RESTART_TIMEOUT"),
        # task options
        ("option-verify-timeout", ("rotate-keys", "--verify-timeout", "abc"), run_kw(), 2, "--verify-timeout"),
        ("option-parallel-zero", ("restart", "--parallel", "0"), run_kw(), 2, "--parallel"),
        ("option-parallel-health", ("health", "--parallel", "x"), run_kw(), 3, "--parallel"),
        ("option-unknown", ("restart", "--bogus"), run_kw(), 2, "--bogus"),
        ("option-unknown-task", ("restart-everything",), run_kw(), 2, "restart-everything"),
        ("admin-username", admin[:2] + ("Root",) + admin[3:], run_kw(input=PASSWORD + "\n"), 2, "Invalid username"),
        ("admin-email", admin[:4] + ("nope",) + admin[5:], run_kw(input=PASSWORD + "\n"), 2, "Invalid email"),
        ("admin-short-password", admin, run_kw(input="short\n"), 2, "at least 8"),
        ("admin-no-password-source", admin[:-1], run_kw(), 2, "never a command-line option"),
        ("no-host", ("rotate-keys",), run_kw(host=""), 2, "no host given"),
    ]


CASE_IDS = [c[0] for c in cases(type("H", (), {"ports": {"catalog": 0}, "ssh_port": 0})())]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input(host, aws, survived, tmp_path, case_id):
    case = next(c for c in cases(host) if c[0] == case_id)
    _, args, setup, status, words = case
    keys, ids = aws.keys(), host.container_ids()
    run_kwargs, undo = setup(tmp_path)
    env_before = host.env_file.read_bytes() if host.env_file.exists() else None
    try:
        result = host.run(*args, **run_kwargs)
        env_after = host.env_file.read_bytes() if host.env_file.exists() else None
    finally:
        undo()
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.stderr
    assert words.lower() in errors[0].lower(), errors[0]
    assert env_after == env_before and aws.keys() == keys
    if case_id != "container-missing":
        assert host.container_ids() == ids
    survived(compare_bytes=True)
