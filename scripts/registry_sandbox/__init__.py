"""A local stand-in for Quilt Teams Registry hosts, made of real parts (the quilt-ops sandbox).

    from registry_sandbox import Sandbox, MAIN, NAMES, worker_shape
    host = Sandbox().up(MAIN)          # idempotent: brings up only what is missing or dead
    host.reset()                       # back to a healthy baseline, directly

A sandbox holds named hosts, each isolated from the others: its own dockerd,
moto server and AWS delay proxy, sshd(s), login user, registry folder, containers,
ports, faults and database folder. The default shape (``MAIN``) is the real host's
documented one: ``ec2-user``, not in the docker group, with passwordless sudo.

Modules: ``shapes`` (HostShape, MAIN, NAMES, worker_shape), ``state`` (the state
files and the folder layout), ``engine`` (dockerd and the stand-in images),
``aws`` (moto, the proxy, provisioning), ``sshd``, ``home`` (login user, sudoers,
the registry folder's files), ``host`` (the Host object), ``sandbox`` (up/down),
``cli`` (``scripts/sandbox``); resource files are in ``files/``.
"""

from .host import HOST_FAULTS, Host
from .sandbox import DEFAULT_ROOT, Sandbox
from .shapes import MAIN, NAMES, HostShape, worker_shape
from .util import SandboxError

__all__ = [
    "Sandbox",
    "Host",
    "HostShape",
    "MAIN",
    "NAMES",
    "worker_shape",
    "SandboxError",
    "HOST_FAULTS",
    "DEFAULT_ROOT",
]
