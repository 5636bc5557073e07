"""Rotation's decisions, apart from any I/O: the plan, the resume decision, what may be deleted.

Everything here is a pure function of what the executor (`quilt_ops.rotation`)
read: the env file's key, the IAM user derived afresh, IAM's list of that
user's keys, the journal left by a run that died. The executor does only what
a `Plan` or a `ResumeDecision` lists, so the rules that keep an operator from
losing a key live here, in one place, with table-driven tests.

The rules:
- the key the host's env file holds is never deactivated or deleted;
- a fresh rotation deletes only a key that was there at pre-flight: an Inactive
  spare (it holds IAM's second key slot), or, with ``--delete-other-active``,
  an Active one;
- resuming, the journal must agree with IAM: its user is the one derived afresh
  (never the journal's word alone); its old key exists with the creation time
  recorded and was created before the rotation started; its new key, if IAM
  still has it, was created after the rotation started, at the time recorded.
  Only that new key (when the host does not hold it) or, once the host runs
  healthy on the new key, that old key, is ever deleted;
- resuming, a key is deleted (the old key retired, the new key abandoned) only if the
  operator's own record of the rotation (`quilt_ops.rotation_record`, on the operator's
  machine) names that key for the same user: the journal is the host's, and a forged one
  (step ``written``, old key = a key kept with ``--keep-old``) would have the kept key
  deleted; without the record the keys are `withheld`, named to the operator, not deleted;
- a key created by a run that died before recording it is never guessed at: the
  operator is told, with the command that removes it;
- a live run whose CreateAccessKey failed (IAM may have made the key though its answer
  was lost) takes as its own only the one key that is new since its pre-flight list, is
  not the host's, and was created since it began (`unanswered`); two such keys are not
  guessed at either;
- the key so found is deleted only if it is the one key that qualifies and IAM made it within
  the window of the run's CreateAccessKey calls (`CreateWindow`: the first call to the last
  answer or failure): a key made by hand after that (while the run re-lists, or before the
  next run) is not the run's. None found: IAM's list may lag, so the run lists again for
  `LIST_LAG`, then leaves the journal for the next run, which names the key that qualifies then
  (`sweep`) with the command that deletes it, and deletes none: the journal is the host's, and
  its window and keys listed before, forged, would name a key made by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from .errors import Refused
from .journal import Journal
from .rotation_record import Record

#: Clock difference tolerated between the operator's machine and IAM.
SKEW = timedelta(minutes=5)
#: The longest a rotation can take from its start to creating its key (verification waits
#: come after the key exists): a key created later is not that rotation's.
MAX_RUN = timedelta(hours=1)
#: How long a run lists IAM's keys again when a lost CreateAccessKey answer's key is not listed
#: yet (IAM is eventually consistent: a key made may be listed seconds later).
LIST_LAG = timedelta(seconds=15)


@dataclass(frozen=True)
class Key:
    """One of the IAM user's access keys, as IAM lists it."""

    id: str
    status: str
    created: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status == "Active"


@dataclass(frozen=True)
class Deletion:
    """A key to delete (deactivated first if Active), and why that is allowed."""

    key_id: str
    why: str
    deactivate_first: bool = True


@dataclass(frozen=True)
class Plan:
    """What a fresh rotation does on one host."""

    host: str
    iam_user: str
    user_source: str
    old_key: Key
    #: Keys to remove before creating the new one (IAM allows two keys a user).
    make_room: tuple[Deletion, ...] = ()
    keep_old: bool = False
    key_count: int = 1


def plan(
    host: str,
    host_key: str | None,
    iam_user: str,
    user_source: str,
    keys: Iterable[Key],
    keep_old: bool = False,
    delete_other_active: bool = False,
) -> Plan:
    """The plan of a fresh rotation, or `Refused` (nothing changed) with the reason."""
    keys = list(keys)
    if not host_key:
        raise Refused(f"the env file on {host} holds no access key ID; nothing was changed")
    mine = [k for k in keys if k.id == host_key]
    if not mine:
        raise Refused(f"the host's key {host_key} does not belong to IAM user {iam_user}; nothing was changed")
    if not mine[0].active:
        raise Refused(
            f"the host's key {host_key} is {mine[0].status} in IAM, so the registry cannot be using it; "
            "fix that first; nothing was changed"
        )
    others = [k for k in keys if k.id != host_key]
    room: list[Deletion] = []
    if len(keys) >= 2:
        for key in others:
            if not key.active:
                room.append(
                    Deletion(
                        key.id, "Inactive and not the host's: it holds the second key slot", deactivate_first=False
                    )
                )
        active = [k.id for k in others if k.active]
        if active and not delete_other_active:
            raise Refused(
                f"IAM user {iam_user} is at the two-key limit and {', '.join(active)} is Active and not the host's "
                "(it may be in use elsewhere); delete it yourself or rerun with --delete-other-active; "
                "nothing was changed"
            )
        room += [Deletion(k, "Active and not the host's (--delete-other-active)") for k in active]
    return Plan(host, iam_user, user_source, mine[0], tuple(room), keep_old, len(keys))


