"""Each host's sshd(s): OpenSSH on free high ports of 127.0.0.1, logging in as the host's login user.

Every sshd of a host has its own config (one per alias), the host's host key and
``SetEnv DOCKER_HOST=<the host's engine>``: what a login session's ``docker`` (and,
through sudo's env_keep, ``sudo docker``) reaches is the host's own engine, taken
from the one place that holds it (the host's engine state).

Clients get ``ssh_config`` (one block per alias, plus ``Host 127.0.0.1`` for stack
discovery, whose EC2InstanceIp output is 127.0.0.1) and ``known_hosts``.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path

from .state import HostState, Layout, SshdState
from .util import (
    SandboxError,
    cmdline,
    descendants,
    ensure_dir,
    pid_alive,
    port_free,
    port_open,
    processes,
    run,
    stop_pids,
    wait_for,
    write_file,
)

SSHD = "/usr/sbin/sshd"
HOST_KEY = "host_ed25519"
CLIENT_KEY = "client_ed25519"
#: The write-slowing shim preloaded into every sandbox sshd (the ``sshd-slow-writes`` fault).
SLOW_WRITES_SOURCE = Path(__file__).resolve().parent / "files" / "sshd" / "slow_writes.c"
SLOW_WRITES_FAULT = "sshd-slow-writes"


def slow_writes_shim(layout: Layout) -> Path:
    """The shim, built for this host from its source (again when the source is newer)."""
    shim = layout.ssh / "slow_writes.so"
    if not shim.exists() or shim.stat().st_mtime < SLOW_WRITES_SOURCE.stat().st_mtime:
        tmp = shim.with_suffix(".so.tmp")
        run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SLOW_WRITES_SOURCE), "-ldl"], timeout=120)
        tmp.chmod(0o755)
        tmp.replace(shim)
    return shim


def ensure_keys(layout: Layout) -> None:
    """The host's own host key and client key (ed25519, made once)."""
    ensure_dir(layout.ssh, 0o700)
    for name in (HOST_KEY, CLIENT_KEY):
        key = layout.ssh / name
        if not key.exists() or not key.with_suffix(".pub").exists():
            key.unlink(missing_ok=True)
            key.with_suffix(".pub").unlink(missing_ok=True)
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"quilt-ops-sandbox {layout.shape.name} {name}",
                    "-f",
                    str(key),
                ]
            )


def authorize(layout: Layout, user: pwd.struct_passwd) -> None:
    """The client key in the login user's authorized_keys (modes sshd's StrictModes accepts)."""
    dot_ssh = layout.home / ".ssh"
    ensure_dir(dot_ssh, 0o700, user.pw_uid, user.pw_gid)
    write_file(
        dot_ssh / "authorized_keys", (layout.ssh / f"{CLIENT_KEY}.pub").read_text(), 0o600, user.pw_uid, user.pw_gid
    )


def sshd_alive(sshd: SshdState) -> bool:
    return pid_alive(sshd.pid) and port_open(sshd.port)


def has_shim(pid: int) -> bool:
    """Whether a running sshd has the write-slowing shim loaded (older sandboxes' did not); its
    environment cannot tell: sshd writes its process title over it."""
    try:
        return "slow_writes.so" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


#: Where a login session looks for programs (sshd's default PATH plus the sbin folders).
STANDARD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def session_path(layout: Layout, hidden: tuple[str, ...]) -> str:
    """A PATH for login sessions without the ``hidden`` programs ("" when nothing is hidden):
    one folder of links to every program of the standard PATH but those."""
    if not hidden:
        return ""
    folder = layout.dir / f"path-without-{'-'.join(hidden)}"
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".new")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for source in STANDARD_PATH:
            if not os.path.isdir(source):
                continue
            for name in sorted(os.listdir(source)):
                link = tmp / name
                if name in hidden or link.exists() or link.is_symlink():
                    continue
                target = os.path.join(source, name)
                if os.access(target, os.X_OK) and not os.path.isdir(target):
                    link.symlink_to(target)
        tmp.chmod(0o755)
        tmp.rename(folder)
    return str(folder)


def config_text(layout: Layout, index: int, port: int, docker_host: str, path: str = "") -> str:
    pid_file = layout.ssh / f"sshd.{index}.pid"
    return (
        f"# sshd {index} of sandbox host {layout.shape.name} ({layout.shape.alias_names()[index]})\n"
        f"Port {port}\nListenAddress 127.0.0.1\n"
        f"HostKey {layout.ssh / HOST_KEY}\nPidFile {pid_file}\n"
        f"AllowUsers {layout.shape.login_user}\nPermitRootLogin no\n"
        f"PubkeyAuthentication yes\nAuthorizedKeysFile .ssh/authorized_keys\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nPrintMotd no\nPrintLastLog no\nX11Forwarding no\n"
        f"MaxStartups 100:30:200\nMaxSessions 50\n"
        f"Subsystem sftp internal-sftp\nLogLevel VERBOSE\n"
        # One SetEnv line: sshd takes the first of a keyword's lines only.
        f"SetEnv DOCKER_HOST={docker_host}" + (f" PATH={path}" if path else "") + "\n"
    )


