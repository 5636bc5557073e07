"""A CreateAccessKey whose answer was lost (issue 18 review): the driver runs what the policy
names (`Recovery.SWEEP`), with IAM and the host faked: the key IAM made is found and deleted,
or recorded in the journal for the next run; nothing else is ever deleted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import botocore.exceptions
import pytest

from quilt_ops import key_rotation_steps
from quilt_ops import rotation as rotation_mod
from quilt_ops.config import Settings
from quilt_ops.journal import Journal, Step
from quilt_ops.key_rotation import MEASURED_SLACK, create_window
from quilt_ops.keys import AwsError, AwsRefused, KeyStore, iam_clock_offset
from quilt_ops.reporting import Silent
from quilt_ops.rotation import RotateOptions, Rotation
from quilt_ops.rotation_errors import Left, RotationError
from quilt_ops.rotation_plan import LIST_LAG, SKEW, CreateWindow, Key

USER = "quilt-prod-RegistryUser-ABCDEFGHIJKLM"
OLD, NEW, OTHER = "AKIAOLDOLDOLDOLD0001", "AKIANEWNEWNEWNEW0002", "AKIAOTHEROTHEROTH003"
STARTED = datetime.now(timezone.utc).replace(microsecond=0)
OLD_KEY = Key(OLD, "Active", STARTED - timedelta(days=80))


class Iam:
    """The user's keys as IAM lists them after the failed call (``lag``: the first lists leave
    out the keys in ``listed``, as an IAM that has not caught up yet); deletions recorded."""

    def __init__(self, listed=(), list_fails=False, delete_fails=False, lag=0):
        self.listed, self.list_fails, self.delete_fails, self.lag = list(listed), list_fails, delete_fails, lag
        self.deleted: list[str] = []
        self.lists = 0

    def keys(self, user):
        if self.list_fails:
            raise AwsError("IAM list_access_keys failed: cannot reach the AWS endpoint")
        self.lists += 1
        return [OLD_KEY] if self.lists <= self.lag else [OLD_KEY, *self.listed]

    def delete(self, user, key_id):
        if self.delete_fails:
            raise AwsError("IAM delete_access_key failed: InternalFailure")
        self.deleted.append(key_id)


class Waits(Silent):
    def __init__(self):
        self.waits: list[str] = []

    def waiting(self, text):
        self.waits.append(text)


class Clock:
    """The sweep's clock: a sleep moves it on at once."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def after_lost_answer(monkeypatch, tmp_path, iam, lost=None, window=None, reporter=None, saved=None):
    """The failed create's recovery; returns (the error, the journals saved, whether it was cleared)."""
    saved = [] if saved is None else saved
    cleared: list[bool] = []
    monkeypatch.setattr(rotation_mod.rotation_host, "save_journal", lambda place, j: saved.append(j))
    monkeypatch.setattr(rotation_mod.rotation_host, "clear_journal", lambda place: cleared.append(True))
    monkeypatch.setattr(key_rotation_steps, "time", Clock())
    settings = Settings(known_users=str(tmp_path / "known_users"))
    rotation = Rotation(SimpleNamespace(name="h"), settings, iam, RotateOptions(), reporter or Silent())
    rotation.secret.user, rotation.secret.keys = USER, [OLD_KEY]
    rotation.secret.window = window
    rotation.state = SimpleNamespace(host_key=OLD)
    rotation.journal = Journal(Step.CREATING, USER, OLD, STARTED, "alice@laptop", old_key_created=OLD_KEY.created)
    lost = lost or AwsError("IAM create_access_key failed: ConnectionClosedError")
    with pytest.raises(RotationError) as e:
        rotation.recover(Step.CREATING, lost, OLD, "", str, str)
    return e.value, saved, bool(cleared)


def test_the_key_iam_made_is_found_and_deleted(monkeypatch, tmp_path):
    iam = Iam([Key(NEW, "Active", STARTED + timedelta(seconds=2))])
    error, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam)
    assert error.facts.left == Left.NEW_KEY_DELETED and iam.deleted == [NEW]
    # recorded before the deletion: had it failed, the next run would have deleted it
    assert saved[-1].step == Step.CREATED and saved[-1].new_key_id == NEW and cleared


