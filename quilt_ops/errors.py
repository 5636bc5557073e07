"""Exceptions that end a task (or one host's part of it) with one ``Error: ...`` line.

Messages are written for the operator and never carry a secret: no key, no
password, no env-file value (output from the host is masked before it gets
here, see `quilt_ops.masking`). Anything that is not a `QuiltError` is a bug
and is reported by its type only.
"""

from __future__ import annotations

from .status import ExitStatus


class QuiltError(Exception):
    """A failure the operator can understand and act on."""

    status: ExitStatus = ExitStatus.FAILED

    def __init__(self, message: str, status: ExitStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class ConfigError(QuiltError):
    """A setting under ``quilt`` (or a task option) is missing or invalid."""

    status = ExitStatus.USAGE


class HostError(QuiltError):
    """The host could not be reached, authenticated or trusted; nothing was changed."""

    status = ExitStatus.UNKNOWN


class HostKeyUnknown(HostError):
    """The host's key is in no known_hosts file and the policy is ``reject``."""


class HostKeyChanged(HostError):
    """The host's key differs from the recorded one: refused whatever the policy."""


class ConnectionLost(HostError):
    """The SSH connection dropped (or timed out) after it was open.

    What that means for the host depends on the step: the task that catches it
    says what was changed and how to finish.
    """


class NotStarted(ConnectionLost):
    """The connection was gone before a command could start: that command did not run."""


class RemoteCommandError(QuiltError):
    """A command on the host failed; the message holds the (masked) tail of its output."""


class RemoteTimeout(RemoteCommandError):
    """A command on the host ran past its time and was killed there (with its children)."""


class MissingTool(QuiltError):
    """A program quilt-ops needs is not installed on the host (curl, flock, docker, sudo)."""

    status = ExitStatus.UNKNOWN


class Refused(QuiltError):
    """A pre-flight check refused to go on; nothing was changed."""
