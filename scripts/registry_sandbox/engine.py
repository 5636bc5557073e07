"""Each host's own Docker Engine (a dockerd of the sandbox's) and the stand-in images.

A host never uses "whatever engine answers": its engine is the socket recorded in
its state (``EngineState.socket``), and every docker client the sandbox runs gets
that socket and nothing from the caller's environment. When the host's dockerd
has died, what it left (containerd and its shims, container processes holding the
ports, mounts) is cleaned up and a fresh dockerd is started on the same socket.

The dockerd runs without a bridge, iptables or masquerading: the containers use
the host network (``--network host``) and bind to 127.0.0.1 only. Images are
imported from one busybox-static root file system (``docker import``), never pulled;
it also holds psql and the libraries it loads (the stand-ins' database client).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from . import pg
from .state import EngineState, Layout
from .util import (
    SandboxError,
    clean_env,
    ensure_dir,
    http_unix_get,
    log,
    pid_alive,
    processes,
    processes_under,
    run,
    signal_pids,
    stop_pid,
    unmount_below,
    wait_for,
    wait_gone,
)

FILES = Path(__file__).resolve().parent / "files"
TAG = "quilt-ops-sandbox"
IMAGES = {
    "registry": f"quiltdata/registry:{TAG}",
    "catalog": f"quiltdata/catalog:{TAG}",
    "nginx": f"nginx:{TAG}",
}
IMAGE_COMMANDS = {"registry": "registry-serve", "catalog": "catalog-serve", "nginx": "nginx-serve"}
#: The image label that carries the root file system's digest (an image of another build is replaced).
LABEL = "quilt-ops-sandbox"


# ----------------------------------------------------------------------------- talking to an engine


def docker(
    engine: EngineState, *args: str, check: bool = True, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess:
    """The docker CLI against ``engine``, and only it (the caller's DOCKER_HOST is dropped)."""
    return run(
        ["docker", "-H", engine.docker_host, *args],
        check=check,
        timeout=timeout,
        env=clean_env(DOCKER_HOST=engine.docker_host),
        **kw,
    )


def ping(socket_path: str | Path, timeout: float = 2) -> bool:
    """True when a Docker Engine answers on the unix socket."""
    try:
        status, body = http_unix_get(Path(socket_path), "/_ping", timeout=timeout)
    except OSError:
        return False
    return status == 200 and body.strip() == b"OK"


def api(engine: EngineState, path: str, timeout: float = 10) -> Any:
    """GET a path of the Engine API as JSON; None on 404. Cheaper than a CLI process."""
    try:
        status, body = http_unix_get(Path(engine.socket), path, timeout=timeout)
    except OSError as e:
        raise SandboxError(f"the host's Docker Engine ({engine.docker_host}) does not answer: {e}") from e
    if status == 404:
        return None
    if status != 200:
        raise SandboxError(f"Docker Engine API {path}: HTTP {status}")
    return json.loads(body)


def containers(engine: EngineState) -> list[dict[str, Any]]:
    """Every container of the engine (running or not), as ``/containers/json?all=1`` lists them."""
    return api(engine, "/containers/json?all=1") or []


def inspect(engine: EngineState, name: str) -> dict[str, Any] | None:
    return api(engine, f"/containers/{name}/json")


def remove_all_containers(engine: EngineState) -> None:
    ids = [c["Id"] for c in containers(engine)]
    if ids:
        docker(engine, "rm", "-f", *ids, check=False, timeout=120)


# ----------------------------------------------------------------------------- the dockerd


def engine_alive(engine: EngineState | None) -> bool:
    return engine is not None and pid_alive(engine.pid) and ping(engine.socket)


def ensure_engine(layout: Layout, engine: EngineState | None, gid: int) -> tuple[EngineState, bool]:
    """The host's engine, started (or restarted after a death) when needed; True when started.

    Does not wait for it to answer: see ``wait_engine`` (so that moto can start meanwhile).
    """
    if engine and pid_alive(engine.pid):
        if ping(engine.socket):
            return engine, False
        try:  # alive but silent: maybe still starting
            wait_for("dockerd", lambda: ping(engine.socket), 20)
            return engine, False
        except SandboxError:
            log.info("the host's dockerd does not answer: replacing it")
    elif engine:
        log.info("the host's dockerd died: cleaning up after it and starting a new one")
    return start_engine(layout, gid), True


def start_engine(layout: Layout, gid: int) -> EngineState:
    root = layout.docker
    clean_dead_engine(root)
    # Root and the login user's group only (the socket itself is root:docker 0660): in
    # "group" mode the login user reaches it; another host's login user cannot.
    ensure_dir(layout.dir, 0o755)
    ensure_dir(root, 0o750, gid=gid)
    for sub in ("data", "exec"):
        ensure_dir(root / sub, 0o711)
    ensure_dir(root / "tmp", 0o700)
    (root / "daemon.json").write_text("{}\n")  # never /etc/docker/daemon.json
    sock = layout.default_socket
    with open(root / "dockerd.log", "ab") as logf:
        proc = subprocess.Popen(
            [
                "dockerd",
                "--config-file",
                str(root / "daemon.json"),
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "-H",
                f"unix://{sock}",
                "--group",
                "docker",
                "--data-root",
                str(root / "data"),
                "--exec-root",
                str(root / "exec"),
                "--pidfile",
                str(root / "docker.pid"),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # containerd dumps its stacks into $TMPDIR when dockerd gives up on it: keep that in the folder.
            env=clean_env(TMPDIR=str(root / "tmp")),
            cwd=root,
        )
    log.info(f"dockerd started for host {layout.shape.name} on unix://{sock}")
    return EngineState(socket=str(sock), pid=proc.pid)


def wait_engine(engine: EngineState, timeout: float = 60) -> None:
    def answers() -> bool:
        if not pid_alive(engine.pid):
            raise SandboxError(f"dockerd exited at start (see {Path(engine.socket).parent / 'dockerd.log'})")
        return ping(engine.socket)

    wait_for("dockerd", answers, timeout)


def stop_engine(layout: Layout, engine: EngineState | None, kill: bool = False, timeout: float = 30) -> None:
    """Stops the host's dockerd: SIGTERM (containers are stopped with it) or, with ``kill``, SIGKILL
    (a crash: containerd and the containers stay behind, as they would)."""
    pid = engine.pid if engine else None
    if not pid or not pid_alive(pid):
        return
    if kill:
        signal_pids([pid], signal.SIGKILL)
        wait_gone([pid], 10)
    else:
        stop_pid(pid, timeout)


def clean_dead_engine(root: Path) -> None:
    """Kills what a dead dockerd left running, unmounts its mounts, empties its folder ``root``.

    Only this host's: processes naming this host's docker folder (dockerd, containerd,
    shims) and the processes of this host's containers (found by container id in
    their cgroup; they hold the registry's ports).
    """
    ids = [p.name for p in (root / "data" / "containers").glob("*") if len(p.name) == 64]
    victims = set(processes_under(root))
    if ids:
        for pid, _, _ in processes():
            try:
                cgroup = Path(f"/proc/{pid}/cgroup").read_text()
            except OSError:
                continue
            if any(container_id in cgroup for container_id in ids):
                victims.add(pid)
    victims.discard(os.getpid())
    if victims:
        signal_pids(victims, signal.SIGKILL)
        wait_gone(victims, 10)
    unmount_below(root)
    shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- images


def psql_files() -> list[Path]:
    """psql (PostgreSQL's client, the registry's libpq) and the shared libraries it loads, by ldd.

    busybox is static; psql is not: the registry stand-in's image carries psql with its
    libraries and the dynamic loader at their own paths, so that the stand-in reaches
    the database with libpq, as the registry (psycopg2) does.
    """
    psql = pg.bindir() / "psql"
    listed = run(["ldd", str(psql)], timeout=30).stdout
    files = [psql]
    for line in listed.splitlines():
        words = line.split()
        path = words[2] if len(words) >= 3 and words[1] == "=>" else words[0] if words else ""
        if path.startswith("/"):
            files.append(Path(path))
    return files


def rootfs_digest() -> str:
    """Digest of what goes into the images: the stand-in programs, busybox and psql with its libraries."""
    h = hashlib.sha256()
    for path in sorted((FILES / "image").iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(Path("/bin/busybox").read_bytes())
    for path in psql_files():
        h.update(str(path).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def build_rootfs(folder: Path) -> tuple[Path, str]:
    """The images' root file system as a tarball in ``folder`` (built once per digest; call under the sandbox lock)."""
    digest = rootfs_digest()
    tarball = folder / f"rootfs-{digest}.tar"
    if tarball.exists():
        return tarball, digest
    log.info("building the stand-in images' root file system (busybox-static, no pull)")
    for old in folder.glob("rootfs-*"):
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    build = folder / f"build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    rootfs = build / "rootfs"
    for sub in (
        "bin",
        "usr/local/bin",
        "www/cgi-bin",
        "catalog",
        "data",
        "faults",
        "sandbox",
        "tmp",
        "etc/nginx/conf.d",
        "root",
    ):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in run(["/bin/busybox", "--list"]).stdout.split():
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    image_files = FILES / "image"
    run(["gcc", "-O2", "-static", "-o", str(rootfs / "usr/local/bin/relay"), str(image_files / "relay.c")])
    for name in ("registry-serve", "flask", "create_admin", "nginx-serve", "catalog-serve"):
        shutil.copy2(image_files / name, rootfs / "usr/local/bin" / name)
        (rootfs / "usr/local/bin" / name).chmod(0o755)
    (rootfs / "usr/local/lib").mkdir(parents=True, exist_ok=True)
    shutil.copy2(image_files / "db.sh", rootfs / "usr/local/lib/db.sh")
    psql, *libraries = psql_files()
    shutil.copy(psql, rootfs / "usr/local/bin/psql")
    for library in libraries:  # at the path ldd names (the loader's search path), content copied
        target = rootfs / library.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(library, target)
    shutil.copy2(image_files / "registry-app", rootfs / "www/cgi-bin/registry")
    (rootfs / "www/cgi-bin/registry").chmod(0o755)
    shutil.copy2(image_files / "index.html", rootfs / "catalog/index.html")
    partial = build / "rootfs.tar"
    with tarfile.open(partial, "w") as tar:
        tar.add(rootfs, arcname=".")
    partial.replace(tarball)
    shutil.rmtree(build, ignore_errors=True)
    return tarball, digest


def images_current(engine: EngineState, digest: str) -> bool:
    for image in IMAGES.values():
        info = api(engine, f"/images/{image}/json")
        if not info or ((info.get("Config") or {}).get("Labels") or {}).get(LABEL) != digest:
            return False
    return True


def ensure_images(engine: EngineState, tarball: Path, digest: str) -> bool:
    """Imports the three stand-in images into the engine unless they are there already; True when imported."""
    if images_current(engine, digest):
        return False
    for kind, image in IMAGES.items():
        docker(
            engine,
            "import",
            "-c",
            "ENV PATH=/usr/local/bin:/bin",
            "-c",
            f"LABEL {LABEL}={digest}",
            "-c",
            f'CMD ["{IMAGE_COMMANDS[kind]}"]',
            str(tarball),
            image,
            timeout=300,
        )
    return True
