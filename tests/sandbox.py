"""Test helpers around the sandbox host (scripts/sandbox): run the real commands against it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = ROOT / "scripts" / "sandbox"


class Sandbox:
    """A running sandbox host, as `scripts/sandbox status --json` describes it."""

    def __init__(self, info: dict) -> None:
        self.info = info
        self.dir = Path(info["dir"])
        self.home = Path(info["home"])
        self.env_file = self.home / "env" / "registry"
        self.ssh_config = Path(info["ssh_config"])
        self.fabric_config = Path(info["fabric_config"])
        self.known_hosts = Path(info["known_hosts"])
        self.ssh_port = info["sshd"]["port"]
        self.ports = info["ports"]

    # -- running the tool ---------------------------------------------------------------

    def tool_env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_QUILT_")}
        env.update(self.aws_env())
        env.pop("QUILT_OPS_DEBUG", None)
        env.update(extra or {})
        return env

    def run(self, *args: str, tool: str = "fab", config: Path | None = None, ssh_config: Path | None = None,
            host: str = "sandbox", env: dict | None = None, cwd: Path | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """Runs `fab` (or `quilt-ops`) against the sandbox, as an operator would."""
        exe = shutil.which(tool) or str(Path(sys.executable).parent / tool)
        cmd = [exe, "-S", str(ssh_config or self.ssh_config), "-f", str(config or self.fabric_config)]
        if host:
            cmd += ["-H", host]
        cmd += list(args)
        return subprocess.run(cmd, cwd=cwd or ROOT, env=self.tool_env(env), input=input, capture_output=True,
                              text=True, timeout=timeout)

    def aws_env(self) -> dict:
        out = subprocess.run([sys.executable, str(SANDBOX), "env"], capture_output=True, text=True, check=True)
        env = {}
        for line in out.stdout.splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export "):].partition("=")
                env[key] = value
        return env

    def write_config(self, path: Path, **quilt) -> Path:
        """A fabric.yaml for the sandbox with some quilt settings changed."""
        settings = {"probes": {"registry": f"http://localhost:{self.ports['registry']}/healthcheck",
                               "catalog": f"http://localhost:{self.ports['catalog']}/"},
                    "known_hosts": str(self.known_hosts)}
        settings.update(quilt)
        path.write_text(json.dumps({"quilt": settings}))  # JSON is YAML
        return path

    # -- the host's parts -----------------------------------------------------------------

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        if self.info["docker"].get("host"):
            env["DOCKER_HOST"] = self.info["docker"]["host"]
        return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=check, timeout=120)

    def container_ids(self) -> dict[str, str]:
        out = self.docker("ps", "-a", "--format", "{{.Names}} {{.ID}} {{.State}}").stdout
        return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}

    def running(self) -> set[str]:
        out = self.docker("ps", "--format", "{{.Names}}").stdout
        return set(out.split())

    @contextmanager
    def fault(self, name: str, value: str = ""):
        path = self.dir / "faults" / name
        path.write_text(value)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    #: The env file's secret-bearing variables.
    SECRET_NAMES = ("SQLALCHEMY_DATABASE_URI", "SMTP_USERNAME", "SMTP_PASSWORD", "QUILT_SECRET_KEY",
                    "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY")

    def env_values(self) -> list[str]:
        """The secret values in env/registry (what a leak test looks for), and the DB password alone."""
        values = []
        for line in self.env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() in self.SECRET_NAMES and value.strip():
                values.append(value.strip())
                if name.strip() == "SQLALCHEMY_DATABASE_URI" and "@" in value:
                    values.append(value.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1])
        return values

    def accepted_logins(self) -> int:
        """SSH logins accepted so far by every sshd of the sandbox."""
        return sum(log.read_text(errors="replace").count("Accepted publickey")
                   for log in (self.dir / "ssh").glob("sshd*.log"))

    def host_key_id(self) -> str:
        for line in self.env_file.read_text().splitlines():
            if line.startswith("AWS_ACCESS_KEY_ID="):
                key = line.split("=", 1)[1].strip()
        return key

    def registry_runs_with(self, key_id: str) -> bool:
        env = self.docker("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", "registry").stdout
        return f"AWS_ACCESS_KEY_ID={key_id}" in env.splitlines()

    def leftovers(self) -> list[str]:
        """Files quilt-ops left next to the env file (its lock file may stay)."""
        return sorted(p.name for p in self.env_file.parent.iterdir()
                      if p.name not in ("registry", "catalog", ".registry.quilt-ops.lock"))

    def healthy(self) -> bool:
        return self.run("health").returncode == 0

    def restore(self) -> None:
        """Back to a healthy host after a test that broke it."""
        for fault in (self.dir / "faults").iterdir():
            fault.unlink()
        (self.dir / "aws" / "faults.json").write_text("{}")
        self.env_file.parent.chmod(0o700)
        if self.env_file.exists():
            self.env_file.chmod(0o600)
        if self.running() >= {"registry", "catalog", "registry-nginx"} and self.healthy():
            return
        result = self.run("restart", "--timeout", "60")
        assert result.returncode == 0, result.stderr


def bring_up() -> tuple[Sandbox | None, str]:
    """Brings the sandbox up (idempotent); returns it, or None and the reason."""
    started = time.monotonic()
    up = subprocess.run([sys.executable, str(SANDBOX), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        reason = (up.stderr or up.stdout).strip().splitlines()[-1:] or ["scripts/sandbox up failed"]
        return None, reason[0]
    status = subprocess.run([sys.executable, str(SANDBOX), "status", "--json"], capture_output=True, text=True)
    info = json.loads(status.stdout)
    info["up_seconds"] = time.monotonic() - started
    return Sandbox(info), ""


class Aws:
    """The sandbox's AWS (moto behind the propagation-delay proxy), as the operator sees it."""

    def __init__(self, box: Sandbox) -> None:
        import boto3

        self.box = box
        env = box.aws_env()
        self.env = env
        self.kw = {"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": env["AWS_DEFAULT_REGION"],
                   "aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
        self.iam = boto3.client("iam", **self.kw)
        self.user = box.info["aws"]["iam_user"]
        self.faults_file = box.dir / "aws" / "faults.json"

    def keys(self) -> dict[str, str]:
        """RegistryUser's keys: id -> status."""
        listed = self.iam.list_access_keys(UserName=self.user)["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] for k in listed}

    def fault(self, **settings) -> None:
        self.faults_file.write_text(json.dumps(settings))

    def clear(self) -> None:
        self.faults_file.write_text("{}")

    def operator(self, name: str, policy: dict) -> dict:
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


class ProcessWatcher:
    """Samples every process's command line and environment on the (local) host during a run.

    The containers' own processes are left out: the registry holds its
    environment by design (that is what the env file is for).
    """

    def __init__(self):
        self.seen = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if "/docker/" in (proc / "cgroup").read_text():
                        continue
                except OSError:
                    continue
                for name in ("cmdline", "environ"):
                    try:
                        self.seen.add((proc / name).read_bytes())
                    except OSError:
                        pass
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)


# ----------------------------------------------------------------------------- end-state checks


def key_lines_removed(content: bytes) -> bytes:
    """The env file with the key lines' values blanked: what must never change."""
    import re

    return re.sub(rb"(?m)^(\s*)(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SECRET_KEY)=[^\r\n]*", rb"\1\2=", content)


def losses(host: Sandbox, aws: "Aws", baseline: bytes | None = None) -> dict[str, list[str]]:
    """What a run lost: env-file bytes, IAM keys (stray or unaccepted), health. Empty lists = nothing."""
    import re

    import boto3
    import botocore.exceptions

    lost: dict[str, list[str]] = {"files": [], "keys": [], "health": []}
    content = host.env_file.read_bytes() if host.env_file.exists() else b""
    key_id = re.search(rb"(?m)^AWS_ACCESS_KEY_ID=(\S+)", content)
    secret = re.search(rb"(?m)^AWS_SECRET_ACCESS_KEY=(\S+)", content)
    if not key_id or not secret:
        lost["files"].append("env/registry has no complete key lines")
    if baseline is not None and key_lines_removed(content) != key_lines_removed(baseline):
        lost["files"].append("env/registry changed outside its key lines")
    if host.env_file.exists() and host.env_file.stat().st_mode & 0o077:
        lost["files"].append("env/registry is readable by others")
    if host.leftovers():
        lost["files"].append(f"left over: {', '.join(host.leftovers())}")
    keys = aws.keys()
    if key_id:
        host_key = key_id.group(1).decode()
        if keys.get(host_key) != "Active":
            lost["keys"].append(f"the host's key {host_key} is not Active in IAM")
        strays = [k for k in keys if k != host_key]
        if strays:
            lost["keys"].append(f"stray keys: {', '.join(strays)}")
        if secret:
            kw = dict(aws.kw, aws_access_key_id=host_key, aws_secret_access_key=secret.group(1).decode())
            try:
                boto3.client("sts", **kw).get_caller_identity()
            except botocore.exceptions.ClientError:
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


def ssh_sessions() -> list[int]:
    """The sandbox sshd's per-connection processes (sshd: ec2-user...)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"sshd: ec2-user"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def cut_ssh_connections() -> int:
    """Kills the sshd processes serving every current connection (the connection drops)."""
    import signal as _signal

    pids = ssh_sessions()
    for pid in pids:
        try:
            os.kill(pid, _signal.SIGKILL)
        except OSError:
            pass
    return len(pids)
