"""Whose key a host runs on: established by the operator, never by the host.

A host's env file names an access key ID, and key IDs are not secret: anyone who
can write the file can name another registry's key (and bucket) in it. So the
IAM user a task acts on comes only from what the host cannot write:

1. ``--iam-user`` or ``quilt.iam_user``;
2. ``--stack`` (or the stack the host was found from): its RegistryUser resource;
3. the binding recorded for this host at its first rotation (``quilt.known_users``,
   kept like a known_hosts entry; see `quilt_ops.known_users`);
4. else the stack that CloudFormation named the key's owner after
   (``<stack>-RegistryUser-<random>``), when that stack can be read and its
   ``EC2InstanceIp`` output (or its instance) is the very host connected to.

Whatever the source, the host's key must belong to that user: a key of any other
user is refused before anything changes, naming both. A binding that would change
is refused with the command that re-binds it. `establish` is the whole rule, a pure
function of `Facts`; `gather` makes the (read-only) AWS calls that fill them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from .errors import Refused
from .masking import printable

#: The CloudFormation output that names a registry stack's host.
HOST_OUTPUT = "EC2InstanceIp"
USER_RESOURCE = "RegistryUser"
INSTANCE_TYPE = "AWS::EC2::Instance"


@dataclass(frozen=True)
class OwnerStack:
    """The stack the key owner's name points at, as CloudFormation (not the host) tells it."""

    name: str
    #: Its RegistryUser's physical name; None when the stack cannot be read.
    user: str | None
    #: Its EC2InstanceIp output and its instance's addresses.
    hosts: frozenset[str] = frozenset()
    #: Why it could not be read (AWS's error), when it could not.
    problem: str = ""


@dataclass(frozen=True)
class Facts:
    """Everything `establish` decides from; only ``key_id`` comes from the host."""

    #: The host as the binding file names it (see `known_users.entry`).
    host: str
    #: The addresses the operator connected to (the SSH HostName and what it resolves to).
    addresses: frozenset[str] = frozenset()
    #: ``--iam-user`` or ``quilt.iam_user``, and which of the two.
    given_user: str | None = None
    given_source: str = ""
    #: ``--stack`` (or the stack the host was found from) and its RegistryUser.
    stack: str | None = None
    stack_user: str | None = None
    #: The user recorded for this host in the binding file, and that file.
    bound: str | None = None
    bindings: str = ""
    #: The key ID the host's env file holds (the host's claim) and its owner in IAM
    #: (None: IAM does not know the key, or may not be asked).
    key_id: str | None = None
    key_owner: str | None = None
    #: Why the owner is not known, when it is not.
    owner_problem: str = ""
    #: The stack the owner's name points at (none when the name is not a RegistryUser's).
    owner_stack: OwnerStack | None = None
    #: ``--rebind``: an explicit user may replace the recorded binding.
    rebind: bool = False
    #: The command that re-binds (shown when a binding would change).
    rebind_command: str = ""


class ForeignKey(Refused):
    """The host runs on a key of another user than the one established: refused, both named."""


class Unproven(Refused):
    """Nothing but the host's word names the user: the operator must say (once)."""


@dataclass(frozen=True)
class Identity:
    """The IAM user a task acts on, where that came from, and whether to record the binding."""

    user: str
    source: str
    #: Record (or replace) the host's binding once the operator's change goes ahead.
    bind: bool = False
    #: A line for the plan: what the binding file says or will say.
    binding_note: str = field(default="")


def _two_users(facts: Facts, user: str, source: str) -> Refused:
    return ForeignKey(
        f"the host's key {facts.key_id} belongs to IAM user {facts.key_owner}, but {facts.host} is "
        f"{user}'s ({source}): the host runs on another user's key; nothing was changed"
    )


def establish(facts: Facts) -> Identity:
    """The IAM user, or `Refused` (nothing changed, exit FAILED) naming what disagrees."""
    explicit: tuple[str, str] | None = None
    if facts.given_user:
        explicit = (facts.given_user, facts.given_source or "--iam-user")
        if facts.stack and facts.stack_user and facts.stack_user != facts.given_user:
            raise Refused(
                f"{explicit[1]} names IAM user {facts.given_user}, but stack {facts.stack}'s RegistryUser is "
                f"{facts.stack_user}; nothing was changed"
            )
    elif facts.stack and facts.stack_user:
        explicit = (facts.stack_user, f"RegistryUser of stack {facts.stack}")
    if explicit is not None:
        user, source = explicit
        if facts.key_owner is not None and facts.key_owner != user:
            raise _two_users(facts, user, source)
        if facts.bound is not None and facts.bound != user:
            if not facts.rebind:
                raise Refused(
                    f"{facts.host} is bound to IAM user {facts.bound} in {facts.bindings}, not {user} ({source}); "
                    f"if {user} is right, re-bind it: {facts.rebind_command}; nothing was changed"
                )
            return Identity(user, source, bind=True, binding_note=f"re-bound from {facts.bound} in {facts.bindings}")
        if facts.bound == user:
            return Identity(user, source, binding_note=f"bound in {facts.bindings}")
        return Identity(user, source, bind=True, binding_note=f"to be bound in {facts.bindings}")
    if facts.bound is not None:
        if facts.key_owner is not None and facts.key_owner != facts.bound:
            raise _two_users(facts, facts.bound, f"bound in {facts.bindings}")
        return Identity(facts.bound, f"bound to {facts.host} in {facts.bindings}", binding_note="")
    return _from_owner_stack(facts)