def test_a_key_iam_lists_late_is_found_by_listing_again(monkeypatch, tmp_path):
    """Issue 1 (sweep-lag): IAM is eventually consistent; its first lists after the lost answer
    leave the key out. Fails without the fix (nothing found at the first list, the journal
    removed, the key left on the user with no holder: Left.NOTHING)."""
    iam, reporter = Iam([Key(NEW, "Active", STARTED + timedelta(seconds=2))], lag=3), Waits()
    error, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam, reporter=reporter)
    assert error.facts.left == Left.NEW_KEY_DELETED and iam.deleted == [NEW] and iam.lists == 4 and cleared
    assert len(reporter.waits) == 3 and "listing again" in reporter.waits[0]


def test_a_key_not_listed_within_the_wait_is_left_for_the_next_run(monkeypatch, tmp_path):
    """Issue 1 (sweep-lag): still not listed after LIST_LAG: nothing is deleted, and the journal
    keeps what the next run needs to sweep (the keys listed before, the calls' window), exit 4.
    Fails without the fix (the journal removed: Left.NOTHING)."""
    window = CreateWindow(STARTED + timedelta(seconds=1), STARTED + timedelta(seconds=9), timedelta(seconds=3))
    iam = Iam([Key(NEW, "Active", STARTED + timedelta(seconds=2))], lag=1000)
    error, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam, window=window)
    assert error.facts.left == Left.UNANSWERED and error.status == 4 and iam.deleted == [] and not cleared
    assert iam.lists == -(-LIST_LAG.seconds // 2) + 1  # at 0, 2, ... 14 s, then past LIST_LAG
    assert len(saved) == 1  # written once, before listing again
    kept = saved[-1]
    assert (kept.step, kept.new_key_id, kept.keys_before) == (Step.CREATING, None, (OLD,))
    assert (kept.create_began, kept.create_ended, kept.create_slack) == (window.began, window.ended, 3)
    assert "names that key if IAM lists it then" in str(error)


def test_iam_that_cannot_be_listed_leaves_the_journal_for_the_next_run(monkeypatch, tmp_path):
    iam = Iam(list_fails=True)
    error, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam)
    assert error.facts.left == Left.UNANSWERED and iam.deleted == [] and not cleared
    assert error.status == 4 and "IAM may have made the new key all the same" in str(error)
    assert saved[-1].step == Step.CREATING and saved[-1].keys_before == (OLD,) and saved[-1].create_began


def test_a_deletion_that_fails_leaves_the_key_in_the_journal(monkeypatch, tmp_path):
    iam = Iam([Key(NEW, "Active", STARTED + timedelta(seconds=2))], delete_fails=True)
    error, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam)
    assert error.facts.left == Left.NEW_KEY and error.facts.new_key_id == NEW
    assert saved[-1].new_key_id == NEW and saved[-1].new_key_created == STARTED + timedelta(seconds=2)
    assert not cleared


CALLS = CreateWindow(STARTED + timedelta(seconds=1), STARTED + timedelta(seconds=9), timedelta(seconds=3))


@pytest.mark.parametrize(
    "iam,named",
    [
        (Iam([Key(NEW, "Active", STARTED + timedelta(seconds=2)), Key(OTHER, "Active", STARTED)]), [NEW, OTHER]),
        # issue 2: made by hand after the run's calls (while it listed again): fails without the
        # window (it was deleted as the run's)
        (Iam([Key(OTHER, "Active", STARTED + timedelta(seconds=30))]), [OTHER]),
    ],
    ids=["two keys made since the run began", "issue 2: the one key was made after the run's calls"],
)
def test_when_the_key_cannot_be_told_nothing_is_deleted_and_the_keys_are_named(monkeypatch, tmp_path, iam, named):
    error, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam, window=CALLS)
    assert error.facts.left == Left.UNCLEAR and error.status == 4 and iam.deleted == [] and not cleared
    assert all(k in str(error) for k in named) and "none is deleted" in str(error)
    assert f"aws iam delete-access-key --user-name {USER} --access-key-id KEY" in str(error)
    assert saved[-1].step == Step.CREATING and saved[-1].create_began == CALLS.began


