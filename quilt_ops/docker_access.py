"""How a target reaches Docker: the CLI inside a step's shell script, or the Docker SDK from here.

Over SSH, Docker is driven by the docker CLI inside the one shell script of each
step (`quilt_ops.shell.Script.docker`: directly, or through sudo), and its
output is read back from the script's sections. On the registry host itself
(``--local``) the Docker SDK answers instead, over the engine's socket, when
that socket can be reached (`for_local`); the script then carries no docker
command at all, and nothing is parsed from CLI output. Both give the same
document (``docker inspect``'s, without ``Config.Env``), so the verdicts
(`quilt_ops.containers.verdicts`) are shared.

A step gets its target's access (`of`), lets it add its part to the script
(`DockerAccess.prepare`, `DockerAccess.add_inspect`: the SDK adds nothing), runs
the script, then asks for the answer (`DockerAccess.answer`: read from the
sections, or asked of the engine now). Removing the containers is part of
restart's one script for the CLI (`DockerAccess.in_script`); the SDK does it
with a call of its own (`DockerAccess.remove`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import containers, sh, shell
from .config import DOCKER_AUTO, Settings
from .envfile import KEY_ID

#: The engine's socket when DOCKER_HOST is not set.
DEFAULT_HOST = f"unix://{shell.DEFAULT_SOCKET}"
#: Seconds the SDK waits for the engine's answer.
SDK_TIMEOUT = 30
#: What ``how`` says when the SDK answered.
SDK = "sdk"


@dataclass
class DockerAnswer:
    """What Docker said about the containers."""

    #: How docker was reached: direct, sudo, configured (the CLI, as the script said), or sdk.
    how: str
    containers: containers.InspectResult
    #: The access key ID the registry container runs with (when asked for), checked to look like one.
    key_in_effect: str | None = None


class DockerAccess(Protocol):
    """One target's way to Docker, for one task."""

    #: True when the containers are removed inside restart's script (the CLI); False when
    #: `remove` does it (the SDK).
    in_script: bool

    def prepare(self, s: shell.Script, required: bool = False) -> None:
        """Adds what the script needs before any docker command (the CLI's ``qdocker``)."""
        ...

    def add_inspect(self, s: shell.Script, names: Sequence[str], key_of: str | None = None) -> None:
        """Adds the inspection of ``names`` (and the key in effect in ``key_of``) to the script."""
        ...

    def answer(self, output: shell.Output, names: Sequence[str], key_of: str | None = None) -> DockerAnswer:
        """The answer to `add_inspect`, once the script has run."""
        ...

    def remove(self, names: Sequence[str]) -> None:
        """``docker rm -f``: a container already gone is not an error (only when not `in_script`)."""
        ...

    def close(self) -> None: ...


def from_sections(output: shell.Output) -> DockerAnswer:
    """The CLI's answer, read from a script's ``docker``, ``inspect``, ``dockerfail`` and
    ``key-in-effect`` sections."""
    inspect = output.first("inspect")
    text = inspect.text if inspect else ""
    failed = output.first("dockerfail")
    if failed is not None:
        text = failed.text
    key = output.first("key-in-effect")
    return DockerAnswer(
        output.word("docker"),
        containers.parse_inspect(text),
        containers.parse_key_in_effect(key.text) if key is not None else None,
    )


class ScriptDocker:
    """The docker CLI inside the step's script (`quilt_ops.shell.Script.docker`): the SSH path,
    and the local one when the socket cannot be reached or ``quilt.docker`` is a command prefix."""

    in_script = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def prepare(self, s: shell.Script, required: bool = False) -> None:
        s.docker(required=required)
        s.add(sh.load(containers.SCRIPT))

    def add_inspect(self, s: shell.Script, names: Sequence[str], key_of: str | None = None) -> None:
        s.add(containers.inspect_command(names))
        if key_of:
            s.add(sh.load(containers.KEY_SCRIPT), containers.key_in_effect_command(key_of, KEY_ID))

    def answer(self, output: shell.Output, names: Sequence[str], key_of: str | None = None) -> DockerAnswer:
        return from_sections(output)

    def remove(self, names: Sequence[str]) -> None:  # pragma: no cover - the script removes them
        raise NotImplementedError("the CLI removes containers inside restart's script")

    def close(self) -> None:
        pass


