"""Real PostgreSQL servers for the sandbox's RDS: one server per DB instance, on a loopback endpoint.

Every DB instance moto holds gets its own PostgreSQL server (Debian's ``postgresql``),
with its own data folder ``<host>/rds/<instance id>/`` and its own endpoint: a
loopback address of its own (``127.x.y.z``) on port 5432 as RDS gives, or, when
5432 cannot be bound there, a free port. The server runs as the system user
``postgres`` (PostgreSQL refuses root); it listens on that TCP endpoint, where
the master user logs in with its password (scram-sha-256, as a client of RDS
does), and on a Unix socket in its folder, where only the system user
``postgres`` gets in (peer authentication): the sandbox's own way in, to load
dumps, change the master password and read tables.

Used by moto's server (``files/moto_server_sandbox.py``: the instances' life
cycle) and by the sandbox (``Host.users``, the ``db-down`` fault). Standard
library only. Nothing here prints or logs a password: SQL that holds one goes
to psql on its standard input, never on a command line.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: The system user the servers run as (made by Debian's postgresql package).
SERVER_USER = "postgres"
#: The port RDS gives a PostgreSQL instance.
RDS_PORT = 5432
START_TIMEOUT = 30
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


class PgError(Exception):
    """A server or a client program failed (the message names what, never a password)."""


def bindir() -> Path:
    """The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/<version>/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PgError("PostgreSQL is not installed (Debian package postgresql)")


def program(name: str) -> str:
    return str(bindir() / name)


