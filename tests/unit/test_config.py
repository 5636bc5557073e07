"""The quilt settings: defaults match the real host; bad values are refused by key."""

import pytest
from invoke.exceptions import Exit

from quilt_ops.config import DEFAULTS, Settings
from quilt_ops.errors import ConfigError
from quilt_ops.executor import check_environment


def test_defaults_match_the_real_host():
    s = Settings.load({"quilt": DEFAULTS})
    assert s.registry_dir == ""
    assert s.env_file == "env/registry"
    assert s.start_script == "./start.sh"
    assert s.create_admin_script == "./create_admin.sh"
    assert s.containers == ("registry", "catalog", "registry-nginx")
    assert s.probes == {"registry": "http://localhost:5000/healthcheck", "catalog": "http://localhost:80/"}
    assert s.host_key_policy == "reject"
    assert s.connect_timeout == 10
    assert s.restart_timeout == 120
    assert s.known_hosts.endswith("/.ssh/known_hosts")


def test_missing_section_means_defaults():
    assert Settings.load({}) == Settings.load({"quilt": DEFAULTS})


@pytest.mark.parametrize("key,value,words", [
    ("host_key_policy", "accept-all", "quilt.host_key_policy"),
    ("connect_timeout", "soon", "quilt.connect_timeout"),
    ("connect_timeout", -1, "quilt.connect_timeout"),
    ("connect_timeout", True, "quilt.connect_timeout"),
    ("restart_timeout", [1], "quilt.restart_timeout"),
    ("containers", [], "quilt.containers"),
    ("containers", ["registry", "a b"], "quilt.containers"),
    ("containers", {"a": 1}, "quilt.containers"),
    ("containers", "registry", "quilt.containers"),
    ("hosts", "a,b", "quilt.hosts"),
    ("probes", ["http://x"], "quilt.probes"),
    ("probes", {"registry": "ftp://x/"}, "quilt.probes.registry"),
    ("probes", {"a b": "http://x/"}, "quilt.probes"),
    ("env_file", "/etc/passwd", "quilt.env_file"),
    ("env_file", "../x", "quilt.env_file"),
    ("env_file", 3, "quilt.env_file"),
    ("start_script", "", "quilt.start_script"),
    ("registry_dir", 5, "quilt.registry_dir"),
    ("hosts", [1], "quilt.hosts"),
])
def test_bad_values_are_refused_naming_the_key(key, value, words):
    with pytest.raises(ConfigError) as e:
        Settings.load({"quilt": {key: value}})
    message = str(e.value)
    assert words in message
    assert "\n" not in message


def test_numbers_from_strings_are_accepted():
    assert Settings.load({"quilt": {"connect_timeout": "5"}}).connect_timeout == 5


def test_quilt_must_be_a_mapping():
    with pytest.raises(ConfigError, match="'quilt'"):
        Settings.load({"quilt": "yes"})


def test_environment_variables_are_checked_before_invoke_casts_them():
    check_environment({"FABRIC_QUILT_CONNECT_TIMEOUT": "5", "FABRIC_QUILT_ENV_FILE": "env/x"})
    with pytest.raises(Exit) as e:
        check_environment({"FABRIC_QUILT_CONNECT_TIMEOUT": "soon"})
    assert "FABRIC_QUILT_CONNECT_TIMEOUT" in e.value.message and e.value.code == 2
    with pytest.raises(Exit) as e:
        check_environment({"FABRIC_QUILT_CONTAINERS": "a,b"})
    assert "fabric.yaml" in e.value.message


@pytest.mark.parametrize("host", ["ec2-user@", "", "a b", "h:0", "h:99999", "h:port", "u@:22"])
def test_bad_host_strings(host):
    from quilt_ops.errors import HostError
    from quilt_ops.ssh import check_host_string

    with pytest.raises(HostError, match="invalid host"):
        check_host_string(host)


@pytest.mark.parametrize("host", ["sandbox", "ec2-user@10.0.0.1", "h:2222", "[::1]", "u@h:22"])
def test_good_host_strings(host):
    from quilt_ops.ssh import check_host_string

    check_host_string(host)
