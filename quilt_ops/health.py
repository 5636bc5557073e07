"""Health of a registry host: containers, HTTP probes and the env file, in one round trip.

`collect` runs a single shell script on the host that prints, between marker
lines, the containers' ``docker inspect`` documents, each probe's HTTP status and
the first bytes of its body, and the env file's mode, owner and which key
*names* it holds (never a value). `evaluate` turns that into `Check` verdicts;
it is pure, so tests feed it recorded output.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from fabric import Connection

from . import containers, ssh
from .config import Settings
from .status import ExitStatus, label, worst

KEY_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY")
PROBE_TIMEOUT = 5
#: curl's exit codes worth a word of their own.
CURL_ERRORS = {6: "cannot resolve host", 7: "connection refused", 28: "timed out", 52: "empty reply",
               56: "connection reset"}


@dataclass
class Check:
    """One health check's verdict."""

    name: str
    status: ExitStatus
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = label(self.status)
        return data


@dataclass
class HostHealth:
    """Every check on one host; the worst one is the host's status."""

    host: str
    checks: list[Check]

    @property
    def status(self) -> ExitStatus:
        return worst(c.status for c in self.checks)

    def failing(self) -> list[Check]:
        return [c for c in self.checks if c.status != ExitStatus.OK]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "status": label(self.status), "exit_code": int(self.status),
                "checks": [c.as_dict() for c in self.checks]}


def unreachable(host: str, reason: str) -> HostHealth:
    """The verdict on a host that could not be looked at."""
    return HostHealth(host, [Check("ssh", ExitStatus.UNKNOWN, reason)])


# ----------------------------------------------------------------------------- the remote script


def script(settings: Settings, marker: str, probes: bool = True, env_file: bool = True) -> str:
    """The one shell script that gathers everything; prints only names and metadata."""
    q = shlex.quote
    m = q(marker)
    parts = [
        f"m={m}",
        't=$(mktemp 2>/dev/null || echo /tmp/quilt-ops-probe.$$); trap \'rm -f "$t"\' EXIT',
        'echo "$m inspect"',
        containers.inspect_command(settings.containers),
    ]
    if probes:
        parts.append('command -v curl >/dev/null 2>&1 || echo "$m nocurl"')
        for name, url in settings.probes.items():
            parts.append(
                f"c=$(curl -s -m {PROBE_TIMEOUT} -o \"$t\" -w '%{{http_code}} %{{time_total}}' {q(url)}"
                f" 2>/dev/null); r=$?; echo \"$m probe {q(name)} $r $c\"; head -c 200 \"$t\"; echo")
    if env_file:
        f = q(settings.env_file)
        names = "|".join(KEY_NAMES)
        parts.append(
            f'echo "$m envfile"; if [ ! -e {f} ]; then echo missing; '
            f"elif [ ! -r {f} ]; then echo unreadable; stat -c 'mode %a %U %G' -- {f}; "
            f"else stat -c 'mode %a %U %G' -- {f}; "
            f"grep -oE '^({names})=' -- {f} | sort -u | sed 's/^/key /; s/=$//'; "
            f"echo \"exports $(grep -cE '^[[:space:]]*export[[:space:]]' -- {f})\"; fi")
    parts.append('echo "$m end"')
    return ssh.in_dir(settings, "; ".join(parts))


def parse(output: str, marker: str) -> dict[str, Any]:
    """Splits the script's output into its sections."""
    sections: dict[str, Any] = {"inspect": "", "probes": {}, "envfile": None, "nocurl": False,
                                "complete": False}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(marker + " "):
            words = line[len(marker) + 1:].split()
            kind = words[0]
            current = []
            if kind == "inspect":
                sections["inspect"] = current
            elif kind == "probe" and len(words) >= 3:
                rc = int(words[2]) if words[2].isdigit() else -1
                code = int(words[3]) if len(words) > 3 and words[3].isdigit() else 0
                seconds = float(words[4]) if len(words) > 4 else None
                sections["probes"][words[1]] = {"curl_exit": rc, "http_code": code, "seconds": seconds,
                                                "body": current}
            elif kind == "envfile":
                sections["envfile"] = current
            elif kind == "nocurl":
                sections["nocurl"] = True
            elif kind == "end":
                sections["complete"] = True
                current = None
        elif current is not None:
            current.append(line)
    if isinstance(sections["inspect"], list):
        sections["inspect"] = "\n".join(sections["inspect"])
    for probe in sections["probes"].values():
        probe["body"] = "\n".join(probe["body"]).strip()
    return sections


# ----------------------------------------------------------------------------- verdicts