def _from_owner_stack(facts: Facts) -> Identity:
    """No word from the operator and no binding: the key owner's stack must name this very host."""
    ask = f"give --iam-user or --stack for {facts.host} (once: the binding is recorded in {facts.bindings})"
    if facts.key_owner is None:
        why = facts.owner_problem or f"IAM does not know the host's key {facts.key_id}"
        raise Unproven(f"{why}; {ask}; nothing was changed")
    owner = facts.key_owner
    found = facts.owner_stack
    if found is None or found.user != owner:
        why = (
            f"stack {found.name} cannot be read ({found.problem})"
            if found is not None and found.user is None and found.problem
            else "no readable stack has it as RegistryUser"
        )
        raise Unproven(
            f"the host's key {facts.key_id} belongs to IAM user {owner}, but {why}, so nothing proves that "
            f"{facts.host} is {owner}'s (the host's env file is only a claim); {ask}; nothing was changed"
        )
    if not facts.addresses:
        raise Unproven(
            f"the host's key {facts.key_id} belongs to IAM user {owner} of stack {found.name}, but a --local run "
            f"has no address to match its {HOST_OUTPUT} against; {ask}; nothing was changed"
        )
    if not found.hosts & facts.addresses:
        theirs = ", ".join(sorted(printable(h, 60) for h in found.hosts)) or "none"
        ours = ", ".join(sorted(facts.addresses)) or "unknown"
        raise ForeignKey(
            f"the host's key {facts.key_id} belongs to IAM user {owner} of stack {found.name}, whose "
            f"{HOST_OUTPUT} ({theirs}) is not the host connected to ({ours}): {facts.host} runs on another "
            "registry's key; nothing was changed"
        )
    return Identity(
        owner,
        f"RegistryUser of stack {found.name}, whose {HOST_OUTPUT} is this host",
        bind=True,
        binding_note=f"to be bound in {facts.bindings}",
    )


# ----------------------------------------------------------------------------- reading AWS (no decision here)


def addresses(host: str | None) -> frozenset[str]:
    """The host name connected to and the addresses it resolves to (the operator's resolver)."""
    if not host:
        return frozenset()
    found = {host}
    try:
        for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
            found.add(str(info[4][0]))
    except (OSError, UnicodeError):
        pass
    return frozenset(found)


def owner_stack(store: Any, owner: str) -> OwnerStack | None:
    """The stack CloudFormation named ``owner`` after, read from CloudFormation (and EC2)."""
    from .account import stack_of_user
    from .keys import AwsError

    name = stack_of_user(owner)
    if name is None:
        return None
    try:
        user = store.user_from_stack(name)
        stacks = store.call("cloudformation", "describe_stacks", StackName=name)["Stacks"]
    except AwsError as e:
        return OwnerStack(name, None, problem=str(e))
    hosts: set[str] = set()
    for stack in stacks[:1]:
        for output in stack.get("Outputs") or []:
            if output.get("OutputKey") == HOST_OUTPUT and output.get("OutputValue"):
                hosts.add(str(output["OutputValue"]))
    try:
        resources = store.call("cloudformation", "describe_stack_resources", StackName=name)["StackResources"]
        instances = [r["PhysicalResourceId"] for r in resources if r.get("ResourceType") == INSTANCE_TYPE]
        if instances:
            reservations = store.call("ec2", "describe_instances", InstanceIds=instances)["Reservations"]
            for reservation in reservations:
                for instance in reservation.get("Instances", []):
                    for name_ in ("PublicIpAddress", "PrivateIpAddress", "PublicDnsName", "PrivateDnsName"):
                        if instance.get(name_):
                            hosts.add(str(instance[name_]))
    except AwsError:
        pass  # the output alone decides
    return OwnerStack(name, user, frozenset(hosts))


def where(target: Any) -> tuple[str, frozenset[str]]:
    """The host as the binding file names it, and the addresses connected to.

    Over SSH: the HostName and port the connection goes to (after ssh_config). A
    ``--local`` run has no address to match a stack's output against: only the
    operator's word or a binding name its user.
    """
    cxn = getattr(target, "cxn", None)
    if cxn is None:
        return f"local:{target.name}", frozenset()
    from .known_users import entry

    return entry(str(cxn.host), int(cxn.port or 22)), addresses(str(cxn.host))


def gather(
    store: Any,
    target: Any,
    key_id: str | None,
    *,
    given_user: str | None,
    given_source: str,
    stack: str | None,
    bindings: str,
    rebind: bool = False,
    rebind_command: str = "",
) -> Facts:
    """Asks IAM and CloudFormation what `establish` needs (read-only); the binding file too."""
    from .keys import AwsError
    from .known_users import lookup

    host, connected = where(target)
    stack_user = store.user_from_stack(stack) if stack else None  # an AwsError here ends the task
    owner: str | None = None
    problem = ""
    if key_id:
        try:
            owner = store.user_of_key(key_id)
        except AwsError as e:
            problem = str(e)
    bound = lookup(bindings, host)
    found = None
    if owner is not None and not given_user and not stack and bound is None:
        found = owner_stack(store, owner)
    return Facts(
        host=host,
        addresses=connected,
        given_user=given_user,
        given_source=given_source,
        stack=stack,
        stack_user=stack_user,
        bound=bound,
        bindings=bindings,
        key_id=key_id,
        key_owner=owner,
        owner_problem=problem,
        owner_stack=found,
        rebind=rebind,
        rebind_command=rebind_command,
    )
