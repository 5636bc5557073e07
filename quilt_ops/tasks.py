"""The tasks: parse options, call the library, render, map to an exit status.

Every task ends in one of the statuses of `quilt_ops.status.ExitStatus`. A
failure the operator can act on is one ``Error: ...`` line on stderr (one per
host); anything else is a bug, reported by type only (its text could hold data
we must not print) unless ``QUILT_OPS_DEBUG=1`` asks for the traceback.

A changing task goes one way: settings -> hosts -> for each host (in parallel)
an audit run around the lock and the work -> one line per host -> the most
urgent status (`finish`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from invoke import Collection
from invoke.exceptions import Exit

from . import audit, hosts, options, output, shell, streams
from . import health as health_checks
from . import restart as restarting
from .checks import unreachable
from .config import DEFAULTS, Settings
from .errors import ConfigError, ConnectionLost, NotStarted, QuiltError
from .lock import HostLock
from .reporting import Reporter
from .status import ExitStatus, label

T = TypeVar("T")


def reports_errors(
    usage_status: ExitStatus = ExitStatus.USAGE, only_status: ExitStatus | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turns exceptions into one ``Error:`` line and an exit status.

    ``usage_status`` is what a bad option or config value exits with;
    ``only_status``, when given, is what every failure exits with (``health``
    uses UNKNOWN for both, as Nagios plugins do: it could not look).
    """

    def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(body)
        def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return body(c, *args, **kwargs)
            except Exit:
                raise
            except ConfigError as e:
                raise Exit(f"Error: {e}", code=int(only_status or usage_status)) from None
            except QuiltError as e:
                raise Exit(f"Error: {e}", code=int(only_status or e.status)) from None
            except KeyboardInterrupt:
                raise Exit("Error: interrupted", code=int(ExitStatus.INTERRUPTED)) from None
            except BrokenPipeError:  # stdout's reader went away mid-write (streams.out never lets it out)
                streams.stdout_closed()
                raise Exit(code=1) from None
            except Exception as e:  # a bug: say what kind, never its text
                if os.environ.get("QUILT_OPS_DEBUG") == "1":
                    traceback.print_exc()
                raise Exit(
                    f"Error: internal error ({type(e).__name__}); rerun with QUILT_OPS_DEBUG=1 for details",
                    code=int(ExitStatus.INTERNAL),
                ) from None

        return wrapper

    return decorate


def finish(results: hosts.Results[T], describe: Callable[[T], str | None]) -> None:
    """Prints each host's result line or error; exits with the most urgent status."""
    status = output.report_results(results, describe)
    if status != ExitStatus.OK:
        raise Exit(code=int(status))


def progress(target: hosts.HostTarget, many: bool) -> output.Progress:
    return output.Progress(prefix=target.name if many else "")


HOST_HELP = "CloudFormation stack whose EC2InstanceIp is a host (repeatable; or quilt.stacks)"
BREAK_HELP = "if another run holds the host lock, show who, ask, and end its holder (its run must be gone)"
YES_HELP = "answer yes to --break-lock's question"


# ----------------------------------------------------------------------------- health


