"""The registry's Docker containers: one ``docker inspect`` for all, and their verdicts.

``docker inspect`` output holds ``Config.Env``, and so every secret of the env
file. The template below asks Docker for the fields the verdict needs and
nothing else, so those values never leave the host.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from .status import ExitStatus

#: ``docker inspect --format`` template: one JSON object a container, shaped like
#: (a subset of) ``docker inspect``'s own document, without ``Config.Env``.
INSPECT_TEMPLATE = (
    '{"Name":{{json .Name}},"State":{{json .State}},"RestartCount":{{json .RestartCount}},'
    '"Created":{{json .Created}},"Image":{{json .Image}},"Config":{"Image":{{json .Config.Image}}}}'
)


def inspect_command(names: Iterable[str]) -> str:
    """The single remote command that inspects every container; errors go to stdout too."""
    quoted = " ".join(shlex.quote(n) for n in names)
    return f"docker inspect --format {shlex.quote(INSPECT_TEMPLATE)} {quoted} 2>&1"


def remove_command(names: Iterable[str]) -> str:
    """``docker rm -f`` of the containers; a container already gone is not an error."""
    quoted = " ".join(shlex.quote(n) for n in names)
    return f"{{ docker rm -f {quoted} 2>&1 || true; }}"


@dataclass
class ContainerVerdict:
    """The health verdict on one container."""

    name: str
    status: ExitStatus
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class InspectResult:
    """Parsed ``docker inspect`` output: documents by name (a missing container has none)."""

    documents: dict[str, dict]
    #: Set when docker itself could not answer (missing, not permitted, engine down).
    problem: str | None = None


def parse_inspect(output: str, names: Iterable[str]) -> InspectResult:
    """Reads ``inspect_command`` output (JSON lines mixed with docker's error lines).

    Also accepts a plain ``docker inspect`` JSON array, as in the test fixtures.
    """
    names = list(names)
    documents: dict[str, dict] = {}
    errors: list[str] = []
    text = output.strip()
    if text.startswith("["):  # plain `docker inspect`: one array, then any error lines
        try:
            docs, end = json.JSONDecoder().raw_decode(text)
        except ValueError:
            docs, end = [], 0
        for doc in docs:
            documents[doc.get("Name", "").lstrip("/")] = doc
        text = text[end:]
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                errors.append(line)
                continue
            documents[doc.get("Name", "").lstrip("/")] = doc
        elif line and line != "[]":
            errors.append(line)
    return InspectResult(documents, docker_problem(errors))


def docker_problem(error_lines: list[str]) -> str | None:
    """Why docker could not answer at all, from its error lines (None if it could)."""
    text = "\n".join(error_lines).lower()
    if not text:
        return None
    if "command not found" in text or "not found" in text and "docker:" in text:
        return "docker is not installed on the host"
    if "permission denied" in text:
        return "permission denied on the Docker socket (is the login user in the docker group?)"
    if "cannot connect to the docker daemon" in text or "is the docker daemon running" in text:
        return "the Docker engine is not running"
    lines = [line for line in error_lines if "no such object" not in line.lower()
             and "no such container" not in line.lower()]
    return f"docker inspect failed: {lines[0][:200]}" if lines else None


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


def verdict(name: str, doc: dict | None, now: datetime) -> ContainerVerdict:
    """The verdict on one container from its ``docker inspect`` document (None = missing)."""
    if doc is None:
        return ContainerVerdict(name, ExitStatus.CRITICAL, "missing (no such container)", {"exists": False})
    state = doc.get("State") or {}
    status = state.get("Status") or ("running" if state.get("Running") else "unknown")
    health = (state.get("Health") or {}).get("Status")
    started = _parse_time(state.get("StartedAt"))
    finished = _parse_time(state.get("FinishedAt"))
    details: dict[str, Any] = {
        "exists": True,
        "state": status,
        "health": health,
        "image": (doc.get("Config") or {}).get("Image"),
        "restart_count": doc.get("RestartCount", 0),
        "started_at": state.get("StartedAt"),
        "uptime_seconds": int((now - started).total_seconds()) if started and status == "running" else None,
    }
    if status == "running":
        uptime = duration(details["uptime_seconds"] or 0)
        text = f"running {uptime}, {details['restart_count']} restarts, {details['image']}"
        if health is None:
            return ContainerVerdict(name, ExitStatus.OK, text, details)
        if health == "healthy":
            return ContainerVerdict(name, ExitStatus.OK, f"{text}, healthy", details)
        if health == "starting":
            return ContainerVerdict(name, ExitStatus.WARNING, f"{text}, health check starting", details)
        return ContainerVerdict(name, ExitStatus.CRITICAL, f"{text}, {health}", details)
    if status == "exited" or status == "dead":
        code = state.get("ExitCode")
        text = f"{status} (exit code {code})"
        if state.get("OOMKilled"):
            text += ", killed for lack of memory"
        if finished:
            text += f" {duration((now - finished).total_seconds())} ago"
        details["exit_code"] = code
        return ContainerVerdict(name, ExitStatus.CRITICAL, text, details)
    if status == "restarting":
        return ContainerVerdict(name, ExitStatus.CRITICAL, "restarting (crash loop)", details)
    if status == "paused":
        return ContainerVerdict(name, ExitStatus.CRITICAL, "paused", details)
    return ContainerVerdict(name, ExitStatus.CRITICAL, f"{status} (not running)", details)


def verdicts(result: InspectResult, names: Iterable[str], now: datetime | None = None) -> list[ContainerVerdict]:
    """Verdicts for every configured container, in the configured order."""
    now = now or datetime.now(timezone.utc)
    if result.problem:
        return [ContainerVerdict(n, ExitStatus.UNKNOWN, result.problem, {}) for n in names]
    return [verdict(n, result.documents.get(n), now) for n in names]


def env_has_command(container: str, name: str, value: str) -> str:
    """A command printing how many ``name=value`` lines a container's environment has.

    Only the count leaves the host; the environment itself is never printed.
    ``value`` must not be a secret (it is on the command line): key IDs only.
    """
    template = "{{range .Config.Env}}{{println .}}{{end}}"
    return (f"docker inspect --format {shlex.quote(template)} {shlex.quote(container)} 2>/dev/null"
            f" | grep -cxF -- {shlex.quote(f'{name}={value}')}")
