"""How the sandbox reads a SQLALCHEMY_DATABASE_URI: the stand-in's client (files/image/db.sh, run
with busybox sh as in the image) and the sandbox's own ``database_endpoint``, table-driven."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from registry_sandbox.host import database_endpoint  # noqa: E402

DB_SH = ROOT / "scripts" / "registry_sandbox" / "files" / "image" / "db.sh"

CASES = [
    # uri, (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE)
    ("postgresql://quilt:pw@127.1.2.3:5432/quilt", ("127.1.2.3", "5432", "quilt", "pw", "quilt")),
    ("postgresql://quilt:p%40ss%3Aw%25rd@db.example/quilt", ("db.example", "5432", "quilt", "p@ss:w%rd", "quilt")),
    ("postgresql+psycopg2://u:x%23y%3Fz@h:6543/reg?sslmode=require", ("h", "6543", "u", "x#y?z", "reg")),
    ("postgres://u:back\\slash@h:1/d", ("h", "1", "u", "back\\slash", "d")),
    ("postgresql://u@h/d", ("h", "5432", "u", "", "d")),
]  # fmt: skip


@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox (the image's shell) is not installed")
@pytest.mark.parametrize("uri,expected", CASES)
def test_db_sh_splits_the_uri_as_sqlalchemy_does(uri: str, expected: tuple[str, ...]) -> None:
    script = f'. "{DB_SH}"; db_env && printf "%s\\n" "$PGHOST" "$PGPORT" "$PGUSER" "$PGPASSWORD" "$PGDATABASE"'
    result = subprocess.run(
        ["busybox", "sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", "SQLALCHEMY_DATABASE_URI": uri},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    assert tuple(result.stdout.split("\n")[:5]) == expected


@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox (the image's shell) is not installed")
@pytest.mark.parametrize("uri,error", [("", "KeyError"), ("mysql://u:p@h/d", "Could not parse")])
def test_db_sh_refuses_what_sqlalchemy_would(uri: str, error: str) -> None:
    result = subprocess.run(
        ["busybox", "sh", "-c", f'. "{DB_SH}"; db_env'],
        env={"PATH": "/usr/bin:/bin", "SQLALCHEMY_DATABASE_URI": uri},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 1 and error in result.stderr


@pytest.mark.parametrize(
    "text,expected",
    [
        ("SQLALCHEMY_DATABASE_URI=postgresql://q:pw@127.9.8.7:5432/quilt\n", ("127.9.8.7", 5432)),
        ("SQLALCHEMY_DATABASE_URI=postgresql://q:p@a:1/x\nSQLALCHEMY_DATABASE_URI=postgresql://q:p@b:2/x", ("b", 2)),
        ("SQLALCHEMY_DATABASE_URI=postgresql://q:pw@host.example/quilt\n", ("host.example", 5432)),
        ("OTHER=1\n", ("", 5432)),
    ],
)  # fmt: skip
def test_database_endpoint_of_an_env_file(text: str, expected: tuple[str, int]) -> None:
    assert database_endpoint(text) == expected
