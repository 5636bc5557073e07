"""What a check concludes: `Check` (one verdict) and `HostHealth` (all of one host's).

A check is data: a kind (container, probe, env file, ...), a subject (which
container, which probe) and a status. Code that needs a particular check looks
it up by kind and subject, never by parsing a name; the name is only for people.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .status import ExitStatus, label, worst


class Kind(str, Enum):
    """What a check looked at."""

    CONTAINER = "container"
    PROBE = "probe"
    ENV_FILE = "env file"
    #: The host as a whole: SSH, the health script itself.
    HOST = "host"
    #: The AWS side (``health --aws``): the key in use, policy, bucket, database, stack.
    AWS_KEY = "aws key"
    AWS_POLICY = "aws policy"
    BUCKET = "bucket"
    DATABASE = "database"
    STACK = "stack"


@dataclass
class Check:
    """One verdict: what was looked at, how it is, and the facts behind it."""

    kind: Kind
    subject: str
    status: ExitStatus
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """How people see it: ``container registry``, ``probe catalog``, ``env file``."""
        if self.kind in (Kind.ENV_FILE, Kind.HOST) or not self.subject:
            return self.kind.value
        return f"{self.kind.value} {self.subject}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "subject": self.subject,
            "status": label(self.status),
            "summary": self.summary,
            "details": self.details,
        }


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

    def find(self, kind: Kind, subject: str | None = None) -> Check | None:
        return next((c for c in self.checks if c.kind == kind and (subject is None or c.subject == subject)), None)

    def of_kind(self, kind: Kind) -> list[Check]:
        return [c for c in self.checks if c.kind == kind]

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": label(self.status),
            "exit_code": int(self.status),
            "checks": [c.as_dict() for c in self.checks],
        }


def unreachable(host: str, reason: str) -> HostHealth:
    """The verdict on a host that could not be looked at."""
    return HostHealth(host, [Check(Kind.HOST, "ssh", ExitStatus.UNKNOWN, reason)])
