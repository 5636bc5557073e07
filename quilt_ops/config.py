"""The ``quilt`` settings: defaults that match the real host, and their validation.

Settings live under the ``quilt`` key of Fabric's config (``fabric.yaml`` beside
the fabfile, ``~/.fabric.yaml``, ``-f FILE``, ``FABRIC_QUILT_*`` variables). The
`Settings` dataclass is the one place the defaults are declared: `defaults`
turns it into the config dict the task collection is configured with, and
`Settings.load` checks every value once, at the start of a task, so that a bad
value ends the run before any host is contacted.

No container name, path or port of the real host appears anywhere else in the
package: code asks `Settings` (for example ``settings.containers.registry``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from . import sudo_password
from .errors import ConfigError

HOST_KEY_POLICIES = ("reject", "accept-new")
#: The container roles, in the order ``docker rm -f`` names them on the operator's page.
ROLES = ("registry", "catalog", "nginx")
#: The probe whose answer is the registry's own health (and its downtime).
REGISTRY_PROBE = "registry"
#: Docker's container name rule (daemon/names: ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``).
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
#: ``quilt.docker`` value that finds out, on the host, whether sudo is needed.
DOCKER_AUTO = "auto"


@dataclass(frozen=True)
class Containers:
    """Which container plays which role on the host."""

    #: Holds the AWS key, runs create_admin, serves /healthcheck (through nginx).
    registry: str = "registry"
    #: The catalog web app.
    catalog: str = "catalog"
    #: nginx in the registry's network namespace (``--network container:<registry>``).
    nginx: str = "registry-nginx"

    @property
    def names(self) -> tuple[str, ...]:
        """All three, in the operator page's order (registry, catalog, nginx)."""
        return (self.registry, self.catalog, self.nginx)

    def role_of(self, name: str) -> str:
        return ROLES[self.names.index(name)]

    def as_dict(self) -> dict[str, str]:
        return {role: getattr(self, role) for role in ROLES}


def _default_probes() -> dict[str, str]:
    return {"registry": "http://localhost:5000/healthcheck", "catalog": "http://localhost:80/"}


