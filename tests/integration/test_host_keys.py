"""Host keys: unknown refused with a trust hint, accept-new records, a changed key always refused."""

import subprocess

import pytest

pytestmark = [pytest.mark.sandbox, pytest.mark.security]


def ssh_config_without_known_hosts(host, path):
    lines = [
        line
        for line in host.ssh_config.read_text().splitlines()
        if "UserKnownHostsFile" not in line and "StrictHostKeyChecking" not in line
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_unknown_host_key_is_refused_with_trust_hint(host, tmp_path):
    ssh_config = ssh_config_without_known_hosts(host, tmp_path / "ssh_config")
    known = tmp_path / "known_hosts"
    config = host.write_config(tmp_path / "c.yaml", known_hosts=str(known))
    logins = host.accepted_logins()
    result = host.run("health", config=config, ssh_config=ssh_config)
    assert result.returncode == 3
    assert "not known" in result.stdout
    assert f"ssh-keyscan -p {host.ssh_port} 127.0.0.1" in result.stdout
    assert "accept-new" in result.stdout
    assert not known.exists()
    assert host.accepted_logins() == logins  # never authenticated


def test_restart_on_unknown_host_key_changes_nothing(host, tmp_path):
    ssh_config = ssh_config_without_known_hosts(host, tmp_path / "ssh_config")
    config = host.write_config(tmp_path / "c.yaml", known_hosts=str(tmp_path / "none"))
    before = host.container_states()
    result = host.run("restart", config=config, ssh_config=ssh_config)
    assert result.returncode == 3
    assert result.stderr.startswith("Error: host key of [127.0.0.1]:")
    assert host.container_states() == before


def test_accept_new_records_the_key_then_it_is_known(host, tmp_path):
    ssh_config = ssh_config_without_known_hosts(host, tmp_path / "ssh_config")
    known = tmp_path / "state" / "known_hosts"
    config = host.write_config(tmp_path / "c.yaml", known_hosts=str(known), host_key_policy="accept-new")
    assert host.run("health", config=config, ssh_config=ssh_config).returncode == 0
    recorded = known.read_text()
    assert recorded.startswith(f"[127.0.0.1]:{host.ssh_port} ssh-ed25519 ")
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    strict = host.write_config(tmp_path / "strict.yaml", known_hosts=str(known))
    assert host.run("health", config=strict, ssh_config=ssh_config).returncode == 0
    assert known.read_text() == recorded


@pytest.mark.parametrize("policy", ["reject", "accept-new"])
def test_changed_host_key_is_always_refused(host, tmp_path, policy):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{host.ssh_port} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    ssh_config = ssh_config_without_known_hosts(host, tmp_path / "ssh_config")
    config = host.write_config(tmp_path / "c.yaml", known_hosts=str(known), host_key_policy=policy)
    result = host.run("health", config=config, ssh_config=ssh_config)
    assert result.returncode == 3
    assert "CHANGED" in result.stdout


def test_point_10_17_proxyjump_hops_are_checked_too(host, tmp_path):
    """The target's key is known, the hop's (another sshd, named localhost: Fabric drops a hop
    that has the target's own host name) is not: the hop is refused, as the target would be;
    Fabric alone accepts any hop silently."""
    with host.reshaped(aliases=2):
        target_port, hop_port = host.ssh_ports[1], host.ssh_ports[2]
        identity = next(
            line.split()[1]
            for line in host.ssh_config.read_text().splitlines()
            if line.strip().startswith("IdentityFile")
        )
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(
            f"Host target\n    HostName 127.0.0.1\n    Port {target_port}\n    User {host.login_user}\n"
            f"    IdentityFile {identity}\n    IdentitiesOnly yes\n"
            f"    ProxyJump {host.login_user}@localhost:{hop_port}\n"
            f"Host localhost\n    IdentityFile {identity}\n    IdentitiesOnly yes\n"
        )
        known = tmp_path / "known_hosts"
        key = next(
            line.split(None, 1)[1]
            for line in host.known_hosts.read_text().splitlines()
            if line.startswith(f"[127.0.0.1]:{target_port} ")
        )
        known.write_text(f"[127.0.0.1]:{target_port} {key}\n")
        config = host.write_config(tmp_path / "c.yaml", known_hosts=str(known))
        result = host.run("health", config=config, ssh_config=ssh_config, host="target")
        assert result.returncode == 3, result.stdout + result.stderr
        assert f"[localhost]:{hop_port}" in result.stdout and "not known" in result.stdout
        known.write_text(f"[127.0.0.1]:{target_port} {key}\n[localhost]:{hop_port} {key}\n")
        assert host.run("health", config=config, ssh_config=ssh_config, host="target").returncode == 0


def test_user_known_hosts_file_from_ssh_config_is_honoured(host, tmp_path):
    # quilt.known_hosts points nowhere; the sandbox ssh_config's UserKnownHostsFile knows the key.
    config = host.write_config(tmp_path / "c.yaml", known_hosts=str(tmp_path / "empty"))
    assert host.run("health", config=config).returncode == 0
