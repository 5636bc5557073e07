"""Exceptions that end a task with one ``Error: ...`` line and an exit status.

Messages are written for the operator and never carry a secret: no key, no
password, no env-file value. Anything that is not a `QuiltError` is a bug and is
reported without its text (see ``tasks``).
"""

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
    """The host could not be reached, authenticated or trusted."""

    status = ExitStatus.UNKNOWN


class HostKeyUnknown(HostError):
    """The host's key is in no known_hosts file and the policy is ``reject``."""


class HostKeyChanged(HostError):
    """The host's key differs from the recorded one: refused whatever the policy."""


class RemoteCommandError(QuiltError):
    """A command on the host failed; the message holds the tail of its output."""
