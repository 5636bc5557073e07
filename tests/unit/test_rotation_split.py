"""The rotation driver's neighbours, without a host (issue 18.3): the pre-flight's checks hand the
driver the env file they checked (typed, never asserted afterwards), and the key's step on the
host requires the registry to run on the key, whatever the order the driver calls them in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from quilt_ops.checks import Check, HostHealth, Kind
from quilt_ops.config import Settings
from quilt_ops.errors import Refused
from quilt_ops.hostfiles import Access, RemoteFile
from quilt_ops.key_rotation_steps import KeySteps
from quilt_ops.reporting import Silent
from quilt_ops.restart import RestartError
from quilt_ops.rotation_host import HostState, Place
from quilt_ops.rotation_preflight import check_env, check_health
from quilt_ops.status import ExitStatus

SETTINGS = Settings()
ENV, REGISTRY = SETTINGS.env_file, SETTINGS.containers.registry
KEY = "AKIAOLD0000000000001"
GOOD = f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY=s3cr3t\n".encode()


def place() -> Place:
    return Place(SimpleNamespace(name="h1"), SETTINGS, lock=None)  # type: ignore[arg-type]


def state(content: bytes | None, journal_problem: str | None = None) -> HostState:
    env = None if content is None else RemoteFile(ENV, content, 0o600, 1000, 1000, "quilt", "quilt")
    return HostState(
        env=env,
        env_problem="no such file" if content is None else None,
        journal=None,
        journal_problem=journal_problem,
        access=Access.OWNER,
        reading=None,  # type: ignore[arg-type]
        health=HostHealth("h1", []),
    )


@pytest.mark.parametrize(
    "content,journal_problem,refused",
    [
        (GOOD, None, None),
        (GOOD, "not JSON", "quilt-ops-rotation.json exists on h1 but cannot be used (not JSON)"),
        (None, "not JSON", "cannot be used (not JSON)"),  # the journal's problem is named first
        (None, None, f"cannot read {ENV} on h1: no such file; nothing was changed"),
        (b"AWS_SECRET_ACCESS_KEY=s3cr3t\n", None, f"{ENV} on h1 cannot be rotated safely: no AWS_ACCESS_KEY_ID"),
    ],
)
def test_check_env_returns_the_file_it_checked(content, journal_problem, refused):
    read = state(content, journal_problem)
    if refused is None:
        assert check_env(place(), read) is read.env
        return
    with pytest.raises(Refused) as e:
        check_env(place(), read)
    assert refused in str(e.value)


@pytest.mark.parametrize(
    "statuses,refused",
    [
        ([], False),
        ([ExitStatus.OK, ExitStatus.WARNING], False),
        ([ExitStatus.OK, ExitStatus.CRITICAL], True),
        ([ExitStatus.UNKNOWN], True),
    ],
)
def test_check_health_refuses_a_host_already_down(statuses, refused):
    report = HostHealth("h1", [Check(Kind.CONTAINER, f"c{i}", s, "down") for i, s in enumerate(statuses)])
    if not refused:
        check_health("h1", report)
        return
    with pytest.raises(Refused, match=r"^h1 is not healthy now \(.*\); fix it first \(fab restart\); nothing was"):
        check_health("h1", report)


@pytest.mark.parametrize(
    "exists,in_effect,error",
    [
        (True, KEY, None),
        (None, KEY, None),  # no container check: the key in effect decides
        (False, KEY, f"the registry container {REGISTRY} is missing on h1"),
        (True, "AKIANEW0000000000001", f"runs with AKIANEW0000000000001, not {KEY}"),
        (True, None, f"runs with no key, not {KEY}"),
    ],
)
def test_the_registry_must_run_on_the_key(exists, in_effect, error):
    steps = KeySteps(place(), keys=None, reporter=Silent(), restart_timeout=None)  # type: ignore[arg-type]
    checks = [] if exists is None else [Check(Kind.CONTAINER, REGISTRY, ExitStatus.OK, "", {"exists": exists})]
    report = HostHealth("h1", checks)
    if error is None:
        steps.require_key(in_effect, report, KEY)
        return
    with pytest.raises(RestartError) as e:
        steps.require_key(in_effect, report, KEY)
    assert error in str(e.value)
