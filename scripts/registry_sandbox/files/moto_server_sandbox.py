"""moto's server, plus a small sandbox API for states that moto's own API cannot reach.

    python moto_server_sandbox.py -H 127.0.0.1 -p PORT

Runs moto's own WSGI application exactly as ``moto_server`` does (same dispatcher,
threaded werkzeug server), and answers ``POST /sandbox-api/<name>`` (JSON body)
itself, by changing moto's in-memory models directly. moto has no API for these,
and AWS reaches them only with time or by failing:

  access-key       {"access_key_id", "create_date"}: an old key (IAM sets CreateDate
                   when the key is made; moto has no way to make an old one)
  stack-status     {"stack_name", "status"}: a stack in a failed or rolled-back
                   state (moto's CloudFormation never fails)
  db-instance      {"db_instance_identifier", "latest_restorable_time"}: a database
                   whose latest restorable time lags (moto always says "now");
                   null puts moto's own answer back
  snapshot-seconds {"seconds"}: new manual DB snapshots stay "creating" that long
                   (moto makes them "available" at once)

Times are ISO 8601 in UTC. Every answer is JSON: ``{"ok": true}`` or
``{"error": "..."}`` with status 400. Nothing else of moto is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

from moto.cloudformation.models import cloudformation_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iam.models import iam_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.rds.models import DBInstance, DBSnapshot, rds_backends
from werkzeug.serving import run_simple

REGION = "us-east-1"
PREFIX = "/sandbox-api/"

_lock = threading.Lock()
#: db instance id -> the latest restorable time to report instead of moto's "now".
_restorable: dict[str, datetime] = {}
#: how long new manual snapshots stay "creating".
_snapshot_seconds = [0.0]


def _naive_utc(text: str) -> datetime:
    """moto keeps naive UTC datetimes."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


# ----------------------------------------------------------------------------- moto's models, patched

_moto_restorable = DBInstance.latest_restorable_time


def _latest_restorable_time(self: DBInstance) -> datetime:
    with _lock:
        lagging = _restorable.get(self.db_instance_identifier)
    return lagging if lagging is not None else _moto_restorable.fget(self)  # type: ignore[attr-defined]


DBInstance.latest_restorable_time = property(_latest_restorable_time)  # type: ignore[assignment,method-assign]


def _snapshot_status(self: DBSnapshot) -> str:
    until = self.__dict__.get("_sandbox_creating_until", 0.0)
    if time.time() < until:
        return "creating"
    return str(self.__dict__.get("_sandbox_status", "available"))


def _set_snapshot_status(self: DBSnapshot, value: str) -> None:
    first = "_sandbox_status" not in self.__dict__
    self.__dict__["_sandbox_status"] = value
    if first and getattr(self, "snapshot_type", "") == "manual" and _snapshot_seconds[0] > 0:
        self.__dict__["_sandbox_creating_until"] = time.time() + _snapshot_seconds[0]


def _snapshot_progress(self: DBSnapshot) -> int:
    until = self.__dict__.get("_sandbox_creating_until", 0.0)
    if time.time() >= until or _snapshot_seconds[0] <= 0:
        return 100
    left = (until - time.time()) / _snapshot_seconds[0]
    return max(0, min(99, int(100 * (1 - left))))


DBSnapshot.status = property(_snapshot_status, _set_snapshot_status)  # type: ignore[assignment,method-assign]
DBSnapshot.percent_progress = property(_snapshot_progress)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- the sandbox API


def access_key(body: dict[str, Any]) -> None:
    backend = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    key = backend.access_keys.get(body["access_key_id"])
    if key is None:
        raise LookupError(f"no access key {body['access_key_id']}")
    key.create_date = _naive_utc(body["create_date"])


def stack_status(body: dict[str, Any]) -> None:
    backend = cloudformation_backends[DEFAULT_ACCOUNT_ID][REGION]
    found = [s for s in backend.stacks.values() if s.name == body["stack_name"]]
    if not found:
        raise LookupError(f"no stack {body['stack_name']}")
    found[-1].status = str(body["status"])


def db_instance(body: dict[str, Any]) -> None:
    identifier = body["db_instance_identifier"]
    if identifier not in rds_backends[DEFAULT_ACCOUNT_ID][REGION].databases:
        raise LookupError(f"no DB instance {identifier}")
    with _lock:
        if body.get("latest_restorable_time"):
            _restorable[identifier] = _naive_utc(body["latest_restorable_time"])
        else:
            _restorable.pop(identifier, None)


def snapshot_seconds(body: dict[str, Any]) -> None:
    _snapshot_seconds[0] = max(0.0, float(body["seconds"]))


ROUTES = {
    "access-key": access_key,
    "stack-status": stack_status,
    "db-instance": db_instance,
    "snapshot-seconds": snapshot_seconds,
}


class SandboxApi:
    """moto's application, with ``/sandbox-api/`` answered here."""

    def __init__(self, moto: Any) -> None:
        self.moto = moto

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            return self.moto(environ, start_response)
        route = ROUTES.get(path[len(PREFIX) :])
        status, answer = "200 OK", {"ok": True}
        try:
            if route is None or environ.get("REQUEST_METHOD") != "POST":
                raise LookupError(f"no sandbox API {path}")
            length = int(environ.get("CONTENT_LENGTH") or 0)
            route(json.loads(environ["wsgi.input"].read(length) or b"{}"))
        except (LookupError, KeyError, ValueError, TypeError) as e:
            status, answer = "400 Bad Request", {"error": f"{type(e).__name__}: {e}"}
        data = json.dumps(answer).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, SandboxApi(app), threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
