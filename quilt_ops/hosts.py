"""The hosts a task runs on, and running one function on each over its own connection.

Hosts come from ``-H`` (put into ``quilt.hosts`` by quilt-ops' executor) or from
``quilt.hosts``; when plain Fabric hands a task a `fabric.Connection`, that one
host is used. Each host gets exactly one SSH connection for the whole task, and
hosts run concurrently up to ``parallel``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from fabric import Connection

from . import ssh
from .config import Settings
from .errors import ConfigError, QuiltError

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    """What a function returned on one host, or the error it ended with."""

    host: str
    value: T | None = None
    error: QuiltError | None = None


#: The login user of the real host, used for hosts found from a stack unless ssh_config says otherwise.
STACK_USER = "ec2-user"


def connections(c: Any, settings: Settings, stacks: list[str] | None = None,
                aws: Callable[[], Any] | None = None) -> list[Connection]:
    """Prepared connections (host-key checking on) for every target host.

    Hosts are ``-H`` (or ``quilt.hosts``); without them, the ``EC2InstanceIp`` of
    each ``--stack`` (or of ``quilt.stacks``), logged into as ec2-user unless the
    ssh_config names a user. Each connection made from a stack carries its
    name as ``quilt_stack``.
    """
    if isinstance(c, Connection):
        return [ssh.prepare(c, settings)]
    if settings.hosts:
        return [ssh.connection(host, c.config, settings) for host in settings.hosts]
    names = list(stacks or []) or list(settings.stacks)
    if not names:
        raise ConfigError("no host given: use -H HOST or --stack NAME (or set quilt.hosts or quilt.stacks)")
    from . import keys
    from . import stacks as registry_stacks

    store = aws() if aws else keys.KeyStore(keys.session())
    cxns = []
    for name in names:
        host = registry_stacks.find(store, name).host
        cxn = ssh.connection(host, c.config, settings)
        if not cxn.ssh_config.get("user"):
            cxn = ssh.connection(f"{STACK_USER}@{host}", c.config, settings)
        cxn.quilt_stack = name
        cxns.append(cxn)
    return cxns


def each(cxns: list[Connection], fn: Callable[[Connection], T], parallel: int = 1) -> list[Outcome[T]]:
    """Runs ``fn`` on every connection, ``parallel`` at a time; results in host order.

    A `QuiltError` on one host is that host's outcome and does not stop the
    others. Every connection is closed afterwards.
    """

    def one(cxn: Connection) -> Outcome[T]:
        try:
            return Outcome(ssh.describe(cxn), value=fn(cxn))
        except QuiltError as e:
            return Outcome(ssh.describe(cxn), error=e)
        finally:
            cxn.close()

    if parallel <= 1 or len(cxns) == 1:
        return [one(cxn) for cxn in cxns]
    with ThreadPoolExecutor(max_workers=min(parallel, len(cxns))) as pool:
        return list(pool.map(one, cxns))