def refused(code: str, retries: int, status: int = 409) -> botocore.exceptions.ClientError:
    """IAM's error answer to CreateAccessKey, after ``retries`` hidden retries of botocore."""
    metadata = {"HTTPStatusCode": status, "RetryAttempts": retries}
    response = {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": metadata}
    return botocore.exceptions.ClientError(response, "CreateAccessKey")  # type: ignore[arg-type]


class Client:
    def __init__(self, error):
        self.error = error

    def create_access_key(self, **kwargs):
        raise self.error


def create_failure(error) -> AwsError:
    store = KeyStore(SimpleNamespace(region_name="us-east-1"))  # type: ignore[arg-type]
    store._clients["iam"] = Client(error)
    with pytest.raises(AwsError) as e:
        store.create(USER)
    return e.value


def test_an_error_answer_at_the_first_try_is_iams_no(monkeypatch, tmp_path):
    """Attack (review-attack): IAM answered LimitExceeded at once because someone (the operator by
    hand, another run on a host of the same IAM user) made a key between the pre-flight list and
    this CreateAccessKey. Nothing was made by this run: that other key is never swept (it was
    deleted: a hand-made key, or the key another run was writing to its host)."""
    error = create_failure(refused("LimitExceeded", 0))
    assert isinstance(error, AwsRefused)
    iam = Iam([Key(OTHER, "Active", STARTED + timedelta(seconds=2))])
    outcome, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam, error)
    assert outcome.facts.left == Left.NOTHING and iam.deleted == [] and saved == [] and cleared


@pytest.mark.parametrize(
    "error",
    [
        refused("LimitExceeded", 2),
        refused("ServiceFailure", 0, 500),
        botocore.exceptions.ReadTimeoutError(endpoint_url="x"),
    ],
    ids=["an error after a retry (the first try's answer lost)", "IAM's own failure", "a timeout"],
)
def test_an_answer_that_may_hide_a_made_key_is_swept(error):
    assert not isinstance(create_failure(error), AwsRefused)


@pytest.mark.parametrize(
    "date,offset",
    [
        ("Sun, 06 Dec 2026 22:00:10 GMT", timedelta(seconds=10)),
        ("Sun, 06 Dec 2026 21:59:58 GMT", timedelta(seconds=-2)),
        (None, None),
        ("yesterday", None),
        ("Sun, 06 Dec 2026 22:00:10", None),  # no zone: not IAM's
    ],
)
def test_iams_clock_is_read_from_its_answers_date(date, offset):
    """Issue 2: the window of the calls is timed in IAM's clock when its answers show it."""
    now = datetime(2026, 12, 6, 22, 0, 0, tzinfo=timezone.utc)
    headers = {} if date is None else {"date": date}
    assert iam_clock_offset({"ResponseMetadata": {"HTTPHeaders": headers}}, now) == offset


def test_the_window_is_in_iams_clock_when_known():
    began, ended = STARTED, STARTED + timedelta(seconds=30)
    assert create_window(began, ended, None) == CreateWindow(began, ended, SKEW)
    shifted = create_window(began, ended, timedelta(seconds=-7))
    assert shifted == CreateWindow(began - timedelta(seconds=7), ended - timedelta(seconds=7), MEASURED_SLACK)


def test_a_failed_create_records_the_window_of_its_calls(tmp_path):
    """Issue 2: the window runs from before the first call to after the last failure (botocore's
    hidden retries in between), in IAM's clock as the last ListAccessKeys answer showed it."""

    class Store:
        clock_offset = timedelta(seconds=-5)

        def create(self, user):
            raise AwsError("IAM create_access_key failed: LimitExceeded")

    rotation = Rotation(
        SimpleNamespace(name="h"), Settings(known_users=str(tmp_path / "k")), Store(), RotateOptions(), Silent()
    )
    rotation.secret.user = USER
    before = datetime.now(timezone.utc)
    with pytest.raises(AwsError):
        rotation.secret.create()
    after = datetime.now(timezone.utc)
    window = rotation.secret.window
    assert window is not None and window.slack == MEASURED_SLACK
    assert before - timedelta(seconds=5) <= window.began <= window.ended <= after - timedelta(seconds=5)


def test_a_run_killed_while_it_lists_again_leaves_what_the_next_run_needs(monkeypatch, tmp_path):
    """Issue 1: the journal with the keys listed before and the calls' window is written before
    the run lists again, so a run killed during that wait leaves it for the next run too."""

    class Killed(Iam):
        def keys(self, user):
            if self.lists == 2:
                raise KeyboardInterrupt
            return super().keys(user)

    saved: list[Journal] = []
    with pytest.raises(KeyboardInterrupt):
        after_lost_answer(monkeypatch, tmp_path, Killed(lag=1000), window=CALLS, saved=saved)
    assert saved and saved[-1].step == Step.CREATING and saved[-1].create_began == CALLS.began
