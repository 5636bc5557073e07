"""The AWS side of a registry host (``health --aws``): its key, its user's policies, its bucket,
its CloudFormation stack and the stack's database.

Two layers. The verdicts are pure: given what IAM, S3, RDS and CloudFormation said,
`key_check`, `other_key_check`, `policy_check`, `bucket_check`, `database_check` and
`stack_check` return a `Check` (tests/unit/test_account_checks.py feeds them data).
`AwsLook` is the I/O around them: the boto3 calls of one host, with a boto3 session of
its own (sessions are not thread-safe). A call AWS refuses for want of a permission
makes that one check UNKNOWN, naming the IAM action it needs; it never ends the run.

A host's AWS work overlaps its SSH round trip: `AwsSide.start` begins it before the
connection is opened (boto3 clients, and whatever needs no fact from the host), and
`AwsLook.add_to` finishes it once the health script has given the host's key ID and
bucket name (neither is a secret; the env file's values never leave the host).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .checks import Check, HostHealth, Kind
from .containers import duration
from .errors import ConfigError, QuiltError
from .rotation_plan import Key
from .status import ExitStatus, worst

#: The bucket actions the registry's own policy grants (the deployment's RegistryUser policy):
#: action -> resource, with {bucket} the package bucket.
DEPLOYMENT_ACTIONS = {
    "s3:GetObject": "arn:aws:s3:::{bucket}/*",
    "s3:PutObject": "arn:aws:s3:::{bucket}/*",
    "s3:DeleteObject": "arn:aws:s3:::{bucket}/*",
    "s3:HeadObject": "arn:aws:s3:::{bucket}/*",
    "s3:ListBucket": "arn:aws:s3:::{bucket}",
}
#: CloudFormation's name for RegistryUser: ``<stack>-RegistryUser-<12 or 13 characters>``.
STACK_OF_USER = re.compile(r"(?P<stack>[A-Za-z][-A-Za-z0-9]*)-RegistryUser-[A-Za-z0-9]{12,13}")
#: S3's bucket naming rules (the name comes from the host: it is checked before any call).
BUCKET_NAME = re.compile(r"(?!xn--)(?!.*-s3alias$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: How stale the database's latest restorable time may be.
RESTORABLE_LAG = timedelta(hours=1)
#: Database states that mean it is broken, not only busy.
BROKEN_DB_STATES = {
    "failed",
    "storage-full",
    "incompatible-network",
    "incompatible-option-group",
    "incompatible-parameters",
    "incompatible-restore",
    "inaccessible-encryption-credentials",
    "restore-error",
}
#: AWS error codes that mean "this credential may not do that".
DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "UnauthorizedAccess",
    "Forbidden",
}
USER_RESOURCE = "RegistryUser"
DB_TYPE = "AWS::RDS::DBInstance"
BUCKET_TYPE = "AWS::S3::Bucket"


# ----------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class LastUsed:
    """IAM's GetAccessKeyLastUsed: when, with which service, in which region (None: never)."""

    when: datetime | None = None
    service: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Database:
    """What RDS says of the stack's database."""

    identifier: str
    status: str
    retention_days: int
    latest_restorable: datetime | None = None
    size_gib: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """One RDS DB snapshot (manual or automated)."""

    identifier: str
    db_instance: str
    status: str
    created: datetime | None
    snapshot_type: str = "manual"
    size_gib: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    progress: int | None = None


@dataclass(frozen=True)
class Grant:
    """One action (or NotAction) a policy statement allows, on one resource."""

    action: str
    resource: str
    policy: str
    not_action: bool = False
    not_resource: bool = False


def _age(now: datetime, then: datetime | None) -> float | None:
    if then is None:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return max(0.0, (now - then).total_seconds())


def _iso(then: datetime | None) -> str | None:
    return then.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if then else None


def _denied(kind: Kind, subject: str, action: str, hint: str = "") -> Check:
    return Check(kind, subject, ExitStatus.UNKNOWN, f"needs {action}{hint}", {"needs": action})


# ----------------------------------------------------------------------------- verdicts: the keys


