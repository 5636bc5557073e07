"""Health of a registry host: containers, HTTP probes and the env file, in one round trip.

`script` builds a single shell script (see `quilt_ops.shell`) that prints the
containers' ``docker inspect`` documents, each probe's HTTP status and the
first bytes of its body, and the env file's mode, owner and which key *names*
it holds (never a value); on the host itself (``--local``) the Docker SDK answers
for the containers instead (`quilt_ops.docker_access`). `read` turns that output
into a typed `Reading`; `evaluate` turns a reading into `Check` verdicts and is
pure, so tests feed it recorded output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import containers, docker_access, sh, shell
from .checks import Check, HostHealth, Kind
from .config import REGISTRY_PROBE, Settings
from .containers import InspectResult
from .envfile import KEY_ID, KEY_NAMES, LEGACY_SECRET, SECRET
from .remote import Target
from .shell import q
from .status import ExitStatus, worst

#: The env file's bucket line (its value is no secret: ``health --aws`` checks that bucket).
BUCKET = "PACKAGE_BUCKET_NAME"
#: S3's bucket naming rules (3-63 characters: lower case letters, digits, dots, hyphens).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: Seconds each probe may take.
PROBE_TIMEOUT = 5
#: The host side: ``health_probe``, ``health_env_file`` (``sh/health.sh``).
SCRIPT = "health.sh"
#: curl's exit codes worth a word of their own.
CURL_ERRORS = {
    6: "cannot resolve host",
    7: "connection refused",
    28: "timed out",
    52: "empty reply",
    56: "connection reset",
}


@dataclass
class ProbeResult:
    """What curl said about one URL."""

    curl_exit: int
    http_code: int
    seconds: float | None
    body: str = ""


@dataclass
class EnvFileFacts:
    """What the health script saw of the env file: metadata and key names, never values."""

    exists: bool = True
    readable: bool = True
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    #: Key names found (``KEY_NAMES`` only), with how many lines each has.
    keys: dict[str, int] = field(default_factory=dict)
    export_lines: int = 0
    #: The access key ID docker passes (not a secret), if it looks like one.
    key_id: str | None = None
    #: PACKAGE_BUCKET_NAME (not a secret), if it is a valid bucket name (for ``health --aws``).
    bucket: str | None = None


@dataclass
class Reading:
    """Everything one run of the health script saw on a host."""

    #: The containers' documents (or why Docker could not answer).
    containers: InspectResult = field(default_factory=lambda: InspectResult({}))
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    env_file: EnvFileFacts | None = None
    #: curl is not installed.
    no_curl: bool = False
    #: How docker was reached: direct, sudo, configured (the CLI), sdk.
    docker: str = ""
    #: The access key ID the registry container runs with (when asked for), or None.
    key_in_effect: str | None = None
    #: The script ran to its end.
    complete: bool = False


# ----------------------------------------------------------------------------- the remote script


def script(
    settings: Settings,
    probes: bool = True,
    env_file: bool = True,
    key_in_effect: bool = False,
    docker: docker_access.DockerAccess | None = None,
) -> shell.Script:
    """The one shell script that gathers everything; prints only names and metadata.

    With the Docker SDK (``docker``, on the host itself) the containers are asked
    of the engine instead, and the script only probes and looks at the env file.
    """
    s = shell.Script(settings)
    docker = docker or docker_access.ScriptDocker(settings)
    docker.prepare(s)
    docker.add_inspect(s, settings.containers.names, _key_of(settings, key_in_effect))
    if probes:
        add_probes(s, settings)
    if env_file:
        s.files(settings.env_file, write=False)
        if not probes:
            s.add(sh.load(SCRIPT))
        s.add(f"health_env_file {q(settings.env_file)}")
    s.end()
    return s


def add_probes(s: shell.Script, settings: Settings) -> None:
    """Each probe with curl on the host: ``probe NAME CURL_EXIT HTTP_CODE SECONDS`` and the body's start."""
    s.add(sh.load(SCRIPT), "health_curl")
    for name, url in settings.probes.items():
        s.add(f"health_probe {q(name)} {q(url)} {int(PROBE_TIMEOUT)}")


