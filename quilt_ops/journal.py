"""The rotation journal: how far a rotation got, kept on the host next to the env file.

It lets the next ``rotate-keys``, from any operator's machine, finish or roll
back a run that died anywhere. It holds step names, the IAM user, key IDs and
their creation times, never a secret.

The journal is a file on the host, so anyone who can log in can write it. It is
therefore parsed strictly here, and never trusted on its own: before any IAM
action, `quilt_ops.rotation_plan.resume` checks it against the IAM user derived
afresh and against IAM's own list of keys (IDs and creation times).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from .errors import QuiltError

VERSION = 2


class Step(str, Enum):
    """A rotation's steps, in the order the driver takes them (`quilt_ops.rotation_policy`).

    The values of the steps a journal records are the words journals have always held, so a
    journal an earlier version left is read as it was.
    """

    #: Writing the first journal (never recorded: the journal says ``creating`` once written).
    START = "start"
    #: Retiring keys the plan named to make room (recorded as ``creating``).
    MAKE_ROOM = "make-room"
    CREATING = "creating"
    CREATED = "created"
    #: Verifying the new key (recorded as ``created``).
    VERIFY = "verify"
    WRITING = "writing"
    WRITTEN = "written"
    RETIRING = "retiring"
    #: Removing the journal at the end (never recorded).
    DONE = "done"
    ROLLING_BACK = "rolling-back"
    #: Rolling back what a dead run left (never recorded).
    RESUME_ROLLBACK = "resume-rollback"

    def __str__(self) -> str:
        return self.value


#: The steps a journal records, in order (``rolling-back`` can follow any after ``created``).
RECORDED = (Step.CREATING, Step.CREATED, Step.WRITING, Step.WRITTEN, Step.RETIRING, Step.ROLLING_BACK)
STEPS = tuple(s.value for s in RECORDED)
USER_NAME = re.compile(r"[\w+=,.@-]{1,64}")
KEY_ID = re.compile(r"[A-Z0-9]{16,128}")


class JournalBehind(QuiltError):
    """The env file was replaced but the journal's last word (step ``written``) was not written."""


class JournalUnreadable(ValueError):
    """A journal exists but cannot be used; the message says why (never its content)."""


def _time(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


@dataclass(frozen=True)
class Journal:
    """One unfinished rotation."""

    step: Step
    iam_user: str
    old_key_id: str
    started: datetime
    who: str
    keep_old: bool = False
    #: The env file's mode when the rotation started.
    mode: int = 0o600
    #: IAM's creation time of the old key (checked against IAM on resume).
    old_key_created: datetime | None = None
    new_key_id: str | None = None
    #: IAM's creation time of the new key, as CreateAccessKey returned it.
    new_key_created: datetime | None = None
    #: SHA-256 of the env file as it was before the rotation (the backup must match it).
    original_sha256: str = ""
    #: SHA-256 of the env file the rotation writes (from step "writing" on): a rollback puts
    #: the backup back only over that file, never over an edit made since.
    written_sha256: str = ""
    #: After a lost CreateAccessKey answer whose key was not found (step "creating"): the keys
    #: listed before creating and the window of the calls (`rotation_plan.CreateWindow`, its
    #: slack in seconds), so that the next run sweeps the key IAM made (`rotation_plan.sweep`).
    keys_before: tuple[str, ...] = ()
    create_began: datetime | None = None
    create_ended: datetime | None = None
    create_slack: int = 0

    def at(self, step: Step, **changes: Any) -> Journal:
        """The same journal at another step."""
        return dataclasses.replace(self, step=step, **changes)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": VERSION,
                "tool": "quilt-ops",
                "step": Step(self.step).value,
                "iam_user": self.iam_user,
                "old_key_id": self.old_key_id,
                "old_key_created": _time(self.old_key_created),
                "new_key_id": self.new_key_id,
                "new_key_created": _time(self.new_key_created),
                "started": _time(self.started),
                "who": self.who,
                "keep_old": self.keep_old,
                "mode": self.mode,
                "original_sha256": self.original_sha256,
                "written_sha256": self.written_sha256 or None,
                **(
                    {
                        "keys_before": list(self.keys_before),
                        "create_began": _time(self.create_began),
                        "create_ended": _time(self.create_ended),
                        "create_slack": self.create_slack,
                    }
                    if self.create_began
                    else {}
                ),
            },
            sort_keys=True,
        )