def key_check(
    host_key: str | None,
    user: str | None,
    keys: list[Key] | None,
    last_used: LastUsed | None,
    now: datetime,
    max_age_days: float,
    owner: str | None = None,
) -> Check:
    """The key the host runs with: in IAM, the user's, Active, and younger than the maximum age.

    WARNING at ``max_age_days`` (AWS Config's access-keys-rotated rule says 90), CRITICAL at
    twice that; a key missing from IAM, another user's, or Inactive is CRITICAL. When it
    was last used (date, service, region) is noted.
    """

    def check(status: ExitStatus, summary: str, details: dict[str, Any]) -> Check:
        return Check(Kind.AWS_KEY, "in use", status, summary, details)

    if not host_key:
        return check(ExitStatus.UNKNOWN, "the env file gives no AWS_ACCESS_KEY_ID to look up", {})
    details: dict[str, Any] = {"key_id": host_key, "user": user, "max_age_days": max_age_days}
    used = last_used or LastUsed()
    used_seconds = _age(now, used.when)
    details.update(
        last_used=_iso(used.when),
        last_used_seconds=used_seconds,
        last_used_service=used.service,
        last_used_region=used.region,
    )
    if user is None:
        return check(ExitStatus.CRITICAL, f"the host's key {host_key} is not known to IAM in this account", details)
    found = next((k for k in keys or [] if k.id == host_key), None)
    if found is None:
        if owner and owner != user:
            return check(
                ExitStatus.CRITICAL, f"the host's key {host_key} belongs to IAM user {owner}, not {user}", details
            )
        return check(ExitStatus.CRITICAL, f"the host's key {host_key} is not one of {user}'s keys in IAM", details)
    age = _age(now, found.created)
    details.update(status=found.status, created=_iso(found.created), age_seconds=age)
    if found.status != "Active":
        return check(ExitStatus.CRITICAL, f"the host's key {host_key} is {found.status} in IAM", details)
    days = (age or 0) / 86400
    if last_used is None:
        used_text = "last use not known"
    elif used_seconds is None:
        used_text = "never used"
    else:
        where = f" ({used.service}, {used.region})" if used.service and used.service != "N/A" else ""
        used_text = f"last used {duration(used_seconds)} ago{where}"
    text = f"{host_key} of {user}, {days:.0f} days old, {used_text}"
    if days >= 2 * max_age_days:
        return check(ExitStatus.CRITICAL, f"{text}: older than twice {max_age_days:g} days; rotate-keys", details)
    if days >= max_age_days:
        return check(ExitStatus.WARNING, f"{text}: {max_age_days:g} days or older; rotate-keys", details)
    return check(ExitStatus.OK, text, details)


def other_key_check(
    host_key: str | None, user: str | None, keys: list[Key] | None, now: datetime, last_used: dict[str, LastUsed]
) -> Check:
    """The user's keys that are not the host's: an Active one is a stranger (WARNING, named);
    an Inactive one is a spare (OK, noted)."""

    def check(status: ExitStatus, summary: str, details: dict[str, Any]) -> Check:
        return Check(Kind.AWS_KEY, "other", status, summary, details)

    if user is None or keys is None:
        return check(ExitStatus.UNKNOWN, "no IAM user to look at", {})
    others = [k for k in keys if k.id != host_key]
    details: dict[str, Any] = {"user": user, "keys": [{"key_id": k.id, "status": k.status} for k in others]}
    if not others:
        return check(ExitStatus.OK, f"no other key on {user}", details)
    findings: list[tuple[ExitStatus, str]] = []
    for key in others:
        age = _age(now, key.created)
        created = f"created {duration(age)} ago" if age is not None else "creation time unknown"
        if key.status == "Active":
            used = last_used.get(key.id, LastUsed())
            used_age = _age(now, used.when)
            used_text = f"last used {duration(used_age)} ago" if used_age is not None else "never used"
            findings.append(
                (ExitStatus.WARNING, f"Active key {key.id} that the host does not use ({created}, {used_text})")
            )
        else:
            findings.append((ExitStatus.OK, f"{key.status} spare {key.id} ({created})"))
    return check(worst(s for s, _ in findings), "; ".join(text for _, text in findings), details)


# ----------------------------------------------------------------------------- verdicts: least privilege


def _document(raw: Any) -> dict[str, Any]:
    """A policy document as IAM returns it: a dict, or URL-encoded JSON text."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        text = raw if raw.lstrip().startswith("{") else urllib.parse.unquote(raw)
        try:
            value = json.loads(text)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def grants(policies: Iterable[tuple[str, Any]]) -> list[Grant]:
    """Every (action, resource) that the Allow statements of some policies grant.

    Deny statements are not subtracted: what is allowed somewhere is reported.
    """
    found: list[Grant] = []
    for name, raw in policies:
        statements = _document(raw).get("Statement", [])
        if isinstance(statements, dict):
            statements = [statements]
        for statement in statements if isinstance(statements, list) else []:
            if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
                continue
            not_action = "NotAction" in statement
            actions = _words(statement.get("NotAction" if not_action else "Action"))
            not_resource = "NotResource" in statement
            resources = _words(statement.get("NotResource" if not_resource else "Resource")) or ["*"]
            for action in actions:
                for resource in resources:
                    found.append(Grant(action, resource, name, not_action, not_resource))
    return found


def _deployment(bucket: str | None) -> dict[str, str | None]:
    return {
        action.lower(): (resource.replace("{bucket}", bucket) if bucket else None)
        for action, resource in DEPLOYMENT_ACTIONS.items()
    }


def extra_grants(found: list[Grant], bucket: str | None) -> list[str]:
    """What the grants allow beyond the deployment's bucket actions, as people read it.

    An action that is not one of the deployment's (``s3:PutBucketPolicy``), a wildcard
    (``s3:*``, ``*``, ``s3:Get*``) and a NotAction are extra; a deployment action on a
    wider resource than the package bucket's (``s3:GetObject on *``) is extra too, when
    the bucket is known.
    """
    expected = _deployment(bucket)
    extra: list[str] = []
    for grant in found:
        action = grant.action.lower()
        if grant.not_action:
            text = f"every action but {grant.action}"
        elif "*" in action or "?" in action or action not in expected:
            text = grant.action
        else:
            wanted = expected[action]
            if wanted is None:
                continue
            if grant.not_resource:
                text = f"{grant.action} on every resource but {grant.resource}"
            elif grant.resource != wanted and not fnmatch.fnmatchcase(grant.resource, wanted):
                text = f"{grant.action} on {grant.resource}"
            else:
                continue
        if text not in extra:
            extra.append(text)
    return sorted(extra, key=str.lower)


def missing_actions(found: list[Grant], bucket: str | None) -> list[str]:
    """The deployment's bucket actions that no grant allows (the registry would fail)."""
    missing = []
    for action, resource in DEPLOYMENT_ACTIONS.items():
        wanted = resource.replace("{bucket}", bucket) if bucket else None
        allowed = any(
            not g.not_action
            and fnmatch.fnmatchcase(action.lower(), g.action.lower())
            and (wanted is None or g.not_resource or fnmatch.fnmatchcase(wanted, g.resource))
            for g in found
        )
        if not allowed:
            missing.append(action)
    return missing


