"""The tasks: parse options, call the library, render, map to an exit status.

Every task ends in one of the statuses of `quilt_ops.status.ExitStatus`. A
failure the operator can act on is one ``Error: ...`` line on stderr; anything
else is a bug, reported by type only (its text could hold data we must not
print) unless ``QUILT_OPS_DEBUG=1`` asks for the traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
import traceback
from typing import Any, Callable

from invoke import Collection, task
from invoke.exceptions import Exit

from . import health as health_checks
from . import audit, hosts, output, ssh
from . import restart as restarting
from .config import DEFAULTS, Settings
from .errors import ConfigError, QuiltError
from .lock import HostLock
from .status import ExitStatus, label

DEFAULT_PARALLEL = 10


def reports_errors(usage_status: ExitStatus = ExitStatus.USAGE, only_status: ExitStatus | None = None) -> Callable:
    """Turns exceptions into one ``Error:`` line and an exit status.

    ``usage_status`` is what a bad option or config value exits with;
    ``only_status``, when given, is what every failure exits with (``health``
    uses UNKNOWN for both, as Nagios plugins do: it could not look).
    """

    def decorate(body: Callable) -> Callable:
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
            except Exception as e:  # a bug: say what kind, never its text
                if os.environ.get("QUILT_OPS_DEBUG") == "1":
                    traceback.print_exc()
                raise Exit(f"Error: internal error ({type(e).__name__}); rerun with QUILT_OPS_DEBUG=1 "
                           f"for details", code=int(ExitStatus.UNKNOWN)) from None

        return wrapper

    return decorate


def _parallel(value: Any, default: int = DEFAULT_PARALLEL) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--parallel must be a whole number, not {value!r}") from None
    if not 1 <= number <= 200:
        raise ConfigError(f"--parallel must be between 1 and 200, not {number}")
    return number


def _seconds(option: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be a number of seconds, not {value!r}") from None
    if not 0 < number <= 86400:
        raise ConfigError(f"{option} must be between 0 and 86400 seconds, not {value}")
    return number


@task(
    help={
        "json": "print one JSON document with every check (same as --format json)",
        "format": "table (default), json, nagios (one status line with perfdata) or prometheus "
                  "(text exposition format, for node_exporter's textfile collector)",
        "parallel": f"how many hosts to check at once (default {DEFAULT_PARALLEL})",
        "stack": "CloudFormation stack whose EC2InstanceIp is a host to check (repeatable; or quilt.stacks)",
    },
    iterable=["stack"],
)
@reports_errors(only_status=ExitStatus.UNKNOWN)
def health(c, json=False, format="table", parallel=None, stack=None):
    """Check containers, HTTP probes and the env file; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

    Makes one SSH connection a host and one remote command: a single `docker
    inspect` of quilt.containers, each probe of quilt.probes with curl on the
    host, and the env file's mode and key-line names (never its values).
    """
    settings = Settings.load(c.config)
    render = output.FORMATS.get("json" if json else format)
    if render is None:
        raise ConfigError(f"--format must be one of {', '.join(output.FORMATS)}, not {format!r}")
    cxns = hosts.connections(c, settings, stacks=stack)

    def check(cxn):
        return health_checks.collect(cxn, settings)

    reports = []
    for outcome in hosts.each(cxns, check, _parallel(parallel)):
        if outcome.error is not None:
            reports.append(health_checks.unreachable(outcome.host, str(outcome.error)))
        else:
            reports.append(outcome.value)
    print(render(reports), end="" if render is output.health_prometheus else "\n")
    for report in reports:
        if report.status == ExitStatus.UNKNOWN:  # could not look: say why, once per host
            unknown = [c for c in report.checks if c.status == ExitStatus.UNKNOWN]
            print(f"Error: {report.host}: {unknown[0].summary}", file=sys.stderr)
    status = output.overall(reports)
    if status != ExitStatus.OK:
        raise Exit(code=int(status))


@task(
    help={
        "dry-run": "connect and check, show what would be done, change nothing",
        "timeout": "seconds to wait for health after the start script (default quilt.restart_timeout)",
        "parallel": f"how many hosts to restart at once (default {DEFAULT_PARALLEL})",
        "stack": "CloudFormation stack whose EC2InstanceIp is a host to restart (repeatable; or quilt.stacks)",
    },
    iterable=["stack"],
)
@reports_errors()
def restart(c, dry_run=False, timeout=None, parallel=None, stack=None):
    """Recreate the containers (docker rm -f, then the start script) and wait until healthy.

    Runs from quilt.registry_dir: removes quilt.containers, runs
    quilt.start_script, then polls containers and probes until all pass or the
    timeout runs out, showing progress. Reports how long the registry probe
    was down. Exit 0 healthy, 1 failed, 2 bad option or config, 3 host unreachable.
    """
    settings = Settings.load(c.config)
    wait = _seconds("--timeout", timeout)
    workers = _parallel(parallel)
    cxns = hosts.connections(c, settings, stacks=stack)
    many = len(cxns) > 1

    def run_one(cxn):
        progress = output.Progress(prefix=ssh.describe(cxn) if many else "")
        if dry_run:
            return plan(cxn, settings)
        with HostLock(cxn, settings, "restart"):
            return restarting.restart(cxn, settings, progress, wait)

    def describe(report):
        if report is None:  # a dry run printed its plan already
            return None
        down = f", registry probe down {report.downtime_seconds:.1f}s" if report.downtime_seconds is not None else ""
        return (f"{report.host}: restarted and healthy in {report.total_seconds:.1f}s "
                f"(start script {report.script_seconds:.1f}s{down})")

    _finish(hosts.each(cxns, run_one, workers), many, describe)


def plan(cxn, settings: Settings) -> None:
    """What ``restart`` would do on one host, from its current state."""
    report = health_checks.collect(cxn, settings, env_file=False)
    where = settings.registry_dir or "the login directory"
    print(f"{ssh.describe(cxn)}: dry run, nothing changed. Would run in {where}:")
    print(f"  docker rm -f {' '.join(settings.containers)}")
    print(f"  {settings.start_script}")
    print(f"  then wait up to {settings.restart_timeout:.0f}s for every container and probe to pass")
    print(f"Current state: {label(report.status)}")
    for check in report.checks:
        print(f"  {check.name}: {label(check.status)} {check.summary}")


@task(
    help={
        "iam-user": "IAM user whose key is rotated (default: quilt.iam_user, else the owner of the host's key)",
        "stack": "CloudFormation stack: without -H, its EC2InstanceIp is the host (repeatable); its "
                 "RegistryUser is the IAM user when the host's key does not tell",
        "keep-old": "leave the old key Inactive instead of deleting it (the next rotation removes it)",
        "delete-other-active": "at IAM's two-key limit, delete an Active key that is not the host's",
        "verify-timeout": "seconds to wait for IAM to accept the new key everywhere (default 60)",
        "timeout": "seconds to wait for health after recreating the containers (default quilt.restart_timeout)",
        "dry-run": "read the host and IAM, print the plan, change nothing",
        "profile": "AWS profile for the IAM calls (default: boto3's credential chain)",
        "region": "AWS region for STS and S3 (default: boto3's)",
        "parallel": "how many hosts to rotate at once (default 1: host after host)",
    },
    iterable=["stack"],
)
@reports_errors()
def rotate_keys(c, iam_user=None, stack=None, keep_old=False, delete_other_active=False, verify_timeout=None,
                timeout=None, dry_run=False, profile=None, region=None, parallel=None):
    """Rotate RegistryUser's access key: create, verify, write env file, restart, retire the old key.

    Pre-flight changes nothing. The new key is verified with its own
    credentials (STS, and a one-object list of PACKAGE_BUCKET_NAME) until 3
    checks in a row pass. The env file is replaced atomically, the containers
    are recreated and must be healthy with the new key, then the old key is
    deactivated and deleted. Any failure after the file is written is rolled
    back; a run that died is finished or rolled back by the next one.
    Exit 0 rotated, 1 failed (nothing changed, or rolled back), 2 rollback
    failed or bad option, 3 host unreachable.
    """
    from . import keys
    from .rotation import Rotation, RotateOptions

    settings = Settings.load(c.config)
    options = RotateOptions(iam_user=iam_user, stack=(stack or [None])[0], keep_old=keep_old,
                            delete_other_active=delete_other_active,
                            verify_timeout=_seconds("--verify-timeout", verify_timeout) or 60.0,
                            restart_timeout=_seconds("--timeout", timeout), dry_run=dry_run)
    workers = _parallel(parallel, default=1)
    store = keys.KeyStore(keys.session(profile, region))
    operator = store.operator_arn()
    cxns = hosts.connections(c, settings, stacks=stack, aws=lambda: store)
    many = len(cxns) > 1

    def run_one(cxn):
        progress = output.Progress(prefix=ssh.describe(cxn) if many else "")
        own = dataclasses.replace(options, stack=getattr(cxn, "quilt_stack", None) or options.stack)
        rotation = Rotation(cxn, settings, store, own, progress)
        rotation.audit["operator"] = operator
        started = time.monotonic()
        try:
            report = rotation.run()
            rotation.audit["outcome"] = report.outcome
            return report
        except QuiltError as e:
            rotation.audit.update(outcome=_outcome(e), error=str(e))
            raise
        finally:
            rotation.audit["seconds"] = round(time.monotonic() - started, 3)
            audit.append(settings.audit_log, rotation.audit)

    _finish(hosts.each(cxns, run_one, workers), many,
            lambda r: f"{r.host}: {r.message}" if r.outcome != "dry-run" else None)


def _outcome(error: QuiltError) -> str:
    from .rotation import RollbackFailed, RolledBack

    if isinstance(error, RollbackFailed):
        return "rollback-failed"
    if isinstance(error, RolledBack):
        return "rolled-back"
    return "failed"


def _finish(outcomes, many: bool, describe: Callable) -> None:
    """Prints each host's result or error; exits with the worst status."""
    statuses = []
    for outcome in outcomes:
        if outcome.error is not None:
            print(f"Error: {outcome.host}: {outcome.error}" if many else f"Error: {outcome.error}",
                  file=sys.stderr)
            statuses.append(outcome.error.status)
        else:
            line = describe(outcome.value)
            if line:
                print(line)
            statuses.append(ExitStatus.OK)
    status = max(statuses, key=int) if statuses else ExitStatus.OK
    if status != ExitStatus.OK:
        raise Exit(code=int(status))


