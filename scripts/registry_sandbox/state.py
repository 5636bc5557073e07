"""What the sandbox remembers between runs: one JSON file per host, one for the sandbox.

Each host's state sits in ``<root>/hosts/<name>/state.json``, so that two processes
(two pytest-xdist workers) bringing up two hosts never write the same file. Files
are written atomically (temporary file, then rename) and are root-only: they hold
the operator's AWS secret and the env file's secrets.

``Layout`` says where a host's files are; it is derived from the root folder and
the shape only, so that ``down`` can find a host's parts even when its state file
is lost.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .shapes import HostShape

STATE_VERSION = 1


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class EngineState:
    """The host's own dockerd. ``socket`` is THE fact every docker client of the host uses."""

    socket: str
    pid: int | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"


@dataclass
class SshdState:
    """One sshd of the host (index 0 answers the host's alias, index i the alias ``<alias>i``)."""

    port: int
    pid: int | None = None
    #: The DOCKER_HOST its config sets; an sshd started for another engine is restarted.
    docker_host: str = ""
    #: The PATH its config sets ("" = sshd's own); changed when the shape hides tools.
    path: str = ""


@dataclass
class AwsState:
    """The host's moto server, the delay proxy in front of it, and what was provisioned in it."""

    moto_port: int
    proxy_port: int
    moto_pid: int | None = None
    proxy_pid: int | None = None
    region: str = "us-east-1"
    stack: str = ""
    iam_user: str = ""
    bucket: str = ""
    operator_key_id: str = ""
    operator_secret: str = ""
    #: The stack's RDS instance (its physical ID), and its endpoint (a real PostgreSQL server).
    db_instance: str = ""
    db_address: str = ""
    db_port: int = 0
    #: ``aws.AWS_VERSION`` of the sandbox that started it (1: before the database).
    version: int = 1

    @property
    def provisioned(self) -> bool:
        return bool(self.operator_key_id)

    @property
    def endpoint(self) -> str:
        """The endpoint the tool uses (through the proxy, with IAM's delays and faults)."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def moto_endpoint(self) -> str:
        """moto itself: for the sandbox's own calls and test assertions, never faulted."""
        return f"http://127.0.0.1:{self.moto_port}"


@dataclass
class HostState:
    """Everything the sandbox knows about one host."""

    name: str
    shape: HostShape
    version: int = STATE_VERSION
    #: The login user when the sandbox created it ("" while not yet created).
    created_user: str = ""
    engine: EngineState | None = None
    #: Digest of the stand-in images imported into the host's engine.
    images: str = ""
    aws: AwsState | None = None
    #: role -> port actually used (registry probe, catalog, uwsgi).
    ports: dict[str, int] = field(default_factory=dict)
    sshd: list[SshdState] = field(default_factory=list)
    #: The env file's generated secrets (so that reset() can put the file back as it was).
    secrets: dict[str, str] = field(default_factory=dict)
    #: Ports chosen but not yet in use (so that a host coming up at the same time skips them).
    reserved_ports: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = self.shape.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostState:
        data = dict(data)
        data["shape"] = HostShape.from_dict(data["shape"])
        if data.get("engine"):
            data["engine"] = EngineState(**data["engine"])
        if data.get("aws"):
            data["aws"] = AwsState(**data["aws"])
        data["sshd"] = [SshdState(**s) for s in data.get("sshd", [])]
        return cls(**data)

    def claimed_ports(self) -> set[int]:
        """Every port this host holds or has chosen (so that another host does not pick it)."""
        ports = set(self.ports.values()) | {s.port for s in self.sshd} | set(self.reserved_ports)
        if self.aws:
            ports |= {self.aws.moto_port, self.aws.proxy_port}
        return ports


@dataclass
class SandboxState:
    """Sandbox-wide facts, shared by every host (kept under the sandbox lock)."""

    version: int = STATE_VERSION
    #: The stand-in images' root file system, built once, imported into every host's engine.
    rootfs: str = ""
    rootfs_digest: str = ""
    packages_ok: bool = False

    @classmethod
    def load(cls, path: Path) -> SandboxState:
        data = _read_json(path) or {}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        _write_json(path, asdict(self))


class Layout:
    """Where a host's files are: a pure function of the sandbox root, the host name and its shape."""

    def __init__(self, root: Path, shape: HostShape) -> None:
        self.root = root
        self.shape = shape
        self.dir = root / "hosts" / shape.name
        self.state_file = self.dir / "state.json"
        self.lock = self.dir / ".lock"
        self.docker = self.dir / "docker"
        self.default_socket = self.docker / "docker.sock"
        self.aws = self.dir / "aws"
        self.aws_faults = self.aws / "faults.json"
        self.ssh = self.dir / "ssh"
        self.homes = self.dir / "home"
        self.home = self.homes / shape.login_user
        self.registry_dir = self.home / shape.registry_dir if shape.registry_dir else self.home
        self.env_dir = self.registry_dir / "env"
        self.env_file = self.env_dir / "registry"
        self.catalog_env = self.env_dir / "catalog"
        self.faults = self.dir / "faults"
        self.db = self.dir / "db"
        #: The RDS instances' PostgreSQL servers (one folder each) and their dumps.
        self.rds = self.dir / "rds"
        #: Shape settings the stand-in programs read (mounted read-only at /sandbox).
        self.settings = self.dir / "settings"
        self.ssh_config = self.dir / "ssh_config"
        self.known_hosts = self.dir / "known_hosts"
        #: quilt-ops' default quilt.known_users (beside known_hosts): the bindings of this host's AWS.
        self.known_users = self.dir / "quilt_known_users"
        #: quilt-ops' default quilt.rotations (beside known_users): the rotations in progress.
        self.rotations = self.dir / "quilt_rotations"
        self.fabric_config = self.dir / "fabric.yaml"
        self.audit_log = self.dir / "audit.log"


def load_host(path: Path) -> HostState | None:
    """The host state in ``path``, or None when missing or unreadable."""
    data = _read_json(path)
    if not data:
        return None
    try:
        return HostState.from_dict(data)
    except (TypeError, KeyError, ValueError):
        return None


def save_host(path: Path, state: HostState) -> None:
    _write_json(path, state.to_dict())
