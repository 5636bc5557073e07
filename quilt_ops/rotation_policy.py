"""What a rotation does when a step fails: one pure decision, read from a table.

The driver (`quilt_ops.rotation`) records each `Step` and acts; when the act fails it
asks `after_failure(step, failure, journal)` and runs the compensation the answer names.
Nothing here talks to a host or to AWS: the whole policy is the `TABLE` below, tested
row by row (tests/unit/test_rotation_policy.py).

Why each row is what it is, in one line: until the new key is in the env file the host
never saw it, so a failure deletes it (`Recovery.ABANDON`); once the file may hold it,
only the host's own key tells what happened, so a failure that may have left the command
half-run is left to the next run, which reads the journal (`Recovery.LEAVE`); a failed
CreateAccessKey may still have made the key (a timeout, a lost answer), so the run looks for
it in IAM before saying nothing changed (`Recovery.SWEEP`); a step that
failed cleanly after the file was written is undone (`Recovery.ROLL_BACK`); and a rollback
that fails leaves both keys Active for the operator (`Recovery.STUCK`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from .errors import ConnectionLost, NotStarted, Refused, RemoteTimeout
from .hostfiles import HostFileError
from .journal import Journal, JournalBehind, Step
from .keys import AwsError, AwsRefused, VerifyRefused, VerifyTimeout
from .shell import NotRun

__all__ = ["TABLE", "Failure", "Recovery", "Step", "after_failure", "classify"]


class Failure(str, Enum):
    """What kind of failure ended a step (see `classify`)."""

    #: The connection was gone before the command started: it did not run.
    NOT_STARTED = "not-started"
    #: The command's guard stopped it on the host before it changed anything (lock lost, access changed).
    GUARD_STOPPED = "guard-stopped"
    #: The connection dropped while the command ran: it may have done anything.
    CONNECTION_LOST = "connection-lost"
    #: The command ran past its time and was killed there: it may have done anything.
    TIMED_OUT = "timed-out"
    #: A file step refused, atomically: the file on the host is as it was.
    HOST_FILE = "host-file"
    #: The env file was replaced but the journal's last word failed.
    JOURNAL_BEHIND = "journal-behind"
    #: AWS said no, or could not be reached.
    AWS = "aws"
    #: AWS said no to the call's first and only try (`quilt_ops.keys.AwsRefused`): it did nothing.
    AWS_REFUSED = "aws-refused"
    #: The new key did not prove itself with its own credentials.
    VERIFY = "verify"
    #: A check refused to go on.
    REFUSED = "refused"
    #: Anything else the operator can act on (the registry unhealthy, a tool missing...).
    FAILED = "failed"
    #: Ctrl-C.
    INTERRUPTED = "interrupted"


class Recovery(str, Enum):
    """The compensation the driver runs (and so what the error says)."""

    #: None needed: the error stands as it is (what is left, a journal without a new key, is
    #: harmless and the next run clears it).
    REPORT = "report"
    #: Nothing was changed: say so.
    NOTHING_CHANGED = "nothing-changed"
    #: No key was made: remove the journal (best effort), nothing was changed.
    FORGET = "forget"
    #: Delete the new key, which the host never saw, and the journal.
    ABANDON = "abandon"
    #: CreateAccessKey failed, but IAM may have made the key though its answer was lost (a
    #: timeout): re-list the user's keys (`rotation_plan.sweep`); the one key made during this
    #: run's calls (not the host's, not listed before) is recorded in the journal and abandoned;
    #: none listed: list again for a while (IAM's list lags), then, like when IAM cannot be
    #: listed or the key cannot be told from others, the journal keeps what the next run needs
    #: to sweep it.
    SWEEP = "sweep"
    #: Leave it for the next run: the journal on the host lets it finish or roll back.
    LEAVE = "leave"
    #: Put the old env file back, recreate the containers on it, delete the new key.
    ROLL_BACK = "roll-back"
    #: The rollback failed: both keys stay Active; the operator runs rotate-keys again.
    STUCK = "stuck"


def classify(error: BaseException) -> Failure:
    """The kind of a failure, from its exception (subclasses before their bases)."""
    kinds: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Failure], ...] = (
        (KeyboardInterrupt, Failure.INTERRUPTED),
        (JournalBehind, Failure.JOURNAL_BEHIND),
        (NotStarted, Failure.NOT_STARTED),
        (ConnectionLost, Failure.CONNECTION_LOST),
        (NotRun, Failure.GUARD_STOPPED),
        (RemoteTimeout, Failure.TIMED_OUT),
        (HostFileError, Failure.HOST_FILE),
        ((VerifyTimeout, VerifyRefused), Failure.VERIFY),
        (AwsRefused, Failure.AWS_REFUSED),
        (AwsError, Failure.AWS),
        (Refused, Failure.REFUSED),
    )
    for kind, failure in kinds:
        if isinstance(error, kind):
            return failure
    return Failure.FAILED


F = Failure
R = Recovery
_TRANSPORT = (F.NOT_STARTED, F.CONNECTION_LOST)
#: Failures of a command that did not change the host (or changed it atomically not at all).
_NOTHING_RAN = (F.NOT_STARTED, F.GUARD_STOPPED, F.CONNECTION_LOST, F.HOST_FILE)

#: step -> (failure -> recovery, the recovery of any other failure).
TABLE: Mapping[Step, tuple[Mapping[Failure, Recovery], Recovery]] = {
    # Writing the first journal: the host and IAM are as they were.
    Step.START: (dict.fromkeys((*_NOTHING_RAN,), R.NOTHING_CHANGED), R.REPORT),
    # Retiring keys the plan named: each was checked; the journal says "creating", no new key.
    Step.MAKE_ROOM: ({}, R.REPORT),
    # Its answer was lost (or came after a retry): IAM may have made the key all the same (with
    # IAM's two-key limit a key nobody holds fails the next rotation), so look for it first.
    # IAM said no at once: nothing was made, and a key made meanwhile (LimitExceeded: by hand,
    # by a run on another host of the same IAM user) is not this run's to sweep.
    Step.CREATING: ({F.AWS: R.SWEEP, F.AWS_REFUSED: R.FORGET}, R.REPORT),
    # The key exists but the host never saw it.
    Step.CREATED: (dict.fromkeys(_NOTHING_RAN, R.ABANDON), R.REPORT),
    Step.VERIFY: ({F.VERIFY: R.ABANDON, F.AWS: R.ABANDON, F.AWS_REFUSED: R.ABANDON}, R.REPORT),
    # One command: backup, replace (atomic), journal "written". Cut or killed, it may have got
    # as far as the rename: only the host's key tells, so the next run decides.
    Step.WRITING: (
        {
            F.HOST_FILE: R.ABANDON,
            F.NOT_STARTED: R.ABANDON,
            F.GUARD_STOPPED: R.ABANDON,
            F.CONNECTION_LOST: R.LEAVE,
            F.TIMED_OUT: R.LEAVE,
            F.JOURNAL_BEHIND: R.LEAVE,
        },
        R.REPORT,
    ),
    # The file holds the new key: recreating the containers failed.
    Step.WRITTEN: (dict.fromkeys(_TRANSPORT, R.LEAVE), R.ROLL_BACK),
    # The host runs healthy on the new key; the old one may still be Active.
    Step.RETIRING: (
        dict.fromkeys((F.AWS, F.AWS_REFUSED, F.NOT_STARTED, F.CONNECTION_LOST, F.HOST_FILE, F.GUARD_STOPPED), R.LEAVE),
        R.REPORT,
    ),
    # Done but for the journal: the next run removes it.
    Step.DONE: ({}, R.LEAVE),
    Step.ROLLING_BACK: (dict.fromkeys(_TRANSPORT, R.LEAVE), R.STUCK),
    # Rolling back what a dead run left: the operator looks.
    Step.RESUME_ROLLBACK: ({}, R.STUCK),
}


def after_failure(step: Step, failure: Failure, journal: Journal | None) -> Recovery:
    """What to do when ``step`` failed with ``failure``; ``journal`` is what the host's journal says."""
    if failure == Failure.INTERRUPTED:
        return _after_interrupt(journal)
    by_failure, otherwise = TABLE[step]
    recovery = by_failure.get(failure, otherwise)
    if recovery == Recovery.ABANDON and (journal is None or not journal.new_key_id):
        return Recovery.FORGET
    return recovery


def _after_interrupt(journal: Journal | None) -> Recovery:
    """Ctrl-C: a key the host never saw is deleted; once the file may hold it, the next run decides."""
    if journal is None:
        return Recovery.NOTHING_CHANGED
    if journal.step in (Step.CREATING, Step.CREATED) and journal.new_key_id:
        return Recovery.ABANDON
    return Recovery.LEAVE