def _key_of(settings: Settings, key_in_effect: bool) -> str | None:
    return settings.containers.registry if key_in_effect else None


def read(output: shell.Output, docker: docker_access.DockerAnswer | None = None) -> Reading:
    """The typed reading of the script's output (and of the SDK's answer, when it gave one)."""
    answer = docker or docker_access.from_sections(output)
    reading = Reading(
        complete=output.complete, docker=answer.how, containers=answer.containers, key_in_effect=answer.key_in_effect
    )
    reading.no_curl = output.first("nocurl") is not None
    for section in output.all("probe"):
        words = section.words
        if not words:
            continue
        rc = int(words[1]) if len(words) > 1 and words[1].isdigit() else -1
        code = int(words[2]) if len(words) > 2 and words[2].isdigit() else 0
        try:
            seconds: float | None = float(words[3]) if len(words) > 3 else None
        except ValueError:
            seconds = None
        body = "\n".join(line[2:] for line in section.text.splitlines() if line.startswith("> "))
        reading.probes[words[0]] = ProbeResult(rc, code, seconds, body.strip())
    env = output.first("envfile")
    if env is not None:
        reading.env_file = _env_facts(env.lines)
    return reading


def _env_facts(lines: list[str]) -> EnvFileFacts:
    facts = EnvFileFacts()
    if lines[:1] == ["missing"]:
        return EnvFileFacts(exists=False, readable=False)
    if lines[:1] == ["unreadable"]:
        facts.readable = False
    for line in lines:
        words = line.split()
        if words[:1] == ["mode"] and len(words) >= 4:
            facts.mode, facts.owner, facts.group = words[1].zfill(4), words[2], words[3]
        elif words[:1] == ["key"] and len(words) == 3 and words[1] in KEY_NAMES and words[2].isdigit():
            facts.keys[words[1]] = int(words[2])
        elif words[:1] == ["keyid"] and len(words) == 2:
            facts.key_id = containers.parse_key_in_effect(words[1])
        elif words[:1] == ["bucket"] and len(words) == 2 and BUCKET_NAME.fullmatch(words[1]):
            facts.bucket = words[1]
        elif words[:1] == ["exports"] and len(words) == 2 and words[1].isdigit():
            facts.export_lines = int(words[1])
    return facts


# ----------------------------------------------------------------------------- verdicts


def probe_check(name: str, url: str, result: ProbeResult | None, no_curl: bool = False) -> Check:
    """Verdict on one HTTP probe: 2xx, and body ``ok`` for a /healthcheck."""

    def check(status: ExitStatus, summary: str, details: dict[str, object]) -> Check:
        return Check(Kind.PROBE, name, status, summary, details)

    if no_curl:
        return check(ExitStatus.UNKNOWN, "curl is not installed on the host", {"url": url})
    if result is None:
        return check(ExitStatus.UNKNOWN, "no result", {"url": url})
    details: dict[str, object] = {"url": url, "http_code": result.http_code or None, "seconds": result.seconds}
    rc, code = result.curl_exit, result.http_code
    if rc != 0 and not code:
        reason = CURL_ERRORS.get(rc, f"curl exit code {rc}")
        return check(ExitStatus.CRITICAL, f"no answer from {url} ({reason})", details)
    if not 200 <= code < 300:
        return check(ExitStatus.CRITICAL, f"HTTP {code} from {url}", details)
    if url.rstrip("/").endswith("/healthcheck") and result.body != "ok":
        return check(ExitStatus.CRITICAL, f"HTTP {code} but the body is not 'ok'", details)
    return check(ExitStatus.OK, f"HTTP {code} in {result.seconds or 0:.2f}s", details)


