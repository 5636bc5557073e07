"""Writing to stdout when its reader may have gone (``quilt-ops health --json | head -c1``).

A closed pipe makes the next write or flush raise `BrokenPipeError` (EPIPE; Python
ignores SIGPIPE). As the Python docs recommend (signal module, "Note on SIGPIPE"),
stdout is then pointed at /dev/null, so that nothing else written, and Python's own
flush at exit, fails again: the run ends quietly, with the exit status it would have
had (a task's outcome does not depend on who reads its output).
"""

from __future__ import annotations

import os
import sys

#: True once stdout's reader went away (what is written since goes to /dev/null).
closed = False


def stdout_closed() -> None:
    """After EPIPE on stdout: puts /dev/null in its place (file descriptor and all)."""
    global closed
    closed = True
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def out(text: str = "", end: str = "\n") -> None:
    """Prints ``text`` to stdout and flushes; a reader that went away is not an error."""
    if closed:
        return
    try:
        sys.stdout.write(text + end)
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_closed()
