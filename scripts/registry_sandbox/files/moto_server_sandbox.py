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
  db-instance      {"db_instance_identifier", "latest_restorable_time", "master_password"}:
                   a database whose latest restorable time lags (moto always says
                   "now"; null puts moto's own answer back); the master password
                   RDS holds for it (snapshots carry it to restored instances)
  snapshot-seconds {"seconds"}: new manual DB snapshots stay "creating" that long
                   (moto makes them "available" at once)
  rds-settings     {"password_reset_seconds"}: how long a new master password takes
                   to apply (status "resetting-master-credentials"; default 3)

With ``--rds-dir DIR``, moto's RDS is tied to real PostgreSQL servers
(``registry_sandbox.pg``): every postgres DB instance moto holds (made by
CloudFormation, CreateDBInstance or a restore) gets its own server, in
``DIR/<instance id>``, answering at the instance's Endpoint (a loopback address,
port 5432 when free there). The instance is "creating", without an Endpoint,
until its server accepts connections. CreateDBSnapshot (and the automated
snapshot of a new instance) takes a pg_dump; RestoreDBInstanceFromDBSnapshot
loads the snapshot's dump into the new instance's server;
RestoreDBInstanceToPointInTime loads the newest dump of the source taken at or
before RestoreTime (UseLatestRestorableTime: a dump taken now);
ModifyDBInstance(MasterUserPassword) runs ALTER ROLE after a delay, the instance
"resetting-master-credentials" meanwhile; Stop/StartDBInstance stop and start
the server; DeleteDBInstance removes it. This is done here, in moto's process,
rather than in the AWS proxy, because it is moto's model that answers
DescribeDBInstances: the state and the Endpoint the tool reads come from it.

Times are ISO 8601 in UTC. Every answer is JSON: ``{"ok": true}`` or
``{"error": "..."}`` with status 400. Nothing else of moto is changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moto.cloudformation.models import cloudformation_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iam.models import iam_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.rds.exceptions import RDSClientError
from moto.rds.models import DBInstance, DBSnapshot, RDSBackend, rds_backends
from werkzeug.serving import run_simple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
from registry_sandbox import pg  # noqa: E402

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
    with _lock:
        dumping = _snapshot_jobs.get(self.__dict__.get("_db_snapshot_identifier", ""))
    if dumping == "failed":
        return "failed"
    if dumping == "dumping":
        return "creating"
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


# ----------------------------------------------------------------------------- RDS on real PostgreSQL servers

log = logging.getLogger("moto_server_sandbox")
#: The folder of the instances' servers and dumps (None: moto's RDS as it is).
_rds_dir: list[Path | None] = [None]
#: instance id -> (address, port): the instances this process gave a server.
_endpoints: dict[str, tuple[str, int]] = {}
#: instance id -> its server, once it accepts connections.
_ready: dict[str, pg.Instance] = {}
#: instance id -> master password changes not yet applied.
_resets: dict[str, int] = {}
#: snapshot id -> "dumping" | "failed" | "done".
_snapshot_jobs: dict[str, str] = {}
#: Every dump taken: {"instance", "time" (epoch), "path", "snapshot", "master_user", "master_password", "db_name"}.
_dumps: list[dict[str, Any]] = []
_settings: dict[str, float] = {"password_reset_seconds": 3.0}
#: The dump a restore running in this thread loads into the instance it creates.
_restoring = threading.local()
WAIT_READY = 120.0


def _managed(identifier: str) -> bool:
    with _lock:
        return identifier in _endpoints


