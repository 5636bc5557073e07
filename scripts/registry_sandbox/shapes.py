"""Host shapes: what a sandbox host looks like (login user, folder, names, ports, access).

The default shape is the real host's documented shape (see the registry-host notes):
``ec2-user`` logs in, is not in the ``docker`` group and has passwordless sudo,
``start.sh`` runs ``sudo docker`` and a migration step before the registry.
Other shapes exist so that the tool is proven not to depend on any one name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

ROLES = ("registry", "catalog", "nginx")
PORT_ROLES = ("registry", "catalog", "uwsgi")
DOCKER_ACCESS = ("sudo", "group", "none")
ENV_OWNERS = ("user", "root")
CREATE_ADMIN_VERSIONS = ("2018", "marketplace")

#: Fields that can change on a running host without rebuilding it.
IN_PLACE = frozenset(
    {
        "docker_access",
        "sudo",
        "sudo_password",
        "env_owner",
        "env_mode",
        "migration_seconds",
        "create_admin_version",
        "aliases",
        "hidden_tools",
    }
)

_NAME = re.compile(r"[a-z][a-z0-9]{0,11}")
# No dot: sudo silently skips files in /etc/sudoers.d whose name holds one.
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_CONTAINER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_STACK = re.compile(r"[a-zA-Z][-a-zA-Z0-9]{0,127}")


class FrozenMap(Mapping):
    """A read-only, hashable mapping (so that a frozen HostShape stays hashable)."""

    def __init__(self, data: Mapping | None = None, **kw: Any) -> None:
        self._data = dict(data or {}, **kw)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __repr__(self) -> str:
        return repr(self._data)


def _containers() -> FrozenMap:
    return FrozenMap(registry="registry", catalog="catalog", nginx="registry-nginx")


def _ports() -> FrozenMap:
    return FrozenMap(registry=5000, catalog=80, uwsgi=9000)


@dataclass(frozen=True)
class HostShape:
    """How one sandbox host is laid out. Frozen: a changed shape is a new value (``replace``).

    ``ports`` are preferred ports: taken when free on 127.0.0.1, otherwise a free
    high port is used; 0 means "any free high port".
    ``docker_access``: "sudo" (not in the docker group, passwordless sudo),
    "group" (in the docker group; sudo only if ``sudo``), "none" (neither, whatever
    ``sudo`` says). ``sudo=False`` with "sudo" access is contradictory and refused.
    ``sudo_password``: the login user's sudo asks for the user's password (kept by the
    sandbox, `Host.sudo_password`) instead of being passwordless.
    """

    name: str = "main"
    login_user: str = "ec2-user"
    registry_dir: str = ""
    containers: Mapping[str, str] = field(default_factory=_containers)
    ports: Mapping[str, int] = field(default_factory=_ports)
    docker_access: str = "sudo"
    sudo: bool = True
    #: The login user's sudo asks for its password (`Host.sudo_password`), instead of NOPASSWD.
    sudo_password: bool = False
    env_owner: str = "user"
    env_mode: int = 0o600
    migration_seconds: float = 1.0
    create_admin_version: str = "2018"
    stack: str = "quilt-registry"
    aliases: int = 0
    #: Programs the login user's sessions cannot find (PATH without them): a host missing curl, flock...
    hidden_tools: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Plain dicts given by callers become read-only mappings.
        object.__setattr__(self, "containers", FrozenMap(self.containers))
        object.__setattr__(self, "ports", FrozenMap({k: int(v or 0) for k, v in self.ports.items()}))
        object.__setattr__(self, "create_admin_version", str(self.create_admin_version))
        object.__setattr__(self, "hidden_tools", tuple(sorted(self.hidden_tools)))
        problems = []
        if not _NAME.fullmatch(self.name):
            problems.append(f"name {self.name!r} must match [a-z][a-z0-9]{{0,11}}")
        if not _USER.fullmatch(self.login_user) or self.login_user == "root":
            problems.append(f"login user {self.login_user!r} is not a usable user name")
        parts = self.registry_dir.split("/") if self.registry_dir else []
        if self.registry_dir.startswith("/") or any(p in ("", ".", "..") for p in parts):
            problems.append(f"registry_dir {self.registry_dir!r} must be a plain relative path")
        if set(self.containers) != set(ROLES):
            problems.append(f"containers must name exactly {', '.join(ROLES)}")
        elif not all(_CONTAINER.fullmatch(n) for n in self.containers.values()) or len(
            set(self.containers.values())
        ) != len(ROLES):
            problems.append(f"container names {dict(self.containers)} must be distinct Docker names")
        if set(self.ports) != set(PORT_ROLES) or not all(0 <= p < 65536 for p in self.ports.values()):
            problems.append(f"ports must give {', '.join(PORT_ROLES)} (0 = any free port)")
        if self.docker_access not in DOCKER_ACCESS:
            problems.append(f"docker_access must be one of {', '.join(DOCKER_ACCESS)}")
        if self.docker_access == "sudo" and not self.sudo:
            problems.append("docker_access 'sudo' needs sudo=True")
        if self.sudo_password and not self.has_sudo:
            problems.append("sudo_password needs sudo (sudo=True, docker_access not 'none')")
        if self.env_owner not in ENV_OWNERS:
            problems.append(f"env_owner must be one of {', '.join(ENV_OWNERS)}")
        if not 0 <= self.env_mode <= 0o777:
            problems.append(f"env_mode {self.env_mode:o} is not a file mode")
        if self.migration_seconds < 0:
            problems.append("migration_seconds must be >= 0")
        if self.create_admin_version not in CREATE_ADMIN_VERSIONS:
            problems.append(f"create_admin_version must be one of {', '.join(CREATE_ADMIN_VERSIONS)}")
        if not _STACK.fullmatch(self.stack):
            problems.append(f"stack name {self.stack!r} is not a CloudFormation stack name")
        if not all(re.fullmatch(r"[a-z][a-z0-9_.+-]*", tool) for tool in self.hidden_tools):
            problems.append(f"hidden_tools {self.hidden_tools!r} must be program names")
        if not 0 <= self.aliases <= 50:
            problems.append("aliases must be between 0 and 50")
        if problems:
            raise ValueError("; ".join(problems))

    # -- derived facts ---------------------------------------------------------------------

    @property
    def has_sudo(self) -> bool:
        """Whether the login user gets sudo (passwordless unless ``sudo_password``)."""
        return self.docker_access != "none" and self.sudo

    @property
    def in_docker_group(self) -> bool:
        return self.docker_access == "group"

    @property
    def docker_command(self) -> str:
        """How start.sh and create_admin.sh call docker on this host."""
        return "sudo docker" if self.docker_access == "sudo" else "docker"

    @property
    def alias(self) -> str:
        """The ssh alias: ``sandbox`` for the main host, its name for any other."""
        return "sandbox" if self.name == "main" else self.name

    def alias_names(self) -> list[str]:
        """The ssh aliases, one per sshd: the host's own, then ``<alias>1..N``."""
        return [self.alias] + [f"{self.alias}{i}" for i in range(1, self.aliases + 1)]

    def same_build(self, other: HostShape) -> bool:
        """True when ``other`` differs from this shape only in fields that change in place."""
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.name not in IN_PLACE)

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["containers"] = dict(self.containers)
        out["ports"] = dict(self.ports)
        out["hidden_tools"] = list(self.hidden_tools)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostShape:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_changes(self, **changes: Any) -> HostShape:
        return replace(self, **changes)