def document(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``docker inspect``'s document that `containers.INSPECT_TEMPLATE` asks for:
    the same fields, and never ``Config.Env`` (every secret of the env file)."""
    config = attrs.get("Config") or {}
    return {
        "Name": attrs.get("Name"),
        "State": attrs.get("State"),
        "RestartCount": attrs.get("RestartCount"),
        "Created": attrs.get("Created"),
        "Image": attrs.get("Image"),
        "Config": {"Image": config.get("Image")},
    }


def key_in_effect(attrs: Mapping[str, Any]) -> str | None:
    """The access key ID in a container's environment as its process sees it (Docker keeps the
    last of duplicate entries), checked to look like one; nothing else of the environment is kept."""
    prefix = f"{KEY_ID}="
    found = ""
    for entry in (attrs.get("Config") or {}).get("Env") or []:
        if isinstance(entry, str) and entry.startswith(prefix):
            found = entry[len(prefix) :]
    return containers.parse_key_in_effect(found)


def sdk_problem(e: BaseException) -> str:
    """Why the engine could not be asked, in the words the CLI path uses."""
    text = " ".join(str(part) for part in _chain(e)).lower()
    if "permission denied" in text:
        return containers.docker_problem(["permission denied"]) or "permission denied on the Docker socket"
    if any(word in text for word in ("no such file", "connection refused", "connection aborted", "filenotfound")):
        return "the Docker engine is not running"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"the Docker engine did not answer: {first[:200]}"


def _chain(e: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = e
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


class SdkDocker:
    """The Docker SDK (``docker.DockerClient``) over the engine's socket: the local path."""

    in_script = False

    def __init__(self, base_url: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        #: The engine: a ``unix://`` URL, or None for DOCKER_HOST and its TLS settings (``docker.from_env``).
        self.base_url = base_url
        self.environ = environ
        self._client: Any = None

    def client(self) -> Any:
        """The SDK's client, made on first use (it asks the engine for its API version)."""
        if self._client is None:
            import docker  # only the local path pays for the SDK's imports

            if self.base_url:
                self._client = docker.DockerClient(base_url=self.base_url, timeout=SDK_TIMEOUT)
            else:
                self._client = docker.from_env(timeout=SDK_TIMEOUT, environment=dict(self.environ or os.environ))
        return self._client

    def prepare(self, s: shell.Script, required: bool = False) -> None:
        pass  # no docker command runs in the script

    def add_inspect(self, s: shell.Script, names: Sequence[str], key_of: str | None = None) -> None:
        pass  # asked of the engine in `answer`

    def answer(self, output: shell.Output, names: Sequence[str], key_of: str | None = None) -> DockerAnswer:
        import docker.errors
        import requests

        documents: dict[str, dict[str, Any]] = {}
        key: str | None = None
        try:
            client = self.client()
            for name in names:
                try:
                    attrs = client.containers.get(name).attrs
                except docker.errors.NotFound:
                    continue  # missing: no document, as `docker inspect` prints none
                documents[name] = document(attrs)
                if name == key_of:
                    key = key_in_effect(attrs)
        except docker.errors.APIError as e:
            why = str(e.explanation or e)
            return DockerAnswer(SDK, containers.InspectResult({}, f"docker inspect failed: {why[:200]}"))
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
            return DockerAnswer(SDK, containers.InspectResult({}, sdk_problem(e)))
        return DockerAnswer(SDK, containers.InspectResult(documents), key)

    def remove(self, names: Sequence[str]) -> None:
        """``docker rm -f`` of each container. As with the CLI (``|| true``), a failure here is
        not one of its own: the start script that follows says what is wrong."""
        import docker.errors
        import requests

        try:
            client = self.client()
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
            return
        for name in names:
            try:
                client.api.remove_container(name, force=True)
            except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
                continue

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing an idle HTTP pool: nothing to keep
                pass


def reachable(url: str) -> bool:
    """Whether this process can use the engine at ``url`` itself: the shell prologue's test
    (`quilt_ops.shell.Script.docker`), in Python. A socket that is not there counts (the
    engine is down, and the SDK says so); so does any non-unix URL (the SDK talks to it)."""
    if not url.startswith("unix://"):
        return True
    path = url[len("unix://") :]
    if os.access(path, os.R_OK | os.W_OK):
        return True
    return not os.path.exists(path) and os.access(os.path.dirname(path) or "/", os.X_OK)


def for_local(settings: Settings, environ: Mapping[str, str] | None = None) -> DockerAccess:
    """Docker on this machine, as ``quilt.docker`` says.

    ``auto``: the SDK on DOCKER_HOST (or the default socket) when this process can use it,
    else the CLI through ``quilt.sudo`` (the script's own ``auto``); a ``unix://`` URL: the
    SDK on that socket; anything else: that CLI prefix, used as given.
    """
    env = os.environ if environ is None else environ
    configured = settings.docker.strip()
    if configured.startswith("unix://"):
        return SdkDocker(configured, env)
    if configured != DOCKER_AUTO:
        return ScriptDocker(settings)
    docker_host = env.get("DOCKER_HOST", "").strip()
    if reachable(docker_host or DEFAULT_HOST):
        return SdkDocker(None if docker_host else DEFAULT_HOST, env)
    return ScriptDocker(settings)


def of(target: object, settings: Settings) -> DockerAccess:
    """The target's own access (a local target chooses, see `for_local`), else the CLI in the script."""
    own = getattr(target, "docker_access", None)
    if callable(own):
        access: DockerAccess = own(settings)
        return access
    return ScriptDocker(settings)