@dataclass(frozen=True)
class Settings:
    """Validated ``quilt`` settings; the field defaults are the documented defaults."""

    #: Remote folder holding env/, start.sh, create_admin.sh: relative to the login
    #: directory (``~/`` allowed), or absolute; "" is the login directory itself.
    registry_dir: str = ""
    #: The registry's env file, relative to registry_dir.
    env_file: str = "env/registry"
    #: Recreates the containers (a path relative to registry_dir, run from there).
    start_script: str = "./start.sh"
    #: Creates the first admin (a path relative to registry_dir, run from there).
    create_admin_script: str = "./create_admin.sh"
    #: Which container is the registry, the catalog and nginx.
    containers: Containers = field(default_factory=Containers)
    #: HTTP checks made on the host with curl: name -> URL; the one named
    #: ``registry`` is the registry's own /healthcheck.
    probes: Mapping[str, str] = field(default_factory=_default_probes)
    #: How docker is run on the host: ``auto`` (docker if the login user can reach
    #: the socket, else sudo), or a command prefix used as given.
    docker: str = DOCKER_AUTO
    #: How root is had on the host when needed (docker in auto mode, files the
    #: login user cannot write); "" never uses sudo.
    sudo: str = "sudo -n"
    known_hosts: str = "~/.ssh/known_hosts"
    #: The IAM user each host was bound to at its first rotation ("" = ``quilt_known_users``
    #: beside known_hosts); see `quilt_ops.known_users`.
    known_users: str = ""
    #: The operator's record of rotations in progress ("" = ``quilt_rotations`` beside
    #: known_users); see `quilt_ops.rotation_record`.
    rotations: str = ""
    host_key_policy: str = "reject"
    #: Seconds to wait for the SSH connection (Fabric's own default waits forever).
    connect_timeout: float = 10
    #: Seconds for a restart: the start script, then health.
    restart_timeout: float = 120
    #: Seconds between health polls while waiting (at least 0.5: a Marketplace
    #: build may meter every /healthcheck).
    probe_interval: float = 0.5
    #: Hosts to run on when no -H is given.
    hosts: tuple[str, ...] = ()
    #: CloudFormation stacks whose EC2InstanceIp are the hosts, when neither -H nor hosts is given.
    stacks: tuple[str, ...] = ()
    #: The login user of a host found from a stack, unless ssh_config names one (the
    #: registry's AMI is Amazon Linux).
    stack_user: str = "ec2-user"
    #: Run every task on this machine, the registry host itself, without SSH (what ``--local`` sets).
    local: bool = False
    #: IAM user whose key the registry runs with ("" = the owner of the host's key).
    iam_user: str = ""
    audit_log: str = "~/.local/state/quilt-ops/audit.log"
    #: ``health`` also checks each host's AWS side (as with ``--aws``).
    aws_checks: bool = False
    #: Age at which the host's access key is a WARNING (CRITICAL at twice it); AWS Config's
    #: ``access-keys-rotated`` rule says 90.
    key_max_age_days: float = 90
    #: The exporter's ``/probe?target=`` allow-list: host strings or ssh_config aliases, matched exactly.
    exporter_targets: tuple[str, ...] = ()

    @classmethod
    def load(cls, config: Any) -> Settings:
        """Reads and checks ``config.quilt``; raises `ConfigError` naming the bad key."""
        raw = _section(config)
        return cls(
            registry_dir=_registry_dir(raw, "registry_dir"),
            env_file=_relative_path(raw, "env_file"),
            start_script=_script_path(raw, "start_script"),
            create_admin_script=_script_path(raw, "create_admin_script"),
            containers=_containers(raw, "containers"),
            probes=_probes(raw, "probes"),
            docker=_text(raw, "docker"),
            sudo=_sudo(raw, config),
            known_hosts=os.path.expanduser(_text(raw, "known_hosts")),
            known_users=os.path.expanduser(_text(raw, "known_users", allow_empty=True)),
            rotations=os.path.expanduser(_text(raw, "rotations", allow_empty=True)),
            host_key_policy=_choice(raw, "host_key_policy", HOST_KEY_POLICIES),
            connect_timeout=_seconds(raw, "connect_timeout"),
            restart_timeout=_seconds(raw, "restart_timeout"),
            probe_interval=_seconds(raw, "probe_interval", minimum=0.5),
            hosts=_names(raw, "hosts"),
            stacks=_names(raw, "stacks"),
            stack_user=_user_name(raw, "stack_user"),
            local=_flag(raw, "local"),
            iam_user=_text(raw, "iam_user", allow_empty=True),
            audit_log=os.path.expanduser(_text(raw, "audit_log")),
            aws_checks=_flag(raw, "aws_checks"),
            key_max_age_days=_days(raw, "key_max_age_days"),
            exporter_targets=_names(raw, "exporter_targets"),
        )

    @property
    def known_users_file(self) -> str:
        """Where host -> IAM user bindings are kept (see `quilt_ops.known_users`)."""
        from .known_users import default_path

        return self.known_users or default_path(self.known_hosts)

    @property
    def rotations_file(self) -> str:
        """Where the operator's record of rotations in progress is kept (see `quilt_ops.rotation_record`)."""
        from .rotation_record import default_path

        return self.rotations or default_path(self.known_users_file)

    @property
    def where(self) -> str:
        """The registry folder as said in messages."""
        return self.registry_dir or "the login directory"


def defaults() -> dict[str, Any]:
    """The defaults as plain config data (lists and dicts), for ``Collection.configure``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        value = getattr(Settings(), f.name)
        if isinstance(value, Containers):
            value = value.as_dict()
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


DEFAULTS = defaults()


def _section(config: Any) -> dict[str, Any]:
    try:
        raw = config["quilt"]
    except (KeyError, TypeError):
        raw = {}
    raw = _plain(raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"config key 'quilt' must be a mapping, not {type(raw).__name__}")
    merged = dict(DEFAULTS)
    merged.update(raw)
    return merged


def _sudo(raw: dict[str, Any], config: Any) -> str:
    """quilt.sudo; with ``-A`` for ``-n`` when sudo.password is given (`quilt_ops.sudo_password`)."""
    sudo = _text(raw, "sudo", allow_empty=True)
    return sudo_password.asking(sudo) if sudo_password.password(config) is not None else sudo


def _plain(value: Any) -> Any:
    """invoke's config proxies as plain dicts (they are mappings in all but type)."""
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        return {k: _plain(value[k]) for k in list(value.keys())}
    return value


def _bad(key: str, want: str, value: Any) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConfigError(f"config key 'quilt.{key}' must be {want}, not {shown}")


