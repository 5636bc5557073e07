"""A rotation's errors carry facts; their one line is rendered in one place (issue 18.3)."""

from __future__ import annotations

import pytest

from quilt_ops.rotation_errors import (
    Facts,
    Interrupted,
    Left,
    RollbackFailed,
    RolledBack,
    RotationFailed,
    Unfinished,
    error,
    render,
)
from quilt_ops.status import ExitStatus

OLD, NEW = "AKIAOLD0000000000001", "AKIANEW0000000000001"


def facts(left: Left, **more: object) -> Facts:
    base: dict[str, object] = {
        "host": "h1",
        "step": "restart",
        "left": left,
        "reason": "boom",
        "old_key_id": OLD,
        "new_key_id": NEW,
        "env_file": "env/registry",
        "again": "fab -H h1 rotate-keys",
    }
    base.update(more)
    return Facts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "left,kind,status,words",
    [
        (Left.NOTHING, RotationFailed, ExitStatus.FAILED, ["boom; nothing was changed"]),
        (Left.NEW_KEY_DELETED, RotationFailed, ExitStatus.FAILED, ["the new key was deleted and the host was not"]),
        (Left.NEW_KEY, RotationFailed, ExitStatus.FAILED, [f"the new key {NEW} could not be deleted (denied)"]),
        (Left.UNANSWERED, RotationFailed, ExitStatus.FAILED, ["may have made the new key", "failed (denied)"]),
        (Left.UNCLEAR, RotationFailed, ExitStatus.FAILED, ["may have made the new key", "none is deleted: denied"]),
        (Left.EITHER_KEY, Unfinished, ExitStatus.INCOMPLETE, [f"holds {OLD} or {NEW}", "run fab -H h1 rotate-keys"]),
        (Left.OLD_KEY_ACTIVE, Unfinished, ExitStatus.INCOMPLETE, [f"{OLD} is still Active"]),
        (Left.JOURNAL, Unfinished, ExitStatus.INCOMPLETE, ["the journal could not be removed (boom)"]),
        (Left.ROLLED_BACK, RolledBack, ExitStatus.FAILED, ["rotation failed and was rolled back: boom"]),
        (Left.BOTH_KEYS, RollbackFailed, ExitStatus.ROLLBACK_FAILED, ["so did its rollback (denied)", "holds no key"]),
    ],
)
def test_what_is_left_decides_the_error_and_its_line(left, kind, status, words):
    made = error(facts(left, compensation_error="denied", holds="no key"))
    assert type(made) is kind and made.status == status
    assert made.facts.left == left and made.facts.host == "h1"
    assert str(made) == render(made.facts)
    for w in words:
        assert w in str(made)


@pytest.mark.parametrize(
    "left,text",
    [
        (Left.NOTHING, "interrupted during restart; nothing was changed on h1"),
        (Left.NEW_KEY_DELETED, f"interrupted during restart; the new key {NEW} was deleted and h1 was not changed"),
        (Left.EITHER_KEY, "interrupted during restart; h1 may hold the old or the new key; run fab -H h1 rotate-keys"),
    ],
)
def test_interrupted(left, text):
    made = error(facts(left, interrupted=True))
    assert isinstance(made, Interrupted) and made.status == ExitStatus.INTERRUPTED
    assert str(made).startswith(text)


def test_every_left_renders():
    for left in Left:
        assert render(facts(left))
