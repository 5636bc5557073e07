"""Rotation's pure core, state by state: the plan, the resume decision, what may be deleted.

Given the env file's key, the IAM user derived afresh, IAM's list of that user's
keys and the journal a dead run left, expect this decision (or this refusal).
Every case runs in microseconds; together they cover every journal step against
every key the host can hold.
"""

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from quilt_ops import journal as journals
from quilt_ops.errors import Refused
from quilt_ops.journal import Journal, JournalUnreadable
from quilt_ops.rotation_plan import (
    LIST_LAG,
    SKEW,
    CreateWindow,
    Key,
    Resume,
    Sweep,
    check_deletion,
    plan,
    resume,
    shared_keys,
    sweep,
    unanswered,
)
from quilt_ops.rotation_record import Record

USER = "quilt-registry-RegistryUser-ABCDEFGHIJKLM"
OLD, NEW, OTHER, SPARE = "AKIAOLDOLDOLDOLD0001", "AKIANEWNEWNEWNEW0002", "AKIAOTHEROTHEROTH003", "AKIASPARESPARESP0004"
T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
OLD_CREATED = T0 - timedelta(days=80)
STARTED = T0
NEW_CREATED = T0 + timedelta(seconds=2)
#: The operator's record of the rotation the journals below describe (an honest run wrote it).
RECORD = Record(USER, OLD, NEW)


def key(key_id, status="Active", created=None):
    created = created or {OLD: OLD_CREATED, NEW: NEW_CREATED}.get(key_id, T0 - timedelta(days=10))
    return Key(key_id, status, created)


# ----------------------------------------------------------------------------- the plan of a fresh rotation

PLANS = [
    # (case, host key, IAM keys, options, make_room or refusal words)
    ("one key", OLD, [key(OLD)], {}, []),
    ("inactive spare is removed", OLD, [key(OLD), key(SPARE, "Inactive")], {}, [SPARE]),
    ("active stranger stops the run", OLD, [key(OLD), key(OTHER)], {}, "--delete-other-active"),
    ("active stranger with --delete-other-active", OLD, [key(OLD), key(OTHER)], {"delete_other_active": True}, [OTHER]),
    ("host key not the user's", OLD, [key(OTHER)], {}, "does not belong to IAM user"),
    ("host key inactive", OLD, [key(OLD, "Inactive")], {}, "is Inactive in IAM"),
    ("no key on the host", None, [key(OLD)], {}, "holds no access key ID"),
]


@pytest.mark.parametrize("case,host_key,keys,options,expected", PLANS, ids=[p[0] for p in PLANS])
def test_plan(case, host_key, keys, options, expected):
    if isinstance(expected, str):
        with pytest.raises(Refused, match="nothing was changed") as e:
            plan("h", host_key, USER, "owner", keys, **options)
        assert expected in str(e.value)
        return
    made = plan("h", host_key, USER, "owner", keys, **options)
    assert [d.key_id for d in made.make_room] == expected
    assert host_key not in [d.key_id for d in made.make_room]
    assert made.old_key.id == host_key


# ----------------------------------------------------------------------------- resuming a dead run


def journal(step, new=NEW, user=USER, old_created=OLD_CREATED, new_created=NEW_CREATED, started=STARTED):
    return Journal(
        step=step,
        iam_user=user,
        old_key_id=OLD,
        started=started,
        who="alice@laptop",
        old_key_created=old_created,
        new_key_id=None if step == "creating" else new,
        new_key_created=None if step == "creating" else new_created,
        original_sha256="0" * 64,
        written_sha256="1" * 64 if step in journals.WRITTEN_STEPS else "",
    )