class Resume(str, Enum):
    """What to do with a rotation a dead run left behind."""

    #: The host holds the old key: undo what the dead run did, then rotate afresh.
    ROLL_BACK = "roll back"
    #: The host holds the new key: make sure the registry runs healthy on it, retire the old key.
    FINISH = "finish"
    #: The host holds the new key but the rotation must not go on (it was rolling
    #: back, or IAM no longer has the new key): put the old file back, then delete the new key.
    FINISH_ROLLBACK = "finish the rollback"


@dataclass(frozen=True)
class ResumeDecision:
    action: Resume
    #: The key the registry must run on (recreate the containers if it does not).
    runs_on: str
    #: The dead run's new key, proven to be its own: delete it (after the host is back on the old key).
    delete_new: str | None = None
    #: The old key, proven: retire it once the host runs healthy on the new key.
    retire_old: str | None = None
    #: Keys that may be the dead run's but cannot be proven so: the operator is told.
    unproven: tuple[str, ...] = field(default=())
    #: Keys the journal would have deleted but the operator's record does not name: not deleted.
    withheld: tuple[str, ...] = field(default=())


def _same_second(a: datetime | None, b: datetime | None) -> bool:
    """Both known and the same to the second (IAM reports whole seconds)."""
    if a is None or b is None:
        return False
    return abs((a - b).total_seconds()) < 1


def resume(
    journal: Journal, host: str, host_key: str | None, iam_user: str, keys: Iterable[Key], record: Record | None
) -> ResumeDecision:
    """The decision on an unfinished rotation, or `Refused` (nothing changed) when the
    journal and IAM disagree or the host holds neither key; a key is deleted only if
    ``record`` (the operator's record of the rotation on this host) names it."""
    return vouched(_decide(journal, host, host_key, iam_user, keys), record, iam_user)


def vouched(decision: ResumeDecision, record: Record | None, iam_user: str) -> ResumeDecision:
    """The decision with only the deletions the operator's record names (same user, same key);
    the others `withheld`."""
    ours = record is not None and record.user == iam_user
    keep_new = ours and record is not None and decision.delete_new == record.new_key_id
    keep_old = ours and record is not None and decision.retire_old == record.old_key_id
    withheld = tuple(
        k for k, kept in ((decision.delete_new, keep_new), (decision.retire_old, keep_old)) if k and not kept
    )
    return replace(
        decision,
        delete_new=decision.delete_new if keep_new else None,
        retire_old=decision.retire_old if keep_old else None,
        withheld=withheld,
    )


def _decide(journal: Journal, host: str, host_key: str | None, iam_user: str, keys: Iterable[Key]) -> ResumeDecision:
    by_id = {k.id: k for k in keys}
    where = f"the rotation journal on {host}"
    if journal.iam_user != iam_user:
        raise Refused(
            f"{where} names IAM user {journal.iam_user}, but the host's key belongs to {iam_user}; "
            "it was not written by this rotation: check it, then remove it; nothing was changed"
        )
    old = by_id.get(journal.old_key_id)
    if old is not None and (
        not _same_second(old.created, journal.old_key_created)
        or (old.created is not None and old.created > journal.started + SKEW)
    ):
        raise Refused(
            f"{where} names {journal.old_key_id} as the old key, but IAM's key of that name was created "
            "at another time; check the journal, then remove it; nothing was changed"
        )
    new = by_id.get(journal.new_key_id) if journal.new_key_id else None
    if new is not None and (
        not _same_second(new.created, journal.new_key_created)
        or new.created is None
        or new.created < journal.started - SKEW
        or new.created > journal.started + MAX_RUN
        or (old is not None and old.created is not None and new.created <= old.created)
    ):
        raise Refused(
            f"{where} names {journal.new_key_id} as its new key, but IAM's key of that name was not "
            "created by that rotation; check the journal, then remove it; nothing was changed"
        )
    unproven: tuple[str, ...] = ()
    swept = _swept(journal, where, host_key, by_id.values())
    if swept is not None:
        # Named, never deleted: the journal is the host's (its folder's owner writes it), so its
        # window and its keys listed before prove nothing; forged, they named a key made by hand.
        unproven = tuple(k.id for k in (*swept.candidates, *((swept.key,) if swept.key else ())))
    elif journal.step == "creating":
        unproven = tuple(
            sorted(
                k.id
                for k in by_id.values()
                if k.id != journal.old_key_id
                and k.id != host_key
                and k.created is not None
                and k.created >= journal.started - SKEW
            )
        )
    if host_key == journal.old_key_id:
        if old is None or not old.active:
            raise Refused(
                f"the host's key {host_key} is not Active in IAM; {where} cannot be finished safely; "
                "nothing was changed"
            )
        return ResumeDecision(Resume.ROLL_BACK, runs_on=old.id, delete_new=new.id if new else None, unproven=unproven)
    if journal.new_key_id and host_key == journal.new_key_id:
        new_usable = new is not None and new.active
        if journal.step == "rolling-back" or not new_usable:
            if old is None or not old.active:
                raise Refused(
                    f"the host holds {host_key}, which the rotation must give up, but the old key "
                    f"{journal.old_key_id} is not Active in IAM any more; a person must look; "
                    "nothing was changed"
                )
            return ResumeDecision(Resume.FINISH_ROLLBACK, runs_on=old.id, delete_new=new.id if new else None)
        return ResumeDecision(Resume.FINISH, runs_on=host_key, retire_old=old.id if old else None)
    raise Refused(
        f"the env file on {host} holds {host_key or 'no key'}, neither the old key {journal.old_key_id} "
        f"nor the new key {journal.new_key_id or '(none recorded)'} of the unfinished rotation; "
        "check it by hand, then remove the journal; nothing was changed"
    )