def policy_check(user: str | None, policies: list[tuple[str, Any]], bucket: str | None) -> Check:
    """Least privilege: the user's inline and attached policies against the deployment's bucket actions.

    WARNING listing every extra action (or wider resource), and every bucket action
    the registry needs that none of them grants.
    """

    def check(status: ExitStatus, summary: str, details: dict[str, Any]) -> Check:
        return Check(Kind.AWS_POLICY, "", status, summary, details)

    if user is None:
        return check(ExitStatus.UNKNOWN, "no IAM user to look at", {})
    found = grants(policies)
    extra = extra_grants(found, bucket)
    missing = missing_actions(found, bucket)
    details: dict[str, Any] = {
        "user": user,
        "policies": [name for name, _ in policies],
        "extra": extra,
        "missing": missing,
        "bucket": bucket,
    }
    problems = []
    if extra:
        problems.append(f"{user}'s policies allow more than the registry needs: {', '.join(extra)}")
    if missing:
        problems.append(f"{user}'s policies do not allow {', '.join(missing)}, which the registry needs")
    if problems:
        return check(ExitStatus.WARNING, "; ".join(problems), details)
    scope = f" on {bucket}" if bucket else ""
    return check(ExitStatus.OK, f"{user} is allowed exactly the registry's bucket actions{scope}", details)


# ----------------------------------------------------------------------------- verdicts: bucket, database, stack


def bucket_check(bucket: str | None, source: str, versioning: str | None = None, exists: bool = True) -> Check:
    """The package bucket: reachable with the operator's credentials, versioning enabled
    (the deployment guide's advice: a deleted or overwritten package object can be recovered)."""
    details: dict[str, Any] = {"bucket": bucket, "source": source, "versioning": versioning}
    if not bucket:
        return Check(
            Kind.BUCKET,
            "",
            ExitStatus.UNKNOWN,
            "no package bucket known: no PACKAGE_BUCKET_NAME in the env file, and no stack bucket",
            details,
        )

    def check(status: ExitStatus, summary: str) -> Check:
        details["versioning_enabled"] = versioning == "Enabled"
        return Check(Kind.BUCKET, bucket, status, summary, details)

    if not exists:
        return check(ExitStatus.CRITICAL, f"bucket {bucket} (from the {source}) does not exist")
    if versioning == "Enabled":
        return check(ExitStatus.OK, "versioning enabled")
    state = "is suspended" if versioning == "Suspended" else "was never enabled"
    return check(
        ExitStatus.WARNING,
        f"versioning {state}: deleted or overwritten package objects cannot be recovered "
        f"(aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled)",
    )