BOTH = [key(OLD), key(NEW)]
RESUMES = [
    # (case, journal, host key, IAM keys, (action, delete_new, retire_old) or refusal words)
    ("creating, host on old", journal("creating"), OLD, [key(OLD)], (Resume.ROLL_BACK, None, None)),
    ("created, host on old", journal("created"), OLD, BOTH, (Resume.ROLL_BACK, NEW, None)),
    ("created, new key already gone", journal("created"), OLD, [key(OLD)], (Resume.ROLL_BACK, None, None)),
    ("writing, host on old", journal("writing"), OLD, BOTH, (Resume.ROLL_BACK, NEW, None)),
    ("writing, host on new", journal("writing"), NEW, BOTH, (Resume.FINISH, None, OLD)),
    ("written, host on new", journal("written"), NEW, BOTH, (Resume.FINISH, None, OLD)),
    ("retiring, old still there", journal("retiring"), NEW, BOTH, (Resume.FINISH, None, OLD)),
    ("retiring, old inactive", journal("retiring"), NEW, [key(OLD, "Inactive"), key(NEW)], (Resume.FINISH, None, OLD)),
    ("retiring, old already deleted", journal("retiring"), NEW, [key(NEW)], (Resume.FINISH, None, None)),
    ("rolling back, host on new", journal("rolling-back"), NEW, BOTH, (Resume.FINISH_ROLLBACK, NEW, None)),
    ("rolling back, host on old", journal("rolling-back"), OLD, BOTH, (Resume.ROLL_BACK, NEW, None)),
    ("written, but IAM lost the new key", journal("written"), NEW, [key(OLD)], (Resume.FINISH_ROLLBACK, None, None)),
    # point 10.1: a journal naming another IAM user is refused, nothing deleted
    (
        "point 10.1: journal names another user",
        journal("written", user="someone-else"),
        NEW,
        BOTH,
        "names IAM user someone-else",
    ),
    # point 10.1: the journal's new key must have been created by that rotation
    (
        "point 10.1: new key older than the rotation",
        journal("created", new=OTHER),
        OLD,
        [key(OLD), key(OTHER, created=T0 - timedelta(days=3))],
        "not created by that rotation",
    ),
    (
        "point 10.1: new key created at another time",
        journal("created", new_created=T0 + timedelta(hours=1)),
        OLD,
        BOTH,
        "not created by that rotation",
    ),
    # point 10.1: the journal's old key must be the one IAM has, created before the rotation
    (
        "point 10.1: old key created at another time",
        journal("written", old_created=T0 - timedelta(days=3)),
        NEW,
        BOTH,
        "created at another time",
    ),
    (
        "point 10.1: old key created after the start",
        journal("written", old_created=T0 + timedelta(hours=2)),
        NEW,
        [key(OLD, created=T0 + timedelta(hours=2)), key(NEW)],
        "created at another time",
    ),
    # review: a key created long after the rotation started is some later run's
    (
        "new key created hours after the start",
        journal("created", new_created=T0 + timedelta(hours=3)),
        OLD,
        [key(OLD), key(NEW, created=T0 + timedelta(hours=3))],
        "not created by that rotation",
    ),
    ("host holds neither key", journal("written"), OTHER, BOTH + [key(OTHER)], "neither the old key"),
    ("host holds no key", journal("written"), None, BOTH, "neither the old key"),
    ("host on old but old inactive", journal("created"), OLD, [key(OLD, "Inactive"), key(NEW)], "not Active"),
    ("rolling back but old is gone", journal("rolling-back"), NEW, [key(NEW)], "not Active in IAM any more"),
]


@pytest.mark.parametrize("case,found,host_key,keys,expected", RESUMES, ids=[r[0] for r in RESUMES])
def test_resume(case, found, host_key, keys, expected):
    if isinstance(expected, str):
        with pytest.raises(Refused, match="nothing was changed") as e:
            resume(found, "h", host_key, USER, keys, RECORD)
        assert expected in str(e.value)
        return
    decision = resume(found, "h", host_key, USER, keys, RECORD)
    assert (decision.action, decision.delete_new, decision.retire_old) == expected
    # never the key the host runs on when the decision is carried out, whatever the state
    assert decision.runs_on not in (decision.delete_new, decision.retire_old)
    if decision.action != Resume.FINISH_ROLLBACK:  # (that one first puts the old file back)
        assert host_key not in (decision.delete_new, decision.retire_old)


def test_point_10_1_keys_created_since_the_journal_are_never_guessed_at():
    """An honest journal of a run that died while creating: a key created since is named, not deleted."""
    later = key(OTHER, created=T0 + timedelta(seconds=1))
    decision = resume(journal("creating"), "h", OLD, USER, [key(OLD), later], RECORD)
    assert decision.delete_new is None and decision.unproven == (OTHER,)
    decision = resume(journal("created"), "h", OLD, USER, [key(OLD), key(NEW), later], RECORD)
    assert decision.delete_new == NEW and decision.unproven == ()


# ----------------------------------------------------------------------------- a CreateAccessKey answer lost