def unanswered(started: datetime, before: Iterable[str], host_key: str | None, keys: Iterable[Key]) -> tuple[Key, ...]:
    """Keys IAM lists now that this run may have made though CreateAccessKey's answer was lost:
    not the host's, not in the run's own list before it created (``before``), created since it
    began (``started``, the run's own clock, so with `SKEW`), and Active (CreateAccessKey makes
    Active keys: an Inactive one is someone else's, made or deactivated meanwhile)."""
    known = set(before)
    return tuple(
        sorted(
            (
                k
                for k in keys
                if k.id != host_key
                and k.id not in known
                and k.active
                and k.created is not None
                and k.created >= started - SKEW
            ),
            key=lambda k: k.id,
        )
    )


@dataclass(frozen=True)
class CreateWindow:
    """When a run's CreateAccessKey calls were made, by the run's own clock: the first call, and
    the last answer or failure (botocore's hidden retries fall in between)."""

    began: datetime
    ended: datetime
    #: How far IAM's clock may be from the one that timed the window: `SKEW` unless measured.
    slack: timedelta = SKEW


class Sweep(str, Enum):
    """What to do about the key a lost CreateAccessKey answer may have left."""

    #: One key qualifies and IAM made it within the window: it is the run's, delete it.
    DELETE = "delete"
    #: None listed yet: IAM's list may lag behind, list again.
    WAIT = "wait"
    #: None listed after `LIST_LAG`: keep the journal, so that the next run sweeps it then.
    LEAVE = "leave"
    #: Several qualify, or the one found was made outside the window: delete nothing, name them.
    NAME = "name"


@dataclass(frozen=True)
class SweepDecision:
    action: Sweep
    #: The key to delete (`Sweep.DELETE`).
    key: Key | None = None
    #: The keys that may be the run's (`Sweep.NAME`: the operator deletes the right one).
    candidates: tuple[Key, ...] = ()


def sweep(
    window: CreateWindow,
    before: Iterable[str],
    host_key: str | None,
    keys: Iterable[Key],
    waited: timedelta = LIST_LAG,
) -> SweepDecision:
    """The decision on the keys IAM lists after a failed CreateAccessKey (`unanswered` names
    the candidates); ``waited`` is how long the run has listed again (the next run: `LIST_LAG`)."""
    found = unanswered(window.began, before, host_key, keys)
    if not found:
        return SweepDecision(Sweep.WAIT if waited < LIST_LAG else Sweep.LEAVE)
    only = found[0]
    if (
        len(found) == 1
        and only.created is not None
        and window.began - window.slack <= only.created <= window.ended + window.slack
    ):
        return SweepDecision(Sweep.DELETE, key=only)
    return SweepDecision(Sweep.NAME, candidates=found)


def _swept(journal: Journal, where: str, host_key: str | None, keys: Iterable[Key]) -> SweepDecision | None:
    """A run whose CreateAccessKey answer was lost and whose key IAM did not list yet left the
    keys it listed before and the calls' window: the same decision as that run's, on what IAM
    lists now (no more waiting for it); None for any other journal."""
    if journal.step != "creating" or journal.create_began is None or journal.create_ended is None:
        return None
    window = CreateWindow(journal.create_began, journal.create_ended, timedelta(seconds=journal.create_slack))
    if window.began < journal.started - SKEW or window.ended > journal.started + MAX_RUN:
        raise Refused(
            f"{where} names CreateAccessKey calls made outside that rotation's time; check the journal, "
            "then remove it; nothing was changed"
        )
    return sweep(window, journal.keys_before, host_key, keys)


def check_deletion(key_id: str, host_key: str | None, allowed: Iterable[str]) -> None:
    """The last check before an IAM delete or deactivate: never the host's key, and only
    a key the plan or the resume decision named."""
    if key_id == host_key:
        raise Refused(f"refusing to retire {key_id}: it is the key the host's env file holds")
    if key_id not in set(allowed):
        raise Refused(f"refusing to retire {key_id}: neither the plan nor the journal names it")


def shared_keys(host_keys: Mapping[str, str | None]) -> dict[str, list[str]]:
    """Keys held by more than one host of a run: key ID -> hosts."""
    by_key: dict[str, list[str]] = {}
    for host, key in host_keys.items():
        if key:
            by_key.setdefault(key, []).append(host)
    return {key: hosts for key, hosts in by_key.items() if len(hosts) > 1}
