"""Issue 9.1: a host shaped differently from the defaults: other container names, another
registry folder, another login user, other ports. Every task works from its config alone.

The host (`registry_sandbox.NAMES`) is brought up for this module and removed after it.
"""

import json
import time

import pytest

from tests.tool import AwsSide, Operator, create_admin_args, one_error

pytestmark = [pytest.mark.sandbox, pytest.mark.xdist_group("sandbox-self")]


@pytest.fixture(scope="module")
def other_host():
    from registry_sandbox import NAMES, Sandbox

    sandbox = Sandbox()
    host = sandbox.up(NAMES)
    yield host
    sandbox.down(NAMES.name)


@pytest.fixture
def other(other_host):
    yield Operator(other_host)
    other_host.reset()


def test_the_other_host_differs_from_the_defaults(other):
    assert other.login_user != "ec2-user"
    assert set(other.containers.values()).isdisjoint({"registry", "catalog", "registry-nginx"})
    assert str(other.registry_dir) != str(other.home)
    assert other.ports["registry"] != 5000


def test_health_uses_the_configured_names(other):
    result = other.run("health", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    names = {c["subject"] for c in json.loads(result.stdout)["hosts"][0]["checks"] if c["kind"] == "container"}
    assert names == set(other.containers.values())


def test_restart_recreates_the_configured_containers(other):
    before = other.container_states()
    result = other.run("restart")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " ".join(other.containers[r] for r in ("registry", "catalog", "nginx")) in result.stdout
    assert set(other.container_states()) >= set(other.containers.values())
    assert before


def test_point_9_1_rotation_checks_the_configured_registry_container(other):
    aws = AwsSide(other.host)
    old = other.host_key_id()
    result = other.run("rotate-keys")
    assert result.returncode == 0, result.stdout + result.stderr
    new = other.host_key_id()
    assert new != old and aws.keys() == {new: "Active"}
    assert other.registry_runs_with(new)
    assert f"require health and the new key in {other.containers['registry']}" in result.stdout


def test_point_9_1_a_missing_registry_container_is_named_never_a_wrong_key(other):
    aws = AwsSide(other.host)
    keys = aws.keys()
    other.docker("rm", "-f", other.containers["registry"])
    result = other.run("rotate-keys")
    assert result.returncode == 4
    line = one_error(result)
    assert other.containers["registry"] in line and "missing" in line
    assert "runs with" not in line
    assert aws.keys() == keys


def test_create_admin_runs_in_the_configured_registry_container(other):
    name = f"other{int(time.time() * 1000) % 10_000_000}"
    result = other.run(
        *create_admin_args(name),
        input="Tr0ub4dor-and-3\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert name in other.users_file.read_text()


def test_list_form_of_containers_still_works(other, tmp_path):
    names = other.containers
    config = other.write_config(tmp_path / "c.yaml", containers=[names["registry"], names["catalog"], names["nginx"]])
    assert other.run("health", config=config).returncode == 0