def database_check(db: Database | None, manual: list[Snapshot], now: datetime, identifier: str = "") -> Check:
    """The stack's database: automated backups on (retention above 0 days), a latest
    restorable time at most an hour old, available; the newest manual snapshot's age is noted."""
    if db is None:
        return Check(Kind.DATABASE, identifier, ExitStatus.CRITICAL, f"DB instance {identifier} does not exist", {})
    restorable_age = _age(now, db.latest_restorable)
    newest = max((s for s in manual if s.created), key=lambda s: s.created or now, default=None)
    newest_age = _age(now, newest.created) if newest else None
    details: dict[str, Any] = {
        "db_instance": db.identifier,
        "status": db.status,
        "backup_retention_days": db.retention_days,
        "latest_restorable_time": _iso(db.latest_restorable),
        "latest_restorable_age_seconds": restorable_age,
        "manual_snapshots": len(manual),
        "newest_manual_snapshot": newest.identifier if newest else None,
        "newest_manual_snapshot_time": _iso(newest.created) if newest else None,
        "newest_manual_snapshot_age_seconds": newest_age,
    }
    problems: list[tuple[ExitStatus, str]] = []
    if db.status != "available":
        broken = db.status in BROKEN_DB_STATES
        problems.append((ExitStatus.CRITICAL if broken else ExitStatus.WARNING, f"the database is {db.status}"))
    if db.retention_days <= 0:
        problems.append((ExitStatus.WARNING, "automated backups are off (backup retention 0 days)"))
    elif restorable_age is None:
        problems.append((ExitStatus.WARNING, "RDS gives no latest restorable time"))
    elif restorable_age > RESTORABLE_LAG.total_seconds():
        problems.append((ExitStatus.WARNING, f"the latest restorable time is {duration(restorable_age)} old"))
    note = "no manual snapshot"
    if newest:
        note = f"newest manual snapshot {newest.identifier}, {duration(newest_age or 0)} old"
    if problems:
        return Check(
            Kind.DATABASE,
            db.identifier,
            worst(s for s, _ in problems),
            "; ".join(t for _, t in problems) + f"; {note}",
            details,
        )
    summary = f"backups kept {db.retention_days} days, restorable to {duration(restorable_age or 0)} ago; {note}"
    return Check(Kind.DATABASE, db.identifier, ExitStatus.OK, summary, details)


def stack_check(name: str, status: str | None) -> Check:
    """The stack's status: a failed, rolled-back or deleted stack is CRITICAL."""
    details: dict[str, Any] = {"stack": name, "stack_status": status}
    if status is None:
        details["status_ok"] = False
        return Check(Kind.STACK, name, ExitStatus.CRITICAL, f"stack {name} does not exist", details)
    bad = status.endswith("_FAILED") or "ROLLBACK" in status or status.startswith("DELETE_")
    details["status_ok"] = not bad
    if bad:
        return Check(Kind.STACK, name, ExitStatus.CRITICAL, f"stack {name} is {status}", details)
    return Check(Kind.STACK, name, ExitStatus.OK, status, details)


def stack_of_user(user: str | None) -> str | None:
    """The stack that CloudFormation named a RegistryUser after (``<stack>-RegistryUser-<random>``)."""
    match = STACK_OF_USER.fullmatch(user or "")
    return match.group("stack") if match else None


def valid_bucket(name: str | None) -> str | None:
    """A bucket name read from the host, if it is one S3 would accept (else None)."""
    return name if name and BUCKET_NAME.fullmatch(name) and ".." not in name else None


# ----------------------------------------------------------------------------- I/O


class Denied(QuiltError):
    """AWS refused a call for want of a permission; the message names the IAM action."""

    status = ExitStatus.UNKNOWN

    def __init__(self, action: str) -> None:
        super().__init__(f"needs {action}")
        self.action = action


class CallFailed(QuiltError):
    """An AWS call failed otherwise; ``code`` is AWS's error code (None: no answer)."""

    status = ExitStatus.UNKNOWN

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    def means(self, *codes: str, message: str = "") -> bool:
        """Whether AWS answered one of ``codes`` (and, if given, a message holding ``message``)."""
        return self.code in codes and message.lower() in str(self).lower()


@dataclass(frozen=True)
class AwsOptions:
    """What ``health --aws`` was told: the IAM user, the stack of -H hosts, AWS profile and region."""

    iam_user: str | None = None
    stack: str | None = None
    profile: str | None = None
    region: str | None = None
    max_age_days: float = 90.0
    #: quilt.iam_user ("" = none).
    settings_user: str = ""
    #: quilt.known_users (the hosts' bindings; "" = none looked at).
    bindings: str = ""


@dataclass
class StackFacts:
    """DescribeStacks and DescribeStackResources of one stack (status None: no such stack)."""

    name: str
    status: str | None
    resources: dict[str, list[str]] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)


_loader: Any = None
_loader_lock = threading.Lock()


def _session(profile: str | None, region: str | None) -> tuple[Any, str]:
    """A new botocore session (what a boto3 session wraps; one per thread: sessions are not
    thread-safe) and its region. Its data loader is shared: the service models it reads are
    read-only, and parsing them again for every host's session is most of what its clients
    cost. botocore alone, not boto3: this runs beside the SSH round trip, and boto3's own
    imports (s3transfer...) would only add to it."""
    import os

    import botocore.exceptions
    import botocore.loaders
    import botocore.session

    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = botocore.loaders.create_loader(os.environ.get("AWS_DATA_PATH"))
    core = botocore.session.get_session()
    core.register_component("data_loader", _loader)
    try:
        if profile:
            core.set_config_variable("profile", profile)
        if region:
            core.set_config_variable("region", region)
        found = core.get_config_variable("region")  # reads the profile now: an unknown one is one line
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(f"AWS profile {profile!r} not found") from None
    return core, str(found or "us-east-1")


