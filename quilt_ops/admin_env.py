"""The environment create_admin.sh gets: ``env/registry`` read as data, never run as shell.

The operator's page says ``. env/registry && ./create_admin.sh``, but Docker reads the
file verbatim (``--env-file``): ``QUILT_DEFAULT_SENDER=a@b;touch x`` or ``TEAM_NAME=QA
Team`` are values to the registry and commands to a shell. So quilt-ops parses the file
with Docker's rules (`quilt_ops.envfile`), and `quilt_ops/sh/create_admin_env.sh` exports
each value verbatim before it execs create_admin.sh. The entries travel as a private
(0600) file of NUL-terminated ``NAME=VALUE`` (never a command line, never a remote
environment variable). Names that change how the session's programs run (``PATH``,
``LD_PRELOAD``, ``BASH_ENV``...) are refused: the registry's file has no business setting them.
"""

from __future__ import annotations

import re
from importlib import resources

from .envfile import EnvFile

#: A variable name a shell can export.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Kept from the login session, never taken from the host's file (the .sh refuses them too).
SESSION = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "TZ")
#: Names that make a shell or the dynamic loader run something of their choosing.
#: (Review of issue 18: also the C library's loaders and lookups, other interpreters' start-up
#: hooks, and a shell's read timeout.)
RUNS_CODE = re.compile(
    r"LC_.*|DOCKER_.*|LD_.*|BASH.*|ENV|SHELLOPTS|IFS|PS4|CDPATH|GLOBIGNORE|PROMPT_COMMAND"
    r"|GCONV_PATH|NLSPATH|HOSTALIASES|RES_OPTIONS|LOCPATH|MALLOC_.*|GLIBC_TUNABLES|TERMINFO.*|TMOUT"
    r"|PYTHON.*|PERL5.*|PERLLIB|RUBYOPT|RUBYLIB|NODE_OPTIONS|NODE_PATH"
)
SCRIPT = "create_admin_env.sh"


class Unusable(ValueError):
    """The env file cannot be handed to create_admin.sh as it is (the message names lines, never values)."""


def entries(content: bytes) -> list[tuple[str, bytes]]:
    """The variables Docker would give the registry, in file order (the last of a name wins)."""
    env = EnvFile(content)
    refused = env.refused_by_docker()
    if refused:
        raise Unusable("Docker refuses it: " + "; ".join(refused))
    found: dict[str, bytes] = {}
    for line in env.lines:
        if not line.assigns or line.key is None:
            continue  # a bare NAME takes docker's own environment: nothing to pass
        name = line.key
        if not NAME.fullmatch(name):
            raise Unusable(f"line {line.number}: {name[:40]!r} is not a variable name a shell can pass on")
        if name in SESSION or RUNS_CODE.fullmatch(name):
            raise Unusable(f"line {line.number}: {name} is not passed to create_admin.sh (it changes what runs)")
        if b"\0" in line.value:
            raise Unusable(f"line {line.number}: {name}'s value holds a NUL byte")
        found.pop(name, None)
        found[name] = line.value
    return list(found.items())


def encode(found: list[tuple[str, bytes]]) -> bytes:
    """``NAME=VALUE\\0`` entries, as create_admin_env.sh reads them."""
    return b"".join(name.encode() + b"=" + value + b"\0" for name, value in found)


def script(name: str = SCRIPT) -> str:
    """A shell file of the package data (the wrapper is run as ``bash -c TEXT NAME DATA SCRIPT``)."""
    return resources.files(__package__).joinpath("sh").joinpath(name).read_text(encoding="utf-8")


#: Shell functions run as root by a --local run: host scripts run as the registry folder's
#: owner (runuser), refused when another user can write them (quilt_ops/sh/as_folder_owner.sh).
OWNED = "as_folder_owner.sh"