MAIN = HostShape()

#: Two test sessions on one machine (QUILT_OPS_SANDBOX_WORKER_BASE, see tests/conftest.py) get
#: NAMES hosts of their own: the base number ends the host's, user's and stack's names.
_SESSION = os.environ.get("QUILT_OPS_SANDBOX_WORKER_BASE", "0").strip().lstrip("0")

NAMES = HostShape(
    name=f"names{_SESSION}",
    login_user=f"registry-admin{_SESSION}",
    registry_dir="deploy/quilt",
    containers={"registry": "qr-app", "catalog": "qr-web", "nginx": "qr-proxy"},
    stack=f"quilt-names{_SESSION}",
)


def worker_shape(n: int) -> HostShape:
    """The host of pytest-xdist worker ``n`` (>= 1): the realistic shape under other names, any free ports."""
    if n < 1:
        raise ValueError("worker numbers start at 1 (worker 0 uses MAIN)")
    return HostShape(
        name=f"w{n}",
        login_user=f"qo-w{n}",
        registry_dir="quilt",
        containers={"registry": f"w{n}-registry", "catalog": f"w{n}-catalog", "nginx": f"w{n}-nginx"},
        ports={"registry": 0, "catalog": 0, "uwsgi": 0},
        stack=f"quilt-w{n}",
    )