UNANSWERED = [
    # (case, keys listed before creating, keys IAM lists after the failed call, found)
    ("IAM made no key", [OLD], [key(OLD)], ()),
    ("IAM made the key", [OLD], [key(OLD), key(NEW)], (NEW,)),
    ("a key listed before is not it", [OLD, OTHER], [key(OLD), key(OTHER, created=NEW_CREATED)], ()),
    ("deleted to make room, then made again: not listed before", [OLD, SPARE], [key(OLD), key(NEW)], (NEW,)),
    ("a key older than the run is not it", [OLD], [key(OLD), key(OTHER)], ()),
    ("a key within the clock skew is", [OLD], [key(OLD), key(NEW, created=STARTED - SKEW)], (NEW,)),
    ("a key with no creation time is not", [OLD], [key(OLD), Key(NEW, "Active", None)], ()),
    ("never the host's key", [], [key(OLD, created=NEW_CREATED)], ()),
    # review-attack: CreateAccessKey makes Active keys; an Inactive one was made (or deactivated)
    # by someone else meanwhile, and is not this run's to delete
    ("an Inactive key is not it", [OLD], [key(OLD), key(NEW, "Inactive")], ()),
    ("an Inactive key is not one of two", [OLD], [key(OLD), key(NEW), key(SPARE, "Inactive", NEW_CREATED)], (NEW,)),
    (
        "two are both named (the caller guesses at neither)",
        [OLD],
        [key(OLD), key(NEW), key(SPARE, created=NEW_CREATED)],
        (NEW, SPARE),
    ),
]


@pytest.mark.parametrize("case,before,listed,found", UNANSWERED, ids=[u[0] for u in UNANSWERED])
def test_a_key_made_though_create_access_key_failed_is_found(case, before, listed, found):
    """Issue 18: a CreateAccessKey timeout may leave a key nobody holds (and IAM's 2-key limit
    then fails the next rotation): the run finds the one it made, and only that one."""
    assert tuple(k.id for k in unanswered(STARTED, before, OLD, listed)) == found


# ----------------------------------------------------------------------------- sweep now, wait, or leave it

#: The run's CreateAccessKey calls: the first at T0+1s, the last failure (after botocore's hidden
#: retries) at T0+40s, timed by IAM's clock measured to within 3 s.
WINDOW = CreateWindow(T0 + timedelta(seconds=1), T0 + timedelta(seconds=40), timedelta(seconds=3))
UNMEASURED = CreateWindow(T0 + timedelta(seconds=1), T0 + timedelta(seconds=40))
NOW = timedelta(0)
AT = {
    "in the calls": T0 + timedelta(seconds=2),
    "at the last failure": T0 + timedelta(seconds=40),
    "within the slack": T0 + timedelta(seconds=43),
    "after the calls": T0 + timedelta(seconds=50),
    "during the waits": T0 + timedelta(seconds=52),
    "before the first call": T0 - timedelta(seconds=3),
}