class Calls:
    """AWS calls named by their IAM action (``iam:ListAccessKeys``), on one session's clients."""

    def __init__(self, profile: str | None, region: str | None) -> None:
        import botocore.config

        self.session, self.region = _session(profile, region)
        self.config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10
        )
        self.clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self.clients:
            self.clients[service] = self.session.create_client(service, region_name=self.region, config=self.config)
        return self.clients[service]

    def __call__(self, action: str, **kwargs: Any) -> Any:
        import botocore.exceptions
        from botocore import xform_name

        from .keys import describe_error, error_code

        service, operation = action.split(":", 1)
        try:
            return getattr(self.client(service), xform_name(operation))(**kwargs)
        except botocore.exceptions.ClientError as e:
            code = error_code(e)
            if code in DENIED:
                raise Denied(action) from None
            raise CallFailed(describe_error(action, e), code) from None
        except botocore.exceptions.BotoCoreError as e:
            raise CallFailed(describe_error(action, e)) from None


class AwsLook:
    """One host's AWS checks. Made by `AwsSide.start`; `add_to` finishes them."""

    def __init__(
        self, host: str, stack: str | None, options: AwsOptions, where: tuple[str, frozenset[str]] | None = None
    ) -> None:
        self.host = host
        self.stack = stack
        self.options = options
        #: The host as the binding file names it, and the addresses connected to (`identity.where`).
        self.where = where or (host, frozenset())
        self.given_user = options.iam_user or options.settings_user or None
        self.calls: Calls | None = None
        self.ready: Future[None] | None = None
        self.fan: ThreadPoolExecutor | None = None
        self._memo: dict[tuple[str, ...], Future[Any]] = {}
        self._memo_lock = threading.Lock()

    # -- facts, each fetched once (threads asking for one in flight wait for it) ------------

    def _once(self, key: tuple[str, ...], fetch: Callable[[], Any]) -> Any:
        with self._memo_lock:
            future = self._memo.get(key)
            mine = future is None
            if future is None:
                future = self._memo[key] = Future()
        if mine:
            try:
                future.set_result(fetch())
            except BaseException as e:
                future.set_exception(e)
        return future.result()

    def _prefetch(self, fan: ThreadPoolExecutor, *fetches: Callable[[], Any]) -> None:
        """Starts fetches in the background; their answers (or errors) wait in the memo."""
        for fetch in fetches:
            fan.submit(fetch)

    def _call(self, action: str, **kwargs: Any) -> Any:
        assert self.calls is not None
        return self.calls(action, **kwargs)

    def owner(self, key_id: str) -> tuple[str | None, LastUsed]:
        """IAM's owner of a key and when it was last used (None: IAM does not know the key)."""

        def fetch() -> tuple[str | None, LastUsed]:
            try:
                found = self._call("iam:GetAccessKeyLastUsed", AccessKeyId=key_id)
            except CallFailed as e:
                if e.means("NoSuchEntity", "InvalidClientTokenId"):
                    return None, LastUsed()
                raise
            used = found.get("AccessKeyLastUsed") or {}
            return str(found.get("UserName") or "") or None, LastUsed(
                used.get("LastUsedDate"), used.get("ServiceName"), used.get("Region")
            )

        result: tuple[str | None, LastUsed] = self._once(("owner", key_id), fetch)
        return result

    def keys(self, user: str) -> list[Key]:
        def fetch() -> list[Key]:
            listed = self._call("iam:ListAccessKeys", UserName=user)["AccessKeyMetadata"]
            return [Key(k["AccessKeyId"], k["Status"], k.get("CreateDate")) for k in listed]

        result: list[Key] = self._once(("keys", user), fetch)
        return result

    def inline_policies(self, user: str) -> list[tuple[str, Any]]:
        def fetch() -> list[tuple[str, Any]]:
            found: list[tuple[str, Any]] = []
            for name in self._call("iam:ListUserPolicies", UserName=user).get("PolicyNames", []):
                document = self._call("iam:GetUserPolicy", UserName=user, PolicyName=name)["PolicyDocument"]
                found.append((name, document))
            return found

        result: list[tuple[str, Any]] = self._once(("inline", user), fetch)
        return result

    def attached_policies(self, user: str) -> list[tuple[str, Any]]:
        def fetch() -> list[tuple[str, Any]]:
            found: list[tuple[str, Any]] = []
            attached = self._call("iam:ListAttachedUserPolicies", UserName=user).get("AttachedPolicies", [])
            for policy in attached:
                arn = policy["PolicyArn"]
                version = self._call("iam:GetPolicy", PolicyArn=arn)["Policy"]["DefaultVersionId"]
                document = self._call("iam:GetPolicyVersion", PolicyArn=arn, VersionId=version)["PolicyVersion"]
                found.append((policy.get("PolicyName") or arn, document["Document"]))
            return found

        result: list[tuple[str, Any]] = self._once(("attached", user), fetch)
        return result

    def policies(self, user: str) -> list[tuple[str, Any]]:
        """The user's inline policies and the default versions of its attached (managed) ones."""
        return self.inline_policies(user) + self.attached_policies(user)

    def stack_status(self, name: str) -> str | None:
        def fetch() -> str | None:
            try:
                stacks = self._call("cloudformation:DescribeStacks", StackName=name).get("Stacks", [])
            except CallFailed as e:
                if e.means("ValidationError", message="does not exist"):
                    return None
                raise
            return str(stacks[0]["StackStatus"]) if stacks else None

        result: str | None = self._once(("stack", name), fetch)
        return result

    def stack_resources(self, name: str) -> StackFacts:
        """The stack's resources (status None: no such stack)."""

        def fetch() -> StackFacts:
            try:
                listed = self._call("cloudformation:DescribeStackResources", StackName=name).get("StackResources", [])
            except CallFailed as e:
                if e.means("ValidationError", message="does not exist"):
                    return StackFacts(name, None)
                raise
            facts = StackFacts(name, "")
            for resource in listed:
                physical = resource.get("PhysicalResourceId")
                if physical:
                    facts.resources.setdefault(resource["ResourceType"], []).append(physical)
                    if resource.get("LogicalResourceId") == USER_RESOURCE:
                        facts.users.append(physical)
            return facts

        result: StackFacts = self._once(("resources", name), fetch)
        return result

    def stack_facts(self, name: str) -> StackFacts:
        status = self.stack_status(name)
        if status is None:
            return StackFacts(name, None)
        found = self.stack_resources(name)
        return StackFacts(name, status, found.resources, found.users)

    def db_instance(self, identifier: str) -> Database | None:
        def fetch() -> Database | None:
            try:
                found = self._call("rds:DescribeDBInstances", DBInstanceIdentifier=identifier)["DBInstances"]
            except CallFailed as e:
                if e.means("DBInstanceNotFound", "DBInstanceNotFoundFault"):
                    return None
                raise
            db = found[0]
            return Database(
                identifier,
                str(db.get("DBInstanceStatus")),
                int(db.get("BackupRetentionPeriod") or 0),
                db.get("LatestRestorableTime"),
                db.get("AllocatedStorage"),
            )

        result: Database | None = self._once(("db", identifier), fetch)
        return result

    def manual_snapshots(self, identifier: str) -> list[Snapshot]:
        def fetch() -> list[Snapshot]:
            from . import backups

            try:
                listed = self._call("rds:DescribeDBSnapshots", DBInstanceIdentifier=identifier, SnapshotType="manual")
            except CallFailed as e:
                if e.means("DBInstanceNotFound", "DBInstanceNotFoundFault"):
                    return []
                raise
            return [backups.snapshot_of(s) for s in listed.get("DBSnapshots", [])]

        result: list[Snapshot] = self._once(("snapshots", identifier), fetch)
        return result

    def database(self, identifier: str) -> tuple[Database | None, list[Snapshot]]:
        db = self.db_instance(identifier)
        return db, (self.manual_snapshots(identifier) if db else [])

    def versioning(self, bucket: str) -> tuple[bool, str | None]:
        def fetch() -> tuple[bool, str | None]:
            try:
                answer = self._call("s3:GetBucketVersioning", Bucket=bucket)
            except CallFailed as e:
                if e.means("NoSuchBucket"):
                    return False, None
                raise
            return True, answer.get("Status")

        result: tuple[bool, str | None] = self._once(("versioning", bucket), fetch)
        return result

    # -- the two phases ------------------------------------------------------------------

    def _user_side(self, fan: ThreadPoolExecutor, user: str) -> None:
        self._prefetch(fan, lambda: self.keys(user), lambda: self.inline_policies(user))
        self._prefetch(fan, lambda: self.attached_policies(user))

    def _stack_side(self, fan: ThreadPoolExecutor, name: str) -> None:
        """The stack's status and resources at once, then its database and snapshots at once."""

        def database() -> None:
            for db in self.stack_resources(name).resources.get(DB_TYPE, [])[:1]:
                self._prefetch(
                    fan, functools.partial(self.db_instance, db), functools.partial(self.manual_snapshots, db)
                )

        self._prefetch(fan, lambda: self.stack_status(name), database)

    def prepare(self) -> None:
        """Before the host is read: the session and clients, and the facts that need nothing from the host."""
        self.calls = Calls(self.options.profile, self.options.region)
        for service in ("iam", "s3", "cloudformation", "rds"):
            self.calls.client(service)
        self.fan = ThreadPoolExecutor(max_workers=4, thread_name_prefix="quilt-aws-call")
        if self.given_user:
            self._user_side(self.fan, self.given_user)
        if self.stack:
            self._stack_side(self.fan, self.stack)

    def close(self) -> None:
        if self.fan is not None:
            self.fan.shutdown(wait=False, cancel_futures=True)

    def add_to(self, report: HostHealth, now: datetime | None = None) -> HostHealth:
        """The host's report with the AWS checks added (the key ID and bucket from its env file check)."""
        env = report.find(Kind.ENV_FILE)
        details = env.details if env else {}
        checks = self.checks(details.get("key_id"), valid_bucket(details.get("bucket")), now)
        return HostHealth(report.host, [*report.checks, *checks])

    def checks(self, key_id: str | None, env_bucket: str | None, now: datetime | None = None) -> list[Check]:
        """Every AWS check of the host (waits for `prepare` first)."""
        if self.ready is not None:
            self.ready.result()
        if self.calls is None or self.fan is None:
            self.prepare()
        assert self.fan is not None
        try:
            return self._checks(self.fan, key_id, env_bucket, now or datetime.now(timezone.utc))
        finally:
            self.close()

    def _checks(  # noqa: C901, PLR0912 - one pass over IAM, the stack and S3 in order; to split with the identity rework (issue 18.1)
        self, fan: ThreadPoolExecutor, key_id: str | None, env_bucket: str | None, now: datetime
    ) -> list[Check]:
        out: list[Check] = []
        if env_bucket:
            self._prefetch(fan, lambda: self.versioning(env_bucket))
        # The IAM user: --iam-user or quilt.iam_user, else the owner of the host's key, else the stack's.
        owner, last_used, owner_problem = None, None, None
        if key_id:
            try:
                owner, last_used = self.owner(key_id)
            except QuiltError as e:
                owner_problem = e
        user, refusal = self._established(key_id, owner, owner_problem)
        if refusal is not None:
            out.append(refusal)
        stack = self.stack or stack_of_user(user)
        if user and not self.given_user:
            self._user_side(fan, user)
        if stack and not self.stack:
            self._stack_side(fan, stack)
        stack_problem: QuiltError | None = None
        facts: StackFacts | None = None
        if stack:
            try:
                facts = self.stack_facts(stack)
            except QuiltError as e:
                stack_problem = e
        if stack and not self.stack and facts is not None and (facts.status is None or user not in facts.users):
            stack, facts = None, None  # the user's name only looked like a stack's RegistryUser
        if user is None and facts and facts.users:
            user = facts.users[0]

        if refusal is None:  # else the refusal is the key's check
            out.append(self._key_check(key_id, user, owner, last_used, owner_problem, now))
        out.append(self._guarded(Kind.AWS_KEY, "other", lambda: self._other_keys(key_id, user, now)))
        bucket, source = env_bucket, "env file"
        if not bucket and facts and len(facts.resources.get(BUCKET_TYPE, [])) == 1:
            bucket, source = facts.resources[BUCKET_TYPE][0], f"stack {stack}"
        out.append(
            self._guarded(Kind.AWS_POLICY, "", lambda: policy_check(user, self.policies(user) if user else [], bucket))
        )
        out.append(self._guarded(Kind.BUCKET, bucket or "", lambda: self._bucket(bucket, source)))
        if not stack:
            out.append(
                Check(
                    Kind.STACK,
                    "",
                    ExitStatus.UNKNOWN,
                    "no CloudFormation stack known for this host: give --stack NAME",
                    {"iam_user": user},
                )
            )
            return out
        if stack_problem is not None or facts is None:
            out.append(self._problem(Kind.STACK, stack, stack_problem))
            return out
        out.append(stack_check(stack, facts.status))
        if facts.status is None:
            return out
        databases = facts.resources.get(DB_TYPE, [])
        if not databases:
            out.append(Check(Kind.DATABASE, "", ExitStatus.UNKNOWN, f"stack {stack} has no {DB_TYPE} resource", {}))
        for identifier in databases:
            out.append(self._guarded(Kind.DATABASE, identifier, self._database(identifier, now)))
        return out

    def _established(
        self, key_id: str | None, owner: str | None, owner_problem: QuiltError | None
    ) -> tuple[str | None, Check | None]:
        """The IAM user as rotate-keys establishes it (`quilt_ops.identity`): the host's key
        is only a claim. A key of another user is CRITICAL; an unproven one, UNKNOWN."""
        from . import identity, known_users

        stack_user = None
        if self.stack:
            try:
                users = self.stack_facts(self.stack).users
                stack_user = users[0] if users else None
            except QuiltError:
                stack_user = None
        host, addresses = self.where
        bound = known_users.lookup(self.options.bindings, host) if self.options.bindings else None
        found = None
        if owner and not self.given_user and not self.stack and bound is None:
            found = self._owner_stack(owner)
        facts = identity.Facts(
            host=host,
            addresses=addresses,
            given_user=self.given_user,
            given_source="--iam-user" if self.options.iam_user else "quilt.iam_user",
            stack=self.stack,
            stack_user=stack_user,
            bound=bound,
            bindings=self.options.bindings,
            key_id=key_id,
            key_owner=owner,
            owner_problem=str(owner_problem or ""),
            owner_stack=found,
            rebind=True,
        )
        if owner is None and not self.given_user and not stack_user and bound is None:
            return None, None  # nothing claims a user: the key's own check says what IAM knows
        try:
            return identity.establish(facts).user, None
        except identity.Refused as e:
            status = ExitStatus.CRITICAL if isinstance(e, identity.ForeignKey) else ExitStatus.UNKNOWN
            summary = str(e).removesuffix("; nothing was changed")
            return None, Check(Kind.AWS_KEY, "owner", status, summary, {"key_id": key_id, "key_owner": owner})

    def _owner_stack(self, owner: str) -> Any:
        """The stack named in the owner's name, as CloudFormation tells it (see `identity.owner_stack`)."""
        from .identity import HOST_OUTPUT, OwnerStack

        name = stack_of_user(owner)
        if name is None:
            return None
        try:
            facts = self.stack_facts(name)
            stacks = self._call("cloudformation:DescribeStacks", StackName=name).get("Stacks", [])
        except QuiltError as e:
            return OwnerStack(name, None, problem=str(e))
        if facts.status is None or owner not in facts.users:
            return OwnerStack(name, facts.users[0] if facts.users else None)
        hosts = {
            str(o["OutputValue"])
            for stack in stacks[:1]
            for o in stack.get("Outputs") or []
            if o.get("OutputKey") == HOST_OUTPUT and o.get("OutputValue")
        }
        return OwnerStack(name, owner, frozenset(hosts))

    def _database(self, identifier: str, now: datetime) -> Callable[[], Check]:
        def build() -> Check:
            db, manual = self.database(identifier)
            return database_check(db, manual, now, identifier)

        return build

    def _key_check(
        self,
        key_id: str | None,
        user: str | None,
        owner: str | None,
        last_used: LastUsed | None,
        problem: QuiltError | None,
        now: datetime,
    ) -> Check:
        if problem is not None and not self.given_user:
            hint = " (or give --iam-user)" if isinstance(problem, Denied) else ""
            return self._problem(Kind.AWS_KEY, "in use", problem, hint)
        if key_id and user is None:
            return key_check(key_id, None, None, last_used, now, self.options.max_age_days)

        def build() -> Check:
            keys = self.keys(user) if user else None
            return key_check(key_id, user, keys, last_used, now, self.options.max_age_days, owner)

        return self._guarded(Kind.AWS_KEY, "in use", build)

    def _other_keys(self, key_id: str | None, user: str | None, now: datetime) -> Check:
        if user is None:
            return other_key_check(key_id, None, None, now, {})
        keys = self.keys(user)
        used: dict[str, LastUsed] = {}
        for key in keys:
            if key.id != key_id and key.status == "Active":
                try:
                    used[key.id] = self.owner(key.id)[1]
                except QuiltError:
                    pass  # when it was last used is only a note
        return other_key_check(key_id, user, keys, now, used)

    def _bucket(self, bucket: str | None, source: str) -> Check:
        if not bucket:
            return bucket_check(None, source)
        exists, versioning = self.versioning(bucket)
        return bucket_check(bucket, source, versioning, exists)

    def _guarded(self, kind: Kind, subject: str, build: Callable[[], Check]) -> Check:
        try:
            return build()
        except QuiltError as e:
            return self._problem(kind, subject, e)

    @staticmethod
    def _problem(kind: Kind, subject: str, problem: QuiltError | None, hint: str = "") -> Check:
        if isinstance(problem, Denied):
            return _denied(kind, subject, problem.action, hint)
        return Check(kind, subject, ExitStatus.UNKNOWN, str(problem or "not looked at"), {})


