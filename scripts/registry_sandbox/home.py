"""The login user (account, docker access, sudo) and the registry folder laid out as on the real host.

The real host's ``ec2-user`` is not in the ``docker`` group and has passwordless
sudo; its start.sh runs ``sudo docker``. The sandbox makes each host's login user
with ``useradd`` (shell /bin/bash, password field ``*`` so that sshd accepts key
logins), gives it sudo through one file in /etc/sudoers.d (which also keeps
DOCKER_HOST across sudo, so that ``sudo docker`` reaches the host's own engine),
and writes the registry folder: ``env/registry`` (every variable the registry
reads, fresh random secrets), ``env/catalog``, ``start.sh``, ``create_admin.sh``
and ``nginx-quilt.conf``.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from pathlib import Path

from .engine import IMAGES
from .shapes import HostShape
from .state import HostState, Layout
from .util import SandboxError, ensure_dir, random_secret, run, write_file

FILES = Path(__file__).resolve().parent / "files"
SUDOERS_DIR = Path("/etc/sudoers.d")
SUDOERS_PREFIX = "quilt-ops-sandbox-"


# ----------------------------------------------------------------------------- the login user


def user_entry(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def ensure_login_user(layout: Layout, shape: HostShape) -> pwd.struct_passwd:
    """The host's login user, created when missing. A user of that name with another home is not taken over."""
    user = user_entry(shape.login_user)
    if user and Path(user.pw_dir) != layout.home:
        raise SandboxError(
            f"a user {shape.login_user} exists already with home {user.pw_dir}; the sandbox will not take it over"
        )
    ensure_dir(layout.homes, 0o755)
    if not user:
        run(
            [
                "useradd",
                "--no-create-home",
                "--home-dir",
                str(layout.home),
                "--shell",
                "/bin/bash",
                "--user-group",
                "--password",
                "*",
                shape.login_user,
            ]
        )
        user = pwd.getpwnam(shape.login_user)
    elif user.pw_passwd != "x" or _shadow_password(shape.login_user) != "*":
        # "*" rather than useradd's default "!": sshd refuses key logins to locked accounts.
        run(["usermod", "--password", "*", shape.login_user])
    ensure_dir(layout.home, 0o700, user.pw_uid, user.pw_gid)
    return user


def _shadow_password(name: str) -> str:
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return fields[1]
    except OSError:
        pass
    return ""