SWEEPS = [
    # (case, window, keys IAM lists after the failed calls, how long the run listed again, action, key, named)
    ("issue 1: none listed yet (IAM's list lags): list again", WINDOW, [key(OLD)], NOW, Sweep.WAIT, None, ()),
    ("issue 1: none listed yet, still waiting", WINDOW, [key(OLD)], LIST_LAG / 2, Sweep.WAIT, None, ()),
    (
        "issue 1: none listed after LIST_LAG: leave it to the next run",
        WINDOW,
        [key(OLD)],
        LIST_LAG,
        Sweep.LEAVE,
        None,
        (),
    ),
    (
        "the one key made during the calls is the run's",
        WINDOW,
        [key(OLD), key(NEW, created=AT["in the calls"])],
        NOW,
        Sweep.DELETE,
        NEW,
        (),
    ),
    (
        "made at the last failure",
        WINDOW,
        [key(OLD), key(NEW, created=AT["at the last failure"])],
        NOW,
        Sweep.DELETE,
        NEW,
        (),
    ),
    (
        "made within the clock's slack",
        WINDOW,
        [key(OLD), key(NEW, created=AT["within the slack"])],
        NOW,
        Sweep.DELETE,
        NEW,
        (),
    ),
    (
        "listed late (after waiting) and made during the calls",
        WINDOW,
        [key(OLD), key(NEW, created=AT["in the calls"])],
        LIST_LAG / 2,
        Sweep.DELETE,
        NEW,
        (),
    ),
    # issue 2: a key made by hand after the run's calls ended is never taken for the run's own
    (
        "issue 2: the one key was made after the calls (by hand): named, not deleted",
        WINDOW,
        [key(OLD), key(OTHER, created=AT["after the calls"])],
        NOW,
        Sweep.NAME,
        None,
        (OTHER,),
    ),
    (
        "issue 2: made by hand while the run listed again: named",
        WINDOW,
        [key(OLD), key(OTHER, created=AT["during the waits"])],
        LIST_LAG / 2,
        Sweep.NAME,
        None,
        (OTHER,),
    ),
    (
        "issue 2: made by hand between the pre-flight list and the first call: named",
        WINDOW,
        [key(OLD), key(OTHER, created=AT["before the first call"])],
        NOW,
        Sweep.NAME,
        None,
        (OTHER,),
    ),
    (
        "issue 2: the run's key and one made by hand: both named, neither deleted",
        WINDOW,
        [key(OLD), key(NEW, created=AT["in the calls"]), key(OTHER, created=AT["after the calls"])],
        NOW,
        Sweep.NAME,
        None,
        (NEW, OTHER),
    ),
    (
        "issue 2: two made during the calls (one by hand): both named",
        WINDOW,
        [key(OLD), key(NEW, created=AT["in the calls"]), key(OTHER, created=AT["in the calls"])],
        NOW,
        Sweep.NAME,
        None,
        (NEW, OTHER),
    ),
    # The window's limit: a key made by hand during the calls themselves, when the run's own try
    # made none (its retry then got LimitExceeded), is what IAM lists for the run's: it cannot be
    # told apart. The window keeps that to the calls' own seconds.
    (
        "issue 2: one made by hand during the calls, the run's made none: not told apart",
        WINDOW,
        [key(OLD), key(OTHER, created=AT["in the calls"])],
        NOW,
        Sweep.DELETE,
        OTHER,
        (),
    ),
    (
        "clock not measured: the window is widened by SKEW",
        UNMEASURED,
        [key(OLD), key(NEW, created=AT["after the calls"])],
        NOW,
        Sweep.DELETE,
        NEW,
        (),
    ),
    (
        "clock not measured: made later than SKEW after the calls: named",
        UNMEASURED,
        [key(OLD), key(OTHER, created=T0 + timedelta(seconds=40) + SKEW + timedelta(seconds=1))],
        NOW,
        Sweep.NAME,
        None,
        (OTHER,),
    ),
    (
        "an Inactive key is not it (none yet)",
        WINDOW,
        [key(OLD), key(NEW, "Inactive", AT["in the calls"])],
        NOW,
        Sweep.WAIT,
        None,
        (),
    ),
    (
        "a key listed before is not it",
        WINDOW,
        [key(OLD), key(SPARE, created=AT["in the calls"])],
        LIST_LAG,
        Sweep.LEAVE,
        None,
        (),
    ),
]


@pytest.mark.parametrize("case,window,listed,waited,action,deleted,named", SWEEPS, ids=[s[0] for s in SWEEPS])
def test_after_a_lost_create_access_key_answer_sweep_wait_or_leave(
    case, window, listed, waited, action, deleted, named
):
    """Issues 1 and 2 (sweep-lag): a key is deleted only when exactly one qualifies and IAM made it
    within the window of the run's CreateAccessKey calls; none listed: list again for LIST_LAG,
    then leave the journal for the next run; otherwise name them, delete none."""
    decision = sweep(window, [OLD, SPARE], OLD, listed, waited)
    assert decision.action == action
    assert (decision.key.id if decision.key else None) == deleted
    assert tuple(k.id for k in decision.candidates) == named


def left_for_the_next_run(window=WINDOW):
    return dataclasses.replace(
        journal("creating"),
        keys_before=(OLD,),
        create_began=window.began,
        create_ended=window.ended,
        create_slack=int(window.slack.total_seconds()),
    )


