"""The registry's Docker containers: one ``docker inspect`` for all, and their verdicts.

``docker inspect`` output holds ``Config.Env``, and so every secret of the env
file. The template below asks Docker for the fields the verdict needs and
nothing else, so those values never leave the host. The one value of the
environment quilt-ops looks at, the access key ID in effect, is cut out on the
host (`key_in_effect_command`); the rest of the environment never leaves it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .checks import Check, Kind
from .config import Containers
from .masking import printable
from .shell import q
from .status import ExitStatus

#: ``docker inspect --format`` template: one JSON object a container, shaped like
#: (a subset of) ``docker inspect``'s own document, without ``Config.Env``.
INSPECT_TEMPLATE = (
    '{"Name":{{json .Name}},"State":{{json .State}},"RestartCount":{{json .RestartCount}},'
    '"Created":{{json .Created}},"Image":{{json .Image}},"Config":{"Image":{{json .Config.Image}}}}'
)
#: What an AWS access key ID looks like (used to check values read back from the host).
KEY_ID = re.compile(r"[A-Z0-9]{16,128}")


#: The docker CLI's host side: ``docker_inspect``, ``docker_remove`` (``sh/docker.sh``, loaded by
#: `quilt_ops.docker_access.ScriptDocker.prepare`) and, only when asked for, ``docker_key_in_effect``
#: (``sh/docker_key.sh``).
SCRIPT = "docker.sh"
KEY_SCRIPT = "docker_key.sh"


def inspect_command(names: Iterable[str]) -> str:
    """``say inspect`` and every container inspected in one docker call; docker's errors go
    to stdout too.

    Runs after a `quilt_ops.shell.Script.docker` prologue (``qdocker``) and ``sh/docker.sh``.
    """
    quoted = " ".join(q(n) for n in names)
    return f"docker_inspect {q(INSPECT_TEMPLATE)} {quoted}"


def remove_command(names: Iterable[str]) -> str:
    """``docker rm -f`` of the containers; a container already gone is not an error."""
    return "docker_remove " + " ".join(q(n) for n in names)


def key_in_effect_command(container: str, variable: str) -> str:
    """``say key-in-effect`` and the value of one variable in the container's environment, as
    the process sees it (Docker keeps the last of duplicate entries), or nothing.

    Only that value leaves the host; it must not be a secret (key IDs only).
    """
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", variable):
        raise ValueError(f"not a variable name: {variable!r}")
    return f"docker_key_in_effect {q(container)} {q(variable)}"


def parse_key_in_effect(text: str) -> str | None:
    """The key ID a container runs with, checked to look like one (None if absent or odd)."""
    value = text.strip()
    return value if KEY_ID.fullmatch(value) else None


@dataclass
class InspectResult:
    """Parsed ``docker inspect`` output: documents by name (a missing container has none)."""

    documents: dict[str, dict[str, Any]]
    #: Set when docker itself could not answer (missing, not permitted, engine down).
    problem: str | None = None


def parse_inspect(output: str) -> InspectResult:
    """Reads `inspect_command` output (JSON lines mixed with docker's error lines).

    Also accepts a plain ``docker inspect`` JSON array, as in the test fixtures.
    """
    documents: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    text = output.strip()
    if text.startswith("["):  # plain `docker inspect`: one array, then any error lines
        try:
            docs, end = json.JSONDecoder().raw_decode(text)
        except ValueError:
            docs, end = [], 0
        for doc in docs if isinstance(docs, list) else []:
            if isinstance(doc, dict):
                documents[str(doc.get("Name", "")).lstrip("/")] = doc
        text = text[end:]
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                errors.append(line)
                continue
            if isinstance(doc, dict):
                documents[str(doc.get("Name", "")).lstrip("/")] = doc
        elif line and line != "[]":
            errors.append(line)
    return InspectResult(documents, docker_problem(errors))


def docker_problem(error_lines: list[str]) -> str | None:
    """Why docker could not answer at all, from its error lines (None if it could)."""
    text = "\n".join(error_lines).lower()
    if not text:
        return None
    if "permission denied" in text:
        return (
            "permission denied on the Docker socket: add the login user to the docker group, "
            "or allow it passwordless sudo (or give its password: sudo.password)"
        )
    if "command not found" in text or ("not found" in text and "docker:" in text):
        return "docker is not installed on the host"
    if "a password is required" in text or "sudo:" in text:
        return "sudo refused to run docker (passwordless sudo is needed, or its password: sudo.password)"
    if "cannot connect to the docker daemon" in text or "is the docker daemon running" in text:
        return "the Docker engine is not running"
    lines = [
        line for line in error_lines if "no such object" not in line.lower() and "no such container" not in line.lower()
    ]
    return f"docker inspect failed: {printable(lines[0], 200)}" if lines else None


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    value = value.rstrip("Z")
    if "." in value:  # Docker gives nanoseconds; Python takes microseconds.
        head, frac = value.split(".", 1)
        frac = "".join(ch for ch in frac if ch.isdigit())[:6]
        value = f"{head}.{frac}"
    try:
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """Compact human duration: 45s, 3m12s, 5h02m, 12d03h."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def verdict(name: str, role: str, doc: dict[str, Any] | None, now: datetime) -> Check:
    """The verdict on one container from its ``docker inspect`` document (None = missing)."""
    base = {"role": role}
    if doc is None:
        return Check(
            Kind.CONTAINER, name, ExitStatus.CRITICAL, "missing (no such container)", {**base, "exists": False}
        )
    state = doc.get("State") or {}
    status = state.get("Status") or ("running" if state.get("Running") else "unknown")
    health = (state.get("Health") or {}).get("Status")
    started = _parse_time(state.get("StartedAt"))
    finished = _parse_time(state.get("FinishedAt"))
    details: dict[str, Any] = {
        **base,
        "exists": True,
        "state": status,
        "health": health,
        "image": (doc.get("Config") or {}).get("Image"),
        "restart_count": doc.get("RestartCount", 0),
        "started_at": state.get("StartedAt"),
        "uptime_seconds": int((now - started).total_seconds()) if started and status == "running" else None,
    }

    def check(status_: ExitStatus, summary: str) -> Check:
        return Check(Kind.CONTAINER, name, status_, summary, details)

    if status == "running":
        text = (
            f"running {duration(details['uptime_seconds'] or 0)}, {details['restart_count']} restarts, "
            f"{details['image']}"
        )
        if health is None:
            return check(ExitStatus.OK, text)
        if health == "healthy":
            return check(ExitStatus.OK, f"{text}, healthy")
        if health == "starting":
            return check(ExitStatus.WARNING, f"{text}, health check starting")
        return check(ExitStatus.CRITICAL, f"{text}, {health}")
    if status in ("exited", "dead"):
        code = state.get("ExitCode")
        text = f"{status} (exit code {code})"
        if state.get("OOMKilled"):
            text += ", killed for lack of memory"
        if finished:
            text += f" {duration((now - finished).total_seconds())} ago"
        details["exit_code"] = code
        return check(ExitStatus.CRITICAL, text)
    if status == "restarting":
        return check(ExitStatus.CRITICAL, "restarting (crash loop)")
    if status == "paused":
        return check(ExitStatus.CRITICAL, "paused")
    return check(ExitStatus.CRITICAL, f"{status} (not running)")


def verdicts(result: InspectResult, containers: Containers, now: datetime | None = None) -> list[Check]:
    """Verdicts for the three containers, in the configured order."""
    now = now or datetime.now(timezone.utc)
    out = []
    for name in containers.names:
        role = containers.role_of(name)
        if result.problem:
            out.append(Check(Kind.CONTAINER, name, ExitStatus.UNKNOWN, result.problem, {"role": role}))
        else:
            out.append(verdict(name, role, result.documents.get(name), now))
    return out