def env_file_check(path: str, facts: EnvFileFacts | None) -> Check:  # noqa: C901 - pure decision table
    """Verdict on the env file: present, private, holding the key lines the registry reads."""

    def check(status: ExitStatus, summary: str, details: dict[str, object]) -> Check:
        return Check(Kind.ENV_FILE, path, status, summary, details)

    if facts is None:
        return check(ExitStatus.UNKNOWN, "not checked", {"path": path})
    if not facts.exists:
        return check(ExitStatus.CRITICAL, f"{path} is missing", {"path": path, "exists": False})
    details: dict[str, object] = {
        "path": path,
        "exists": True,
        "mode": facts.mode,
        "owner": facts.owner,
        "group": facts.group,
        "keys": sorted(facts.keys),
        "export_lines": facts.export_lines,
    }
    if facts.key_id:
        details["key_id"] = facts.key_id
    if facts.bucket:
        details["bucket"] = facts.bucket
    if not facts.readable:
        return check(ExitStatus.CRITICAL, f"{path} is not readable by the login user, and sudo does not work", details)
    problems: list[tuple[ExitStatus, str]] = []
    keys = facts.keys
    if KEY_ID not in keys:
        problems.append((ExitStatus.CRITICAL, f"no {KEY_ID} line"))
    if not (SECRET in keys or LEGACY_SECRET in keys):
        problems.append((ExitStatus.CRITICAL, f"no {SECRET} line"))
    elif SECRET not in keys:
        problems.append(
            (ExitStatus.WARNING, f"only {LEGACY_SECRET}, which the registry's boto3 does not read (it reads {SECRET})")
        )
    repeated = [name for name, count in keys.items() if count > 1]
    if repeated:
        problems.append((ExitStatus.WARNING, f"{', '.join(sorted(repeated))} on more than one line"))
    mode = int(facts.mode or "0", 8)
    if mode & 0o044:
        problems.append((ExitStatus.WARNING, f"mode {facts.mode} lets others read it (chmod 600 {path})"))
    if facts.export_lines:
        problems.append((ExitStatus.WARNING, "has 'export' lines, which docker --env-file rejects"))
    if not problems:
        return check(ExitStatus.OK, f"{path} mode {facts.mode}, key lines present", details)
    return check(worst(s for s, _ in problems), "; ".join(text for _, text in problems), details)


def evaluate(
    host: str,
    reading: Reading,
    settings: Settings,
    now: datetime | None = None,
    probes: bool = True,
    env_file: bool = True,
) -> HostHealth:
    """Every check for one host, from a reading."""
    checks: list[Check] = list(
        containers.verdicts(reading.containers, settings.containers, now or datetime.now(timezone.utc))
    )
    if probes:
        for name, url in settings.probes.items():
            checks.append(probe_check(name, url, reading.probes.get(name), reading.no_curl))
    if env_file:
        checks.append(env_file_check(settings.env_file, reading.env_file))
    if not reading.complete:
        checks.append(Check(Kind.HOST, "script", ExitStatus.UNKNOWN, "the health script did not finish"))
    return HostHealth(host, checks)


def look(
    target: Target, settings: Settings, probes: bool = True, env_file: bool = True, key_in_effect: bool = False
) -> Reading:
    """Runs the health script on one host (one remote command) and reads it."""
    docker = docker_access.of(target, settings)
    built = script(settings, probes, env_file, key_in_effect, docker)
    result = target.run(built.text(), timeout=60, what="the health script")
    output = shell.parse(result.stdout_bytes, built.marker)
    shell.raise_for_failure(output, target.name, settings)
    return read(output, docker.answer(output, settings.containers.names, _key_of(settings, key_in_effect)))


def collect(target: Target, settings: Settings, probes: bool = True, env_file: bool = True) -> HostHealth:
    """Every check on one host, from one remote command."""
    return evaluate(target.name, look(target, settings, probes, env_file), settings, probes=probes, env_file=env_file)


def registry_probe(report: HostHealth) -> Check | None:
    """The registry's own /healthcheck probe in a report."""
    return report.find(Kind.PROBE, REGISTRY_PROBE)
