"""The rotation's failure policy: `after_failure(step, failure, journal) -> Recovery`, row by row (issue 18.3).

Each row says what a failed step leaves and so what the driver must do about it; the
table is the whole policy, so a row missing here is a decision nobody reviewed.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from quilt_ops import journal as journals
from quilt_ops.errors import ConnectionLost, NotStarted, QuiltError, Refused, RemoteTimeout
from quilt_ops.hostfiles import HostFileError
from quilt_ops.journal import Journal, Step
from quilt_ops.keys import AwsError, AwsRefused, VerifyRefused, VerifyTimeout
from quilt_ops.rotation_policy import TABLE, Failure, Recovery, after_failure, classify
from quilt_ops.shell import AccessChanged, LockLost

OLD, NEW = "AKIAOLD0000000000001", "AKIANEW0000000000001"
STARTED = datetime(2026, 1, 1, tzinfo=timezone.utc)


def journal(step: Step, new: str | None = NEW) -> Journal:
    return Journal(
        step=step,
        iam_user="quilt-prod-RegistryUser",
        old_key_id=OLD,
        started=STARTED,
        who="alice@laptop",
        old_key_created=STARTED,
        new_key_id=new,
        new_key_created=STARTED if new else None,
        original_sha256="0" * 64,
        written_sha256="1" * 64 if step in journals.WRITTEN_STEPS else "",
    )


F, R, S = Failure, Recovery, Step
CREATING = journal(S.CREATING, new=None)
CREATED = journal(S.CREATED)
WRITING = journal(S.WRITING)
WRITTEN = journal(S.WRITTEN)
RETIRING = journal(S.RETIRING)
ROLLING = journal(S.ROLLING_BACK)

ROWS = [
    # (step, failure, journal, recovery)
    # -- the first journal: nothing changed, whatever stopped it (a command that may have run
    #    past its time is reported as it is: the journal it may have left names no key)
    (S.START, F.HOST_FILE, None, R.NOTHING_CHANGED),
    (S.START, F.CONNECTION_LOST, None, R.NOTHING_CHANGED),
    (S.START, F.NOT_STARTED, None, R.NOTHING_CHANGED),
    (S.START, F.GUARD_STOPPED, None, R.NOTHING_CHANGED),
    (S.START, F.TIMED_OUT, None, R.REPORT),
    (S.START, F.FAILED, None, R.REPORT),
    # -- making room: keys the plan proved unused; the journal (no new key) is the next run's
    (S.MAKE_ROOM, F.AWS, CREATING, R.REPORT),
    (S.MAKE_ROOM, F.REFUSED, CREATING, R.REPORT),
    # -- creating: IAM said no or its answer was lost (a timeout): it may have made the key, look
    (S.CREATING, F.AWS, CREATING, R.SWEEP),
    # IAM said no at once: nothing made; a key listed now is someone else's (review-attack)
    (S.CREATING, F.AWS_REFUSED, CREATING, R.FORGET),
    (S.CREATING, F.FAILED, CREATING, R.REPORT),
    # -- created: the key exists, the host never saw it: delete it
    (S.CREATED, F.HOST_FILE, CREATED, R.ABANDON),
    (S.CREATED, F.CONNECTION_LOST, CREATED, R.ABANDON),
    (S.CREATED, F.NOT_STARTED, CREATED, R.ABANDON),
    (S.CREATED, F.GUARD_STOPPED, CREATED, R.ABANDON),
    (S.CREATED, F.TIMED_OUT, CREATED, R.REPORT),
    # -- verify
    (S.VERIFY, F.VERIFY, CREATED, R.ABANDON),
    (S.VERIFY, F.AWS, CREATED, R.ABANDON),
    (S.VERIFY, F.FAILED, CREATED, R.REPORT),
    # -- writing: atomic refusals and commands that never ran delete the key; a cut or a kill
    #    may have got as far as the rename, so the next run reads the host's key
    (S.WRITING, F.HOST_FILE, WRITING, R.ABANDON),
    (S.WRITING, F.NOT_STARTED, WRITING, R.ABANDON),
    (S.WRITING, F.GUARD_STOPPED, WRITING, R.ABANDON),
    (S.WRITING, F.CONNECTION_LOST, WRITING, R.LEAVE),
    (S.WRITING, F.TIMED_OUT, WRITING, R.LEAVE),
    (S.WRITING, F.JOURNAL_BEHIND, WRITING, R.LEAVE),
    (S.WRITING, F.FAILED, WRITING, R.REPORT),
    # -- written: the containers on the new key: a clean failure is rolled back, a cut is left
    (S.WRITTEN, F.CONNECTION_LOST, WRITTEN, R.LEAVE),
    (S.WRITTEN, F.NOT_STARTED, WRITTEN, R.LEAVE),
    (S.WRITTEN, F.FAILED, WRITTEN, R.ROLL_BACK),
    (S.WRITTEN, F.TIMED_OUT, WRITTEN, R.ROLL_BACK),
    (S.WRITTEN, F.GUARD_STOPPED, WRITTEN, R.ROLL_BACK),
    (S.WRITTEN, F.REFUSED, WRITTEN, R.ROLL_BACK),
    # -- retiring: the host runs healthy on the new key; the old one stays for the next run
    (S.RETIRING, F.AWS, RETIRING, R.LEAVE),
    (S.RETIRING, F.CONNECTION_LOST, RETIRING, R.LEAVE),
    (S.RETIRING, F.NOT_STARTED, RETIRING, R.LEAVE),
    (S.RETIRING, F.HOST_FILE, RETIRING, R.LEAVE),
    (S.RETIRING, F.GUARD_STOPPED, RETIRING, R.LEAVE),
    (S.RETIRING, F.REFUSED, RETIRING, R.REPORT),
    # -- done but for the journal
    (S.DONE, F.CONNECTION_LOST, RETIRING, R.LEAVE),
    (S.DONE, F.HOST_FILE, RETIRING, R.LEAVE),
    (S.DONE, F.FAILED, RETIRING, R.LEAVE),
    # -- rolling back: cut, the next run finishes it; failed, both keys stay
    (S.ROLLING_BACK, F.CONNECTION_LOST, ROLLING, R.LEAVE),
    (S.ROLLING_BACK, F.NOT_STARTED, ROLLING, R.LEAVE),
    (S.ROLLING_BACK, F.FAILED, ROLLING, R.STUCK),
    (S.ROLLING_BACK, F.AWS, ROLLING, R.STUCK),
    (S.ROLLING_BACK, F.GUARD_STOPPED, ROLLING, R.STUCK),
    (S.RESUME_ROLLBACK, F.CONNECTION_LOST, ROLLING, R.STUCK),
    (S.RESUME_ROLLBACK, F.FAILED, WRITTEN, R.STUCK),
    # -- an abandon with no key to delete is a forget
    (S.CREATED, F.HOST_FILE, CREATING, R.FORGET),
    (S.VERIFY, F.VERIFY, None, R.FORGET),
    # -- Ctrl-C: before the journal, nothing; a key the host never saw is deleted; after, the next run
    (S.START, F.INTERRUPTED, None, R.NOTHING_CHANGED),
    (S.CREATING, F.INTERRUPTED, CREATING, R.LEAVE),
    (S.VERIFY, F.INTERRUPTED, CREATED, R.ABANDON),
    (S.CREATED, F.INTERRUPTED, CREATED, R.ABANDON),
    (S.WRITING, F.INTERRUPTED, WRITING, R.LEAVE),
    (S.WRITTEN, F.INTERRUPTED, WRITTEN, R.LEAVE),
    (S.RETIRING, F.INTERRUPTED, RETIRING, R.LEAVE),
    (S.ROLLING_BACK, F.INTERRUPTED, ROLLING, R.LEAVE),
]


@pytest.mark.parametrize("step,failure,found,recovery", ROWS, ids=[f"{r[0].value}-{r[1].value}" for r in ROWS])
def test_after_failure(step, failure, found, recovery):
    assert after_failure(step, failure, found) == recovery


def test_every_step_has_a_row():
    assert set(TABLE) == set(Step)
    assert {row[0] for row in ROWS} == set(Step)


def test_the_policy_is_pure_and_fast():
    started = time.perf_counter()
    for _ in range(100):
        for step, failure, found, recovery in ROWS:
            assert after_failure(step, failure, found) == recovery
    assert (time.perf_counter() - started) / (100 * len(ROWS)) < 1e-4


@pytest.mark.parametrize(
    "error,failure",
    [
        (KeyboardInterrupt(), F.INTERRUPTED),
        (NotStarted("x"), F.NOT_STARTED),
        (ConnectionLost("x"), F.CONNECTION_LOST),
        (LockLost("x"), F.GUARD_STOPPED),
        (AccessChanged("x"), F.GUARD_STOPPED),
        (RemoteTimeout("x"), F.TIMED_OUT),
        (HostFileError("x"), F.HOST_FILE),
        (VerifyTimeout("x"), F.VERIFY),
        (VerifyRefused("x"), F.VERIFY),
        (AwsError("x"), F.AWS),
        (AwsRefused("x"), F.AWS_REFUSED),
        (Refused("x"), F.REFUSED),
        (QuiltError("x"), F.FAILED),
    ],
)
def test_classify(error, failure):
    assert classify(error) == failure


@pytest.mark.parametrize("word", ["creating", "created", "writing", "written", "retiring", "rolling-back"])
def test_old_journals_step_words_are_read_as_steps(word):
    """Journals written before the Step enum hold these words; they read as the same steps."""
    raw = json.loads(journal(S.WRITTEN).to_json())
    raw["step"] = word
    if word == "creating":
        raw["new_key_id"] = raw["new_key_created"] = None
    parsed = journals.parse(json.dumps(raw).encode())
    assert parsed.step is Step(word)
    assert json.loads(parsed.to_json())["step"] == word


@pytest.mark.parametrize("word", ["start", "make-room", "verify", "done", "resume-rollback"])
def test_steps_never_recorded_are_refused_in_a_journal(word):
    raw = json.loads(journal(S.WRITTEN).to_json())
    raw["step"] = word
    with pytest.raises(journals.JournalUnreadable, match="unknown step"):
        journals.parse(json.dumps(raw).encode())
