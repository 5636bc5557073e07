"""RegistryUser's IAM access keys: find the user, list, create, verify, retire.

boto3's own credential chain is used (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``,
instance roles...), plus ``--profile`` and ``--region``. boto3 sessions are not
thread-safe, so every thread (every host of a parallel run) makes its own
`KeyStore` from `session`. A new key's secret lives only in a `NewKey` (whose
repr hides it) on its way to the host's env file; no message here ever holds it.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from . import stopping
from .errors import ConfigError, QuiltError
from .masking import printable
from .rotation_plan import Key

#: Errors a brand-new key meets while IAM is still propagating it: keep trying.
NOT_YET = {
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidToken",
    "ExpiredToken",
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
}
OPERATOR_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "max_attempts": 6}, connect_timeout=5, read_timeout=30
)
#: The verification polls by itself, once a second: no hidden retries.
PROBE_CONFIG = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10)


class AwsError(QuiltError):
    """An AWS call failed; the message names the call and AWS's error code."""


class AwsRefused(AwsError):
    """AWS answered the call's first try with a client error (4xx): the call did nothing. After a
    hidden retry it is a plain `AwsError`: the first try may have been done, its answer lost
    (CreateAccessKey then fails with LimitExceeded, the key made all the same)."""


class VerifyTimeout(QuiltError):
    """The new key was not accepted everywhere within the verification timeout."""


class VerifyRefused(QuiltError):
    """The new key is known to AWS but refused for good (a policy problem): no point waiting."""


@dataclass(frozen=True)
class NewKey:
    """A key just created; ``secret`` never appears in repr, logs or messages."""

    id: str
    secret: str = field(repr=False)
    created: datetime | None = None


def describe_error(operation: str, e: Exception) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        error = e.response.get("Error", {})
        message = str(error.get("Message", ""))[:200]
        return f"{operation} failed: {error.get('Code', 'error')}: {message}".rstrip(": ")
    if isinstance(e, botocore.exceptions.EndpointConnectionError):
        return f"{operation} failed: cannot reach the AWS endpoint"
    if isinstance(e, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        return f"{operation} failed: no AWS credentials (set AWS_PROFILE or use --profile)"
    return f"{operation} failed: {type(e).__name__}"


def refused_at_once(e: Exception) -> bool:
    """Whether ``e`` is AWS's client-error answer (4xx) to the first and only try of a call."""
    if not isinstance(e, botocore.exceptions.ClientError):
        return False
    metadata = e.response.get("ResponseMetadata", {})
    status, retries = metadata.get("HTTPStatusCode"), metadata.get("RetryAttempts")
    return isinstance(status, int) and 400 <= status < 500 and retries == 0


def error_code(e: Exception) -> str | None:
    if isinstance(e, botocore.exceptions.ClientError):
        return str(e.response.get("Error", {}).get("Code"))
    return None


def session(profile: str | None = None, region: str | None = None) -> boto3.Session:
    """A new boto3 session for the operator (one per thread)."""
    try:
        return boto3.Session(profile_name=profile or None, region_name=region or None)
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(f"AWS profile {profile!r} not found") from None


def iam_clock_offset(answer: Any, now: datetime) -> timedelta | None:
    """IAM's clock minus ours, from an answer's HTTP Date (whole seconds, sent before ``now``, the
    time it was read: so up to a second and the answer's way late), or None."""
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}) if isinstance(answer, dict) else {}
    text = headers.get("date") if isinstance(headers, dict) else None
    if not isinstance(text, str):
        return None
    try:
        date = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if date.tzinfo is None:
        return None
    return date - now