@options.task(
    help={
        "json": "print one JSON document with every check (same as --format json)",
        "format": "table (default), json, nagios (one status line with perfdata) or prometheus "
        "(text exposition format)",
        "textfile": "also write the metrics (as --format prometheus prints them) to this .prom file for "
        "node_exporter's textfile collector: a temp file in its folder, renamed over it",
        "parallel": f"how many hosts to check at once (default {options.DEFAULT_PARALLEL})",
        "stack": HOST_HELP + "; with -H, the stack of the host for --aws",
        "aws": "also check each host's AWS side (or quilt.aws_checks: true): its key's age and use, its IAM "
        "user's policies, the bucket's versioning, the stack's status and its database's backups",
        "iam-user": "--aws: the IAM user of the host's key (default quilt.iam_user, else the key's owner)",
        "profile": "--aws: AWS profile (default: boto3's credential chain)",
        "region": "--aws: AWS region (default: boto3's)",
    },
    iterable=["stack"],
)
@reports_errors(only_status=ExitStatus.UNKNOWN)
def health(
    c: Any,
    json: bool = False,
    format: str = "table",
    textfile: Any = None,
    parallel: Any = None,
    stack: Any = None,
    aws: bool = False,
    iam_user: Any = None,
    profile: Any = None,
    region: Any = None,
) -> None:
    """Check containers, HTTP probes and the env file; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

    One SSH connection a host and one remote command: a single `docker inspect`
    of quilt.containers (through sudo if the login user cannot reach Docker),
    each probe of quilt.probes with curl on the host, and the env file's mode and
    key-line names (never its values). With --aws, each host's AWS side is
    checked too, alongside its SSH round trip.
    """
    settings = Settings.load(c.config)
    render = output.FORMATS.get("json" if json else format)
    if render is None:
        raise ConfigError(f"--format must be one of {', '.join(output.FORMATS)}, not {format!r}")
    if textfile is not None:
        textfile = output.textfile_path(textfile)
    targets = hosts.task_targets(c, settings, stacks=stack)
    workers = options.parallel(parallel)
    if aws or settings.aws_checks:
        from . import account

        side = account.options(settings, iam_user, stack, profile, region)
        results = account.each(targets, side, workers, lambda target: health_checks.collect(target, settings))
    else:
        results = hosts.each(targets, lambda target: health_checks.collect(target, settings), workers)
    reports = [r.value if r.value is not None else unreachable(r.host, str(r.error)) for r in results]
    if textfile is not None:
        output.write_textfile(textfile, reports)
    streams.out(render(reports), end="" if render is output.health_prometheus else "\n")
    for report in reports:
        if report.status == ExitStatus.UNKNOWN:  # could not look: say why, once per host
            unknown = [check for check in report.checks if check.status == ExitStatus.UNKNOWN]
            print(f"Error: {report.host}: {unknown[0].summary}", file=sys.stderr)
    status = output.overall(reports)
    if status != ExitStatus.OK:
        raise Exit(code=int(status))


# ----------------------------------------------------------------------------- restart


@options.task(
    help={
        "dry-run": "connect and check, show what would be done, change nothing",
        "timeout": "seconds for the start script and health together (default quilt.restart_timeout); "
        "at the end the start script is stopped on the host",
        "parallel": f"how many hosts to restart at once (default {options.DEFAULT_PARALLEL})",
        "stack": HOST_HELP,
        "break-lock": BREAK_HELP,
        "yes": YES_HELP,
    },
    iterable=["stack"],
)
@reports_errors()
def restart(
    c: Any,
    dry_run: bool = False,
    timeout: Any = None,
    parallel: Any = None,
    stack: Any = None,
    break_lock: bool = False,
    yes: bool = False,
) -> None:
    """Recreate the containers (docker rm -f, then the start script) and wait until healthy.

    Runs from quilt.registry_dir: removes quilt.containers, runs
    quilt.start_script (showing that it still runs), then polls containers and
    probes until all pass or the timeout runs out. Reports how long the registry
    probe was down. Exit 0 healthy, 4 failed, 5 stopped part-way, 3 host
    unreachable, 64 bad option or config.
    """
    settings = Settings.load(c.config)
    wait = options.seconds("--timeout", timeout)
    workers = options.parallel(parallel)
    targets = hosts.task_targets(c, settings, stacks=stack)
    many = len(targets) > 1
    breaking = options.confirm_breaking(yes) if break_lock else None

    def run_one(target: hosts.HostTarget) -> restarting.RestartReport | None:
        if dry_run:
            restart_plan(target, settings, progress(target, many))
            return None
        with audit.recorded(settings.audit_log, "restart", target.name) as record:
            with HostLock(target, settings, "restart", breaking=breaking) as lock:
                try:
                    report = restarting.restart(
                        target, settings, progress(target, many), wait, guard=lock.guard(shell.Script(settings))
                    )
                except NotStarted:
                    raise
                except restarting.LostBeforeRemoval as e:
                    raise QuiltError(
                        f"{e} before anything was removed; nothing was changed; run restart again",
                        status=ExitStatus.UNKNOWN,
                    ) from None
                except restarting.StoppedBeforeRemoval:
                    raise QuiltError(
                        "interrupted before anything was removed; nothing was changed; run restart again",
                        status=ExitStatus.INTERRUPTED,
                    ) from None
                except ConnectionLost as e:
                    raise QuiltError(
                        f"{e} during the restart: the containers may be down; run restart again",
                        status=ExitStatus.INCOMPLETE,
                    ) from None
                except KeyboardInterrupt:
                    raise QuiltError(
                        "interrupted during the restart: the containers may be down; run restart again",
                        status=ExitStatus.INTERRUPTED,
                    ) from None
            record["outcome"] = "restarted"
            return report

    def describe(report: restarting.RestartReport | None) -> str | None:
        if report is None:
            return None
        down = f", registry probe down {report.downtime_seconds:.1f}s" if report.downtime_seconds is not None else ""
        return (
            f"{report.host}: restarted and healthy in {report.total_seconds:.1f}s "
            f"(start script {report.script_seconds:.1f}s{down})"
        )

    finish(hosts.each(targets, run_one, workers), describe)


