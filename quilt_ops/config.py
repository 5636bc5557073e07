"""The ``quilt`` settings: defaults that match the real host, and their validation.

Settings live under the ``quilt`` key of Fabric's config (``fabric.yaml`` beside
the fabfile, ``~/.fabric.yaml``, ``-f FILE``, ``FABRIC_QUILT_*`` variables). The
defaults are declared on the task collection so that every one of those layers
can override them. `Settings.load` checks types once, at the start of a task, so
that a bad value ends the run before any host is contacted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlparse

from .errors import ConfigError

HOST_KEY_POLICIES = ("reject", "accept-new")

#: The ``quilt`` config defaults. These names are the interface: keep them.
DEFAULTS: dict[str, Any] = {
    # Remote folder holding env/, start.sh, create_admin.sh; "" is the login directory.
    "registry_dir": "",
    "env_file": "env/registry",
    "start_script": "./start.sh",
    "create_admin_script": "./create_admin.sh",
    "containers": ["registry", "catalog", "registry-nginx"],
    "probes": {
        "registry": "http://localhost:5000/healthcheck",
        "catalog": "http://localhost:80/",
    },
    "known_hosts": "~/.ssh/known_hosts",
    "host_key_policy": "reject",
    "connect_timeout": 10,
    "restart_timeout": 120,
    # Hosts to run on when no -H is given.
    "hosts": [],
    # CloudFormation stacks whose EC2InstanceIp are hosts to run on (when no -H is given).
    "stacks": [],
    # IAM user whose key the registry runs with ("" = find it from the host's key).
    "iam_user": "",
    "audit_log": "~/.local/state/quilt-ops/audit.log",
}


@dataclass(frozen=True)
class Settings:
    """Validated ``quilt`` settings."""

    registry_dir: str = ""
    env_file: str = "env/registry"
    start_script: str = "./start.sh"
    create_admin_script: str = "./create_admin.sh"
    containers: tuple[str, ...] = ("registry", "catalog", "registry-nginx")
    probes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULTS["probes"]))
    known_hosts: str = "~/.ssh/known_hosts"
    host_key_policy: str = "reject"
    connect_timeout: float = 10
    restart_timeout: float = 120
    hosts: tuple[str, ...] = ()
    stacks: tuple[str, ...] = ()
    iam_user: str = ""
    audit_log: str = "~/.local/state/quilt-ops/audit.log"

    @classmethod
    def load(cls, config: Any) -> "Settings":
        """Reads and checks ``config.quilt``; raises `ConfigError` naming the bad key."""
        raw = _section(config)
        return cls(
            registry_dir=_text(raw, "registry_dir", allow_empty=True),
            env_file=_path(raw, "env_file"),
            start_script=_text(raw, "start_script"),
            create_admin_script=_text(raw, "create_admin_script"),
            containers=_names(raw, "containers"),
            probes=_probes(raw, "probes"),
            known_hosts=os.path.expanduser(_text(raw, "known_hosts")),
            host_key_policy=_choice(raw, "host_key_policy", HOST_KEY_POLICIES),
            connect_timeout=_seconds(raw, "connect_timeout"),
            restart_timeout=_seconds(raw, "restart_timeout"),
            hosts=_hosts(raw, "hosts"),
            stacks=_hosts(raw, "stacks"),
            iam_user=_text(raw, "iam_user", allow_empty=True),
            audit_log=os.path.expanduser(_text(raw, "audit_log")),
        )


def _section(config: Any) -> dict:
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


def _plain(value: Any) -> Any:
    """invoke's config proxies as plain dicts (they are mappings in all but type)."""
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        return {k: _plain(value[k]) for k in value.keys()}
    return value


def _bad(key: str, want: str, value: Any) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConfigError(f"config key 'quilt.{key}' must be {want}, not {shown}")


def _text(raw: dict, key: str, allow_empty: bool = False) -> str:
    value = raw[key]
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise _bad(key, "a non-empty string" if not allow_empty else "a string", value)
    if "\n" in value or "\0" in value:
        raise _bad(key, "a single line", value)
    return value


def _path(raw: dict, key: str) -> str:
    value = _text(raw, key)
    if value.startswith("/") or ".." in value.split("/"):
        raise _bad(key, "a path relative to quilt.registry_dir", value)
    return value


def _names(raw: dict, key: str) -> tuple[str, ...]:
    value = raw[key]
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, str) and v and v.replace("-", "").replace("_", "").replace(".", "").isalnum()
                       for v in value)):
        raise _bad(key, "a non-empty list of container names", value)
    return tuple(value)


def _probes(raw: dict, key: str) -> dict[str, str]:
    value = raw[key]
    if not isinstance(value, dict):
        raise _bad(key, "a mapping of name to http:// URL", value)
    for name, url in value.items():
        parsed = urlparse(url) if isinstance(url, str) else None
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise _bad(key, "a mapping whose names are words (letters, digits, _ . -)", name)
        if (parsed is None or parsed.scheme not in ("http", "https")
                or not parsed.netloc or any(c.isspace() for c in url)):
            raise _bad(f"{key}.{name}", "an http:// or https:// URL", url)
    return dict(value)


def _choice(raw: dict, key: str, choices: tuple[str, ...]) -> str:
    value = raw[key]
    if value not in choices:
        raise _bad(key, " or ".join(repr(c) for c in choices), value)
    return value


def _seconds(raw: dict, key: str) -> float:
    value = raw[key]
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _bad(key, "a number of seconds", raw[key]) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86400:
        raise _bad(key, "a number of seconds between 0 and 86400", value)
    return float(value)


def _hosts(raw: dict, key: str) -> tuple[str, ...]:
    value = raw[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise _bad(key, "a list of names", value)
    return tuple(value)