@pytest.mark.parametrize(
    "case,listed,delete_new,unproven",
    [
        (
            "IAM lists the key now: the next run names it",
            [key(OLD), key(NEW, created=AT["in the calls"])],
            None,
            (NEW,),
        ),
        ("still none: nothing to delete", [key(OLD)], None, ()),
        (
            "made by hand after the run: named, kept",
            [key(OLD), key(OTHER, created=AT["after the calls"])],
            None,
            (OTHER,),
        ),
        (
            "the run's and a hand-made one: both named",
            [key(OLD), key(NEW, created=AT["in the calls"]), key(OTHER, created=AT["after the calls"])],
            None,
            (NEW, OTHER),
        ),
    ],
)
def test_the_next_run_sweeps_what_a_lost_answer_left(case, listed, delete_new, unproven):
    """Issue 1: the journal a run left when IAM had not listed its key yet lets the next run
    decide as that run would have (no more waiting), then rotate afresh."""
    decision = resume(left_for_the_next_run(), "h", OLD, USER, listed, RECORD)
    assert (decision.action, decision.delete_new, decision.unproven) == (Resume.ROLL_BACK, delete_new, unproven)


@pytest.mark.parametrize(
    "began,ended",
    [(T0 - SKEW - timedelta(seconds=1), T0), (T0, T0 + timedelta(hours=1, seconds=1))],
    ids=["calls before the rotation began", "calls after its longest run"],
)
def test_a_forged_window_of_calls_is_refused(began, ended):
    """The journal is a file anyone who logs in can write: a window of calls outside the
    rotation's own time would let it name another key of the user's for deletion."""
    forged = left_for_the_next_run(CreateWindow(began, ended, timedelta(seconds=3)))
    with pytest.raises(Refused, match="outside that rotation's time"):
        resume(forged, "h", OLD, USER, [key(OLD), key(OTHER, created=began)], RECORD)


def test_a_forged_journal_left_for_the_next_sweep_deletes_no_key_made_by_hand():
    """Attack (review 2): the journal is the host's, which its folder's owner writes. At step
    creating, with the rotation's start and the window of calls put at a key made by hand days
    ago and that key left out of the keys listed before, the next run deleted it (an Active key
    perhaps in use elsewhere). The journal's window is no proof: that key is named, not deleted."""
    made_by_hand = T0 - timedelta(days=10)
    forged = dataclasses.replace(
        journal("creating", started=made_by_hand - timedelta(seconds=5)),
        keys_before=(OLD,),
        create_began=made_by_hand - timedelta(seconds=1),
        create_ended=made_by_hand + timedelta(seconds=1),
        create_slack=3,
    )
    decision = resume(forged, "h", OLD, USER, [key(OLD), key(OTHER, created=made_by_hand)], RECORD)
    assert (decision.action, decision.delete_new, decision.unproven) == (Resume.ROLL_BACK, None, (OTHER,))


def test_a_journal_left_for_the_next_sweep_round_trips():
    found = left_for_the_next_run()
    assert journals.parse(found.to_json().encode()) == found


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("keys_before", "AKIA", "keys_before"),
        ("keys_before", ["$(reboot)"], "keys_before"),
        ("create_ended", None, "create_ended"),
        ("create_ended", "2026-10-01T00:00:00Z", "before create_began"),
        ("create_slack", -1, "create_slack"),
        ("create_slack", 3600, "create_slack"),
    ],
)
def test_forged_sweep_fields_are_refused(field, value, words):
    import json

    data = json.loads(left_for_the_next_run().to_json())
    data[field] = value
    with pytest.raises(JournalUnreadable, match=words):
        journals.parse(json.dumps(data).encode())


# ----------------------------------------------------------------------------- the last check before IAM


@pytest.mark.parametrize(
    "key_id,host_key,allowed,refused",
    [
        (NEW, OLD, {NEW}, False),
        (OLD, NEW, {OLD}, False),
        (OLD, OLD, {OLD}, True),  # never the host's key
        (OTHER, OLD, {NEW}, True),  # never a key neither the plan nor the journal names
    ],
)
def test_check_deletion(key_id, host_key, allowed, refused):
    if refused:
        with pytest.raises(Refused):
            check_deletion(key_id, host_key, allowed)
    else:
        check_deletion(key_id, host_key, allowed)


def test_point_10_6_shared_keys_are_found():
    assert shared_keys({"a": OLD, "b": NEW, "c": OLD, "d": None}) == {OLD: ["a", "c"]}
    assert shared_keys({"a": OLD, "b": NEW}) == {}


# ----------------------------------------------------------------------------- the journal file


def test_journal_round_trip():
    found = journal("written")
    assert journals.parse(found.to_json().encode()) == found


