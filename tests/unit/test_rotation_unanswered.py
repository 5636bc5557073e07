"""A CreateAccessKey whose answer was lost (issue 18 review): the driver runs what the policy
names (`Recovery.SWEEP`), with IAM and the host faked: the key IAM made is found and deleted,
or recorded in the journal for the next run; nothing else is ever deleted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import botocore.exceptions
import pytest

from quilt_ops import rotation as rotation_mod
from quilt_ops.config import Settings
from quilt_ops.journal import Journal, Step
from quilt_ops.keys import AwsError, AwsRefused, KeyStore
from quilt_ops.reporting import Silent
from quilt_ops.rotation import RotateOptions, Rotation
from quilt_ops.rotation_errors import Left, RotationError
from quilt_ops.rotation_plan import Key

USER = "quilt-prod-RegistryUser-ABCDEFGHIJKLM"
OLD, NEW, OTHER = "AKIAOLDOLDOLDOLD0001", "AKIANEWNEWNEWNEW0002", "AKIAOTHEROTHEROTH003"
STARTED = datetime.now(timezone.utc).replace(microsecond=0)
OLD_KEY = Key(OLD, "Active", STARTED - timedelta(days=80))


class Iam:
    """The user's keys as IAM lists them after the failed call; deletions recorded."""

    def __init__(self, listed=(), list_fails=False, delete_fails=False):
        self.listed, self.list_fails, self.delete_fails = list(listed), list_fails, delete_fails
        self.deleted: list[str] = []

    def keys(self, user):
        if self.list_fails:
            raise AwsError("IAM list_access_keys failed: cannot reach the AWS endpoint")
        return [OLD_KEY, *self.listed]

    def delete(self, user, key_id):
        if self.delete_fails:
            raise AwsError("IAM delete_access_key failed: InternalFailure")
        self.deleted.append(key_id)


def after_lost_answer(monkeypatch, tmp_path, iam, lost=None):
    """The failed create's recovery; returns (the error, the journals saved, whether it was cleared)."""
    saved: list[Journal] = []
    cleared: list[bool] = []
    monkeypatch.setattr(rotation_mod.rotation_host, "save_journal", lambda place, j: saved.append(j))
    monkeypatch.setattr(rotation_mod.rotation_host, "clear_journal", lambda place: cleared.append(True))
    settings = Settings(known_users=str(tmp_path / "known_users"))
    rotation = Rotation(SimpleNamespace(name="h"), settings, iam, RotateOptions(), Silent())
    rotation.secret.user, rotation.secret.keys = USER, [OLD_KEY]
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


def test_no_key_made_nothing_deleted(monkeypatch, tmp_path):
    iam = Iam([])
    error, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam)
    assert error.facts.left == Left.NOTHING and iam.deleted == [] and saved == [] and cleared


def test_a_deletion_that_fails_leaves_the_key_in_the_journal(monkeypatch, tmp_path):
    iam = Iam([Key(NEW, "Active", STARTED + timedelta(seconds=2))], delete_fails=True)
    error, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam)
    assert error.facts.left == Left.NEW_KEY and error.facts.new_key_id == NEW
    assert saved[-1].new_key_id == NEW and saved[-1].new_key_created == STARTED + timedelta(seconds=2)
    assert not cleared


@pytest.mark.parametrize(
    "iam",
    [
        Iam(list_fails=True),
        Iam([Key(NEW, "Active", STARTED + timedelta(seconds=2)), Key(OTHER, "Active", STARTED)]),
    ],
    ids=["IAM cannot be listed", "two keys made since the run began"],
)
def test_when_the_key_cannot_be_told_the_journal_stays_and_nothing_is_deleted(monkeypatch, tmp_path, iam):
    error, saved, cleared = after_lost_answer(monkeypatch, tmp_path, iam)
    assert error.facts.left == Left.UNANSWERED and iam.deleted == [] and saved == [] and not cleared
    assert error.status == 4 and "IAM may have made the new key all the same" in str(error)


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
