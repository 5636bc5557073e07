"""Registry CloudFormation stacks: the host (output ``EC2InstanceIp``) and the IAM user
(resource ``RegistryUser``) of each, so that an operator needs only the stack name."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .keys import AwsError, KeyStore

HOST_OUTPUT = "EC2InstanceIp"
LB_OUTPUT = "LoadBalancerDNSName"
USER_RESOURCE = "RegistryUser"


@dataclass(frozen=True)
class Stack:
    name: str
    status: str
    host: str | None
    load_balancer: str | None
    iam_user: str | None = None


def _outputs(stack: dict) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}


def find(store: KeyStore, name: str) -> Stack:
    """One registry stack by name; raises if it has no EC2InstanceIp output."""
    found = store.call("cloudformation", "describe_stacks", StackName=name)["Stacks"]
    if not found:
        raise AwsError(f"stack {name!r} not found")
    outputs = _outputs(found[0])
    if not outputs.get(HOST_OUTPUT):
        raise ConfigError(f"stack {name!r} has no {HOST_OUTPUT} output: is it a Quilt registry stack?")
    return Stack(
        name, found[0]["StackStatus"], outputs[HOST_OUTPUT], outputs.get(LB_OUTPUT), store.user_from_stack(name)
    )


def registry_stacks(store: KeyStore) -> list[Stack]:
    """Every stack of the account and region that has an EC2InstanceIp output."""
    stacks = []
    token = None
    while True:
        page = store.call("cloudformation", "describe_stacks", **({"NextToken": token} if token else {}))
        for stack in page["Stacks"]:
            outputs = _outputs(stack)
            if HOST_OUTPUT in outputs:
                try:
                    user = store.user_from_stack(stack["StackName"])
                except AwsError:
                    user = None
                stacks.append(
                    Stack(stack["StackName"], stack["StackStatus"], outputs[HOST_OUTPUT], outputs.get(LB_OUTPUT), user)
                )
        token = page.get("NextToken")
        if not token:
            return sorted(stacks, key=lambda s: s.name)
