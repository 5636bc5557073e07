"""Issue 18.1: who is rotated is established by the operator, never by the host (`quilt_ops.identity`)."""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest

from quilt_ops import identity, known_users
from quilt_ops.errors import Refused
from quilt_ops.identity import Facts, OwnerStack
from quilt_ops.status import ExitStatus

A = "quilt-a-RegistryUser-AAAAAAAAAAAAA"
B = "quilt-b-RegistryUser-BBBBBBBBBBBBB"
ADMIN = "ops-admin"
HOST = "[10.0.0.1]:22"
BASE = Facts(
    host=HOST,
    addresses=frozenset({"10.0.0.1", "ip-10-0-0-1"}),
    bindings="/home/op/.ssh/quilt_known_users",
    key_id="AKIAHOSTKEY",
    rebind_command="fab -H h rotate-keys --rebind --iam-user USER (or --stack NAME)",
)
STACK_A_HERE = OwnerStack("quilt-a", A, frozenset({"10.0.0.1"}))
STACK_B_ELSEWHERE = OwnerStack("quilt-b", B, frozenset({"10.0.0.2"}))


def facts(**changes):
    return dataclasses.replace(BASE, **changes)


# (case, facts, user established or the words of the refusal, binding recorded)
CASES = [
    # the operator's word
    ("--iam-user, own key", facts(given_user=A, given_source="--iam-user", key_owner=A), A, True),
    ("--iam-user, owner unknown", facts(given_user=A, given_source="--iam-user"), A, True),
    ("quilt.iam_user, own key", facts(given_user=A, given_source="quilt.iam_user", key_owner=A), A, True),
    ("--stack, own key", facts(stack="quilt-a", stack_user=A, key_owner=A), A, True),
    ("--stack, owner may not be asked", facts(stack="quilt-a", stack_user=A), A, True),
    ("--iam-user and --stack agree", facts(given_user=A, stack="quilt-a", stack_user=A, key_owner=A), A, True),
    (
        "--iam-user and --stack disagree",
        facts(given_user=A, given_source="--iam-user", stack="quilt-b", stack_user=B, key_owner=A),
        ["names IAM user " + A, "stack quilt-b's RegistryUser is " + B],
        None,
    ),
    (
        "--iam-user, forged key of another stack",
        facts(given_user=A, given_source="--iam-user", key_owner=B),
        [f"belongs to IAM user {B}", f"{A}'s (--iam-user)"],
        None,
    ),
    (
        "--stack, forged key of another stack",
        facts(stack="quilt-a", stack_user=A, key_owner=B),
        [f"belongs to IAM user {B}", f"{A}'s (RegistryUser of stack quilt-a)"],
        None,
    ),
    # the binding
    ("bound, own key", facts(bound=A, key_owner=A), A, False),
    ("bound, explicit agrees", facts(bound=A, given_user=A, key_owner=A), A, False),
    (
        "bound, forged key of another stack",
        facts(bound=A, key_owner=B, owner_stack=STACK_B_ELSEWHERE),
        [f"belongs to IAM user {B}", f"{A}'s (bound in"],
        None,
    ),
    (
        "bound, forged key of a stack claiming this host",  # the binding wins over any stack's word
        facts(bound=A, key_owner=B, owner_stack=OwnerStack("quilt-b", B, frozenset({"10.0.0.1"}))),
        [f"belongs to IAM user {B}", A],
        None,
    ),
    (
        "bound, explicit other user",
        facts(bound=A, given_user=ADMIN, given_source="--iam-user", key_owner=ADMIN),
        [f"bound to IAM user {A}", f"not {ADMIN}", "--rebind --iam-user USER"],
        None,
    ),
    (
        "bound, explicit other user, --rebind",
        facts(bound=A, given_user=ADMIN, key_owner=ADMIN, rebind=True),
        ADMIN,
        True,
    ),
    (
        "bound, --rebind to a user the key is not of",
        facts(bound=A, given_user=ADMIN, key_owner=B, rebind=True),
        [f"belongs to IAM user {B}", ADMIN],
        None,
    ),
    # no word from the operator: the key owner's stack must name this very host
    ("owner's stack is this host", facts(key_owner=A, owner_stack=STACK_A_HERE), A, True),
    (
        "owner's stack by instance address",
        facts(key_owner=A, owner_stack=OwnerStack("quilt-a", A, frozenset({"10.9.9.9", "ip-10-0-0-1"}))),
        A,
        True,
    ),
    (
        "forged key of another stack",
        facts(key_owner=B, owner_stack=STACK_B_ELSEWHERE),
        [f"belongs to IAM user {B} of stack quilt-b", "10.0.0.2", "another registry's key"],
        None,
    ),
    (
        "owner not a RegistryUser",
        facts(key_owner=ADMIN, owner_stack=None),
        [f"belongs to IAM user {ADMIN}", "no readable stack", "give --iam-user or --stack"],
        None,
    ),
    (
        "owner's stack cannot be read",
        facts(key_owner=A, owner_stack=OwnerStack("quilt-a", None, problem="AccessDenied")),
        ["stack quilt-a cannot be read (AccessDenied)", "give --iam-user or --stack"],
        None,
    ),
    (
        "owner's stack has another RegistryUser",  # a name that only looks like the stack's user
        facts(key_owner=A, owner_stack=OwnerStack("quilt-a", B, frozenset({"10.0.0.1"}))),
        ["no readable stack has it as RegistryUser"],
        None,
    ),
    (
        "key unknown to IAM",
        facts(owner_problem="the key on the host (AKIAHOSTKEY) is not known to IAM in this account"),
        ["not known to IAM", "give --iam-user or --stack"],
        None,
    ),
    (
        "a --local run: no address to match",
        facts(addresses=frozenset(), key_owner=A, owner_stack=STACK_A_HERE),
        ["a --local run has no address to match", "give --iam-user or --stack"],
        None,
    ),
]


