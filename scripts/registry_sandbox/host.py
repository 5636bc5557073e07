"""The Host object: one sandbox host as tests and the command line see it.

It gives the paths and names the tool needs (ssh_config, fabric config, env file,
containers), ways to reach the host's parts directly (its engine, moto, the login
user), faults, and ``reset()``, which puts the host back to a healthy baseline
directly (never by running quilt-ops: a test of the tool must not depend on the
tool to clean up after it).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import aws as aws_mod
from . import engine as engine_mod
from . import home as home_mod
from . import pg
from . import sshd as sshd_mod
from .shapes import HostShape
from .state import AwsState, EngineState, HostState, Layout
from .util import (
    SandboxError,
    clean_env,
    ensure_dir,
    http_ok,
    kill_user_processes,
    log,
    processes,
    signal_pids,
    wait_for,
    write_file,
)

if TYPE_CHECKING:
    from .sandbox import Sandbox

#: Faults the stand-ins read from the host's faults folder (mounted read-only at /faults).
HOST_FAULTS = (
    "registry-unhealthy",
    "registry-healthy-only-with-key",
    # Not read by the stand-ins: the database server the env file names is stopped (and started
    # again when the fault is cleared); they meet it by failing to connect.
    "db-down",
    "start-fails",
    "start-fails-unless-key",
    "start-hangs",
    "migration-seconds",
    "create-admin-version",
    # Read by the sandbox's sshd itself (files/sshd/slow_writes.c): milliseconds per network write.
    "sshd-slow-writes",
)

#: The env file's secret-bearing variables (what a leak test looks for).
SECRET_NAMES = (
    "SQLALCHEMY_DATABASE_URI",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "QUILT_SECRET_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECRET_KEY",
)

#: What quilt-ops may leave next to the env file, and reset() removes.
LEFTOVER_PREFIXES = (".registry.", ".quilt-ops-tmp-")

RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
START_TIMEOUT = 120.0
PROBE_TIMEOUT = 60.0


class Host:
    """One host of the sandbox (from its state file; ``refresh()`` reloads it)."""

    def __init__(self, sandbox: Sandbox, state: HostState) -> None:
        self.sandbox = sandbox
        self.state = state
        self._iam: Any = None
        self._iam_for: tuple[str, str] | None = None
        self._verified_keys: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"<Host {self.name} ({self.login_user}@127.0.0.1:{self.ssh_port})>"

    def refresh(self) -> Host:
        state = self.sandbox.load(self.name)
        if state is None:
            raise SandboxError(f"host {self.name} is gone")
        self.state = state
        return self

    # -- facts -----------------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        return Layout(self.sandbox.root, self.state.shape)

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def shape(self) -> HostShape:
        return self.state.shape

    @property
    def alias(self) -> str:
        return self.shape.alias

    @property
    def aliases(self) -> list[str]:
        """Every ssh alias of the host: its own, then ``<alias>1..N``."""
        return self.shape.alias_names()

    @property
    def dir(self) -> Path:
        return self.layout.dir

    @property
    def login_user(self) -> str:
        return self.shape.login_user

    @property
    def home(self) -> Path:
        return self.layout.home

    @property
    def registry_dir(self) -> Path:
        return self.layout.registry_dir

    @property
    def env_dir(self) -> Path:
        return self.layout.env_dir

    @property
    def env_file(self) -> Path:
        return self.layout.env_file

    @property
    def containers(self) -> dict[str, str]:
        """role (registry, catalog, nginx) -> container name."""
        return dict(self.shape.containers)

    @property
    def ports(self) -> dict[str, int]:
        """role (registry, catalog, uwsgi) -> port in use."""
        return dict(self.state.ports)

    @property
    def ssh_port(self) -> int:
        return self.state.sshd[0].port

    @property
    def ssh_ports(self) -> list[int]:
        return [s.port for s in self.state.sshd]

    @property
    def ssh_config(self) -> Path:
        return self.layout.ssh_config

    @property
    def known_hosts(self) -> Path:
        return self.layout.known_hosts

    @property
    def fabric_config(self) -> Path:
        return self.layout.fabric_config

    @property
    def audit_log(self) -> Path:
        return self.layout.audit_log

    @property
    def faults_dir(self) -> Path:
        return self.layout.faults

    @property
    def users_file(self) -> UsersTable:
        """The registry's users (the users table), read like the file it once was (``read_text``)."""
        return UsersTable(self)

    @property
    def engine(self) -> EngineState:
        if self.state.engine is None:
            raise SandboxError(f"host {self.name} has no engine: run up")
        return self.state.engine

    @property
    def docker_host(self) -> str:
        """The host's engine (``unix://...``): the one fact every docker client of the host uses."""
        return self.engine.docker_host

    @property
    def aws(self) -> AwsState:
        if self.state.aws is None:
            raise SandboxError(f"host {self.name} has no AWS: run up")
        return self.state.aws

    @property
    def stack(self) -> str:
        return self.aws.stack

    @property
    def iam_user(self) -> str:
        return self.aws.iam_user

    @property
    def bucket(self) -> str:
        return self.aws.bucket

    @property
    def aws_endpoint(self) -> str:
        """The endpoint the tool uses: the delay proxy."""
        return self.aws.endpoint

    @property
    def probes(self) -> dict[str, str]:
        return {
            "registry": f"http://localhost:{self.ports['registry']}/healthcheck",
            "catalog": f"http://localhost:{self.ports['catalog']}/",
        }

    # -- AWS -------------------------------------------------------------------------------

    def aws_env(self) -> dict[str, str]:
        """The operator's AWS environment for the tool (through the proxy)."""
        return {
            "AWS_ENDPOINT_URL": self.aws.endpoint,
            "AWS_ACCESS_KEY_ID": self.aws.operator_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws.operator_secret,
            "AWS_DEFAULT_REGION": self.aws.region,
        }

    def aws_kwargs(self) -> dict[str, str]:
        """boto3 client arguments: the operator on moto directly (proxy faults do not apply)."""
        return aws_mod.client_kwargs(self.aws)

    def iam_client(self) -> Any:
        """An IAM client as the operator, on moto directly (cached)."""
        marker = (self.aws.moto_endpoint, self.aws.operator_key_id)
        if self._iam is None or self._iam_for != marker:
            self._iam = aws_mod.client(self.aws, "iam")
            self._iam_for = marker
        return self._iam

    def keys(self) -> dict[str, str]:
        """RegistryUser's access keys: id -> status (Active/Inactive), from moto directly."""
        listed = self.iam_client().list_access_keys(UserName=self.iam_user)["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] for k in listed}

    def key_accepted(self, key_id: str, secret: str) -> bool:
        """Whether moto (IAM auth on) accepts the key: STS GetCallerIdentity signed with it."""
        import botocore.exceptions

        if (key_id, secret) in self._verified_keys:
            return True
        try:
            aws_mod.client(self.aws, "sts", key_id=key_id, secret=secret).get_caller_identity()
        except botocore.exceptions.ClientError:
            return False
        self._verified_keys.add((key_id, secret))
        return True

    def ensure_key(self, current: tuple[str, str] | None) -> tuple[str, str]:
        """A key of RegistryUser that IAM has Active and accepts, and no other key.

        Keeps ``current`` (id, secret) when it is good; otherwise deletes every key and
        creates one with the operator's credentials. Returns the key to write.
        """
        iam = self.iam_client()
        listed = self.keys()
        if current and current[0] and listed.get(current[0]) == "Active" and self.key_accepted(*current):
            keep = current
        else:
            keep = None
        for key_id in listed:
            if not keep or key_id != keep[0]:
                iam.delete_access_key(UserName=self.iam_user, AccessKeyId=key_id)
        if keep:
            return keep
        created = iam.create_access_key(UserName=self.iam_user)["AccessKey"]
        log.info(f"host {self.name}: new RegistryUser key {created['AccessKeyId']}")
        return created["AccessKeyId"], created["SecretAccessKey"]

    def aws_fault(self, **settings: Any) -> dict[str, Any]:
        """Proxy faults (``new_key_delay=20``, ``flaky=True``, ``error_500_for=5``, ...); returns them all."""
        return aws_mod.set_faults(self.layout.aws_faults, settings)

    def clear_aws_faults(self) -> None:
        aws_mod.clear_faults(self.layout.aws_faults)

    @property
    def db_instance(self) -> str:
        return self.aws.db_instance

    def aws_state(self, **changes: Any) -> None:
        """Puts the AWS side in a state for a test (``aws.set_state``: key_age_days, stack_status,
        versioning, retention_days, ...); ``reset`` puts the baseline back."""
        aws_mod.set_state(self.aws, self.layout, key_id=self.host_key_id(), **changes)

    def aws_changed(self) -> None:
        """Says a test changes the AWS side itself (snapshots, policies): ``reset`` restores the baseline."""
        aws_mod.mark_changed(self.layout)

    # -- the engine and the login user ----------------------------------------------------------

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """The docker CLI against the host's own engine (SandboxError on failure when ``check``)."""
        return engine_mod.docker(self.engine, *args, check=check, timeout=timeout)

    def login_env(self) -> dict[str, str]:
        """The environment of a login session of the host (as sshd gives it, DOCKER_HOST included)."""
        return {
            "HOME": str(self.home),
            "USER": self.login_user,
            "LOGNAME": self.login_user,
            "SHELL": "/bin/bash",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "DOCKER_HOST": self.docker_host,
        }

    def run_as_login_user(
        self,
        argv: list[str],
        cwd: Path | str | None = None,
        input: str | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Runs ``argv`` as the login user (runuser), from the registry folder unless told otherwise.

        It runs in a process group of its own: on timeout the whole group is stopped
        (docker clients forward the SIGTERM to their containers) and SandboxError raised.
        """
        full_env = {**self.login_env(), **(env or {})}
        return run_group(
            [RUNUSER, "-u", self.login_user, "--", *argv],
            cwd=cwd or self.registry_dir,
            env=full_env,
            input=input,
            timeout=timeout,
        )

    def ssh(
        self, command: str, alias: str | None = None, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Runs a command on the host over SSH, with the host's ssh_config (as the tool connects)."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", alias or self.alias, command],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(),
        )

    def login_processes(self) -> list[int]:
        """Pids of the processes running as the login user."""
        uid = pwd.getpwnam(self.login_user).pw_uid
        return sorted(pid for pid, _, puid in processes() if puid == uid)

    # -- the database -------------------------------------------------------------------------

    def db_instances(self) -> list[pg.Instance]:
        """The PostgreSQL servers of the host's RDS instances (the stack's and restored ones)."""
        return pg.instances(self.layout.rds)

    def stack_database(self) -> pg.Instance:
        """The server of the stack's DB instance."""
        instance = pg.Instance.load(self.layout.rds / self.db_instance)
        if instance is None:
            raise SandboxError(f"host {self.name}: no database server for {self.db_instance}: run up")
        return instance

    def env_database(self) -> pg.Instance:
        """The server env/registry's SQLALCHEMY_DATABASE_URI names (else the stack's)."""
        address, port = database_endpoint(self.env_text())
        return pg.find(self.layout.rds, address, port) or self.stack_database()

    def sql(self, text: str, instance: pg.Instance | None = None) -> str:
        """Runs SQL as the superuser on the registry's database (env/registry's server unless told)."""
        instance = instance or self.env_database()
        try:
            return pg.sql(instance, text, db=instance.db_name)
        except pg.PgError as e:
            raise SandboxError(f"host {self.name}: {e}") from None

    def users(self, instance: pg.Instance | None = None) -> list[list[str]]:
        """The registry's users as [name, email], oldest first ([] before the migration made the table)."""
        instance = instance or self.env_database()
        query = "SELECT name || ' ' || email FROM users ORDER BY id" if self.users_table(instance) else ""
        return [line.split(" ", 1) for line in self.sql(query, instance).splitlines() if line] if query else []

    def users_table(self, instance: pg.Instance | None = None) -> bool:
        instance = instance or self.env_database()
        return self.sql("SELECT to_regclass('public.users') IS NOT NULL", instance).strip() == "t"

    def database_running(self, instance: pg.Instance | None = None) -> bool:
        return pg.running(Path((instance or self.env_database()).folder))

    def stop_database(self, instance: pg.Instance | None = None) -> None:
        """Stops a database server (env/registry's by default): the ``db-down`` fault."""
        pg.stop(Path((instance or self.env_database()).folder))

    def start_database(self, instance: pg.Instance | None = None) -> None:
        try:
            pg.start(Path((instance or self.env_database()).folder))
        except pg.PgError as e:
            raise SandboxError(f"host {self.name}: {e}") from None

    # -- faults ----------------------------------------------------------------------------

    def set_fault(self, name: str, value: str = "") -> None:
        if name not in HOST_FAULTS:
            raise SandboxError(f"unknown fault {name!r}; one of: {', '.join(HOST_FAULTS)}")
        path = self.faults_dir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(str(value))
        tmp.chmod(0o644)
        tmp.replace(path)
        if name == "db-down":
            self.stop_database()

    def clear_fault(self, name: str) -> None:
        if name not in HOST_FAULTS:
            raise SandboxError(f"unknown fault {name!r}; one of: {', '.join(HOST_FAULTS)}")
        path = self.faults_dir / name
        if name == "db-down" and path.exists():
            self.start_database()
        path.unlink(missing_ok=True)

    def clear_faults(self) -> None:
        for path in self.faults_dir.iterdir():
            if path.name in HOST_FAULTS:
                self.clear_fault(path.name)
            path.unlink(missing_ok=True)

    def faults(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in self.faults_dir.iterdir() if not p.name.startswith(".")}

    @contextmanager
    def fault(self, name: str, value: str = "") -> Iterator[Host]:
        self.set_fault(name, value)
        try:
            yield self
        finally:
            self.clear_fault(name)

    # -- shape -----------------------------------------------------------------------------

    @contextmanager
    def reshaped(self, **changes: Any) -> Iterator[Host]:
        """Applies in-place shape changes (docker_access, sudo, env_owner, env_mode, ...), restores the shape after."""
        before = self.shape
        after = before.with_changes(**changes)
        if not before.same_build(after):
            raise SandboxError(f"reshaped() changes only what changes in place, not {sorted(changes)}")
        self.sandbox.up(after)
        self.refresh()
        try:
            yield self
        finally:
            self.sandbox.up(before)
            self.refresh()

    # -- state of the host -------------------------------------------------------------------

    def env_text(self) -> str:
        return self.env_file.read_text() if self.env_file.exists() else ""

    def host_key_id(self) -> str:
        """The access key id env/registry gives (its last AWS_ACCESS_KEY_ID line)."""
        return home_mod.env_key(self.env_text())[0]

    def env_values(self) -> list[str]:
        """The secret values in env/registry (what a leak test looks for), and the DB password alone."""
        found = []
        for line in self.env_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() in SECRET_NAMES and value.strip():
                found.append(value.strip())
                if name.strip() == "SQLALCHEMY_DATABASE_URI" and "@" in value:
                    found.append(value.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1])
        return found

    def leftovers(self, ignore: tuple[str, ...] = (".registry.quilt-ops.lock",)) -> list[str]:
        """Files next to the env file other than registry and catalog (quilt-ops' lock file ignored by default)."""
        if not self.env_dir.exists():
            return []
        return sorted(p.name for p in self.env_dir.iterdir() if p.name not in ("registry", "catalog", *ignore))

    def container_states(self) -> dict[str, str]:
        """Every container of the host's engine: name -> state (running, exited, created, ...)."""
        return {c["Names"][0].lstrip("/"): c["State"] for c in engine_mod.containers(self.engine)}

    def containers_running(self) -> bool:
        """The three containers, and only they, exist and run."""
        if not engine_mod.engine_alive(self.state.engine):
            return False
        states = self.container_states()
        return set(states) == set(self.containers.values()) and all(s == "running" for s in states.values())

    def probes_ok(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.ports['registry']}/healthcheck", "ok") and http_ok(
            f"http://127.0.0.1:{self.ports['catalog']}/"
        )

    def healthy(self) -> bool:
        """Containers running and both probes answering (checked directly, not with the tool)."""
        return self.containers_running() and self.probes_ok()

    def registry_env(self) -> list[str]:
        """The registry container's configured environment (docker inspect's Config.Env)."""
        info = engine_mod.inspect(self.engine, self.containers["registry"])
        return list((info or {}).get("Config", {}).get("Env") or [])

    def registry_process_env(self) -> dict[str, str]:
        """The environment in effect in the registry's serving process (read from /proc)."""
        info = engine_mod.inspect(self.engine, self.containers["registry"])
        pid = ((info or {}).get("State") or {}).get("Pid") or 0
        if not pid:
            return {}
        # The entry script execs the server: the container's first process is the one serving.
        # (The runtime keeps only the last of two equal names, whereas Config.Env lists both.)
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return {}
        env: dict[str, str] = {}
        for item in raw.split(b"\0"):
            if b"=" in item:
                key, _, value = item.decode(errors="replace").partition("=")
                env.setdefault(key, value)
        return env

    def registry_runs_with(self, key_id: str) -> bool:
        """Whether the running registry's process has ``key_id`` as AWS_ACCESS_KEY_ID."""
        return self.registry_process_env().get("AWS_ACCESS_KEY_ID") == key_id

    def accepted_logins(self) -> int:
        return sshd_mod.accepted_logins(self.layout)

    def twin(self, key_id: str, secret: str) -> Any:
        """A second host with the same settings in front of this one's containers (see `twin.twin`)."""
        from .twin import twin

        return twin(self, key_id, secret)

    @property
    def sudo_password(self) -> str:
        """The login user's password, which its sudo asks for on a ``sudo_password`` host ("" else)."""
        path = home_mod.sudo_password_file(self.layout.dir)
        return path.read_text() if self.shape.sudo_password and path.exists() else ""

    def sudo_log(self) -> str:
        """sudo's log on a ``sudo_password`` host: the commands it ran, the wrong passwords ("" if none)."""
        path = home_mod.sudo_log_file(self.layout.dir)
        return path.read_text(errors="replace") if path.exists() else ""

    def env_secret(self) -> str:
        """The last AWS_SECRET_ACCESS_KEY value of env/registry."""
        return home_mod.env_key(self.env_text())[1]

    def sshd_commands(self) -> int:
        """Remote commands (exec channels) the host's sshd's have started so far."""
        return sshd_mod.session_commands(self.layout)

    def healthcheck_log(self) -> int:
        """A mark in the registry's /healthcheck log (see `healthcheck_times`)."""
        path = self.layout.db / "healthchecks"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def healthcheck_times(self, since: int = 0) -> list[float]:
        """When the registry answered /healthcheck (machine uptime, seconds), after the mark ``since``."""
        path = self.layout.db / "healthchecks"
        lines = path.read_text().splitlines() if path.exists() else []
        return [float(line) for line in lines[since:] if line.strip()]

    def ssh_sessions(self) -> list[int]:
        """The sshd processes serving this host's current connections."""
        return sshd_mod.session_pids(self.state)

    def cut_ssh_connections(self) -> int:
        """Kills the sshd processes serving every current connection (the connections drop)."""
        pids = self.ssh_sessions()
        signal_pids(pids, signal.SIGKILL)
        return len(pids)

    def stop_sshd(self, cut: bool = True) -> None:
        """Stops every sshd of the host (and, with ``cut``, drops the current connections)."""
        sshd_mod.stop_sshds(self.state)
        if cut:
            self.cut_ssh_connections()

    def stop_engine(self, kill: bool = False) -> None:
        """Stops the host's dockerd (SIGTERM; with ``kill``, SIGKILL: a crash that leaves containerd behind)."""
        engine_mod.stop_engine(self.layout, self.state.engine, kill=kill)

    def parts_alive(self) -> bool:
        """dockerd, moto and the proxy, every sshd: alive and answering; the stack's database made."""
        return (
            engine_mod.engine_alive(self.state.engine)
            and aws_mod.aws_alive(self.state.aws)
            and pg.Instance.load(self.layout.rds / self.aws.db_instance) is not None
            and len(self.state.sshd) == 1 + self.shape.aliases
            and all(sshd_mod.sshd_alive(s) for s in self.state.sshd)
        )

    # -- reset -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to a healthy baseline, directly (never by running quilt-ops); quick when nothing is wrong.

        Restarts dead parts (through ``up``), clears host and AWS faults, kills what the
        login user left running, restores the shape's files, owners and modes, removes
        quilt-ops' leftovers, makes env/registry hold a key IAM has Active (deleting
        RegistryUser's other keys), and recreates the containers unless all three run
        with env/registry's environment and answer their probes.
        """
        with self.sandbox.host_lock(self.name):
            self.refresh()
            if not self.parts_alive():
                self.sandbox.up(self.shape)
                self.refresh()
            layout, state = self.layout, self.state
            home_mod.prepare_host_folders(layout)
            self.clear_faults()
            self.clear_aws_faults()
            self.kill_leftover_processes()
            user = pwd.getpwnam(self.login_user)
            ensure_dir(layout.home, 0o700, user.pw_uid, user.pw_gid)
            home_mod.apply_access(self.shape, user, layout.dir)
            home_mod.write_settings(layout, self.shape)
            home_mod.prepare_registry_dir(layout, user)
            home_mod.write_scripts(layout, state, user)
            sshd_mod.authorize(layout, user)
            sshd_mod.write_client_files(layout, state)
            write_file(layout.fabric_config, fabric_config_text(layout, state), 0o644)
            home_mod.apply_env_ownership(layout, self.shape, user)
            for path in self.env_dir.iterdir():
                if path.name.startswith(LEFTOVER_PREFIXES):
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
            aws_mod.restore_baseline(self.aws, layout)
            self._database_baseline()
            key = self.ensure_key(home_mod.env_key(self.env_text()))
            home_mod.write_env_files(layout, state, user, *key)
            if not self._runs_as_written():
                start_containers(self)

    def _database_baseline(self) -> None:
        """The stack's database server running with the baseline master password; no other instance."""
        others = [i for i in self.db_instances() if Path(i.folder).name != self.db_instance]
        if others:
            aws_mod.delete_other_instances(self.aws)
        stack = self.stack_database()
        if not pg.running(Path(stack.folder)):
            self.start_database(stack)
        try:
            pg.set_password(stack, self.state.secrets["DB_PASSWORD"])
        except pg.PgError as e:
            raise SandboxError(f"host {self.name}: {e}") from None
        # RDS's record of it too: a test that changed it through ModifyDBInstance left moto
        # holding that one, and the next snapshot's restore came up with it (a later run's
        # restores on the same host refused the env file's password).
        aws_mod.sandbox_api(
            self.aws,
            "db-instance",
            db_instance_identifier=self.db_instance,
            master_password=self.state.secrets["DB_PASSWORD"],
        )

    def kill_leftover_processes(self) -> list[int]:
        """Kills the login user's processes and what they started (sudo, docker clients), sparing
        the sshd processes that hold open connections. Returns the pids killed."""
        uid = pwd.getpwnam(self.login_user).pw_uid
        spare = set(self.ssh_sessions())
        return kill_user_processes(uid, spare=spare)

    def _runs_as_written(self) -> bool:
        """All three containers (and no other) run, the registry with exactly env/registry's
        environment, and both probes answer."""
        if not self.containers_running():
            return False
        expected = sorted(home_mod.env_assignments(self.env_text()))
        actual = sorted(e for e in self.registry_env() if not e.startswith("PATH="))
        return expected == actual and self.probes_ok()

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What the command line's ``status`` shows (and ``--json`` prints)."""
        engine_ok = engine_mod.engine_alive(self.state.engine)
        aws = self.state.aws
        return {
            "name": self.name,
            "alias": self.alias,
            "aliases": self.aliases,
            "dir": str(self.dir),
            "shape": self.shape.to_dict(),
            "docker": {"ok": engine_ok, "host": self.docker_host, "pid": self.engine.pid},
            "sshd": [{"ok": sshd_mod.sshd_alive(s), "port": s.port, "pid": s.pid} for s in self.state.sshd],
            "aws": {
                "ok": aws_mod.aws_alive(aws),
                "endpoint": aws.endpoint if aws else None,
                "moto_endpoint": aws.moto_endpoint if aws else None,
                "stack": aws.stack if aws else None,
                "iam_user": aws.iam_user if aws else None,
                "bucket": aws.bucket if aws else None,
            },
            "database": {
                "ok": bool(aws and pg.Instance.load(self.layout.rds / aws.db_instance))
                and self.database_running(self.stack_database()),
                "endpoint": f"{aws.db_address}:{aws.db_port}" if aws else None,
                "instance": aws.db_instance if aws else None,
            },
            "containers": engine_ok and self.containers_running(),
            "registry": http_ok(f"http://127.0.0.1:{self.ports['registry']}/healthcheck", "ok"),
            "catalog": http_ok(f"http://127.0.0.1:{self.ports['catalog']}/"),
            "ports": self.ports,
            "login_user": self.login_user,
            "home": str(self.home),
            "registry_dir": str(self.registry_dir),
            "env_file": str(self.env_file),
            "container_names": self.containers,
            "ssh_config": str(self.ssh_config),
            "fabric_config": str(self.fabric_config),
            "known_hosts": str(self.known_hosts),
            "faults": sorted(self.faults()),
        }