def apply_access(shape: HostShape, user: pwd.struct_passwd, host_dir: Path | None = None) -> None:
    """Docker group membership, the sudoers file and the login user's password (only with
    ``sudo_password``: kept in ``host_dir``, where sudo also logs what it ran), as the shape
    says (idempotent, cheap when nothing changes)."""
    apply_password(shape, user, host_dir)
    members = grp.getgrnam("docker").gr_mem
    if shape.in_docker_group and user.pw_name not in members:
        run(["usermod", "--append", "--groups", "docker", user.pw_name])
    elif not shape.in_docker_group and user.pw_name in members:
        run(["gpasswd", "--delete", user.pw_name, "docker"])
    path = sudoers_file(user.pw_name)
    if not shape.has_sudo:
        path.unlink(missing_ok=True)
        return
    if shape.sudo_password:
        about = f"# quilt-ops sandbox: sudo for {user.pw_name} asking for its password (shape sudo_password).\n"
        # sudo's own log of each command it ran (and of each wrong password), for the tests.
        rule = f'Defaults:{user.pw_name} logfile="{sudo_log_file(host_dir or Path("/nonexistent"))}"\n'
        rule += f"{user.pw_name} ALL=(ALL) ALL\n"
    else:
        about = f"# quilt-ops sandbox: passwordless sudo for {user.pw_name}, as ec2-user has on the real host.\n"
        rule = f"{user.pw_name} ALL=(ALL) NOPASSWD: ALL\n"
    text = (
        about + "# DOCKER_HOST is kept so that `sudo docker` reaches this host's own engine, for root too\n"
        "# (quilt-ops --local as root: start.sh's `sudo docker` reaches the one engine on a real host).\n"
        f'Defaults:{user.pw_name} env_keep += "DOCKER_HOST"\n'
        'Defaults:root env_keep += "DOCKER_HOST"\n' + rule
    )
    try:
        if path.read_text() == text and path.stat().st_mode & 0o777 == 0o440:
            return
    except OSError:
        pass
    # A name with a dot is skipped by sudo: the file is checked there, then renamed into place.
    tmp = SUDOERS_DIR / f".{path.name}.tmp"
    SUDOERS_DIR.mkdir(mode=0o755, exist_ok=True)
    tmp.write_text(text)
    tmp.chmod(0o440)
    result = run(["visudo", "-cf", str(tmp)], check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise SandboxError(f"visudo refused the sudoers file for {user.pw_name}: {result.stdout.strip()}")
    tmp.replace(path)


def apply_password(shape: HostShape, user: pwd.struct_passwd, host_dir: Path | None) -> None:
    """With ``sudo_password``, the login user has the password kept in the host's folder (made
    once, random, with characters a shell would read: a space, quotes, $, `, ;, |); without,
    the password field ``*`` (key logins only), as `ensure_login_user` makes it."""
    if not shape.sudo_password:
        if _shadow_password(user.pw_name) != "*":
            run(["usermod", "--password", "*", user.pw_name])
        return
    if host_dir is None:
        raise SandboxError("a sudo_password host needs its folder to keep the password in")
    password_file = sudo_password_file(host_dir)
    if not password_file.exists():
        write_file(password_file, f"Sudo {random_secret(16)} $'\"`;|", 0o600)
    password = password_file.read_text()
    if _shadow_password(user.pw_name) in ("*", "!", ""):
        run(["chpasswd"], input=f"{user.pw_name}:{password}\n")


def sudo_password_file(host_dir: Path) -> Path:
    """Where a ``sudo_password`` host's login password is kept (root's, beside the host's state)."""
    return host_dir / "sudo_password"


def sudo_log_file(host_dir: Path) -> Path:
    """sudo's log of a ``sudo_password`` host's login user (sudoers ``logfile``): each command
    sudo ran, with its arguments, and each wrong password."""
    return host_dir / "sudo.log"


def sudoers_file(login_user: str) -> Path:
    return SUDOERS_DIR / f"{SUDOERS_PREFIX}{login_user}"


def remove_login_user(name: str, home: Path) -> None:
    """Deletes the user (only when its home is the sandbox's) and its sudoers file."""
    sudoers_file(name).unlink(missing_ok=True)
    user = user_entry(name)
    if user and Path(user.pw_dir) == home:
        run(["userdel", name], check=False)


def users_with_home_under(folder: Path) -> list[str]:
    """Login users the sandbox made below ``folder`` (found even without a state file)."""
    prefix = str(folder).rstrip("/") + "/"
    return [u.pw_name for u in pwd.getpwall() if u.pw_dir.startswith(prefix)]


# ----------------------------------------------------------------------------- files


def render(name: str, values: dict[str, object]) -> str:
    text = (FILES / "home" / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise SandboxError(f"template {name}: no value for {', '.join(sorted(set(left)))}")
    return text


def new_secrets() -> dict[str, str]:
    """The env file's secrets, fresh and random for each host."""
    return {
        "DB_PASSWORD": random_secret(24),
        "SMTP_USERNAME": "AKIA" + random_secret(16).upper(),
        "SMTP_PASSWORD": random_secret(40),
        "QUILT_SECRET_KEY": random_secret(48),
    }


def values(layout: Layout, state: HostState) -> dict[str, object]:
    shape, ports = state.shape, state.ports
    return {
        "REGISTRY_IMAGE": IMAGES["registry"],
        "CATALOG_IMAGE": IMAGES["catalog"],
        "NGINX_IMAGE": IMAGES["nginx"],
        "REGISTRY": shape.containers["registry"],
        "CATALOG": shape.containers["catalog"],
        "NGINX": shape.containers["nginx"],
        "DOCKER": shape.docker_command,
        "READ_ENV": "sudo cat" if shape.docker_access == "sudo" else "cat",
        "DB_DIR": layout.db,
        "FAULTS_DIR": layout.faults,
        "SETTINGS_DIR": layout.settings,
        "REGISTRY_PORT": ports["registry"],
        "CATALOG_PORT": ports["catalog"],
        "UWSGI_PORT": ports["uwsgi"],
        "BUCKET": state.aws.bucket if state.aws else "",
        "DB_HOST": state.aws.db_address if state.aws else "",
        "DB_PORT": state.aws.db_port if state.aws else 5432,
    }


def registry_env(layout: Layout, state: HostState, key_id: str, secret: str) -> str:
    """env/registry as the sandbox writes it, holding the key (key_id, secret)."""
    return render(
        "registry.env", {**values(layout, state), **state.secrets, "ACCESS_KEY_ID": key_id, "SECRET_ACCESS_KEY": secret}
    )


def catalog_env(layout: Layout, state: HostState) -> str:
    return render("catalog.env", values(layout, state))


def scripts(layout: Layout, state: HostState) -> dict[Path, tuple[str, int]]:
    """The registry folder's scripts (no secrets): path -> (text, mode)."""
    vals = values(layout, state)
    return {
        layout.registry_dir / "start.sh": (render("start.sh", vals), 0o755),
        layout.registry_dir / "create_admin.sh": (render("create_admin.sh", vals), 0o755),
        layout.registry_dir / "nginx-quilt.conf": (render("nginx-quilt.conf", vals), 0o644),
    }


def env_owner(shape: HostShape, user: pwd.struct_passwd) -> tuple[int, int]:
    return (user.pw_uid, user.pw_gid) if shape.env_owner == "user" else (0, 0)


def prepare_registry_dir(layout: Layout, user: pwd.struct_passwd) -> None:
    """The registry folder and the folders between it and the home, owned by the login user."""
    path = layout.home
    for part in Path(layout.shape.registry_dir).parts:
        path = path / part
        ensure_dir(path, 0o755, user.pw_uid, user.pw_gid)


def apply_env_ownership(layout: Layout, shape: HostShape, user: pwd.struct_passwd) -> None:
    """env/ and its files: the login user's (env/ 0700) or root's (env/ 0755), env/registry in the shape's mode."""
    uid, gid = env_owner(shape, user)
    ensure_dir(layout.env_dir, 0o700 if shape.env_owner == "user" else 0o755, uid, gid)
    for path, mode in ((layout.env_file, shape.env_mode), (layout.catalog_env, 0o644)):
        if path.exists():
            st = path.stat()
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(path, uid, gid)
            if st.st_mode & 0o7777 != mode:
                path.chmod(mode)


def write_env_files(layout: Layout, state: HostState, user: pwd.struct_passwd, key_id: str, secret: str) -> bool:
    """env/registry (with the given key) and env/catalog; True when something changed."""
    apply_env_ownership(layout, state.shape, user)
    uid, gid = env_owner(state.shape, user)
    changed = write_file(layout.env_file, registry_env(layout, state, key_id, secret), state.shape.env_mode, uid, gid)
    changed |= write_file(layout.catalog_env, catalog_env(layout, state), 0o644, uid, gid)
    return changed


def write_scripts(layout: Layout, state: HostState, user: pwd.struct_passwd) -> bool:
    changed = False
    for path, (text, mode) in scripts(layout, state).items():
        changed |= write_file(path, text, mode, user.pw_uid, user.pw_gid)
    return changed


def write_settings(layout: Layout, shape: HostShape) -> None:
    """The shape's settings the stand-in programs read (mounted read-only at /sandbox)."""
    ensure_dir(layout.settings, 0o755)
    write_file(layout.settings / "migration-seconds", f"{shape.migration_seconds:g}\n")
    write_file(layout.settings / "create-admin-version", f"{shape.create_admin_version}\n")


def prepare_host_folders(layout: Layout) -> None:
    """Faults (read-only in the containers) and db (the stand-in for RDS), root's, readable by all."""
    for path in (layout.faults, layout.db):
        ensure_dir(path, 0o755)


def env_key(text: str) -> tuple[str, str]:
    """The key (id, secret) in effect in an env file's text: the last line of each name."""
    key_id = secret = ""
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            continue
        if name == "AWS_ACCESS_KEY_ID":
            key_id = value.strip()
        elif name == "AWS_SECRET_ACCESS_KEY":
            secret = value.strip()
    return key_id, secret


def env_assignments(text: str) -> list[str]:
    """The ``KEY=value`` lines docker --env-file passes on (comments and blank lines dropped)."""
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
