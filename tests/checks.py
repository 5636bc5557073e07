"""End-state checks shared by the integration and reliability tests: what a run may not lose."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

#: Set by quilt_ops/sh/create_admin_env.sh in the environment it gives create_admin.sh.
REGISTRY_ENVIRONMENT = b"QUILT_OPS_REGISTRY_ENVIRONMENT=create_admin"


class ProcessWatcher:
    """Samples every process's command line and environment on this machine during a run.

    The containers' own processes are left out: the registry holds its
    environment by design (that is what the env file is for); so does create_admin.sh,
    given it by create-admin (the environments of its processes, not their command lines).
    """

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if "/docker/" in (proc / "cgroup").read_text() or "docker-" in (proc / "cgroup").read_text():
                        continue
                except OSError:
                    continue
                for name in ("cmdline", "environ"):
                    try:
                        blob = (proc / name).read_bytes()
                    except OSError:
                        continue
                    if name == "environ" and REGISTRY_ENVIRONMENT in blob.split(b"\0"):
                        continue  # create_admin.sh is given the registry's environment by design (issue 18.2)
                    self.seen.add(blob)
            time.sleep(0.02)

    def __enter__(self) -> ProcessWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def key_lines_removed(content: bytes) -> bytes:
    """The env file with the key lines' values blanked: what a rotation must never change."""
    return re.sub(rb"(?m)^(\s*)(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SECRET_KEY)=[^\r\n]*", rb"\1\2=", content)


def losses(host: Any, aws: Any, baseline: bytes | None = None) -> dict[str, list[str]]:
    """What a run lost: env-file bytes, IAM keys (stray or unaccepted), health. Empty lists = nothing."""
    lost: dict[str, list[str]] = {"files": [], "keys": [], "health": []}
    content = host.env_file.read_bytes() if host.env_file.exists() else b""
    key_id = re.findall(rb"(?m)^AWS_ACCESS_KEY_ID=(\S+)", content)
    secret = re.findall(rb"(?m)^AWS_SECRET_ACCESS_KEY=(\S+)", content)
    if not key_id or not secret:
        lost["files"].append("env/registry has no complete key lines")
    if baseline is not None and key_lines_removed(content) != key_lines_removed(baseline):
        lost["files"].append("env/registry changed outside its key lines")
    if host.env_file.exists() and host.env_file.stat().st_mode & 0o077 and host.shape.env_mode & 0o077 == 0:
        lost["files"].append("env/registry is readable by others")
    if host.leftovers():
        lost["files"].append(f"left over: {', '.join(host.leftovers())}")
    keys = aws.keys()
    if key_id:
        host_key = key_id[-1].decode()
        if keys.get(host_key) != "Active":
            lost["keys"].append(f"the host's key {host_key} is not Active in IAM")
        strays = [k for k in keys if k != host_key]
        if strays:
            lost["keys"].append(f"stray keys: {', '.join(strays)}")
        if secret and not host.key_accepted(host_key, secret[-1].decode()):
            lost["keys"].append("IAM does not accept the host's key")
        if not host.registry_runs_with(host_key):
            lost["health"].append("the registry does not run with the host's key")
    if host.run("health").returncode != 0:
        lost["health"].append("health is not OK")
    return lost


def record_losses(nodeid: str, lost: dict[str, list[str]]) -> None:
    """Appends a case's losses to $QUILT_OPS_RELIABILITY_LOG, read by scripts/reliability."""
    path = os.environ.get("QUILT_OPS_RELIABILITY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"case": nodeid, "lost": lost}) + "\n")
