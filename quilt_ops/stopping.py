"""Stopping every host of a run cleanly on Ctrl-C.

Python delivers Ctrl-C to the main thread only. When a run has hosts in worker
threads, the main thread sets `requested`; every wait and every remote command
checks it (`check`) and stops with `Stopped`, a KeyboardInterrupt, so that each
host's own clean-up (kill the remote command, delete a key the host never saw,
or say how to finish) runs as it would for Ctrl-C on one host.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

requested = threading.Event()
_cleaning = threading.local()


class Stopped(KeyboardInterrupt):
    """Ctrl-C reached another thread: stop this host's work cleanly."""


def stopping() -> bool:
    """True when the run is being stopped and this thread is not cleaning up after it."""
    return requested.is_set() and not getattr(_cleaning, "on", False)


def check() -> None:
    """Raises `Stopped` if the run is being stopped."""
    if stopping():
        raise Stopped()


@contextmanager
def cleaning_up() -> Iterator[None]:
    """Within the block this thread is cleaning up after a stop (deleting a key the host
    never saw, removing a journal): its remote commands and waits are not stopped."""
    _cleaning.on = True
    try:
        yield
    finally:
        _cleaning.on = False


def sleep(seconds: float) -> None:
    """Sleeps, but wakes up (with `Stopped`) as soon as the run is stopped."""
    if getattr(_cleaning, "on", False):
        threading.Event().wait(max(0.0, seconds))
    elif requested.wait(max(0.0, seconds)):
        raise Stopped()