@pytest.mark.parametrize("case,given,expected,bind", CASES, ids=[c[0] for c in CASES])
def test_who_is_rotated(case, given, expected, bind):
    if isinstance(expected, str):
        found = identity.establish(given)
        assert found.user == expected
        assert found.bind is bind
        return
    with pytest.raises(Refused) as e:
        identity.establish(given)
    message = str(e.value)
    assert e.value.status == ExitStatus.FAILED
    assert message.endswith("nothing was changed")
    for words in expected:
        assert words in message, message


def test_the_host_alone_never_picks_the_user():
    """Whatever the host's key and its owner, without the operator's word, a binding or a stack
    naming this very host, no user is established."""
    for owner in (A, B, ADMIN):
        for stack in (None, STACK_B_ELSEWHERE, OwnerStack("quilt-a", None, problem="denied")):
            with pytest.raises(Refused):
                identity.establish(facts(key_owner=owner, owner_stack=stack))


# ----------------------------------------------------------------------------- the binding file


def test_bindings_are_recorded_replaced_and_private(tmp_path):
    path = str(tmp_path / "ssh" / known_users.FILE_NAME)
    assert known_users.lookup(path, HOST) is None
    known_users.record(path, HOST, A)
    known_users.record(path, "[127.0.0.1]:2222", B)
    assert known_users.lookup(path, HOST) == A and known_users.lookup(path, "[127.0.0.1]:2222") == B
    known_users.record(path, HOST, ADMIN)
    assert known_users.lookup(path, HOST) == ADMIN and known_users.lookup(path, "[127.0.0.1]:2222") == B
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as f:
        assert [line for line in f if line.startswith("[10.0.0.1]")] == [f"{HOST} {ADMIN}\n"]


@pytest.mark.parametrize(
    "host,user",
    [
        ("h;touch x", A),
        ("h", "a;touch x"),
        ("h", "a b"),
        ("h\nevil", A),
        ("h", "$(id)"),
        ("h", "`id`"),
        ("h", "a&&b"),
        ("h", "a>b"),
    ],
)
def test_a_binding_holds_only_a_host_and_a_user_name(tmp_path, host, user):
    from quilt_ops.errors import ConfigError

    path = str(tmp_path / known_users.FILE_NAME)
    with pytest.raises(ConfigError):
        known_users.record(path, host, user)
    assert not os.path.exists(path)


def test_a_line_that_is_not_host_and_user_binds_nothing(tmp_path):
    path = tmp_path / known_users.FILE_NAME
    path.write_text(f"# {HOST} {B}\n{HOST} {A} extra\nbad;host {A}\n[10.0.0.1]:22 {A}\n")
    assert known_users.parse(path.read_text()) == {HOST: A}


def test_entry_names_hosts_as_known_hosts_does():
    assert known_users.entry("10.0.0.1", 22) == "10.0.0.1"
    assert known_users.entry("127.0.0.1", 2201) == "[127.0.0.1]:2201"
    assert known_users.default_path("/home/op/.ssh/known_hosts") == "/home/op/.ssh/quilt_known_users"