class UsersTable:
    """The users table read like the file the stand-in once kept: ``name email`` lines."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def exists(self) -> bool:
        return self.host.users_table()

    def read_text(self) -> str:
        return "".join(f"{name} {email}\n" for name, email in self.host.users())


def database_endpoint(env_text: str) -> tuple[str, int]:
    """(host, port) of the last SQLALCHEMY_DATABASE_URI of an env file's text (("", 0) when none)."""
    uri = ""
    for line in env_text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "SQLALCHEMY_DATABASE_URI":
            uri = value.strip()
    netloc = uri.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, sep, port = netloc.rpartition(":")
    if not sep:
        return netloc, 5432
    return host, int(port) if port.isdigit() else 0


# ----------------------------------------------------------------------------- shared with sandbox.py


def run_group(
    argv: list[str], cwd: Path | str, env: dict[str, str], input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Runs a command in a new process group; on timeout, SIGTERM then SIGKILL to the whole group."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        text=True,
        start_new_session=True,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        raise SandboxError(f"{' '.join(argv[-2:])} did not finish within {timeout:.0f}s (stopped)") from expired
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def fabric_config_text(layout: Layout, state: HostState) -> str:
    """The tool's settings for this host (YAML; every value JSON-quoted)."""
    q = json.dumps
    shape, ports = state.shape, state.ports
    registry_probe = f"http://localhost:{ports['registry']}/healthcheck"
    catalog_probe = f"http://localhost:{ports['catalog']}/"
    lines = [
        f"# quilt-ops settings for sandbox host {state.name}: "
        f"fab -S {layout.ssh_config} -f {layout.fabric_config} -H {shape.alias} health",
        "quilt:",
    ]
    if shape.registry_dir:
        lines.append(f"  registry_dir: {q(shape.registry_dir)}")
    lines.append("  containers:")
    lines += [f"    {role}: {q(shape.containers[role])}" for role in ("registry", "catalog", "nginx")]
    lines += [
        "  probes:",
        f"    registry: {q(registry_probe)}",
        f"    catalog: {q(catalog_probe)}",
        f"  known_hosts: {q(str(layout.known_hosts))}",
        f"  audit_log: {q(str(layout.audit_log))}",
    ]
    return "\n".join(lines) + "\n"


def login_user_can_start(shape: HostShape) -> bool:
    """Whether the shape lets its login user run start.sh at all (docker reachable, env file readable)."""
    if shape.docker_access == "none":
        return False
    env_unreadable = shape.env_owner == "root" and not shape.env_mode & 0o004
    # With sudo, docker (as root) reads the env file; in "group" mode the login user must.
    return not (shape.docker_access == "group" and env_unreadable)


def start_containers(host: Host) -> None:
    """Removes every container of the host's engine and runs start.sh, then waits for the probes.

    start.sh runs as the login user, as the operator would run it; only on a shape
    where the login user cannot (no docker access, env file unreadable) does it run as
    root, so that the host still comes up.
    """
    engine_mod.remove_all_containers(host.engine)
    argv = ["./start.sh"]
    if login_user_can_start(host.shape):
        result = host.run_as_login_user(argv, timeout=START_TIMEOUT)
    else:
        result = run_group(
            argv, cwd=host.registry_dir, env=clean_env(DOCKER_HOST=host.docker_host), timeout=START_TIMEOUT
        )
    if result.returncode != 0:
        lines = [line for line in (result.stderr or "").strip().splitlines() if line.strip() and "--help" not in line]
        raise SandboxError(f"host {host.name}: start.sh failed ({result.returncode}): {' / '.join(lines[-3:])}")
    if host.faults():
        # A fault may keep the probes from answering: the containers running is all there is to wait for.
        wait_for(f"host {host.name}'s containers", host.containers_running, 30)
        return
    wait_for(f"host {host.name}'s registry and catalog", host.healthy, PROBE_TIMEOUT, interval=0.2)