def restart_plan(target: hosts.HostTarget, settings: Settings, reporter: Reporter) -> None:
    """What ``restart`` would do on one host, from its current state."""
    report = health_checks.collect(target, settings, env_file=False)
    lines = [
        f"{target.name}: dry run, nothing changed. Would run in {settings.where}:",
        f"  docker rm -f {' '.join(settings.containers.names)}",
        f"  {settings.start_script}",
        f"  then wait for every container and probe to pass, {settings.restart_timeout:.0f}s in all",
        f"Current state: {label(report.status)}",
    ]
    lines += [f"  {check.name}: {label(check.status)} {check.summary}" for check in report.checks]
    reporter.show(lines)


# ----------------------------------------------------------------------------- rotate-keys


@options.task(
    help={
        "iam-user": "IAM user whose key is rotated (default: quilt.iam_user, else the host's binding in "
        "quilt.known_users, else the key owner's stack if its EC2InstanceIp is this host)",
        "stack": "CloudFormation stack: without -H, its EC2InstanceIp is the host (repeatable); its "
        "RegistryUser is the IAM user",
        "rebind": "let --iam-user/--stack replace the IAM user recorded for the host in quilt.known_users",
        "keep-old": "leave the old key Inactive instead of deleting it (the next rotation removes it)",
        "delete-other-active": "at IAM's two-key limit, delete an Active key that is not the host's",
        "verify-timeout": "seconds to wait for IAM to accept the new key everywhere (default 60)",
        "timeout": "seconds for the start script and health after the env file is written "
        "(default quilt.restart_timeout)",
        "dry-run": "read the host and IAM, print the plan, change nothing",
        "profile": "AWS profile for the IAM calls (default: boto3's credential chain)",
        "region": "AWS region for STS and S3 (default: boto3's)",
        "parallel": "how many hosts to rotate at once (default 1: host after host)",
        "break-lock": BREAK_HELP,
        "yes": YES_HELP,
    },
    iterable=["stack"],
)
@reports_errors()
def rotate_keys(
    c: Any,
    iam_user: Any = None,
    stack: Any = None,
    keep_old: bool = False,
    delete_other_active: bool = False,
    verify_timeout: Any = None,
    timeout: Any = None,
    dry_run: bool = False,
    profile: Any = None,
    region: Any = None,
    parallel: Any = None,
    break_lock: bool = False,
    yes: bool = False,
    rebind: bool = False,
) -> None:
    """Rotate RegistryUser's access key: create, verify, write env file, restart, retire the old key.

    Pre-flight changes nothing. The new key is verified with its own
    credentials (STS, and a one-object list of PACKAGE_BUCKET_NAME) until 3
    checks in a row pass. The env file is replaced atomically (keeping owner,
    group and mode; through sudo when needed), the containers are recreated and
    must be healthy with the new key, then the old key is deactivated and
    deleted. Any failure after the file is written is rolled back; a run that
    died is finished or rolled back by the next one. Exit 0 rotated, 4 failed
    (nothing changed, or rolled back), 5 unfinished (run again), 6 rollback
    failed, 3 host unreachable, 64 bad option.
    """
    from . import rotation_fleet

    settings = Settings.load(c.config)
    rotate_options = rotation_fleet.options(
        iam_user, stack, keep_old, delete_other_active, verify_timeout, timeout, dry_run, rebind
    )
    results = rotation_fleet.run(
        c,
        settings,
        rotate_options,
        profile=profile,
        region=region,
        stacks=stack,
        parallel=options.parallel(parallel, default=1),
        breaking=options.confirm_breaking(yes) if break_lock else None,
    )
    finish(results, lambda r: f"{r.host}: {r.message}" if r.outcome != "dry-run" else None)