@task(
    help={
        "username": "the admin's user name (asked when absent and stdin is a terminal)",
        "email": "the admin's email address (asked when absent and stdin is a terminal)",
        "password-stdin": "read the password from the first line of stdin "
                          "(else QUILT_ADMIN_PASSWORD, else asked twice with echo off)",
        "timeout": "seconds to wait for each prompt and for the program to finish (default 60)",
        "dry-run": "validate, connect and check the host, change nothing",
        "parallel": "how many hosts at once (default 1: host after host)",
        "stack": "CloudFormation stack whose EC2InstanceIp is the host (repeatable; or quilt.stacks)",
    },
    iterable=["stack"],
)
@reports_errors()
def create_admin(c, username=None, email=None, password_stdin=False, timeout=None, dry_run=False, parallel=None,
                 stack=None):
    """Create the registry's first admin by answering create_admin.sh's prompts on the host.

    The inputs are checked locally with the registry's own rules first; a bad
    one exits 2 without contacting the host. Then, from quilt.registry_dir,
    runs '. env/registry && ./create_admin.sh' on a pseudo-terminal and types
    each answer when its prompt appears. The password is never an option, a
    command line or a remote environment variable, and is masked in anything
    shown. Exit 0 created, 1 refused or failed, 2 bad input, 3 host unreachable.
    """
    from . import admin

    settings = Settings.load(c.config)
    wait = _seconds("--timeout", timeout) or 60.0
    workers = _parallel(parallel, default=1)
    details = admin.gather(username, email, password_stdin, os.environ)
    admin.validate(details)
    cxns = hosts.connections(c, settings, stacks=stack)

    def run_one(cxn):
        host = ssh.describe(cxn)
        record = {"task": "create-admin", "host": host, "username": details.username, "email": details.email}
        try:
            if dry_run:
                problems = admin.precheck(cxn, settings)
                if problems:
                    raise admin.AdminFailed(f"{host}: " + "; ".join(problems))
                record["outcome"] = "dry-run"
                return f"{host}: dry run: would create admin {details.username} <{details.email}> with " \
                       f"{settings.create_admin_script}; nothing changed"
            with HostLock(cxn, settings, "create-admin"):
                admin.create(cxn, settings, details, wait)
            record["outcome"] = "created"
            return f"Admin {details.username} created on {host}"
        except QuiltError as e:
            record.update(outcome="failed", error=admin.mask(str(e), details.password))
            raise
        finally:
            audit.append(settings.audit_log, record)

    _finish(hosts.each(cxns, run_one, workers), len(cxns) > 1, lambda line: line)


@task(help={"json": "print JSON instead of the table", "profile": "AWS profile", "region": "AWS region"})
@reports_errors()
def stacks(c, json=False, profile=None, region=None):
    """List the registry stacks (those with an EC2InstanceIp output) in the account and region."""
    from . import keys
    from . import stacks as registry_stacks

    found = registry_stacks.registry_stacks(keys.KeyStore(keys.session(profile, region)))
    if json:
        import json as json_module

        print(json_module.dumps([dataclasses.asdict(s) for s in found], indent=2))
        return
    if not found:
        print("no registry stacks (no stack with an EC2InstanceIp output)")
        return
    print(output.table([(s.name, s.status, s.host or "-", s.iam_user or "-", s.load_balancer or "-")
                        for s in found], ("STACK", "STATUS", "HOST", "REGISTRY USER", "LOAD BALANCER")))


ns = Collection(health, restart, rotate_keys, create_admin, stacks)
ns.configure({"quilt": DEFAULTS})
