"""Exit statuses of quilt-ops, one documented set for every task.

``health`` follows the Nagios plugin convention (0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN). The tasks that change something use the same numbers with the
meanings below, so that 0 is always "done" and 3 is always "could not even look".
"""

from enum import IntEnum


class ExitStatus(IntEnum):
    #: Done; for ``health``, every check passed.
    OK = 0
    #: ``health``: at least one check needs attention, nothing is down.
    WARNING = 1
    #: A task that changes something failed; the host was left as it was or
    #: rolled back (the message says which).
    FAILED = 1
    #: ``health``: something is down or broken.
    CRITICAL = 2
    #: Bad option, configuration or input: nothing was contacted or changed.
    USAGE = 2
    #: ``rotate-keys``: the rotation failed and so did its rollback; the message
    #: says what state things are in and the command that finishes the job.
    ROLLBACK_FAILED = 2
    #: The host could not be reached or inspected (connection, host key,
    #: authentication, docker missing or not permitted).
    UNKNOWN = 3
    #: Interrupted by Ctrl-C.
    INTERRUPTED = 130


#: Order in which ``health`` verdicts combine: the later, the worse. CRITICAL
#: outranks UNKNOWN because a probe that fails is a fact about the service,
#: while an UNKNOWN is only a fact about what we could see.
SEVERITY = (ExitStatus.OK, ExitStatus.WARNING, ExitStatus.UNKNOWN, ExitStatus.CRITICAL)


def worst(statuses) -> ExitStatus:
    """The worst of some health statuses (OK when there are none)."""
    result = ExitStatus.OK
    for status in statuses:
        if SEVERITY.index(status) > SEVERITY.index(result):
            result = status
    return result


def label(status: ExitStatus) -> str:
    """The Nagios name of a health status."""
    return {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}[int(status)]