# ----------------------------------------------------------------------------- create-admin


@options.task(
    help={
        "username": "the admin's user name (asked when absent and stdin is a terminal)",
        "email": "the admin's email address (asked when absent and stdin is a terminal)",
        "password-stdin": "read the password from the first line of stdin "
        "(else QUILT_ADMIN_PASSWORD, else asked twice with echo off)",
        "timeout": "seconds to wait for each prompt and for the program to finish (default 60)",
        "dry-run": "validate, connect and check the host, change nothing",
        "parallel": "how many hosts at once (default 1: host after host)",
        "stack": HOST_HELP,
        "break-lock": BREAK_HELP,
        "yes": YES_HELP,
    },
    iterable=["stack"],
)
@reports_errors()
def create_admin(
    c: Any,
    username: Any = None,
    email: Any = None,
    password_stdin: bool = False,
    timeout: Any = None,
    dry_run: bool = False,
    parallel: Any = None,
    stack: Any = None,
    break_lock: bool = False,
    yes: bool = False,
) -> None:
    """Create the registry's first admin by answering create_admin.sh's prompts on the host.

    The inputs are checked locally with the registry's own rules first; a bad
    one exits 64 without contacting the host. Then, from quilt.registry_dir,
    runs '. env/registry && ./create_admin.sh' on a pseudo-terminal and types
    each answer when its prompt appears. The password is never an option, a
    command line or a remote environment variable, and is masked in anything
    shown. Exit 0 created, 4 refused or failed, 64 bad input, 3 host unreachable.
    """
    from . import admin

    settings = Settings.load(c.config)
    wait = options.seconds("--timeout", timeout) or 60.0
    workers = options.parallel(parallel, default=1)
    details = admin.gather(username, email, password_stdin, os.environ)
    admin.validate(details)
    targets = hosts.task_targets(c, settings, stacks=stack)
    breaking = options.confirm_breaking(yes) if break_lock else None

    def run_one(target: hosts.HostTarget) -> str:
        host = target.name
        if dry_run:
            found = admin.precheck(target, settings)
            if found.problems:
                raise admin.AdminFailed(f"{host}: " + "; ".join(found.problems))
            return (
                f"{host}: dry run: would create admin {details.username} <{details.email}> with "
                f"{settings.create_admin_script}; nothing changed"
            )
        with audit.recorded(
            settings.audit_log, "create-admin", host, username=details.username, email=details.email
        ) as record:
            with HostLock(target, settings, "create-admin", breaking=breaking):
                found = admin.precheck(target, settings)
                if found.problems:
                    raise admin.AdminFailed("; ".join(found.problems) + f" on {host}; nothing was changed")
                try:
                    admin.create(target, settings, details, wait, found.env)
                except NotStarted:
                    raise
                except ConnectionLost as e:
                    raise QuiltError(
                        f"{e} while {settings.create_admin_script} ran: the admin may or may not have "
                        "been created; run create-admin again (it says 'Username already taken' if "
                        "it was)",
                        status=ExitStatus.INCOMPLETE,
                    ) from None
            record["outcome"] = "created"
            return f"Admin {details.username} created on {host}"

    finish(hosts.each(targets, run_one, workers), lambda line: line)