def _parse_time(value: Any, field: str, required: bool = True) -> datetime | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise JournalUnreadable(f"{field} is not a time")
    try:
        parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise JournalUnreadable(f"{field} is not a time") from None
    return parsed.replace(tzinfo=timezone.utc)


def _key(value: Any, field: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not KEY_ID.fullmatch(value):
        raise JournalUnreadable(f"{field} is not an access key ID")
    return value


def _digest(value: Any, field: str, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if field == "original_sha256" and value is None:
        raise JournalUnreadable(
            "it has no original_sha256: it was written by quilt-ops 0.2.0, which cannot be resumed by "
            "this version; finish it with 0.2.0, or check the env file by hand and remove the journal"
        )
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise JournalUnreadable(f"{field} is not a SHA-256 digest")
    return value


#: The steps at which the rotation has written (or is writing) the env file ("rolling-back"
#: has it when the rollback began after the write).
WRITTEN_STEPS = (Step.WRITING, Step.WRITTEN, Step.RETIRING)


def _window(data: dict[str, Any]) -> dict[str, Any]:
    """The lost CreateAccessKey's facts (all or none), as `Journal` fields."""
    if data.get("create_began") is None:
        return {}
    listed, slack = data.get("keys_before"), data.get("create_slack")
    if not isinstance(listed, list) or len(listed) > 10:
        raise JournalUnreadable("keys_before is not a list of access key IDs")
    if isinstance(slack, bool) or not isinstance(slack, int) or not 0 <= slack <= 300:
        raise JournalUnreadable("create_slack is not a number of seconds")
    began = _parse_time(data.get("create_began"), "create_began")
    ended = _parse_time(data.get("create_ended"), "create_ended")
    assert began is not None and ended is not None
    if ended < began:
        raise JournalUnreadable("create_ended is before create_began")
    return {
        "keys_before": tuple(str(_key(k, "keys_before")) for k in listed),
        "create_began": began,
        "create_ended": ended,
        "create_slack": slack,
    }


def parse(raw: bytes) -> Journal:
    """A journal from the host's file; raises `JournalUnreadable` for anything odd."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise JournalUnreadable("it is not JSON") from None
    if not isinstance(data, dict):
        raise JournalUnreadable("it is not a JSON object")
    version = data.get("version")
    if version == 1:
        raise JournalUnreadable("it was written by quilt-ops 0.1, whose journals cannot be checked against IAM")
    if version != VERSION:
        raise JournalUnreadable(f"unknown version {str(version)[:10]!r}")
    word = data.get("step")
    if word not in STEPS:
        raise JournalUnreadable("unknown step")
    step = Step(word)
    user = data.get("iam_user")
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        raise JournalUnreadable("iam_user is not an IAM user name")
    who = data.get("who")
    if not isinstance(who, str) or len(who) > 200 or not who.isprintable():
        raise JournalUnreadable("who is not a name")
    keep_old, mode = data.get("keep_old"), data.get("mode")
    if not isinstance(keep_old, bool):
        raise JournalUnreadable("keep_old is not true or false")
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise JournalUnreadable("mode is not a file mode")
    new_key_id = _key(data.get("new_key_id"), "new_key_id", required=False)
    if step != Step.CREATING and new_key_id is None:
        raise JournalUnreadable(f"step {step} without a new key")
    old_key_id = _key(data.get("old_key_id"), "old_key_id")
    assert old_key_id is not None
    started = _parse_time(data.get("started"), "started")
    assert started is not None
    return Journal(
        step=step,
        iam_user=user,
        old_key_id=old_key_id,
        started=started,
        who=who,
        keep_old=keep_old,
        mode=mode,
        # The creation times, which IAM alone knows (RegistryUser may not ask IAM), tie the
        # journal's key IDs to the keys this rotation saw and made: they are required.
        old_key_created=_parse_time(data.get("old_key_created"), "old_key_created"),
        new_key_id=new_key_id,
        new_key_created=_parse_time(data.get("new_key_created"), "new_key_created", required=new_key_id is not None),
        original_sha256=_digest(data.get("original_sha256"), "original_sha256"),
        written_sha256=_digest(data.get("written_sha256"), "written_sha256", required=step in WRITTEN_STEPS),
        **_window(data),
    )