def _dump_path(name: str) -> Path:
    assert _rds_dir[0] is not None
    folder = _rds_dir[0] / "dumps"
    folder.mkdir(mode=0o700, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return folder / f"{safe}-{time.time_ns()}.dump"


def _take_dump(identifier: str, master_password: str, snapshot: str = "") -> dict[str, Any]:
    """A pg_dump of the instance's database now (PgError when its server does not answer)."""
    with _lock:
        instance = _ready.get(identifier)
    if instance is None or not pg.running(Path(instance.folder)):
        raise pg.PgError(f"the database server of {identifier} is not running")
    taken = time.time()
    path = _dump_path(snapshot or identifier)
    pg.dump(instance, path)
    record = {
        "instance": identifier,
        "time": taken,
        "path": str(path),
        "snapshot": snapshot,
        "master_user": instance.master_user,
        "master_password": master_password,
        "db_name": instance.db_name,
    }
    with _lock:
        _dumps.append(record)
    return record


def _password_of(database: DBInstance) -> str:
    return str(database.__dict__.get("_master_user_password") or "")


def _bring_up(database: DBInstance, address: str, port: int, source: dict[str, Any] | None) -> None:
    """The new instance's server (loaded from ``source``'s dump), then "available"."""
    identifier = database.db_instance_identifier
    assert _rds_dir[0] is not None
    try:
        if source:
            master_user, password, db_name = source["master_user"], source["master_password"], source["db_name"]
            database.__dict__["_master_user_password"] = password
        else:
            master_user = database.master_username or "postgres"
            password, db_name = _password_of(database), database.db_name or "postgres"
        instance = pg.create(
            _rds_dir[0] / identifier,
            address,
            port,
            master_user,
            password,
            db_name,
            dump=Path(source["path"]) if source else None,
        )
        with _lock:
            _ready[identifier] = instance
        database.status = "available"
    except Exception as e:  # noqa: BLE001 - a failed instance, as RDS reports it
        log.error(f"sandbox: the database server of {identifier} did not come up: {e}")
        database.status = "failed"


_moto_create_instance = RDSBackend.create_db_instance


def _create_db_instance(self: RDSBackend, db_kwargs: dict[str, Any]) -> DBInstance:
    database = _moto_create_instance(self, db_kwargs)
    if _rds_dir[0] is None or not str(database.engine).startswith("postgres"):
        return database
    source = getattr(_restoring, "source", None)
    with _lock:
        taken = set(_endpoints.values())
    address, port = pg.choose_endpoint(taken)
    with _lock:
        _endpoints[database.db_instance_identifier] = (address, port)
    database.port = port
    database.status = "creating"
    threading.Thread(target=_bring_up, args=(database, address, port, source), daemon=True).start()
    return database


RDSBackend.create_db_instance = _create_db_instance  # type: ignore[method-assign]

_moto_endpoint = DBInstance.endpoint
_moto_address = DBInstance.address


def _endpoint(self: DBInstance) -> dict[str, Any] | None:
    with _lock:
        known = _endpoints.get(self.db_instance_identifier)
        ready = self.db_instance_identifier in _ready
    if known is None:
        return _moto_endpoint.fget(self)  # type: ignore[attr-defined]
    return {"Address": known[0], "Port": known[1]} if ready else None


def _address(self: DBInstance) -> str:
    with _lock:
        known = _endpoints.get(self.db_instance_identifier)
    return known[0] if known else _moto_address.fget(self)  # type: ignore[attr-defined]


DBInstance.endpoint = property(_endpoint)  # type: ignore[assignment,method-assign]
DBInstance.address = property(_address)  # type: ignore[assignment,method-assign]


def _dump_for_snapshot(identifier: str, snapshot_id: str, password: str) -> None:
    """Waits (WAIT_READY at most) for a new instance's server, then dumps it for the snapshot."""
    deadline = time.monotonic() + WAIT_READY
    state = "failed"
    try:
        while time.monotonic() < deadline:
            with _lock:
                ready = identifier in _ready
                alive = identifier in _endpoints
            if ready or not alive:
                break
            time.sleep(0.1)
        _take_dump(identifier, password, snapshot_id)
        state = "done"
    except Exception as e:  # noqa: BLE001
        log.error(f"sandbox: snapshot {snapshot_id} of {identifier}: {e}")
    with _lock:
        _snapshot_jobs[snapshot_id] = state


_moto_create_snapshot = RDSBackend.create_db_snapshot


def _create_db_snapshot(
    self: RDSBackend, db_instance_identifier: str, db_snapshot_identifier: str, *args: Any, **kw: Any
) -> DBSnapshot:
    snapshot = _moto_create_snapshot(self, db_instance_identifier, db_snapshot_identifier, *args, **kw)
    if not _managed(db_instance_identifier):
        return snapshot
    password = _password_of(self.databases[db_instance_identifier])
    key = snapshot.db_snapshot_identifier  # moto keeps it in lower case, as RDS does
    with _lock:
        ready = db_instance_identifier in _ready
        _snapshot_jobs[key] = "dumping"
    if not ready:  # the automated snapshot of an instance still being made
        threading.Thread(target=_dump_for_snapshot, args=(db_instance_identifier, key, password), daemon=True).start()
        return snapshot
    try:
        _take_dump(db_instance_identifier, password, key)
        state = "done"
    except pg.PgError as e:
        log.error(f"sandbox: snapshot {key} of {db_instance_identifier}: {e}")
        state = "failed"
    with _lock:
        _snapshot_jobs[key] = state
    return snapshot


RDSBackend.create_db_snapshot = _create_db_snapshot  # type: ignore[method-assign]

_moto_delete_snapshot = RDSBackend.delete_db_snapshot


def _delete_db_snapshot(self: RDSBackend, db_snapshot_identifier: str) -> DBSnapshot:
    snapshot = _moto_delete_snapshot(self, db_snapshot_identifier)
    key = snapshot.db_snapshot_identifier
    with _lock:
        _snapshot_jobs.pop(key, None)
        gone = [d for d in _dumps if d["snapshot"] == key]
        _dumps[:] = [d for d in _dumps if d["snapshot"] != key]
    for record in gone:
        Path(record["path"]).unlink(missing_ok=True)
    return snapshot


RDSBackend.delete_db_snapshot = _delete_db_snapshot  # type: ignore[method-assign]


def _snapshot_dump(snapshot_id: str) -> dict[str, Any] | None:
    with _lock:
        state = _snapshot_jobs.get(snapshot_id)
        found = [d for d in _dumps if d["snapshot"] == snapshot_id]
    if state == "dumping":
        raise RDSClientError("InvalidDBSnapshotState", f"Snapshot {snapshot_id} is not available (still creating).")
    if state == "failed":
        raise RDSClientError("InvalidDBSnapshotState", f"Snapshot {snapshot_id} failed; it cannot be restored.")
    return found[-1] if found else None


_moto_restore_snapshot = RDSBackend.restore_db_instance_from_db_snapshot


def _restore_from_snapshot(self: RDSBackend, from_snapshot_id: str, overrides: dict[str, Any]) -> DBInstance:
    name = from_snapshot_id.split(":snapshot:", 1)[-1] if from_snapshot_id.startswith("arn:") else from_snapshot_id
    _restoring.source = _snapshot_dump(name.lower()) if _rds_dir[0] is not None else None
    try:
        return _moto_restore_snapshot(self, from_snapshot_id, overrides)
    finally:
        _restoring.source = None


RDSBackend.restore_db_instance_from_db_snapshot = _restore_from_snapshot  # type: ignore[method-assign]


def _param(overrides: dict[str, Any], snake: str, camel: str) -> Any:
    return overrides.get(snake, overrides.get(camel))


_moto_restore_pitr = RDSBackend.restore_db_instance_to_point_in_time


def _restore_to_point_in_time(
    self: RDSBackend, source_db_identifier: str, target_db_identifier: str, overrides: dict[str, Any]
) -> DBInstance:
    source: dict[str, Any] | None = None
    if _rds_dir[0] is not None and _managed(source_db_identifier):
        database = self.databases.get(source_db_identifier)
        if database is not None and not database.backup_retention_period:
            raise RDSClientError(
                "InvalidDBInstanceState", f"Automated backups are not enabled for {source_db_identifier}."
            )
        if target_db_identifier in self.databases:
            return _moto_restore_pitr(self, source_db_identifier, target_db_identifier, overrides)  # moto refuses
        latest = _param(overrides, "use_latest_restorable_time", "UseLatestRestorableTime")
        when = _param(overrides, "restore_time", "RestoreTime")
        if latest in (True, "true", "True") or not when:
            try:
                source = _take_dump(source_db_identifier, _password_of(database) if database else "")
            except pg.PgError:
                source = None
            if source is None:
                with _lock:
                    found = [d for d in _dumps if d["instance"] == source_db_identifier]
                source = found[-1] if found else None
        else:
            moment = when if isinstance(when, datetime) else _naive_utc(str(when))
            if moment.tzinfo is not None:
                moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
            epoch = moment.replace(tzinfo=timezone.utc).timestamp()
            with _lock:
                found = [d for d in _dumps if d["instance"] == source_db_identifier and d["time"] <= epoch]
            if not found:
                raise RDSClientError(
                    "InvalidRestoreFault", f"No backup of {source_db_identifier} at or before {moment.isoformat()}Z."
                )
            source = max(found, key=lambda d: d["time"])
    # moto would copy these onto the new instance's model: they are a request's, not the instance's.
    overrides = {
        k: v
        for k, v in overrides.items()
        if k not in ("restore_time", "RestoreTime", "use_latest_restorable_time", "UseLatestRestorableTime")
    }
    _restoring.source = source
    try:
        return _moto_restore_pitr(self, source_db_identifier, target_db_identifier, overrides)
    finally:
        _restoring.source = None


RDSBackend.restore_db_instance_to_point_in_time = _restore_to_point_in_time  # type: ignore[method-assign]


def _apply_password(database: DBInstance, identifier: str, password: str) -> None:
    time.sleep(_settings["password_reset_seconds"])
    try:
        with _lock:
            instance = _ready.get(identifier)
        if instance is None:
            raise pg.PgError("no server")
        pg.set_password(instance, password)
    except pg.PgError as e:
        log.error(f"sandbox: the new master password of {identifier} was not applied: {e}")
    with _lock:
        _resets[identifier] -= 1
        last = _resets[identifier] == 0
    if last and database.status == "resetting-master-credentials":
        database.status = "available"


_moto_modify = RDSBackend.modify_db_instance


def _modify_db_instance(self: RDSBackend, db_instance_identifier: str, db_kwargs: dict[str, Any]) -> DBInstance:
    password = _param(db_kwargs, "master_user_password", "MasterUserPassword")
    database = _moto_modify(self, db_instance_identifier, db_kwargs)
    identifier = database.db_instance_identifier
    if password and _managed(identifier):
        with _lock:
            _resets[identifier] = _resets.get(identifier, 0) + 1
        database.status = "resetting-master-credentials"
        threading.Thread(target=_apply_password, args=(database, identifier, str(password)), daemon=True).start()
    return database


RDSBackend.modify_db_instance = _modify_db_instance  # type: ignore[method-assign]

_moto_stop = RDSBackend.stop_db_instance
_moto_start = RDSBackend.start_db_instance
_moto_delete = RDSBackend.delete_db_instance


def _stop_db_instance(self: RDSBackend, db_instance_identifier: str, *args: Any, **kw: Any) -> DBInstance:
    database = _moto_stop(self, db_instance_identifier, *args, **kw)
    if _managed(db_instance_identifier) and _rds_dir[0] is not None:
        pg.stop(_rds_dir[0] / db_instance_identifier)
    return database


def _start_db_instance(self: RDSBackend, db_instance_identifier: str) -> DBInstance:
    if _managed(db_instance_identifier) and _rds_dir[0] is not None:
        database = self.describe_db_instances(db_instance_identifier)[0]
        if database.status == "stopped":
            try:
                pg.start(_rds_dir[0] / db_instance_identifier)
            except pg.PgError as e:
                raise RDSClientError("InvalidDBInstanceState", f"{db_instance_identifier} did not start: {e}") from None
    return _moto_start(self, db_instance_identifier)


def _delete_db_instance(self: RDSBackend, db_instance_identifier: str, *args: Any, **kw: Any) -> DBInstance:
    database = _moto_delete(self, db_instance_identifier, *args, **kw)
    if _managed(db_instance_identifier) and _rds_dir[0] is not None:
        with _lock:
            _ready.pop(db_instance_identifier, None)
            _endpoints.pop(db_instance_identifier, None)
        pg.remove(_rds_dir[0] / db_instance_identifier)
    return database


RDSBackend.stop_db_instance = _stop_db_instance  # type: ignore[method-assign]
RDSBackend.start_db_instance = _start_db_instance  # type: ignore[method-assign]
RDSBackend.delete_db_instance = _delete_db_instance  # type: ignore[method-assign]


def _clean_rds_dir(folder: Path) -> None:
    """Stops the servers a previous moto left and empties the folder (its instances died with it)."""
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    for child in folder.iterdir():
        if child.is_dir() and (child / "data").exists():
            pg.stop(child)
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def _stop_servers() -> None:
    if _rds_dir[0] is None:
        return
    with _lock:
        folders = [Path(i.folder) for i in _ready.values()]
    for folder in folders:
        pg.stop(folder)


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
    if body.get("master_password"):
        # What RDS holds as the master password (snapshots carry it to restored instances);
        # the server's role itself is the caller's to set (pg.set_password).
        rds_backends[DEFAULT_ACCOUNT_ID][REGION].databases[identifier].master_user_password = body["master_password"]
    if "latest_restorable_time" not in body:
        return
    with _lock:
        if body.get("latest_restorable_time"):
            _restorable[identifier] = _naive_utc(body["latest_restorable_time"])
        else:
            _restorable.pop(identifier, None)


def snapshot_seconds(body: dict[str, Any]) -> None:
    _snapshot_seconds[0] = max(0.0, float(body["seconds"]))


def rds_settings(body: dict[str, Any]) -> None:
    if "password_reset_seconds" in body:
        _settings["password_reset_seconds"] = max(0.0, float(body["password_reset_seconds"]))


ROUTES = {
    "access-key": access_key,
    "stack-status": stack_status,
    "db-instance": db_instance,
    "snapshot-seconds": snapshot_seconds,
    "rds-settings": rds_settings,
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
    parser.add_argument("--rds-dir", help="tie RDS to real PostgreSQL servers, kept in this folder")
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.rds_dir:
        _rds_dir[0] = folder = Path(args.rds_dir)
        _clean_rds_dir(folder)

    def stop(*_: Any) -> None:
        _stop_servers()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, SandboxApi(app), threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