def _text(raw: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    value = raw[key]
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise _bad(key, "a non-empty string" if not allow_empty else "a string", value)
    if any(ch in value for ch in "\n\r\0"):
        raise _bad(key, "a single line", value)
    return value


def _user_name(raw: dict[str, Any], key: str) -> str:
    """A POSIX login name: it becomes the ``user@`` of an SSH target."""
    value = _text(raw, key)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", value):
        raise _bad(key, "a login user name", value)
    return value


def _registry_dir(raw: dict[str, Any], key: str) -> str:
    """ "" (login directory), a path below it (``~/`` is the login directory), or absolute."""
    value = _text(raw, key, allow_empty=True).strip()
    if value in ("~", "~/"):
        return ""
    if value.startswith("~"):
        if not value.startswith("~/"):
            raise _bad(key, "a path below the login directory (~/...) or an absolute path", value)
        value = value[2:]
    return value.rstrip("/") if value not in ("", "/") else value


def _relative_path(raw: dict[str, Any], key: str) -> str:
    value = _text(raw, key)
    if value.startswith(("/", "~")) or ".." in value.split("/") or value.endswith("/"):
        raise _bad(key, "a file path relative to quilt.registry_dir (no '..')", value)
    return value


def _script_path(raw: dict[str, Any], key: str) -> str:
    """A script in registry_dir, always run as ``./NAME``: a bare ``start.sh`` would be looked
    up in PATH when run, after the pre-check found the file in the folder."""
    value = _relative_path(raw, key)
    return value if value.startswith("./") else f"./{value}"


def _containers(raw: dict[str, Any], key: str) -> Containers:
    """The mapping form ``{registry: .., catalog: .., nginx: ..}``, or the list form
    ``[registry, catalog, nginx]`` (three names, in that order)."""
    value = raw[key]
    want = "a mapping {registry: NAME, catalog: NAME, nginx: NAME} (or a list of those three names, in that order)"
    if isinstance(value, (list, tuple)):
        if len(value) != len(ROLES):
            raise _bad(key, want, value)
        value = dict(zip(ROLES, value, strict=True))
    if not isinstance(value, dict) or set(value) != set(ROLES):
        raise _bad(key, want, value)
    for role in ROLES:
        name = value[role]
        if not isinstance(name, str) or not CONTAINER_NAME.fullmatch(name):
            raise _bad(
                f"{key}.{role}", "a Docker container name (letters, digits, _ . -, not starting with - . _)", name
            )
    if len(set(value.values())) != len(ROLES):
        raise _bad(key, "three different container names", value)
    return Containers(**value)


def _probes(raw: dict[str, Any], key: str) -> dict[str, str]:
    value = raw[key]
    if not isinstance(value, dict) or not value:
        raise _bad(key, "a mapping of name to http:// URL", value)
    for name, url in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise _bad(key, "a mapping whose names are words (letters, digits, _ . -)", name)
        parsed = urlparse(url) if isinstance(url, str) else None
        if (
            parsed is None
            or parsed.scheme not in ("http", "https")
            or not parsed.netloc
            or any(c.isspace() or c in "\0'\"\\" for c in url)
        ):
            raise _bad(f"{key}.{name}", "an http:// or https:// URL", url)
    return dict(value)


def _choice(raw: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = raw[key]
    if value not in choices:
        raise _bad(key, " or ".join(repr(c) for c in choices), value)
    return str(value)


def _seconds(raw: dict[str, Any], key: str, minimum: float = 0.0) -> float:
    value = raw[key]
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _bad(key, "a number of seconds", raw[key]) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (minimum <= value <= 86400 and value > 0):
        low = f"at least {minimum:g}" if minimum else "more than 0"
        raise _bad(key, f"a number of seconds, {low} and at most 86400", value)
    return float(value)


def _flag(raw: dict[str, Any], key: str) -> bool:
    """true or false (``FABRIC_QUILT_*`` variables give text: true/false, yes/no, 1/0)."""
    value = raw[key]
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0", ""):
        return value.strip().lower() in ("true", "yes", "1")
    if not isinstance(value, bool):
        raise _bad(key, "true or false", value)
    return value


def _days(raw: dict[str, Any], key: str) -> float:
    value = raw[key]
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _bad(key, "a number of days", raw[key]) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3650:
        raise _bad(key, "a number of days, more than 0 and at most 3650", value)
    return float(value)


def _names(raw: dict[str, Any], key: str) -> tuple[str, ...]:
    value = raw[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _bad(key, "a list of names", value)
    return tuple(value)