# ----------------------------------------------------------------------------- stacks


@options.task(help={"json": "print JSON instead of the table", "profile": "AWS profile", "region": "AWS region"})
@reports_errors()
def stacks(c: Any, json: bool = False, profile: Any = None, region: Any = None) -> None:
    """List the registry stacks (those with an EC2InstanceIp output) in the account and region."""
    from . import keys
    from . import stacks as registry_stacks

    found = registry_stacks.registry_stacks(keys.KeyStore(keys.session(profile, region)))
    if json:
        import json as json_module

        streams.out(json_module.dumps([dataclasses.asdict(s) for s in found], indent=2))
        return
    if not found:
        streams.out("no registry stacks (no stack with an EC2InstanceIp output)")
        return
    streams.out(
        output.table(
            [(s.name, s.status, s.host or "-", s.iam_user or "-", s.load_balancer or "-") for s in found],
            ("STACK", "STATUS", "HOST", "REGISTRY USER", "LOAD BALANCER"),
        )
    )


# ----------------------------------------------------------------------------- backup, backups

DB_HELP = "the RDS instance (default: the stack's AWS::RDS::DBInstance resource)"
BACKUP_STACK_HELP = "the registry's CloudFormation stack (repeatable; or quilt.stacks)"


@options.task(
    help={
        "stack": BACKUP_STACK_HELP,
        "db-instance": DB_HELP,
        "wait": "wait until the snapshot is available, showing its progress",
        "timeout": "seconds --wait waits (default 1800); RDS goes on after it",
        "keep": "then delete the oldest snapshots quilt-ops made of this database beyond the N newest available "
        "ones (never any other snapshot)",
        "dry-run": "check and say what would be done, change nothing",
        "profile": "AWS profile (default: boto3's credential chain)",
        "region": "AWS region (default: boto3's)",
    },
    iterable=["stack"],
)
@reports_errors()
def backup(
    c: Any,
    stack: Any = None,
    db_instance: Any = None,
    wait: bool = False,
    timeout: Any = None,
    keep: Any = None,
    dry_run: bool = False,
    profile: Any = None,
    region: Any = None,
) -> None:
    """Make a manual RDS snapshot of the stack's database, named quilt-ops-<stack>-<UTC time>.

    The snapshot is tagged made-by=quilt-ops. A database that is not available, or
    that a snapshot is already being made of, is refused. --keep N then deletes the
    oldest snapshots quilt-ops made beyond the N newest available ones. Exit 0 done,
    4 refused or failed (nothing changed), 5 made but not finished (timeout, or old
    snapshots not deleted), 64 bad option.
    """
    from . import backups as backing

    settings = Settings.load(c.config)
    run = backing.BackupOptions(
        wait=wait,
        timeout=options.seconds("--timeout", timeout) or 1800.0,
        keep=backing.keep_count(keep),
        dry_run=dry_run,
    )
    databases = backing.databases(list(stack or settings.stacks), db_instance or None)
    many = len(databases) > 1
    results = backing.run_backup(
        settings.audit_log,
        databases,
        run,
        profile or None,
        region or None,
        lambda label: output.Progress(prefix=label if many else ""),
    )
    finish(results, lambda report: report.line())


