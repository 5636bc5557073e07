"""The Sandbox: a root folder holding named, isolated hosts; ``up`` and ``down`` orchestrate their parts.

Layout of the root folder (``$QUILT_OPS_SANDBOX_DIR``, default /tmp/quilt-ops-sandbox)::

    .locks/              fcntl locks: "sandbox" for shared steps, one per host
    state.json           SandboxState (the images' root file system)
    images/              rootfs-<digest>.tar, imported into every host's engine
    hosts/<name>/        one host: state.json, docker/, aws/, ssh/, home/<user>/,
                         faults/, db/, rds/ (the PostgreSQL servers of its RDS instances),
                         settings/, ssh_config, known_hosts, fabric.yaml

Two processes may bring up two different hosts at once (pytest-xdist workers):
steps that touch shared things (apt, the root folder, the images' build, system
accounts and sudoers, port choice) run under the sandbox lock; everything else
runs under the host's own lock, with the host's state in its own file.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from . import aws as aws_mod
from . import engine as engine_mod
from . import home as home_mod
from . import pg
from . import sshd as sshd_mod
from .host import Host, fabric_config_text, start_containers
from .shapes import MAIN, HostShape
from .state import HostState, Layout, SandboxState, load_host, save_host
from .util import (
    FileLock,
    SandboxError,
    ensure_dir,
    free_port,
    kill_user_processes,
    log,
    processes_under,
    run,
    stop_pids,
    unmount_below,
    write_file,
)

DEFAULT_ROOT = Path("/tmp/quilt-ops-sandbox")

#: The Debian packages the sandbox and the tests need: one list, shared with scripts/install.
PACKAGE_LIST = Path(__file__).resolve().parent.parent / "debian-packages"

#: Files that show a package's programs are there even when dpkg does not list the package
#: (docker-ce instead of docker.io, say); also the list to use when PACKAGE_LIST is missing.
PROGRAMS: dict[str, tuple[str, ...]] = {
    "openssh-server": ("/usr/sbin/sshd",),
    "openssh-client": ("ssh", "ssh-keygen"),
    "docker.io": ("dockerd", "docker"),
    "busybox-static": ("/bin/busybox",),
    "sudo": ("sudo", "visudo"),
    "gcc": ("gcc",),
    "libc6-dev": ("/usr/include/stdio.h",),
    "curl": ("curl",),
    "util-linux": ("runuser", "setsid"),
}


def wanted_packages() -> list[str]:
    try:
        lines = PACKAGE_LIST.read_text().splitlines()
    except OSError:
        return sorted(PROGRAMS)
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def missing_packages() -> list[str]:
    """The wanted packages that are neither installed (dpkg) nor present by their programs."""

    def have(thing: str) -> bool:
        return Path(thing).exists() if thing.startswith("/") else shutil.which(thing) is not None

    unsure = [p for p in wanted_packages() if not (p in PROGRAMS and all(have(t) for t in PROGRAMS[p]))]
    if not unsure:
        return []
    if not shutil.which("dpkg-query"):  # not Debian: only what has known programs can be said missing
        return [p for p in unsure if p in PROGRAMS]
    listed = run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *unsure], check=False, timeout=60).stdout
    installed = {line.split()[0] for line in listed.splitlines() if line.endswith(" installed")}
    return sorted(p for p in unsure if p not in installed)


class Sandbox:
    """The sandbox's root folder and the hosts in it."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root or os.environ.get("QUILT_OPS_SANDBOX_DIR") or DEFAULT_ROOT)
        self.state_file = self.root / "state.json"

    # -- locks -----------------------------------------------------------------------------

    def lock(self) -> FileLock:
        """The sandbox lock: shared steps only (held briefly)."""
        return FileLock(self.root / ".locks" / "sandbox")

    def host_lock(self, name: str) -> FileLock:
        """One host's lock: its up, down and reset."""
        return FileLock(self.root / ".locks" / f"host-{name}")

    # -- queries ---------------------------------------------------------------------------

    def host_names(self) -> list[str]:
        folder = self.root / "hosts"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def load(self, name: str) -> HostState | None:
        return load_host(self.root / "hosts" / name / "state.json")

    def host(self, name: str = "main") -> Host:
        """An existing host; SandboxError when it is not up."""
        state = self.load(name)
        if state is None or state.engine is None or state.aws is None or not state.sshd:
            raise SandboxError(
                f"host {name} is not up: run scripts/sandbox up" + ("" if name == "main" else f" --host {name}")
            )
        return Host(self, state)

    def hosts(self) -> list[Host]:
        found = []
        for name in self.host_names():
            try:
                found.append(self.host(name))
            except SandboxError:
                pass
        return found

    # -- up --------------------------------------------------------------------------------

    def up(self, shape: HostShape = MAIN) -> Host:
        """Brings a host up, or heals it: only what is missing or dead is (re)made. Returns the Host.

        A host that exists with another shape gets the in-place changes (docker access,
        sudo, env file owner and mode, migration time, create_admin version, aliases);
        any other change tears it down and builds it anew.
        """
        if os.geteuid() != 0:
            raise SandboxError("the sandbox creates users, sshd's and dockerd's: run it as root")
        tarball, digest = self._prepare()
        layout = Layout(self.root, shape)
        with self.host_lock(shape.name):
            state = self.load(shape.name)
            if state and not state.shape.same_build(shape):
                log.info(f"host {shape.name} changes shape beyond what changes in place: rebuilding it")
                self._teardown(shape.name)
                state = None
            if state is None:
                if layout.dir.exists():  # a host whose state was lost: start clean
                    self._teardown(shape.name)
                state = HostState(name=shape.name, shape=shape)
            state.shape = shape
            self._save(layout, state)
            self._bring_up(layout, state, tarball, digest)
            return Host(self, state)

    def _prepare(self) -> tuple[Path, str]:
        """Shared steps: system packages, the root folder, the images' root file system."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock():
            self.root.chmod(0o755)
            missing = missing_packages()
            if missing:
                install_packages(missing)
            ensure_dir(self.root / "hosts", 0o755)
            ensure_dir(self.root / "images", 0o700)
            sandbox_state = SandboxState.load(self.state_file)
            tarball, digest = engine_mod.build_rootfs(self.root / "images")
            if (sandbox_state.rootfs, sandbox_state.rootfs_digest) != (
                str(tarball),
                digest,
            ) or not sandbox_state.packages_ok:
                sandbox_state.rootfs, sandbox_state.rootfs_digest = str(tarball), digest
                sandbox_state.packages_ok = True
                sandbox_state.save(self.state_file)
            return tarball, digest

    def _save(self, layout: Layout, state: HostState) -> None:
        ensure_dir(layout.dir, 0o755)
        save_host(layout.state_file, state)

    def _new_ports(self, layout: Layout, state: HostState, preferred: list[int]) -> list[int]:
        """Free ports for this host, none claimed by any host (chosen and recorded under the sandbox lock)."""
        with self.lock():
            # The real host's ports (5000, 80, 9000) are kept for the main host, even while it is
            # down or coming up at the same time: another host never takes them.
            taken = set() if state.name == MAIN.name else {p for p in MAIN.ports.values() if p}
            for name in self.host_names():
                other = state if name == state.name else self.load(name)
                if other:
                    taken |= other.claimed_ports()
            chosen = []
            for want in preferred:
                port = free_port(want, taken)
                taken.add(port)
                chosen.append(port)
            state.reserved_ports.extend(chosen)
            self._save(layout, state)
            return chosen

    def _bring_up(self, layout: Layout, state: HostState, tarball: Path, digest: str) -> None:
        shape = state.shape
        save = lambda: self._save(layout, state)  # noqa: E731
        with self.lock():  # accounts, groups and sudoers are shared system files
            user = home_mod.ensure_login_user(layout, shape)
            state.created_user = shape.login_user
            save()
            home_mod.apply_access(shape, user, layout.dir)

        # Start the engine and moto, then do what needs neither while they come up.
        engine, engine_started = engine_mod.ensure_engine(layout, state.engine, user.pw_gid)
        if engine_started:
            state.engine, state.images = engine, ""
            save()
        else:
            os.chown(layout.docker, 0, user.pw_gid)
        aws_started = not aws_mod.aws_alive(state.aws)
        if aws_started:
            aws_mod.stop_aws(state.aws)
            moto_port, proxy_port = self._new_ports(layout, state, [0, 0])
            state.aws = aws_mod.start_aws(layout, moto_port, proxy_port)
            save()
        sshd_mod.ensure_keys(layout)
        sshd_mod.authorize(layout, user)
        home_mod.prepare_host_folders(layout)
        home_mod.write_settings(layout, shape)
        home_mod.prepare_registry_dir(layout, user)
        if set(state.ports) != {"registry", "catalog", "uwsgi"}:
            roles = ("registry", "catalog", "uwsgi")
            state.ports = dict(zip(roles, self._new_ports(layout, state, [shape.ports[r] for r in roles]), strict=True))
            save()

        assert state.engine is not None and state.aws is not None
        if engine_started:
            engine_mod.wait_engine(state.engine)
        images_changed = engine_mod.ensure_images(state.engine, tarball, digest)
        if images_changed:
            log.info(f"stand-in images imported into host {shape.name}'s engine")
        state.images = digest

        # The env file's secrets, the database's master password among them (the stack is made with it).
        if not state.secrets:
            state.secrets = home_mod.new_secrets()
            save()
        fresh_key: tuple[str, str] | None = None
        if aws_started:
            aws_mod.wait_aws(state.aws)
            fresh_key = aws_mod.provision(state.aws, shape.stack, state.secrets["DB_PASSWORD"])
            # A new moto is a new account: its users have new names, so the host's recorded
            # binding (to a user of the AWS that died with its moto) would refuse every rotation.
            layout.known_users.unlink(missing_ok=True)
            layout.rotations.unlink(missing_ok=True)  # (its keys were that AWS's too)
            save()
            log.info(
                f"host {shape.name}: moto on 127.0.0.1:{state.aws.moto_port}, AWS endpoint {state.aws.endpoint}, "
                f"database {state.aws.db_address}:{state.aws.db_port}"
            )

        # The registry folder. env/registry is written when new (fresh secrets) or when
        # AWS was provisioned anew (its key, bucket and database changed); otherwise it
        # is left as it is: the tool may have rotated its key.
        recreate = engine_started or images_changed  # containers of older images are replaced too
        if fresh_key or not layout.env_file.exists():
            key = fresh_key or Host(self, state).ensure_key(None)
            home_mod.write_env_files(layout, state, user, *key)
            recreate = True
        else:
            home_mod.apply_env_ownership(layout, shape, user)
        home_mod.write_scripts(layout, state, user)

        def new_port() -> int:
            return self._new_ports(layout, state, [0])[0]

        sshd_mod.ensure_sshds(layout, state, new_port, save)
        sshd_mod.write_client_files(layout, state)
        write_file(layout.fabric_config, fabric_config_text(layout, state), 0o644)
        state.reserved_ports = []
        save()

        host = Host(self, state)
        if recreate or not host.containers_running():
            start_containers(host)

    # -- down ------------------------------------------------------------------------------

    def down(self, name: str | None = None) -> None:
        """Removes one host, or (no name) every host and the root folder: what up made, nothing else."""
        if name is not None:
            if not (self.root / "hosts" / name).exists():
                return
            with self.host_lock(name):
                self._teardown(name)
            return
        if not self.root.exists():
            return
        # Host locks first, then the sandbox lock (the order up() takes them in).
        for host_name in self.host_names():
            with self.host_lock(host_name):
                self._teardown(host_name)
        with self.lock():
            # Whatever is left (a host folder half made, a build) goes with the folder.
            stop_pids(processes_under(self.root), 5)
            for user in home_mod.users_with_home_under(self.root):
                home_mod.remove_login_user(user, Path(pwd.getpwnam(user).pw_dir))
            unmount_below(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
        log.info("down: removed everything the sandbox made")

    def _teardown(self, name: str) -> None:
        """Stops and removes one host's parts, found from its state and, failing that, from its folder."""
        folder = self.root / "hosts" / name
        state = self.load(name)
        users = set(home_mod.users_with_home_under(folder))
        if state:
            layout = Layout(self.root, state.shape)
            user = home_mod.user_entry(state.shape.login_user)
            if user and Path(user.pw_dir) == layout.home:
                users.add(user.pw_name)
            if state.engine and engine_mod.engine_alive(state.engine):
                try:
                    engine_mod.remove_all_containers(state.engine)
                except SandboxError:
                    pass
            sshd_mod.stop_sshds(state)
            aws_mod.stop_aws(state.aws)  # moto stops its database servers
        for instance in pg.instances(folder / "rds"):  # and whatever a killed moto left
            pg.stop(Path(instance.folder))
            engine_mod.stop_engine(layout, state.engine, timeout=30)
        for user_name in users:
            entry = home_mod.user_entry(user_name)
            if entry:
                kill_user_processes(entry.pw_uid)
        # Leftovers of a dead engine (containerd, shims, container processes), then anything else of the host.
        engine_mod.clean_dead_engine(folder / "docker")
        stop_pids(processes_under(folder), 5)
        for user_name in users:
            entry = home_mod.user_entry(user_name)
            if entry:
                home_mod.remove_login_user(user_name, Path(entry.pw_dir))
        if state:
            home_mod.sudoers_file(state.shape.login_user).unlink(missing_ok=True)
        unmount_below(folder)
        shutil.rmtree(folder, ignore_errors=True)
        log.info(f"host {name} removed")


def install_packages(missing: list[str]) -> None:
    """Installs Debian packages as root; elsewhere names them."""
    if not (Path("/etc/debian_version").exists() and shutil.which("apt-get")):
        raise SandboxError(f"missing: {', '.join(missing)} (Debian packages; install them)")
    log.info(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env, timeout=900)
    still = missing_packages()
    if still:
        raise SandboxError(f"still missing after apt-get install: {', '.join(still)}")
