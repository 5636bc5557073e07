"""Packaging that checks out (issue 20.4): a LICENSE, an sdist that carries README, CHANGELOG,
LICENSE, examples/ and tests/, every directly imported distribution declared, and what
`python -m build` makes passes `twine check --strict`."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def requirement_name(line: str) -> str:
    name = re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    lines = setup_cfg()["options"]["install_requires"].splitlines()
    return {requirement_name(line) for line in lines if line.strip() and not line.strip().startswith("#")}


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of every absolute import in the package (in functions too)."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"quilt_ops", "__future__"}


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert setup_cfg()["metadata"]["license"].strip() == "Apache-2.0"


def test_every_directly_imported_distribution_is_declared():
    owners = importlib.metadata.packages_distributions()
    needed = set()
    for module in imported_modules(ROOT / "quilt_ops"):
        assert module in owners, f"{module} is imported but installed by no distribution"
        needed.update(requirement_name(name) for name in owners[module])
    missing = needed - declared()
    assert not missing, f"imported but not in install_requires: {sorted(missing)}"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The sdist and the wheel, as `python -m build` makes them (the wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_the_sdist_carries_docs_license_examples_and_tests(built):
    (sdist,) = built.glob("quilt_ops-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for wanted in ("README.md", "CHANGELOG.md", "LICENSE", "setup.cfg", "pyproject.toml",
                   "examples/systemd/quilt-ops-health.service", "examples/systemd/quilt-ops-health.timer",
                   "examples/ssm/quilt-ops-health.json", "tests/unit/test_packaging.py", "tests/conftest.py",
                   "quilt_ops/cli.py"):  # fmt: skip
        assert wanted in names, f"{wanted} is not in {sdist.name}"
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_the_wheel_carries_the_license(built):
    (wheel,) = built.glob("quilt_ops-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert any(name.endswith("LICENSE") for name in names)
    for requirement in ("botocore", "requests", "fabric", "paramiko"):
        assert re.search(rf"^Requires-Dist: {requirement}\b", metadata, re.M), requirement


def test_twine_check_strict(built):
    files = sorted(str(path) for path in built.iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