@dataclass
class Instance:
    """One server: where its files are and where it answers (``meta.json`` in its folder)."""

    folder: str
    address: str
    port: int
    master_user: str
    db_name: str

    @property
    def data(self) -> Path:
        return Path(self.folder) / "data"

    @property
    def socket_dir(self) -> Path:
        return Path(self.folder) / "sock"

    @property
    def log(self) -> Path:
        return Path(self.folder) / "server.log"

    @property
    def uri_host(self) -> str:
        return f"{self.address}:{self.port}"

    def save(self) -> None:
        path = Path(self.folder) / "meta.json"
        tmp = path.with_name(".meta.json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, folder: Path) -> Instance | None:
        try:
            return cls(**json.loads((folder / "meta.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def instances(root: Path) -> list[Instance]:
    """Every instance folder below ``root`` (a host's ``rds`` folder)."""
    if not root.is_dir():
        return []
    return [i for i in (Instance.load(p) for p in sorted(root.iterdir()) if p.is_dir()) if i]


def find(root: Path, address: str, port: int) -> Instance | None:
    """The instance answering at ``address:port``, if the sandbox made one."""
    for instance in instances(root):
        if instance.address == address and instance.port == port:
            return instance
    return None


# ----------------------------------------------------------------------------- endpoints


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def choose_endpoint(taken: set[tuple[str, int]] = frozenset()) -> tuple[str, int]:  # type: ignore[assignment]
    """A loopback address of its own, on 5432 when that can be bound there (else a free port)."""
    rng = random.SystemRandom()
    for _ in range(50):
        address = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        if (address, RDS_PORT) not in taken and _bindable(address, RDS_PORT):
            return address, RDS_PORT
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1", s.getsockname()[1]


# ----------------------------------------------------------------------------- running programs


def _as_server_user(
    argv: list[str], input: bytes | None = None, timeout: float = 60, cwd: str = "/"
) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PGCONNECT_TIMEOUT": "10"}
    try:
        return subprocess.run(
            [RUNUSER, "-u", SERVER_USER, "--", *argv],
            input=input,
            capture_output=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise PgError(f"{os.path.basename(argv[0])} did not finish within {timeout:.0f}s") from e


def _check(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        err = (result.stderr or b"").decode(errors="replace").strip().splitlines()
        raise PgError(f"{what} failed ({result.returncode}): {' / '.join(err[-3:])}")
    return result


def quote_literal(value: str) -> str:
    """An SQL string literal (standard_conforming_strings is on: only quotes are doubled)."""
    return "'" + value.replace("'", "''") + "'"


def quote_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def sql(instance: Instance, text: str, db: str = "postgres", timeout: float = 30) -> str:
    """Runs SQL as the superuser over the instance's socket (SQL on stdin); the unaligned output."""
    argv = [
        program("psql"),
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(instance.socket_dir),
        "-p",
        str(instance.port),
        "-U",
        SERVER_USER,
        "-d",
        db,
    ]
    result = _check(_as_server_user(argv, input=text.encode(), timeout=timeout), "psql")
    return result.stdout.decode(errors="replace")


# ----------------------------------------------------------------------------- servers


def _own(path: Path, mode: int) -> None:
    user = pwd.getpwnam(SERVER_USER)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)


def create(
    folder: Path,
    address: str,
    port: int,
    master_user: str,
    master_password: str,
    db_name: str,
    dump: Path | None = None,
) -> Instance:
    """Makes and starts a new server with the master user and its database (loaded from ``dump``)."""
    if folder.exists():
        stop(folder)
        shutil.rmtree(folder)
    _own(folder, 0o700)
    instance = Instance(str(folder), address, port, master_user, db_name)
    _own(instance.socket_dir, 0o700)
    _check(
        _as_server_user(
            [
                program("initdb"),
                "-D",
                str(instance.data),
                "-N",
                "-U",
                SERVER_USER,
                "-A",
                "peer",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
            timeout=120,
        ),
        "initdb",
    )
    conf = {
        "listen_addresses": f"'{address}'",
        "port": str(port),
        "unix_socket_directories": f"'{instance.socket_dir}'",
        "max_connections": "30",
        "shared_buffers": "16MB",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "password_encryption": "'scram-sha-256'",
        "log_connections": "off",
        "dynamic_shared_memory_type": "posix",
    }
    with open(instance.data / "postgresql.conf", "a") as f:
        f.write("\n# quilt-ops sandbox\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
    (instance.data / "pg_hba.conf").write_text(
        "# quilt-ops sandbox: the sandbox over the socket as postgres; clients over TCP with a password.\n"
        f"local all {SERVER_USER} peer\n"
        "host all all 127.0.0.0/8 scram-sha-256\n"
    )
    instance.save()
    start(folder)
    role = quote_ident(master_user)
    sql(
        instance,
        f"CREATE ROLE {role} LOGIN CREATEDB CREATEROLE PASSWORD {quote_literal(master_password)};\n"
        f"CREATE DATABASE {quote_ident(db_name)} OWNER {role};\n",
    )
    if dump is not None:
        restore(instance, dump)
    return instance


def running(folder: Path) -> bool:
    pid = server_pid(folder)
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def server_pid(folder: Path) -> int:
    try:
        return int((folder / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return 0


def start(folder: Path) -> None:
    """Starts the server (waits until it accepts connections; START_TIMEOUT at most)."""
    instance = Instance.load(folder)
    if instance is None:
        raise PgError(f"no database server in {folder}")
    if running(folder):
        return
    _check(
        _as_server_user(
            [
                program("pg_ctl"),
                "-D",
                str(instance.data),
                "-l",
                str(instance.log),
                "-w",
                "-t",
                str(START_TIMEOUT),
                "start",
            ],
            timeout=START_TIMEOUT + 10,
        ),
        "pg_ctl start",
    )


def stop(folder: Path, timeout: float = 20) -> None:
    """Stops the server (fast shutdown; killed when it does not stop in time)."""
    pid = server_pid(folder)
    if not pid or not running(folder):
        return
    try:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def remove(folder: Path) -> None:
    stop(folder)
    shutil.rmtree(folder, ignore_errors=True)


def dump(instance: Instance, path: Path) -> None:
    """pg_dump of the instance's database (custom format) into ``path`` (root's, 0600)."""
    result = _check(
        _as_server_user(
            [
                program("pg_dump"),
                "-h",
                str(instance.socket_dir),
                "-p",
                str(instance.port),
                "-U",
                SERVER_USER,
                "-Fc",
                instance.db_name,
            ],
            timeout=300,
        ),
        "pg_dump",
    )
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(result.stdout)
    tmp.replace(path)


def restore(instance: Instance, path: Path) -> None:
    """Loads a dump into the instance's (empty) database, owners kept."""
    _check(
        _as_server_user(
            [
                program("pg_restore"),
                "-h",
                str(instance.socket_dir),
                "-p",
                str(instance.port),
                "-U",
                SERVER_USER,
                "-d",
                instance.db_name,
                "--exit-on-error",
            ],
            input=path.read_bytes(),
            timeout=300,
        ),
        "pg_restore",
    )


def set_password(instance: Instance, password: str) -> None:
    """ALTER ROLE of the master user (the SQL goes on psql's stdin)."""
    sql(instance, f"ALTER ROLE {quote_ident(instance.master_user)} PASSWORD {quote_literal(password)};\n")
