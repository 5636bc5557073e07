"""The sandbox's database (registry_sandbox.pg, files/moto_server_sandbox.py): real PostgreSQL servers
behind moto's RDS, reached by the registry stand-in with its own SQLALCHEMY_DATABASE_URI.

Driven directly (boto3 on the host's moto, psql, curl-like probes), except the last test,
which runs quilt-ops' `health` against a registry whose database password no longer matches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from registry_sandbox import pg  # noqa: E402
from registry_sandbox.host import database_endpoint  # noqa: E402

pytestmark = pytest.mark.sandbox


def probe(host: Any) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(host.probes["registry"], timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def env_password(host: Any) -> str:
    return host.state.secrets["DB_PASSWORD"]


def tcp_query(address: str, port: int, password: str, sql: str, user: str = "quilt") -> subprocess.CompletedProcess:
    """psql over TCP with a password, as a client of RDS connects (the password in the environment)."""
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5", "LC_ALL": "C.UTF-8"}
    argv = [pg.program("psql"), "-X", "-A", "-t", "-w", "-h", address, "-p", str(port), "-U", user, "-d", "quilt"]
    return subprocess.run([*argv, "-c", sql], env=env, capture_output=True, text=True, timeout=30)


def rds(host: Any) -> Any:
    import boto3

    return boto3.client("rds", **host.aws_kwargs())


def wait_status(client: Any, identifier: str, want: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = client.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        if found["DBInstanceStatus"] == want:
            return found
        assert time.monotonic() < deadline, f"{identifier} still {found['DBInstanceStatus']} after {timeout}s"
        time.sleep(0.2)


def add_user(host: Any, name: str) -> None:
    host.sql(
        f"INSERT INTO users (name, email, password, is_admin) VALUES "
        f"({pg.quote_literal(name)}, {pg.quote_literal(name + '@example.com')}, 'x', true)"
    )


def count(address: str, port: int, password: str) -> int:
    result = tcp_query(address, port, password, "SELECT count(*) FROM users")
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


# ----------------------------------------------------------------------------- the stack's database


def test_the_env_files_database_is_the_stack_instances_endpoint_and_answers(host):
    found = rds(host).describe_db_instances(DBInstanceIdentifier=host.db_instance)["DBInstances"][0]
    endpoint = found["Endpoint"]
    assert endpoint["Address"].startswith("127.") and endpoint["Address"] != "127.0.0.1" or endpoint["Port"] != 5432
    assert database_endpoint(host.env_text()) == (endpoint["Address"], endpoint["Port"])
    ok = tcp_query(endpoint["Address"], endpoint["Port"], env_password(host), "SELECT 1")
    assert ok.returncode == 0 and ok.stdout.strip() == "1", ok.stderr
    wrong = tcp_query(endpoint["Address"], endpoint["Port"], "not-the-password", "SELECT 1")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_health_check_queries_the_database_with_the_containers_uri(host):
    assert probe(host) == (200, "ok")
    # The master password changed behind the registry's back: its URI's password is wrong now.
    pg.set_password(host.stack_database(), "changed-" + uuid.uuid4().hex)
    status, body = probe(host)
    assert status == 500 and "password authentication failed" in body, body
    assert env_password(host) not in body
    host.reset()
    assert probe(host) == (200, "ok")


def test_db_down_stops_the_server_and_clearing_starts_it(host):
    with host.fault("db-down"):
        assert not host.database_running()
        status, body = probe(host)
        assert status == 500 and "Connection refused" in body, body
        refused = tcp_query(host.aws.db_address, host.aws.db_port, env_password(host), "SELECT 1")
        assert refused.returncode != 0
    assert host.database_running()
    assert probe(host) == (200, "ok")


def test_create_admin_stand_in_inserts_into_the_users_table(host):
    name = f"tbl{uuid.uuid4().hex[:8]}"
    result = host.run(
        "create-admin", "--username", name, "--email", f"{name}@example.com", "--password-stdin",
        input="Tr0ub4dor-and-3\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    row = host.sql(
        f"SELECT email, is_admin, is_active, length(password) FROM users WHERE name = {pg.quote_literal(name)}"
    )
    assert row.strip() == f"{name}@example.com|t|t|64"


# ----------------------------------------------------------------------------- RDS calls on the servers


def test_snapshot_is_a_dump_and_a_restore_is_a_new_server_loaded_from_it(host):
    host.aws_changed()
    client = rds(host)
    add_user(host, f"before{uuid.uuid4().hex[:6]}")
    at_snapshot = count(host.aws.db_address, host.aws.db_port, env_password(host))
    snapshot = f"sbx-{uuid.uuid4().hex[:8]}"
    client.create_db_snapshot(DBInstanceIdentifier=host.db_instance, DBSnapshotIdentifier=snapshot)
    listed = client.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"][0]
    assert listed["Status"] == "available"
    add_user(host, f"after{uuid.uuid4().hex[:6]}")
    target = f"restored-{uuid.uuid4().hex[:6]}"
    made = client.restore_db_instance_from_db_snapshot(DBInstanceIdentifier=target, DBSnapshotIdentifier=snapshot)
    assert made["DBInstance"]["DBInstanceStatus"] == "creating" and "Endpoint" not in made["DBInstance"]
    restored = wait_status(client, target, "available")["Endpoint"]
    source = client.describe_db_instances(DBInstanceIdentifier=host.db_instance)["DBInstances"][0]["Endpoint"]
    assert (restored["Address"], restored["Port"]) != (source["Address"], source["Port"])
    # The restored database is the one of snapshot time, with the snapshot's master password; the source moved on.
    assert count(restored["Address"], restored["Port"], env_password(host)) == at_snapshot
    assert count(source["Address"], source["Port"], env_password(host)) == at_snapshot + 1
    client.delete_db_instance(DBInstanceIdentifier=target, SkipFinalSnapshot=True)
    assert tcp_query(restored["Address"], restored["Port"], env_password(host), "SELECT 1").returncode != 0
    assert not (host.layout.rds / target).exists()


def test_point_in_time_loads_the_newest_dump_before_the_time_and_latest_is_now(host):
    host.aws_changed()
    client = rds(host)
    add_user(host, f"pit{uuid.uuid4().hex[:6]}")
    client.create_db_snapshot(DBInstanceIdentifier=host.db_instance, DBSnapshotIdentifier=f"pit-{uuid.uuid4().hex[:8]}")
    at_dump = count(host.aws.db_address, host.aws.db_port, env_password(host))
    time.sleep(1.1)
    moment = datetime.now(timezone.utc)
    time.sleep(1.1)
    add_user(host, f"pit{uuid.uuid4().hex[:6]}")
    to_time, latest = f"pit-t-{uuid.uuid4().hex[:6]}", f"pit-l-{uuid.uuid4().hex[:6]}"
    client.restore_db_instance_to_point_in_time(
        SourceDBInstanceIdentifier=host.db_instance, TargetDBInstanceIdentifier=to_time, RestoreTime=moment
    )
    client.restore_db_instance_to_point_in_time(
        SourceDBInstanceIdentifier=host.db_instance, TargetDBInstanceIdentifier=latest, UseLatestRestorableTime=True
    )
    at_time = wait_status(client, to_time, "available")["Endpoint"]
    now = wait_status(client, latest, "available")["Endpoint"]
    assert count(at_time["Address"], at_time["Port"], env_password(host)) == at_dump
    assert count(now["Address"], now["Port"], env_password(host)) == at_dump + 1
    host.reset()  # restored instances are deleted with their servers
    assert {Path(i.folder).name for i in host.db_instances()} == {host.db_instance}


def test_master_password_change_applies_after_a_delay_by_alter_role(host):
    host.aws_state(password_reset_seconds=2)
    client = rds(host)
    new = "Rotated-" + uuid.uuid4().hex
    address, port = host.aws.db_address, host.aws.db_port
    client.modify_db_instance(DBInstanceIdentifier=host.db_instance, MasterUserPassword=new, ApplyImmediately=True)
    found = client.describe_db_instances(DBInstanceIdentifier=host.db_instance)["DBInstances"][0]
    assert found["DBInstanceStatus"] == "resetting-master-credentials"
    assert tcp_query(address, port, env_password(host), "SELECT 1").returncode == 0  # not yet applied
    wait_status(client, host.db_instance, "available", timeout=30)
    assert tcp_query(address, port, new, "SELECT 1").returncode == 0
    old = tcp_query(address, port, env_password(host), "SELECT 1")
    assert old.returncode != 0 and "password authentication failed" in old.stderr
    assert probe(host)[0] == 500  # the registry still has the old password in its URI
    host.reset()
    assert tcp_query(address, port, env_password(host), "SELECT 1").returncode == 0
    assert probe(host) == (200, "ok")
    # RDS's record is back too: a restore after the reset logs in with the env file's password
    # (it came up with the rotated one, and a later run's restore tests on this host failed).
    host.aws_changed()
    snapshot = f"sbx-{uuid.uuid4().hex[:8]}"
    client.create_db_snapshot(DBInstanceIdentifier=host.db_instance, DBSnapshotIdentifier=snapshot)
    target = f"restored-{uuid.uuid4().hex[:6]}"
    client.restore_db_instance_from_db_snapshot(DBInstanceIdentifier=target, DBSnapshotIdentifier=snapshot)
    restored = wait_status(client, target, "available")["Endpoint"]
    assert tcp_query(restored["Address"], restored["Port"], env_password(host), "SELECT 1").returncode == 0
    host.reset()


def test_stop_and_start_db_instance_stop_and_start_the_server(host):
    host.aws_changed()
    client = rds(host)
    client.stop_db_instance(DBInstanceIdentifier=host.db_instance)
    assert not host.database_running(host.stack_database())
    client.start_db_instance(DBInstanceIdentifier=host.db_instance)
    assert host.database_running(host.stack_database())
    assert probe(host) == (200, "ok")


# ----------------------------------------------------------------------------- the tool meets it


def test_health_is_critical_when_the_uris_password_is_wrong(host):
    pg.set_password(host.stack_database(), "not-what-the-env-file-says-" + uuid.uuid4().hex[:6])
    result = host.run("health")
    assert result.returncode == 2, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if "probe registry" in x)
    assert "CRITICAL" in line and "500" in line, result.stdout
    for secret in host.env_values():
        assert secret not in result.stdout + result.stderr
    assert os.path.exists(host.env_file)
