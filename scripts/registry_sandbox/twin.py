"""A twin of a sandbox host: another login user, with its own registry folder, in front of the
same engine and containers, reached through an sshd of its own.

For the tool it is a second host with exactly the same settings (names, folder, ports),
which two real registry hosts share but two sandbox hosts on one machine cannot (their
ports would clash). Its env file holds whatever key the test gives it: the host's own
key (two hosts running on one key), or a key of another RegistryUser in the same AWS
account (two hosts rotated together). It never runs its start script (the containers
are the host's), so it suits what happens before a restart: pre-flight, verification.
"""

from __future__ import annotations

import json
import pwd
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import home as home_mod
from . import sshd as sshd_mod
from .util import ensure_dir, free_port, kill_user_processes, run, stop_pids, write_file

if TYPE_CHECKING:
    from .host import Host


@dataclass
class Twin:
    alias: str
    login_user: str
    env_file: Path
    #: ssh_config with the host's aliases and the twin's (use it for both).
    ssh_config: Path


def _with_key(text: str, key_id: str, secret: str) -> str:
    text = re.sub(r"(?m)^AWS_ACCESS_KEY_ID=.*$", f"AWS_ACCESS_KEY_ID={key_id}", text)
    return re.sub(r"(?m)^AWS_SECRET_ACCESS_KEY=.*$", f"AWS_SECRET_ACCESS_KEY={secret}", text)


@contextmanager
def twin(host: Host, key_id: str, secret: str) -> Iterator[Twin]:
    """A twin of ``host`` whose env file holds ``key_id``/``secret``; removed afterwards."""
    layout = host.layout
    name = f"{host.login_user[:24]}-tw"
    folder = layout.dir / "twin"
    home = folder / "home" / name
    shutil.rmtree(folder, ignore_errors=True)
    ensure_dir(home.parent, 0o755)
    try:  # left by a test run that was killed inside this block
        kill_user_processes(pwd.getpwnam(name).pw_uid)
        run(["userdel", name], check=False)
    except KeyError:
        pass
    run(
        [
            "useradd",
            "--no-create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/bin/bash",
            "--user-group",
            "--password",
            "*",
            name,
        ]
    )
    sshd_pid = None
    try:
        user = pwd.getpwnam(name)
        ensure_dir(home, 0o700, user.pw_uid, user.pw_gid)
        home_mod.apply_access(host.shape, user, host.layout.dir)
        registry = home / host.shape.registry_dir if host.shape.registry_dir else home
        env_dir = registry / "env"
        ensure_dir(registry, 0o755, user.pw_uid, user.pw_gid)
        ensure_dir(env_dir, 0o700, user.pw_uid, user.pw_gid)
        for source in host.registry_dir.iterdir():
            if source.is_file():
                target = registry / source.name
                shutil.copy2(source, target)
                shutil.chown(target, name, name)
        write_file(env_dir / "registry", _with_key(host.env_text(), key_id, secret), 0o600, user.pw_uid, user.pw_gid)
        write_file(env_dir / "catalog", (host.env_dir / "catalog").read_text(), 0o644, user.pw_uid, user.pw_gid)
        dot_ssh = home / ".ssh"
        ensure_dir(dot_ssh, 0o700, user.pw_uid, user.pw_gid)
        write_file(
            dot_ssh / "authorized_keys",
            (layout.ssh / f"{sshd_mod.CLIENT_KEY}.pub").read_text(),
            0o600,
            user.pw_uid,
            user.pw_gid,
        )
        port = free_port()
        config = folder / "sshd_config"
        pid_file = folder / "sshd.pid"
        base = sshd_mod.config_text(layout, 0, port, host.docker_host)
        text = (
            "\n".join(
                f"AllowUsers {name}"
                if line.startswith("AllowUsers")
                else f"PidFile {pid_file}"
                if line.startswith("PidFile")
                else line
                for line in base.splitlines()
            )
            + "\n"
        )
        config.write_text(text)
        run([sshd_mod.SSHD, "-f", str(config), "-E", str(layout.ssh / "sshd.twin.log")], timeout=30)
        from .util import port_open, wait_for

        wait_for(
            "the twin's sshd",
            lambda: pid_file.exists() and pid_file.read_text().strip().isdigit() and port_open(port),
            15,
        )
        sshd_pid = int(pid_file.read_text().strip())
        host_key = " ".join((layout.ssh / f"{sshd_mod.HOST_KEY}.pub").read_text().split()[:2])
        known = folder / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {host_key}\n")
        alias = f"{host.alias}-twin"
        ssh_config = folder / "ssh_config"
        ssh_config.write_text(
            f"Host {alias}\n    HostName 127.0.0.1\n    Port {port}\n    User {name}\n"
            f"    IdentityFile {layout.ssh / sshd_mod.CLIENT_KEY}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {known}\n    StrictHostKeyChecking yes\n" + layout.ssh_config.read_text()
        )
        yield Twin(alias, name, env_dir / "registry", ssh_config)
    finally:
        if sshd_pid:
            stop_pids([sshd_pid], 5)
        kill_user_processes(pwd.getpwnam(name).pw_uid)
        run(["userdel", name], check=False)
        home_mod.sudoers_file(name).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


def registry_user(host: Host, name: str) -> tuple[str, str, str]:
    """Another RegistryUser in the host's AWS account, with the same S3 policy and a key:
    returns (user name, key ID, secret)."""
    iam = host.iam_client()
    user = f"{name}-RegistryUser-TWINTWINTWINT"
    iam.create_user(UserName=user)
    policy = iam.get_user_policy(UserName=host.iam_user, PolicyName="RegistryUserS3Access")["PolicyDocument"]
    iam.put_user_policy(
        UserName=user,
        PolicyName="RegistryUserS3Access",
        PolicyDocument=policy if isinstance(policy, str) else json.dumps(policy),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return user, key["AccessKeyId"], key["SecretAccessKey"]


def remove_registry_user(host: Host, user: str) -> None:
    iam = host.iam_client()
    for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    for policy in iam.list_user_policies(UserName=user)["PolicyNames"]:
        iam.delete_user_policy(UserName=user, PolicyName=policy)
    iam.delete_user(UserName=user)
