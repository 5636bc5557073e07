"""Running the real ``fab`` / ``quilt-ops`` commands against a sandbox host, as an operator would.

`Operator` wraps one `registry_sandbox.Host`: its attributes are the host's
(paths, names, faults, ``reset``...), and `run` / `start` run the tool with
that host's ssh_config, fabric config and AWS credentials.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Every run of the tool in the current test (command, exit status, stdout, stderr): a failing
#: test's report shows them all, stderr's ``Error:`` line included (see tests/conftest.py).
RUNS: list[subprocess.CompletedProcess] = []


def record(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    RUNS.append(result)
    return result


def describe_runs(limit: int = 4000) -> str:
    """The tool runs of the current test, for a failure report: stderr whole, stdout's tail."""
    parts = []
    for n, result in enumerate(RUNS, 1):
        args = result.args if isinstance(result.args, str) else " ".join(map(str, result.args))
        out = result.stdout or ""
        parts.append(
            f"--- run {n}: {args}\n--- exit status {result.returncode}\n"
            f"--- stderr:\n{result.stderr or ''}\n--- stdout (last {limit} characters):\n{out[-limit:]}"
        )
    return "\n".join(parts)


def executable(tool: str) -> str:
    """The tool to run. QUILT_OPS_TOOL_BIN (a folder holding another build's ``quilt-ops``)
    runs the suite against that build instead, to show which tests an older one fails."""
    other = os.environ.get("QUILT_OPS_TOOL_BIN")
    if other:
        return str(Path(other) / "quilt-ops")
    beside = Path(sys.executable).parent / tool  # this Python's own (the checkout's .venv)
    return str(beside) if beside.exists() else shutil.which(tool) or str(beside)


class Operator:
    """A sandbox host, seen by an operator running quilt-ops against it."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def __getattr__(self, name: str) -> Any:
        return getattr(self.host, name)

    # -- the tool -------------------------------------------------------------------------

    def tool_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FABRIC_QUILT_", "AWS_", "QUILT_OPS_DEBUG", "QUILT_ADMIN"))
        }
        env.update(self.host.aws_env())
        env.update(extra or {})
        return env

    def command(
        self,
        *args: str,
        tool: str = "fab",
        config: Path | None = None,
        ssh_config: Path | None = None,
        host: str | None = None,
    ) -> list[str]:
        cmd = [
            executable(tool),
            "-S",
            str(ssh_config or self.host.ssh_config),
            "-f",
            str(config or self.host.fabric_config),
        ]
        target = self.host.alias if host is None else host
        if target:
            cmd += ["-H", target]
        return cmd + list(args)

    def run(
        self,
        *args: str,
        tool: str = "fab",
        config: Path | None = None,
        ssh_config: Path | None = None,
        host: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        input: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        """Runs the tool to its end (the alias of the host unless ``host`` says otherwise; "" for none)."""
        return record(
            subprocess.run(
                self.command(*args, tool=tool, config=config, ssh_config=ssh_config, host=host),
                cwd=cwd or ROOT,
                env=self.tool_env(env),
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        )

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        config: Path | None = None,
        host: str | None = None,
        ssh_config: Path | None = None,
    ) -> Running:
        """Starts the tool in the background (read its progress with `Running.wait_for`)."""
        proc = subprocess.Popen(
            self.command(*args, config=config, host=host, ssh_config=ssh_config),
            cwd=ROOT,
            env=self.tool_env(env),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        return Running(proc)

    def write_config(self, path: Path, **quilt: Any) -> Path:
        """The host's fabric config with some quilt settings changed."""
        import yaml

        settings = yaml.safe_load(Path(self.host.fabric_config).read_text())["quilt"]
        settings.update(quilt)
        path.write_text(json.dumps({"quilt": settings}))  # JSON is YAML
        return path

    def audit_records(self) -> list[dict[str, Any]]:
        path = Path(self.host.audit_log)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def lock_held(self) -> bool:
        """Whether a process holds the host lock (checked directly with flock, as root)."""
        lock = self.host.env_dir / ".registry.quilt-ops.lock"
        if not lock.exists():
            return False
        return subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0

    def health_ok(self) -> bool:
        return self.run("health").returncode == 0


class AwsSide:
    """The sandbox host's AWS (moto), as the operator sees it; assertions bypass the fault proxy."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.iam = host.iam_client()
        self.user = host.iam_user
        self.kw = host.aws_kwargs()

    def keys(self) -> dict[str, str]:
        """RegistryUser's keys: id -> status."""
        return dict(self.host.keys())

    def fault(self, **settings: Any) -> None:
        self.host.aws_fault(**settings)

    def clear(self) -> None:
        self.host.clear_aws_faults()

    def operator(self, name: str, policy: dict[str, Any]) -> dict[str, str]:
        """A new operator user holding exactly ``policy``; returns its AWS environment."""
        self.iam.create_user(UserName=name)
        self.iam.put_user_policy(UserName=name, PolicyName="quilt-ops", PolicyDocument=json.dumps(policy))
        key = self.iam.create_access_key(UserName=name)["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def remove_operator(self, name: str) -> None:
        for key in self.iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
            self.iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
        self.iam.delete_user_policy(UserName=name, PolicyName="quilt-ops")
        self.iam.delete_user(UserName=name)


# ----------------------------------------------------------------------------- reading results


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def create_admin_args(name: str) -> tuple[str, ...]:
    """``create-admin`` for user ``name`` (address name@example.com), password from stdin."""
    return ("create-admin", "--username", name, "--email", f"{name}@example.com", "--password-stdin")


def one_error(result: subprocess.CompletedProcess) -> str:
    """The single ``Error:`` line a failure must end with (and no traceback anywhere)."""
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def last_error(result: subprocess.CompletedProcess) -> str:
    """The last stderr line, which must be an ``Error:`` line (no traceback anywhere)."""
    lines = error_lines(result)
    assert lines and lines[-1].startswith("Error: "), result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[-1]


class Running:
    """A tool run in the background: its stdout read line by line by a thread (so waits are bounded)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import queue
        import threading

        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        """Waits until a line of stdout holds ``pattern``; returns what was printed so far."""
        import queue

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if pattern in line:
                return "".join(self.out)
        raise AssertionError(f"never saw {pattern!r} within {timeout}s: {''.join(self.out)}")

    def wait_for_any(self, patterns: tuple[str, ...], timeout: float = 60) -> str:
        """Waits until a line holds one of ``patterns``, or the run ends; returns that line ("" at the end)."""
        import queue

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                return ""
            if any(p in line for p in patterns):
                return line
        raise AssertionError(f"never saw any of {patterns!r} within {timeout}s: {''.join(self.out)}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def finish(self, timeout: float = 180) -> subprocess.CompletedProcess:
        err = self.proc.stderr.read() if self.proc.stderr else ""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return record(subprocess.CompletedProcess(self.proc.args, self.proc.returncode, "".join(self.out), err))


def wait_until(what: str, check: Any, timeout: float, interval: float = 0.1) -> None:
    """Polls ``check`` until it is true; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s")
