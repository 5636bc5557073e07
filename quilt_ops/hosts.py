"""The hosts a task runs on, and running one function on each over its own connection.

Hosts come from ``-H`` (put into ``quilt.hosts`` by quilt-ops' executor), from
``quilt.hosts``, or from the ``EC2InstanceIp`` of CloudFormation stacks; when
plain Fabric hands a task a `fabric.Connection`, that one host is used. Each
host gets exactly one SSH connection for the whole task, and hosts run
concurrently up to ``parallel``. A failure on one host is that host's result:
the others go on, and every host is reported (`Results`, like Fabric's
``GroupResult``). Ctrl-C stops every host cleanly (see `quilt_ops.stopping`).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fabric import Connection

from . import ssh, stopping
from .config import Settings
from .errors import ConfigError, QuiltError
from .remote import SshTarget, Target
from .status import ExitStatus, worst

T = TypeVar("T")


class HostTarget(Target, Protocol):
    """A host for a whole task: over SSH (`SshTarget`) or this machine (`quilt_ops.local.LocalTarget`)."""

    #: The CloudFormation stack the host was found from, if any.
    stack: str | None

    def open(self) -> None: ...


HT = TypeVar("HT", bound=HostTarget)


class InternalError(QuiltError):
    """A bug in quilt-ops on one host; reported by type only."""

    status = ExitStatus.INTERNAL


@dataclass
class HostResult(Generic[T]):
    """What a function returned on one host, or the error it ended with."""

    host: str
    value: T | None = None
    error: QuiltError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> ExitStatus:
        return ExitStatus.OK if self.error is None else self.error.status


class Results(list[HostResult[T]]):
    """Every host's result, in host order."""

    @property
    def succeeded(self) -> dict[str, T | None]:
        return {r.host: r.value for r in self if r.ok}

    @property
    def failed(self) -> dict[str, QuiltError]:
        return {r.host: r.error for r in self if r.error is not None}

    @property
    def status(self) -> ExitStatus:
        """The most urgent status of any host."""
        return worst(r.status for r in self)


def task_targets(
    c: Any, settings: Settings, stacks: list[str] | None = None, store_factory: Callable[[], Any] | None = None
) -> list[HostTarget]:
    """A task's targets: this machine with ``--local`` (``quilt.local``), else the SSH hosts of `targets`."""
    if settings.local:
        from . import sudo_password
        from .local import LocalTarget

        if sudo_password.password(getattr(c, "config", None)) is not None:
            raise ConfigError(
                "--local: sudo.password is for hosts reached over SSH; run quilt-ops --local as root "
                "or with passwordless sudo"
            )

        local = LocalTarget(c)
        local.sudo = settings.sudo
        return [local]
    return list(targets(c, settings, stacks, store_factory))


def targets(
    c: Any, settings: Settings, stacks: list[str] | None = None, store_factory: Callable[[], Any] | None = None
) -> list[SshTarget]:
    """Prepared targets (host-key checking on, not yet connected) for every host.

    Hosts are ``-H`` (or ``quilt.hosts``); without them, the ``EC2InstanceIp`` of
    each ``--stack`` (or of ``quilt.stacks``), logged into as ec2-user unless the
    ssh_config names a user. Over SSH only: `task_targets` also knows ``--local``.
    """
    if settings.local:
        raise ConfigError("--local: this task runs over SSH only (give -H HOST or --stack NAME instead)")
    found = _targets(c, settings, stacks, store_factory)
    for target in found:
        target.sudo = settings.sudo  # how a command given up on is killed, when it started root processes
    return found


def _targets(
    c: Any, settings: Settings, stacks: list[str] | None, store_factory: Callable[[], Any] | None
) -> list[SshTarget]:
    if isinstance(c, Connection):
        return [SshTarget(ssh.prepare(c, settings))]
    if settings.hosts:
        return [SshTarget(ssh.connection(host, c.config, settings), host) for host in settings.hosts]
    names = list(stacks or []) or list(settings.stacks)
    if not names:
        raise ConfigError("no host given: use -H HOST or --stack NAME (or set quilt.hosts or quilt.stacks)")
    from . import keys
    from . import stacks as registry_stacks

    store = store_factory() if store_factory else keys.KeyStore(keys.session())
    found = []
    for name in names:
        host = registry_stacks.find(store, name).host
        if not host:
            raise ConfigError(f"stack {name!r} has no EC2InstanceIp output")
        cxn = ssh.connection(host, c.config, settings)
        if not cxn.ssh_config.get("user"):
            cxn = ssh.connection(f"{settings.stack_user}@{host}", c.config, settings)
        found.append(SshTarget(cxn, ssh.describe(cxn), stack=name))
    return found


def each(hosts: list[HT], fn: Callable[[HT], T], parallel: int = 1, close: bool = True) -> Results[T]:
    """Runs ``fn`` on every host (connection opened first), ``parallel`` at a time.

    A `QuiltError` on one host is that host's result and does not stop the
    others; a bug is an `InternalError` for that host. Every connection is
    closed afterwards (unless ``close`` is False: a later phase goes on with it;
    a host that failed is closed anyway). On Ctrl-C every host is asked to stop, and the results
    (each host's own "interrupted, ..." error) are still returned.
    """

    def one(target: HT) -> HostResult[T]:
        failed = True
        try:
            target.open()
            result = HostResult(target.name, value=fn(target))
            failed = False
            return result
        except QuiltError as e:
            return HostResult(target.name, error=e)
        except KeyboardInterrupt:
            stopping.requested.set()
            return HostResult(target.name, error=QuiltError("interrupted", status=ExitStatus.INTERRUPTED))
        except Exception as e:  # a bug: say what kind, never its text
            if os.environ.get("QUILT_OPS_DEBUG") == "1":
                traceback.print_exc()
            return HostResult(
                target.name,
                error=InternalError(f"internal error ({type(e).__name__}); rerun with QUILT_OPS_DEBUG=1 for details"),
            )
        finally:
            if close or failed:
                target.close()

    if parallel <= 1 or len(hosts) == 1:
        results: Results[T] = Results()
        for target in hosts:
            if stopping.requested.is_set():
                results.append(
                    HostResult(target.name, error=QuiltError("not started: interrupted", status=ExitStatus.INTERRUPTED))
                )
                continue
            result = one(target)
            if result.status == ExitStatus.INTERRUPTED:
                stopping.requested.set()
            results.append(result)
        return results
    pool = ThreadPoolExecutor(max_workers=min(parallel, len(hosts)))
    futures = [pool.submit(one, target) for target in hosts]
    try:
        return Results(f.result() for f in futures)
    except KeyboardInterrupt:
        stopping.requested.set()
        print("Stopping every host (Ctrl-C again to quit at once)...", file=sys.stderr, flush=True)
        return Results(f.result() for f in futures)
    finally:
        pool.shutdown(wait=True)