@pytest.mark.parametrize(
    "raw,words",
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"version": 1, "step": "created"}', "quilt-ops 0.1"),
        (b'{"version": 3}', "unknown version"),
    ],
)
def test_point_10_9_unreadable_journals_say_why(raw, words):
    with pytest.raises(JournalUnreadable, match=words):
        journals.parse(raw)


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("step", "deleting-everything", "unknown step"),
        ("iam_user", "a user; rm -rf /", "iam_user"),
        ("old_key_id", "$(reboot)", "old_key_id"),
        ("new_key_id", None, "without a new key"),
        ("new_key_id", "AKIA;X", "new_key_id"),
        ("started", "yesterday", "started"),
        ("keep_old", "yes", "keep_old"),
        ("mode", 99999, "mode"),
        ("who", "a\x1b[2Jb", "who"),
        # review: a journal without the times could name any key of the user's
        ("old_key_created", None, "old_key_created"),
        ("new_key_created", None, "new_key_created"),
        ("original_sha256", None, "quilt-ops 0.2.0"),
        ("written_sha256", None, "written_sha256"),
        ("written_sha256", "x" * 64, "written_sha256"),
        ("original_sha256", "../../etc/shadow", "SHA-256"),
    ],
)
def test_forged_journal_fields_are_refused(field, value, words):
    import json

    data = json.loads(journal("written").to_json())
    data[field] = value
    with pytest.raises(JournalUnreadable, match=words):
        journals.parse(json.dumps(data).encode())


# ----------------------------------------------------------------------------- the new key's check


class AcceptingSts:
    def get_caller_identity(self):
        return {"Arn": "arn:aws:iam::123456789012:user/" + USER}


def test_a_bucket_name_botocore_refuses_is_not_waited_on():
    """Review: the bucket name comes from the host's env file; botocore refuses a bad one
    before any request, and that answer never changes: it must not be retried for a minute."""
    import boto3

    from quilt_ops.keys import KeyStore

    s3 = boto3.Session(aws_access_key_id="AKIAX", aws_secret_access_key="x", region_name="us-east-1").client("s3")
    why, waiting_helps = KeyStore.check_with(
        (AcceptingSts(), s3), "arn:aws:iam::123456789012:user/" + USER, "bad bucket\x1b[2J"
    )
    assert not waiting_helps and "not a valid S3 bucket name" in why and "\x1b" not in why


# ----------------------------------------------------------------------------- the IAM user, with --stack


class StackStore:
    """IAM and CloudFormation as `AccessKeys.find_user` asks them."""

    def __init__(self, key_owner, stack_user, stack_bucket):
        self.key_owner, self.stack_user, self.bucket = key_owner, stack_user, stack_bucket

    def user_of_key(self, key_id):
        return self.key_owner

    def user_from_stack(self, stack):
        return self.stack_user

    def stack_bucket(self, stack):
        return self.bucket


OTHER_USER = "quilt-other-RegistryUser-ZYXWVUTSRQPON"


@pytest.mark.parametrize(
    "key_owner,bucket,expected",
    [
        (USER, "prod-packages", USER),
        (None, "prod-packages", USER),  # RegistryUser may not ask IAM whose key it is: the stack tells
        (OTHER_USER, "prod-packages", "runs on another user's key"),
        (USER, "someone-elses-bucket", "names the bucket someone-elses-bucket"),
    ],
)
def test_review_with_a_stack_the_stack_decides_the_user(key_owner, bucket, expected, tmp_path):
    """Review: the host's env file is a file on the host; with --stack a host running on
    another registry's key (or bucket) must be refused, not rotated on its behalf."""
    from types import SimpleNamespace

    from quilt_ops.config import Settings
    from quilt_ops.reporting import Silent
    from quilt_ops.rotation import RotateOptions, Rotation

    store = StackStore(key_owner, USER, "prod-packages")
    settings = Settings(known_users=str(tmp_path / "known_users"))
    rotation = Rotation(SimpleNamespace(name="h"), settings, store, RotateOptions(stack="quilt-prod"), Silent())
    if expected == USER:
        assert rotation.secret.find_user(OLD, bucket)[0] == USER
        return
    with pytest.raises(Refused, match="nothing was changed") as e:
        rotation.secret.find_user(OLD, bucket)
    assert expected in str(e.value)