class AwsSide:
    """Every host's `AwsLook`, each begun in a pool of its own before the host's SSH connection."""

    def __init__(self, options: AwsOptions, parallel: int = 10) -> None:
        self.options = options
        self.pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="quilt-aws")

    def start(self, host: str, stack: str | None, where: tuple[str, frozenset[str]] | None = None) -> AwsLook:
        look = AwsLook(host, stack or self.options.stack, self.options, where)
        look.ready = self.pool.submit(look.prepare)
        return look

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def options(settings: Any, iam_user: Any, stacks: Any, profile: Any, region: Any) -> AwsOptions:
    """``health --aws``'s options, checked before any host is contacted (a bad profile is one line)."""
    if profile:
        _session(str(profile), str(region) if region else None)  # ConfigError on an unknown profile
    return AwsOptions(
        iam_user=str(iam_user) if iam_user else None,
        stack=(list(stacks or []) or [None])[0],
        profile=str(profile) if profile else None,
        region=str(region) if region else None,
        max_age_days=settings.key_max_age_days,
        settings_user=settings.iam_user,
        bindings=settings.known_users_file,
    )


def each(targets: list[Any], options: AwsOptions, parallel: int, collect: Callable[[Any], HostHealth]) -> Any:
    """`quilt_ops.hosts.each` of ``collect`` with every host's AWS checks added, each host's AWS
    work begun before its SSH connection is opened."""
    from . import hosts

    side = AwsSide(options, parallel)
    looks: dict[str, AwsLook] = {}
    try:
        from .identity import where

        looks.update({target.name: side.start(target.name, target.stack, where(target)) for target in targets})
        return hosts.each(targets, lambda target: looks[target.name].add_to(collect(target)), parallel)
    finally:
        side.close()
        for look in looks.values():  # a host that could not be read never finished its look
            look.close()
