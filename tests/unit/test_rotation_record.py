"""The operator's record of rotations in progress (`quilt_ops.rotation_record`), and the resume
decision it guards: a journal on the host alone never has a key deleted.

The forged journal (review, 2026-12-06): a host login user writes a journal at step ``written``
whose old key is one the operator kept with ``--keep-old`` and whose new key is the host's; on
main before this change the next ``rotate-keys`` deleted the kept key.
"""

import os
import stat
import threading
from datetime import datetime, timedelta, timezone

import pytest

from quilt_ops import rotation_record
from quilt_ops.errors import ConfigError
from quilt_ops.journal import Journal
from quilt_ops.rotation_plan import Key, Resume, resume
from quilt_ops.rotation_record import Record

USER = "quilt-registry-RegistryUser-ABCDEFGHIJKLM"
KEPT, HOST, OLD, NEW = "AKIAKEPTKEPTKEPT0001", "AKIAHOSTHOSTHOST0002", "AKIAOLDOLDOLDOLD0003", "AKIANEWNEWNEWNEW0004"
T_KEPT = datetime(2026, 9, 1, 8, 0, 0, tzinfo=timezone.utc)
T_HOST = datetime(2026, 11, 1, 12, 0, 2, tzinfo=timezone.utc)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def written(old, old_created, new, new_created, step="written"):
    return Journal(
        step=step,
        iam_user=USER,
        old_key_id=old,
        started=new_created - timedelta(seconds=2),
        who="alice@laptop",
        old_key_created=old_created,
        new_key_id=new,
        new_key_created=new_created,
        original_sha256="0" * 64,
        written_sha256="1" * 64,
    )


FORGED = written(KEPT, T_KEPT, HOST, T_HOST)
FORGED_KEYS = [Key(KEPT, "Active", T_KEPT), Key(HOST, "Active", T_HOST)]
HONEST = written(OLD, T_KEPT, NEW, T_HOST)
HONEST_KEYS = [Key(OLD, "Active", T_KEPT), Key(NEW, "Active", T_HOST)]
ROLLING = written(OLD, T_KEPT, NEW, T_HOST, step="rolling-back")

CASES = [
    # (case, journal, host key, IAM keys, record, (action, delete_new, retire_old, withheld))
    ("forged written journal, no record", FORGED, HOST, FORGED_KEYS, None, (Resume.FINISH, None, None, (KEPT,))),
    (
        "forged journal, record of another rotation",
        FORGED,
        HOST,
        FORGED_KEYS,
        Record(USER, HOST, None),
        (Resume.FINISH, None, None, (KEPT,)),
    ),
    (
        "forged journal, record of another user",
        FORGED,
        HOST,
        FORGED_KEYS,
        Record("someone-else", KEPT, HOST),
        (Resume.FINISH, None, None, (KEPT,)),
    ),
    ("honest kill, record there", HONEST, NEW, HONEST_KEYS, Record(USER, OLD, NEW), (Resume.FINISH, None, OLD, ())),
    ("honest kill, record lost", HONEST, NEW, HONEST_KEYS, None, (Resume.FINISH, None, None, (OLD,))),
    (
        "host on old: new key abandoned with the record",
        HONEST,
        OLD,
        HONEST_KEYS,
        Record(USER, OLD, NEW),
        (Resume.ROLL_BACK, NEW, None, ()),
    ),
    (
        "host on old: record made before the key was known",
        HONEST,
        OLD,
        HONEST_KEYS,
        Record(USER, OLD, None),
        (Resume.ROLL_BACK, None, None, (NEW,)),
    ),
    (
        "rolling back on new, record there",
        ROLLING,
        NEW,
        HONEST_KEYS,
        Record(USER, OLD, NEW),
        (Resume.FINISH_ROLLBACK, NEW, None, ()),
    ),
    ("rolling back on new, no record", ROLLING, NEW, HONEST_KEYS, None, (Resume.FINISH_ROLLBACK, None, None, (NEW,))),
]


@pytest.mark.parametrize("case,found,host_key,keys,record,expected", CASES, ids=[c[0] for c in CASES])
def test_a_key_is_deleted_only_if_the_operators_record_names_it(case, found, host_key, keys, record, expected):
    decision = resume(found, "h", host_key, USER, keys, record)
    assert (decision.action, decision.delete_new, decision.retire_old, decision.withheld) == expected


# ----------------------------------------------------------------------------- the file


def test_format_one_line_a_host(tmp_path):
    path = str(tmp_path / "quilt_rotations")
    rotation_record.save(path, "[reg.example]:2222", Record(USER, OLD))
    rotation_record.save(path, "other", Record(USER, HOST, NEW))
    rotation_record.save(path, "[reg.example]:2222", Record(USER, OLD, NEW))
    text = read(path)
    assert text.splitlines() == [
        rotation_record.HEADER,
        f"other {USER} {HOST} {NEW}",
        f"[reg.example]:2222 {USER} {OLD} {NEW}",
    ]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert rotation_record.lookup(path, "[reg.example]:2222") == Record(USER, OLD, NEW)
    rotation_record.remove(path, "[reg.example]:2222")
    assert rotation_record.lookup(path, "[reg.example]:2222") is None
    assert rotation_record.lookup(path, "other") == Record(USER, HOST, NEW)
    rotation_record.remove(path, "absent")  # nothing to do


def test_new_key_unknown_is_a_dash_and_bad_lines_are_skipped(tmp_path):
    path = tmp_path / "quilt_rotations"
    path.write_text(f"# c\nh {USER} {OLD} -\nbad line\nx {USER} lower {NEW}\ny {USER} {OLD} {NEW} extra\n")
    assert rotation_record.parse(path.read_text()) == {"h": Record(USER, OLD, None)}
    assert rotation_record.lookup(str(tmp_path / "none"), "h") is None


def test_refuses_what_is_not_a_host_user_and_key(tmp_path):
    path = str(tmp_path / "r")
    for host, record in [("h h", Record(USER, OLD)), ("h", Record("a b", OLD)), ("h", Record(USER, "x\ny"))]:
        with pytest.raises(ConfigError):
            rotation_record.save(path, host, record)
    assert not os.path.exists(path)


def test_rewrite_is_atomic_and_parallel_writers_keep_every_line(tmp_path, monkeypatch):
    path = str(tmp_path / "quilt_rotations")
    hosts = [f"h{i}" for i in range(20)]
    threads = [threading.Thread(target=rotation_record.save, args=(path, h, Record(USER, OLD))) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert set(rotation_record.parse(read(path))) == set(hosts)
    before = read(path)

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(ConfigError, match="No space left"):
        rotation_record.save(path, "h0", Record(USER, OLD, NEW))
    assert read(path) == before
    assert [n for n in os.listdir(tmp_path) if n.startswith(".quilt_rotations.")] == []
