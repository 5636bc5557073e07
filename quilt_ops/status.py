"""Exit statuses of quilt-ops: one documented set, every value distinct.

``health`` follows the Nagios plugin convention (0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN). The tasks that change something add their own values, so that a
script can tell "nothing changed" from "changed but not finished" from "the
rollback failed too" by the number alone.

Several hosts combine by urgency (`worst`), not by number: a failed rollback on
one host is never hidden by an unreachable other host.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ExitStatus(IntEnum):
    """How a task ended (the process exit code)."""

    #: Done; for ``health``, every check passed.
    OK = 0
    #: ``health``: something needs attention, nothing is down.
    WARNING = 1
    #: ``health``: something is down or broken.
    CRITICAL = 2
    #: The host could not be reached, trusted or inspected; nothing was changed.
    #: ``health`` also ends with it on a bad option or config (as Nagios plugins do).
    UNKNOWN = 3
    #: A task that changes something failed; the host was left as it was, or
    #: rolled back (the message says which).
    FAILED = 4
    #: The change was made, or stopped part-way, and is not finished; the
    #: message names the command that finishes it (usually: run it again).
    INCOMPLETE = 5
    #: The change failed and so did its rollback: a person must look. The
    #: message says what state things are in and what to run.
    ROLLBACK_FAILED = 6
    #: Bad option, configuration or input: nothing was contacted or changed
    #: (``sysexits.h`` EX_USAGE).
    USAGE = 64
    #: A bug in quilt-ops (``sysexits.h`` EX_SOFTWARE); rerun with QUILT_OPS_DEBUG=1.
    INTERNAL = 70
    #: Interrupted by Ctrl-C; a changing task says how to finish or roll back.
    INTERRUPTED = 130


#: From least to most urgent. CRITICAL outranks UNKNOWN because a failing probe
#: is a fact about the service, while UNKNOWN is only about what we could see.
#: ROLLBACK_FAILED is last: it is the one outcome that needs a person.
URGENCY: tuple[ExitStatus, ...] = (
    ExitStatus.OK,
    ExitStatus.WARNING,
    ExitStatus.UNKNOWN,
    ExitStatus.CRITICAL,
    ExitStatus.FAILED,
    ExitStatus.INCOMPLETE,
    ExitStatus.USAGE,
    ExitStatus.INTERRUPTED,
    ExitStatus.INTERNAL,
    ExitStatus.ROLLBACK_FAILED,
)


def worst(statuses: Iterable[ExitStatus]) -> ExitStatus:
    """The most urgent of some statuses (OK when there are none)."""
    result = ExitStatus.OK
    for status in statuses:
        if URGENCY.index(status) > URGENCY.index(result):
            result = status
    return result


def label(status: ExitStatus) -> str:
    """The name of a status as shown to people (Nagios names for 0-3)."""
    return status.name


#: The task whose every failure to look, a bad option or config included, is UNKNOWN (Nagios).
NAGIOS_TASK = "health"


def usage_status(tasks: Iterable[str]) -> ExitStatus:
    """What a bad option, config or input exits with: UNKNOWN when only ``health`` was asked
    for (a Nagios plugin that cannot look says UNKNOWN), else USAGE."""
    names = [name for name in tasks if name]
    if names and all(name == NAGIOS_TASK for name in names):
        return ExitStatus.UNKNOWN
    return ExitStatus.USAGE
