"""How a rotation ends: a `RotationReport` when it ends well; when it does not, errors that
carry facts, rendered in one place.

Every error the rotation driver raises is a `RotationError` holding `Facts` (the host, the
step, the key IDs, what is left); its one ``Error:`` line is made by `render` from those
facts alone, so tests assert facts and the wording lives here. No secret is ever a fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .errors import QuiltError
from .status import ExitStatus


@dataclass
class RotationReport:
    """A rotation that ended well (rotated, finished what a dead run left, or a dry run)."""

    host: str
    outcome: str
    iam_user: str | None = None
    old_key_id: str | None = None
    new_key_id: str | None = None
    message: str = ""
    lines: list[str] = field(default_factory=list)


class Left(str, Enum):
    """What a failed rotation leaves behind."""

    #: The host and IAM are as they were.
    NOTHING = "nothing"
    #: A new key was made and deleted again; the host never saw it.
    NEW_KEY_DELETED = "new-key-deleted"
    #: A new key the host never saw could not be deleted; the journal lets the next run do it.
    NEW_KEY = "new-key"
    #: CreateAccessKey failed and IAM's keys could not be listed to find one it may have made
    #: all the same; the journal stays, so that the next run names any such key.
    UNANSWERED = "unanswered"
    #: CreateAccessKey failed and the key IAM may have made cannot be told from keys made by
    #: others meanwhile: none is deleted; the operator is told which and how.
    UNCLEAR = "unclear"
    #: The env file holds the old or the new key, both Active; the journal lets the next run decide.
    EITHER_KEY = "either-key"
    #: The host runs healthy on the new key; the old one is still Active.
    OLD_KEY_ACTIVE = "old-key-active"
    #: Done but for the journal, which the next run removes.
    JOURNAL = "journal"
    #: The rotation failed after the write and was rolled back.
    ROLLED_BACK = "rolled-back"
    #: The rollback failed too: both keys stay Active.
    BOTH_KEYS = "both-keys"


@dataclass(frozen=True)
class Facts:
    host: str
    #: The step that failed (the audit's word: preflight, create, verify, write, restart...).
    step: str
    left: Left
    #: What went wrong, for people (never a secret).
    reason: str = ""
    old_key_id: str = ""
    new_key_id: str = ""
    #: Why the compensation failed too (a rollback's or a deletion's error).
    compensation_error: str = ""
    env_file: str = ""
    #: The command that finishes what is left.
    again: str = ""
    #: What the env file holds now, when a rollback failed.
    holds: str = ""
    #: Said after the outcome (e.g. that the next run clears the journal).
    note: str = ""
    interrupted: bool = False


_RENDER = {
    Left.NOTHING: "{reason}; nothing was changed",
    Left.NEW_KEY_DELETED: "{reason}; the new key was deleted and the host was not changed{note}",
    Left.NEW_KEY: "{lead}the new key {new} could not be deleted ({compensation}); the host was not changed "
    "and still runs on the old key; run rotate-keys again to clean up",
    Left.UNANSWERED: "{reason}; IAM may have made the new key all the same, and looking for it failed "
    "({compensation}); the host was not changed and still runs on the old key; run {again}: it looks "
    "again and names that key if IAM lists it then (the journal on the host keeps what it needs)",
    Left.UNCLEAR: "{reason}; IAM may have made the new key all the same, but none is deleted: {compensation}; "
    "the host was not changed and still runs on the old key",
    Left.EITHER_KEY: "{reason}; {env_file} on {host} holds {old} or {new}, both stay Active; the journal on "
    "the host lets the next run finish or roll back: run {again}",
    Left.OLD_KEY_ACTIVE: "{host} now runs on {new} and is healthy, but retiring {old} failed ({reason}): "
    "{old} is still Active; to retire it, run: {again}",
    Left.JOURNAL: "{host} runs on {new} and {old} was retired, but the journal could not be removed "
    "({reason}); the next rotate-keys removes it",
    Left.ROLLED_BACK: "rotation failed and was rolled back: {reason}",
    Left.BOTH_KEYS: "rotation failed ({reason}) and so did its rollback ({compensation}); {env_file} on {host} "
    "holds {holds}; both {old} and {new} stay Active; to finish, run: {again}",
}

_RENDER_INTERRUPTED = {
    Left.NOTHING: "interrupted during {step}; nothing was changed on {host}",
    Left.NEW_KEY_DELETED: "interrupted during {step}; the new key {new} was deleted and {host} was not changed",
    Left.EITHER_KEY: "interrupted during {step}; {host} may hold the old or the new key; "
    "run {again} again to finish or roll back",
}


def render(facts: Facts) -> str:
    """The one line an operator reads."""
    template = (_RENDER_INTERRUPTED if facts.interrupted else _RENDER)[facts.left]
    return template.format(
        reason=facts.reason,
        lead=f"{facts.reason}; " if facts.reason else "",
        note=facts.note,
        step=facts.step,
        host=facts.host,
        old=facts.old_key_id,
        new=facts.new_key_id,
        compensation=facts.compensation_error,
        env_file=facts.env_file,
        again=facts.again,
        holds=facts.holds,
    )


class RotationError(QuiltError):
    """A rotation that did not end well; `facts` says how."""

    def __init__(self, facts: Facts) -> None:
        super().__init__(render(facts))
        self.facts = facts


class RotationFailed(RotationError):
    """The rotation did not happen; the host and IAM are as they were (or were rolled back)."""

    status = ExitStatus.FAILED


class RolledBack(RotationFailed):
    """The rotation failed after the env file was written, and was rolled back."""


class Unfinished(RotationError):
    """The rotation stopped part-way (connection lost, old key not retired); the next run finishes it."""

    status = ExitStatus.INCOMPLETE


class RollbackFailed(RotationError):
    """The rotation failed and so did its rollback; the message says what to run."""

    status = ExitStatus.ROLLBACK_FAILED


class Interrupted(RotationError):
    """Ctrl-C; the message says what was left and how to finish."""

    status = ExitStatus.INTERRUPTED


_KINDS: dict[Left, type[RotationError]] = {
    Left.NOTHING: RotationFailed,
    Left.NEW_KEY_DELETED: RotationFailed,
    Left.NEW_KEY: RotationFailed,
    Left.UNANSWERED: RotationFailed,
    Left.UNCLEAR: RotationFailed,
    Left.EITHER_KEY: Unfinished,
    Left.OLD_KEY_ACTIVE: Unfinished,
    Left.JOURNAL: Unfinished,
    Left.ROLLED_BACK: RolledBack,
    Left.BOTH_KEYS: RollbackFailed,
}


def error(facts: Facts) -> RotationError:
    """The error for ``facts``: its class (so its exit status) follows from what is left."""
    return Interrupted(facts) if facts.interrupted else _KINDS[facts.left](facts)