def start_sshd(layout: Layout, index: int, port: int, docker_host: str, path: str = "") -> SshdState:
    config = layout.ssh / f"sshd_config.{index}"
    pid_file = layout.ssh / f"sshd.{index}.pid"
    config.write_text(config_text(layout, index, port, docker_host, path))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    pid_file.unlink(missing_ok=True)
    run([SSHD, "-t", "-f", str(config)], timeout=30)
    # Every sshd carries the shim; it slows nothing until the fault's file holds a number.
    env = dict(
        os.environ,
        LD_PRELOAD=str(slow_writes_shim(layout)),
        QUILT_SANDBOX_SLOW_WRITES=str(layout.faults / SLOW_WRITES_FAULT),
    )
    run([SSHD, "-f", str(config), "-E", str(layout.ssh / f"sshd.{index}.log")], timeout=30, env=env)

    def listening() -> bool:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        return text.isdigit() and port_open(port)

    wait_for("sshd", listening, 15)
    return SshdState(port=port, pid=int(pid_file.read_text().strip()), docker_host=docker_host, path=path)


def ensure_sshds(layout: Layout, state: HostState, new_port: Callable[[], int], record: Callable[[], None]) -> bool:
    """One sshd per alias; restarts dead ones (on their port when still free); True when any started.

    ``record`` saves the state after each start, so that ``down`` stops an sshd even
    when a later step fails.
    """
    assert state.engine is not None
    docker_host = state.engine.docker_host
    path = session_path(layout, state.shape.hidden_tools)
    wanted = 1 + state.shape.aliases
    for extra in state.sshd[wanted:]:
        stop_pids([extra.pid] if extra.pid else [], 5)
    del state.sshd[wanted:]
    changed = False
    for index in range(wanted):
        current = state.sshd[index] if index < len(state.sshd) else None
        if (
            current
            and sshd_alive(current)
            and current.docker_host == docker_host
            and current.path == path
            and has_shim(current.pid)
        ):
            continue
        if current and current.pid and pid_alive(current.pid):
            stop_pids([current.pid], 5)
        port = current.port if current and port_free(current.port) else new_port()
        started = start_sshd(layout, index, port, docker_host, path)
        if current:
            state.sshd[index] = started
        else:
            state.sshd.append(started)
        record()
        changed = True
    return changed


def stop_sshds(state: HostState) -> None:
    stop_pids([s.pid for s in state.sshd if s.pid and pid_alive(s.pid)], 10)


def client_files(layout: Layout, state: HostState) -> dict[Path, str]:
    """ssh_config and known_hosts for the host's aliases."""
    host_pub = (layout.ssh / f"{HOST_KEY}.pub").read_text().split()
    known = "".join(f"[127.0.0.1]:{s.port} {host_pub[0]} {host_pub[1]}\n" for s in state.sshd)
    common = (
        f"    User {state.shape.login_user}\n    IdentityFile {layout.ssh / CLIENT_KEY}\n"
        f"    IdentitiesOnly yes\n    UserKnownHostsFile {layout.known_hosts}\n"
        f"    StrictHostKeyChecking yes\n"
    )
    blocks = [
        f"Host {alias}\n    HostName 127.0.0.1\n    Port {sshd.port}\n{common}"
        for alias, sshd in zip(state.shape.alias_names(), state.sshd, strict=True)
    ]
    # The stack's EC2InstanceIp output is 127.0.0.1: `--stack <stack>` lands on this host.
    blocks.append(f"Host 127.0.0.1\n    Port {state.sshd[0].port}\n{common}")
    config = (
        f"# ssh_config of sandbox host {state.name}: "
        f"fab -S {layout.ssh_config} -f {layout.fabric_config} -H {state.shape.alias} health\n" + "".join(blocks)
    )
    return {layout.ssh_config: config, layout.known_hosts: known}


def write_client_files(layout: Layout, state: HostState) -> bool:
    changed = False
    for path, text in client_files(layout, state).items():
        changed |= write_file(path, text, 0o644)
    return changed


def session_pids(state: HostState) -> list[int]:
    """The sshd processes serving this host's current connections (not the listeners)."""
    listeners = [s.pid for s in state.sshd if s.pid and pid_alive(s.pid)]
    user = state.shape.login_user
    found = {pid for pid in descendants(listeners) if cmdline(pid).startswith("sshd:")}
    # Sessions outlive a stopped listener: find those by the login user's name as well.
    for pid, _, _ in processes():
        line = cmdline(pid)
        if line.startswith((f"sshd: {user} ", f"sshd: {user}@")):
            found.add(pid)
    found.discard(os.getpid())
    return sorted(found)


def session_commands(layout: Layout) -> int:
    """Remote commands started so far by every sshd of the host (one per exec channel)."""
    return sum(
        log.read_text(errors="replace").count("Starting session: command") for log in layout.ssh.glob("sshd*.log")
    )


def accepted_logins(layout: Layout) -> int:
    """SSH logins accepted so far by every sshd of the host."""
    return sum(log.read_text(errors="replace").count("Accepted publickey") for log in layout.ssh.glob("sshd*.log"))


def check_sshd_binary() -> None:
    if not Path(SSHD).exists():
        raise SandboxError(f"{SSHD} is missing (Debian package openssh-server)")