@options.task(
    help={
        "stack": BACKUP_STACK_HELP,
        "db-instance": DB_HELP,
        "json": "print JSON instead of the table",
        "profile": "AWS profile (default: boto3's credential chain)",
        "region": "AWS region (default: boto3's)",
    },
    iterable=["stack"],
)
@reports_errors()
def backups(
    c: Any, stack: Any = None, db_instance: Any = None, json: bool = False, profile: Any = None, region: Any = None
) -> None:
    """List the snapshots quilt-ops made of the stack's database, newest first, with state, size and age."""
    from datetime import datetime, timezone

    from . import backups as backing

    settings = Settings.load(c.config)
    databases = backing.databases(list(stack or settings.stacks), db_instance or None)
    found = backing.list_backups(databases, profile or None, region or None)
    now = datetime.now(timezone.utc)
    if json:
        import json as json_module

        doc = [
            {"stack": name, "db_instance": db, **backing.as_dict(s, now)} for name, db, snaps in found for s in snaps
        ]
        streams.out(json_module.dumps(doc, indent=2))
        return
    for index, (name, db, snaps) in enumerate(found):
        if index:
            streams.out()
        if not snaps:
            streams.out(f"{name}: no snapshots made by quilt-ops of {db}")
            continue
        streams.out(f"{name}: {len(snaps)} snapshot(s) made by quilt-ops of {db}")
        streams.out(output.table(backing.rows(snaps, now), ("SNAPSHOT", "STATE", "SIZE", "AGE", "CREATED")))


# ----------------------------------------------------------------------------- exporter


@options.task(
    help={
        "listen": "HOST:PORT to serve /metrics on (default 127.0.0.1:9877; [::1]:PORT for IPv6, :PORT for every "
        "IPv4 interface)",
        "parallel": "how many hosts to check at once on a scrape (default 20)",
        "scrape-timeout": "seconds a scrape waits for the hosts (default 10); a host that has not answered "
        "by then reports quilt_up 0",
        "min-interval": "seconds during which a new scrape is served the last results (default 5; 0: never)",
        "stack": HOST_HELP,
        "web-config-file": "TLS and basic auth, in the Prometheus exporter-toolkit format (tls_server_config "
        "cert_file/key_file, basic_auth_users with bcrypt hashes)",
        "max-connections": "connections served at once (default 100); at the cap a new one closes the oldest "
        "still waiting for its request (each has 10 s to send it)",
    },
    iterable=["stack"],
)
@reports_errors()
def exporter(
    c: Any,
    listen: Any = None,
    parallel: Any = None,
    scrape_timeout: Any = None,
    min_interval: Any = None,
    stack: Any = None,
    web_config_file: Any = None,
    max_connections: Any = None,
) -> None:
    """Serve health as Prometheus metrics on /metrics, over one SSH connection per host kept open.

    Each scrape runs the health checks on every host (one remote command each),
    --parallel at a time, within --scrape-timeout; a scrape within --min-interval
    of the last one is served its results. /probe?target=HOST checks one host of
    quilt.exporter_targets (the multi-target pattern, for Prometheus service
    discovery). Runs until SIGINT or SIGTERM (exit 0).
    Exit 64 when it cannot listen on --listen or on a bad option or config.
    """
    from . import exporter as exporting

    settings = Settings.load(c.config)
    exporting.run(
        c,
        settings,
        exporting.DEFAULT_LISTEN if listen is None else listen,
        options.parallel(parallel, default=exporting.DEFAULT_PARALLEL),
        options.seconds("--scrape-timeout", scrape_timeout) or exporting.DEFAULT_SCRAPE_TIMEOUT,
        exporting.interval("--min-interval", min_interval, exporting.DEFAULT_MIN_INTERVAL),
        stacks=stack,
        web_config_file=None if web_config_file is None else str(web_config_file),
        max_connections=exporting.connections_option(max_connections),
    )


ns = Collection(health, restart, rotate_keys, create_admin, stacks, exporter, backup, backups)
# quilt.containers takes a mapping or a list: invoke cannot merge one over the other, so its
# default is applied by Settings.load rather than declared to invoke.
ns.configure({"quilt": {key: value for key, value in DEFAULTS.items() if key != "containers"}})