def probe_check(name: str, url: str, result: dict | None, nocurl: bool = False) -> Check:
    """Verdict on one HTTP probe: 2xx, and body ``ok`` for the registry's healthcheck."""
    check_name = f"probe {name}"
    if nocurl:
        return Check(check_name, ExitStatus.UNKNOWN, "curl is not installed on the host", {"url": url})
    if result is None:
        return Check(check_name, ExitStatus.UNKNOWN, "no result", {"url": url})
    details = {"url": url, "http_code": result["http_code"] or None, "seconds": result.get("seconds")}
    rc, code = result["curl_exit"], result["http_code"]
    if rc != 0 and not code:
        reason = CURL_ERRORS.get(rc, f"curl exit code {rc}")
        return Check(check_name, ExitStatus.CRITICAL, f"no answer from {url} ({reason})", details)
    if not 200 <= code < 300:
        return Check(check_name, ExitStatus.CRITICAL, f"HTTP {code} from {url}", details)
    if url.rstrip("/").endswith("/healthcheck") and result["body"] != "ok":
        return Check(check_name, ExitStatus.CRITICAL, f"HTTP {code} but the body is not 'ok'", details)
    return Check(check_name, ExitStatus.OK, f"HTTP {code} in {result.get('seconds') or 0:.2f}s", details)


def env_file_check(path: str, lines: list[str] | None) -> Check:
    """Verdict on the env file: present, private, holding the key lines the registry reads."""
    name = "env file"
    if lines is None:
        return Check(name, ExitStatus.UNKNOWN, "not checked", {"path": path})
    if lines[:1] == ["missing"]:
        return Check(name, ExitStatus.CRITICAL, f"{path} is missing", {"path": path, "exists": False})
    details: dict[str, Any] = {"path": path, "exists": True, "keys": []}
    unreadable = lines[:1] == ["unreadable"]
    for line in lines:
        words = line.split()
        if words[:1] == ["mode"] and len(words) >= 4:
            details.update(mode=words[1].zfill(4), owner=words[2], group=words[3])
        elif words[:1] == ["key"] and len(words) == 2:
            details["keys"].append(words[1])
        elif words[:1] == ["exports"] and len(words) == 2 and words[1].isdigit():
            details["export_lines"] = int(words[1])
    if unreadable:
        return Check(name, ExitStatus.CRITICAL, f"{path} is not readable by the login user", details)
    problems: list[tuple[ExitStatus, str]] = []
    keys = set(details["keys"])
    if "AWS_ACCESS_KEY_ID" not in keys:
        problems.append((ExitStatus.CRITICAL, "no AWS_ACCESS_KEY_ID line"))
    if not keys & {"AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"}:
        problems.append((ExitStatus.CRITICAL, "no AWS_SECRET_ACCESS_KEY line"))
    elif "AWS_SECRET_ACCESS_KEY" not in keys:
        problems.append((ExitStatus.WARNING, "only AWS_SECRET_KEY, which the registry's boto3 does not read "
                                             "(it reads AWS_SECRET_ACCESS_KEY)"))
    mode = int(details.get("mode", "0"), 8)
    if mode & 0o044:
        problems.append((ExitStatus.WARNING, f"mode {details['mode']} lets others read it (chmod 600 {path})"))
    if details.get("export_lines"):
        problems.append((ExitStatus.WARNING, "has 'export' lines, which docker --env-file rejects"))
    if not problems:
        return Check(name, ExitStatus.OK, f"{path} mode {details.get('mode')}, key lines present", details)
    return Check(name, worst(s for s, _ in problems), "; ".join(text for _, text in problems), details)


def evaluate(host: str, sections: dict[str, Any], settings: Settings, now: datetime | None = None,
             probes: bool = True, env_file: bool = True) -> HostHealth:
    """Every check for one host, from the parsed script output."""
    checks: list[Check] = []
    inspected = containers.parse_inspect(sections["inspect"], settings.containers)
    for v in containers.verdicts(inspected, settings.containers, now or datetime.now(timezone.utc)):
        checks.append(Check(f"container {v.name}", v.status, v.summary, v.details))
    if probes:
        for name, url in settings.probes.items():
            checks.append(probe_check(name, url, sections["probes"].get(name), sections["nocurl"]))
    if env_file:
        checks.append(env_file_check(settings.env_file, sections["envfile"]))
    if not sections["complete"]:
        checks.append(Check("host", ExitStatus.UNKNOWN, "the health script did not finish"))
    return HostHealth(host, checks)


def collect(cxn: Connection, settings: Settings, probes: bool = True, env_file: bool = True) -> HostHealth:
    """Runs the checks on one host over its open connection: one remote command."""
    marker = "@@quilt-" + secrets.token_hex(6)
    result = ssh.run(cxn, script(settings, marker, probes, env_file), timeout=60)
    if settings.registry_dir and not result.ok and marker not in result.stdout:
        return unreachable(ssh.describe(cxn), f"cannot enter quilt.registry_dir {settings.registry_dir!r}")
    sections = parse(result.stdout, marker)
    return evaluate(ssh.describe(cxn), sections, settings, probes=probes, env_file=env_file)