class KeyStore:
    """IAM, STS and CloudFormation calls made with the operator's credentials (one thread)."""

    def __init__(self, aws: boto3.Session) -> None:
        self.aws = aws
        self.region = aws.region_name or "us-east-1"
        self._clients: dict[str, Any] = {}
        #: IAM's clock minus ours, as the last ListAccessKeys answer showed it (None: unknown).
        self.clock_offset: timedelta | None = None

    def client(self, name: str) -> Any:
        if name not in self._clients:
            self._clients[name] = self.aws.client(name, region_name=self.region, config=OPERATOR_CONFIG)
        return self._clients[name]

    def call(self, service: str, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client(service), operation)(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise AwsError(describe_error(f"{service.upper()} {operation}", e)) from None

    def operator_arn(self) -> str:
        return str(self.call("sts", "get_caller_identity")["Arn"])

    def user_of_key(self, key_id: str) -> str:
        """The IAM user owning a key (GetAccessKeyLastUsed returns it)."""
        try:
            return str(self.client("iam").get_access_key_last_used(AccessKeyId=key_id)["UserName"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            if error_code(e) in ("NoSuchEntity", "InvalidClientTokenId"):
                raise AwsError(
                    f"the key on the host ({key_id}) is not known to IAM in this account; give --iam-user or --stack"
                ) from None
            if error_code(e) == "AccessDenied":
                raise AwsError(
                    f"not allowed to look up who owns the host's key {key_id} "
                    "(iam:GetAccessKeyLastUsed); give --iam-user or --stack"
                ) from None
            raise AwsError(describe_error("IAM GetAccessKeyLastUsed", e)) from None

    def user_from_stack(self, stack: str) -> str:
        """The physical name of a CloudFormation stack's RegistryUser resource."""
        try:
            resource = self.client("cloudformation").describe_stack_resource(
                StackName=stack, LogicalResourceId="RegistryUser"
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise AwsError(describe_error(f"CloudFormation lookup of stack {stack!r}", e)) from None
        return str(resource["StackResourceDetail"]["PhysicalResourceId"])

    def stack_bucket(self, stack: str) -> str | None:
        """The physical name of a stack's S3 bucket resource (the package bucket), if it has one."""
        resources = self.call("cloudformation", "describe_stack_resources", StackName=stack)["StackResources"]
        buckets = [r["PhysicalResourceId"] for r in resources if r.get("ResourceType") == "AWS::S3::Bucket"]
        return buckets[0] if len(buckets) == 1 else None

    def user_arn(self, user: str) -> str:
        try:
            return str(self.client("iam").get_user(UserName=user)["User"]["Arn"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            if error_code(e) == "NoSuchEntity":
                raise AwsError(f"IAM user {user!r} does not exist") from None
            raise AwsError(describe_error("IAM GetUser", e)) from None

    def keys(self, user: str) -> list[Key]:
        """The user's keys; notes IAM's clock (`clock_offset`) from the answer's Date."""
        answer = self.call("iam", "list_access_keys", UserName=user)
        self.clock_offset = iam_clock_offset(answer, datetime.now(timezone.utc))
        listed = answer["AccessKeyMetadata"]
        return [Key(k["AccessKeyId"], k["Status"], k.get("CreateDate")) for k in listed]

    def create(self, user: str) -> NewKey:
        """Raises `AwsRefused` when IAM said no at once (nothing made), else `AwsError`."""
        try:
            key = self.client("iam").create_access_key(UserName=user)["AccessKey"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            kind = AwsRefused if refused_at_once(e) else AwsError
            raise kind(describe_error("IAM create_access_key", e)) from None
        return NewKey(key["AccessKeyId"], key["SecretAccessKey"], key.get("CreateDate"))

    def deactivate(self, user: str, key_id: str) -> None:
        self._ignore_missing("update_access_key", UserName=user, AccessKeyId=key_id, Status="Inactive")

    def delete(self, user: str, key_id: str) -> None:
        self._ignore_missing("delete_access_key", UserName=user, AccessKeyId=key_id)

    def _ignore_missing(self, operation: str, **kwargs: Any) -> None:
        try:
            getattr(self.client("iam"), operation)(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            if error_code(e) != "NoSuchEntity":
                raise AwsError(describe_error(f"IAM {operation}", e)) from None

    def clients_for(self, key: NewKey) -> tuple[Any, Any]:
        """STS and S3 clients signing with the new key itself."""
        own = boto3.Session(aws_access_key_id=key.id, aws_secret_access_key=key.secret, region_name=self.region)
        return own.client("sts", config=PROBE_CONFIG), own.client("s3", config=PROBE_CONFIG)

    @staticmethod
    def check_with(clients: tuple[Any, Any], user_arn: str, bucket: str | None) -> tuple[str | None, bool]:
        """One verification with the key's own credentials.

        Returns (None, _) when it passed, else (why not, whether waiting can help).
        """
        sts, s3 = clients
        try:
            arn = sts.get_caller_identity()["Arn"]
            if arn != user_arn:
                return f"STS says the key is {printable(str(arn))}, not {user_arn}", False
            if bucket:
                s3.list_objects_v2(Bucket=bucket, MaxKeys=1)
        except botocore.exceptions.ParamValidationError:
            # The bucket name came from the host's env file: waiting cannot make it valid.
            return f"the bucket name {printable(str(bucket), 70)!r} is not a valid S3 bucket name", False
        except botocore.exceptions.ClientError as e:
            code = error_code(e) or "refused"
            if code in NOT_YET or code.startswith("5"):
                return code, True
            where = f"s3://{bucket}" if bucket else "STS"
            return f"{code} on {where} (the key is known but refused: check RegistryUser's policy)", False
        except botocore.exceptions.BotoCoreError as e:
            return type(e).__name__, True
        return None, True

    def verify(
        self,
        key: NewKey,
        user_arn: str,
        bucket: str | None,
        timeout: float,
        on_wait: Callable[[str], None] = lambda text: None,
        needed: int = 3,
        interval: float = 1.0,
    ) -> int:
        """Polls until ``needed`` checks in a row pass; returns how many checks it took.

        One accepted call does not prove that every service accepts the key, so
        a single pass is not enough. Raises `VerifyTimeout` when ``timeout`` runs
        out, `VerifyRefused` at once on an answer waiting cannot change.
        """
        deadline = time.monotonic() + timeout
        clients = self.clients_for(key)
        streak = attempts = 0
        last = "no check yet"
        while True:
            attempts += 1
            started = time.monotonic()
            why_not, transient = self.check_with(clients, user_arn, bucket)
            if why_not is None:
                streak += 1
                if streak >= needed:
                    return attempts
            elif not transient:
                raise VerifyRefused(f"the new key {key.id} was refused: {why_not}")
            else:
                streak, last = 0, why_not
            if time.monotonic() >= deadline:
                raise VerifyTimeout(
                    f"the new key {key.id} was not accepted within {timeout:.0f}s (last answer: {last})"
                )
            on_wait(
                f"verifying {key.id}: {streak}/{needed} checks passed"
                + (f", last refusal {last}" if streak == 0 and why_not else "")
            )
            stopping.sleep(min(interval - (time.monotonic() - started), deadline - time.monotonic()))
