"""``rotate-keys`` across every host of a run.

Two phases over one connection a host: first every host is locked and read
(`Rotation.prepare`, in parallel), so that two hosts running on the same key
are found before anything changes (rotating one would delete the key the other
runs on); then each host is rotated, ``parallel`` at a time. boto3 sessions
are not thread-safe: every host gets its own.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from . import audit, hosts, keys, output
from . import options as task_options
from .config import Settings
from .errors import ConfigError, QuiltError, Refused
from .key_rotation import RotateOptions, shared_key_refusal
from .rotation import Rotation
from .rotation_errors import RotationReport
from .rotation_host import HostState
from .status import ExitStatus


def options(
    iam_user: Any,
    stack: Any,
    keep_old: bool,
    delete_other_active: bool,
    verify_timeout: Any,
    timeout: Any,
    dry_run: bool,
    rebind: bool = False,
) -> RotateOptions:
    if rebind and not iam_user and not stack:
        raise ConfigError("--rebind needs --iam-user or --stack: the operator names the user, never the host")
    return RotateOptions(
        iam_user=iam_user,
        stack=(stack or [None])[0],
        keep_old=keep_old,
        delete_other_active=delete_other_active,
        verify_timeout=task_options.seconds("--verify-timeout", verify_timeout) or 60.0,
        restart_timeout=task_options.seconds("--timeout", timeout),
        dry_run=dry_run,
        rebind=rebind,
    )


def run(  # noqa: C901, PLR0915 - two phases over shared state (prepare all, then rotate); to split into a class
    c: Any,
    settings: Settings,
    rotate: RotateOptions,
    profile: Any,
    region: Any,
    stacks: Any,
    parallel: int,
    breaking: Any,
) -> hosts.Results[RotationReport]:
    operator_store = keys.KeyStore(keys.session(profile, region))
    targets = hosts.task_targets(c, settings, stacks=stacks, store_factory=lambda: operator_store)
    try:
        operator = operator_store.operator_arn()
    except keys.AwsError as e:
        raise keys.AwsError(f"{e}; nothing was changed") from None
    many = len(targets) > 1
    rotations: dict[str, Rotation] = {}
    states: dict[str, HostState] = {}
    runs: dict[str, audit.Run] = {}
    lock = threading.Lock()

    def prepare(target: hosts.HostTarget) -> str | None:
        own = dataclasses.replace(rotate, stack=target.stack or rotate.stack)
        store = keys.KeyStore(keys.session(profile, region))
        rotation = Rotation(target, settings, store, own, output.Progress(prefix=target.name if many else ""))
        rotation.lock.breaking = breaking
        with lock:
            rotations[target.name] = rotation
        if not rotate.dry_run:
            runs[target.name] = audit.Run(settings.audit_log, "rotate-keys", target.name, operator=operator).start()
        try:
            state = rotation.prepare()
        except BaseException as e:
            end(target.name, e)
            raise
        with lock:
            states[target.name] = state
        return state.host_key

    def end(host: str, error: BaseException | None, report: RotationReport | None = None) -> None:
        found = runs.get(host)
        rotation = rotations.get(host)
        if found is None:
            return
        if rotation is not None:
            found.record.update(rotation.audit)
        if report is not None:
            found.record["outcome"] = report.outcome
        found.end(error)

    prepared = hosts.each(targets, prepare, parallel=max(parallel, len(targets)), close=False)
    refusal = shared_key_refusal(dict(prepared.succeeded))

    def execute(target: hosts.HostTarget) -> RotationReport:
        rotation = rotations[target.name]
        try:
            if refusal:
                raise Refused(refusal)
            if rotate.dry_run:
                return rotation.dry_run(states[target.name])
            report = rotation.execute(rotation.preflight(states[target.name]))
        except BaseException as e:
            end(target.name, e)
            raise
        finally:
            rotation.close()
        end(target.name, None, report)
        return report

    ready = [t for t in targets if t.name in prepared.succeeded]
    results = hosts.each(ready, execute, parallel)
    merged: hosts.Results[RotationReport] = hosts.Results()
    by_host = {r.host: r for r in results}
    for result in prepared:
        if result.error is not None:
            rotation = rotations.get(result.host)
            if rotation is not None:
                rotation.close()
            merged.append(hosts.HostResult(result.host, error=result.error))
        else:
            merged.append(
                by_host.get(result.host)
                or hosts.HostResult(result.host, error=QuiltError("not rotated", status=ExitStatus.INTERRUPTED))
            )
    return merged
