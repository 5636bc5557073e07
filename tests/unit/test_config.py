"""The quilt settings: defaults match the real host; bad values are refused by key."""

import pytest
from invoke.exceptions import Exit

from quilt_ops.config import DEFAULTS, Containers, Settings, defaults
from quilt_ops.errors import ConfigError
from quilt_ops.executor import check_environment
from quilt_ops.status import ExitStatus


def test_defaults_match_the_real_host():
    s = Settings.load({"quilt": DEFAULTS})
    assert s.registry_dir == ""
    assert s.env_file == "env/registry"
    assert s.start_script == "./start.sh"
    assert s.create_admin_script == "./create_admin.sh"
    assert s.containers == Containers("registry", "catalog", "registry-nginx")
    assert s.containers.names == ("registry", "catalog", "registry-nginx")
    assert s.probes == {"registry": "http://localhost:5000/healthcheck", "catalog": "http://localhost:80/"}
    assert s.docker == "auto" and s.sudo == "sudo -n"
    assert s.host_key_policy == "reject"
    assert s.connect_timeout == 10
    assert s.restart_timeout == 120
    assert s.probe_interval == 0.5
    assert s.known_hosts.endswith("/.ssh/known_hosts")
    assert s.stack_user == "ec2-user"
    assert Settings.load({"quilt": {"stack_user": "admin"}}).stack_user == "admin"


def test_defaults_are_declared_once():
    assert defaults()["containers"] == {"registry": "registry", "catalog": "catalog", "nginx": "registry-nginx"}
    loaded, declared = Settings.load({}), Settings()
    assert loaded.containers == declared.containers and loaded.probes == declared.probes
    assert loaded.known_hosts.endswith(declared.known_hosts[1:])


def test_missing_section_means_defaults():
    assert Settings.load({}) == Settings.load({"quilt": DEFAULTS})


@pytest.mark.parametrize(
    "value,expected",
    [
        ({"registry": "qr-app", "catalog": "qr-web", "nginx": "qr-proxy"}, ("qr-app", "qr-web", "qr-proxy")),
        (["qr-app", "qr-web", "qr-proxy"], ("qr-app", "qr-web", "qr-proxy")),
    ],
)
def test_container_roles_as_mapping_or_ordered_list(value, expected):
    settings = Settings.load({"quilt": {"containers": value}})
    assert settings.containers.names == expected
    assert settings.containers.registry == expected[0]
    assert settings.containers.role_of(expected[2]) == "nginx"


@pytest.mark.parametrize(
    "value,expected",
    [
        ("", ""),
        ("~", ""),
        ("~/", ""),
        ("~/quilt", "quilt"),
        ("quilt/", "quilt"),
        ("/opt/quilt", "/opt/quilt"),
        ("deploy/quilt", "deploy/quilt"),
    ],
)
def test_registry_dir_forms(value, expected):
    assert Settings.load({"quilt": {"registry_dir": value}}).registry_dir == expected


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("host_key_policy", "accept-all", "quilt.host_key_policy"),
        ("connect_timeout", "soon", "quilt.connect_timeout"),
        ("connect_timeout", -1, "quilt.connect_timeout"),
        ("connect_timeout", True, "quilt.connect_timeout"),
        ("restart_timeout", [1], "quilt.restart_timeout"),
        ("probe_interval", 0.1, "quilt.probe_interval"),
        ("containers", [], "quilt.containers"),
        ("containers", ["registry", "catalog"], "quilt.containers"),
        ("containers", ["registry", "a b", "c"], "quilt.containers.catalog"),
        ("containers", {"a": 1}, "quilt.containers"),
        ("containers", {"registry": "r", "catalog": "c"}, "quilt.containers"),
        ("containers", {"registry": "-rm", "catalog": "c", "nginx": "n"}, "quilt.containers.registry"),
        ("containers", {"registry": "r", "catalog": "c;reboot", "nginx": "n"}, "quilt.containers.catalog"),
        ("containers", {"registry": "r", "catalog": "r", "nginx": "n"}, "three different"),
        ("containers", "registry", "quilt.containers"),
        ("hosts", "a,b", "quilt.hosts"),
        ("probes", ["http://x"], "quilt.probes"),
        ("probes", {}, "quilt.probes"),
        ("probes", {"registry": "ftp://x/"}, "quilt.probes.registry"),
        ("probes", {"registry": "http://x/'$(reboot)'"}, "quilt.probes.registry"),
        ("probes", {"a b": "http://x/"}, "quilt.probes"),
        ("env_file", "/etc/passwd", "quilt.env_file"),
        ("env_file", "../x", "quilt.env_file"),
        ("env_file", "~/x", "quilt.env_file"),
        ("env_file", 3, "quilt.env_file"),
        ("env_file", "env/\nregistry", "quilt.env_file"),
        ("start_script", "", "quilt.start_script"),
        ("start_script", "../start.sh", "quilt.start_script"),
        ("registry_dir", 5, "quilt.registry_dir"),
        ("registry_dir", "~root/x", "quilt.registry_dir"),
        ("docker", "", "quilt.docker"),
        ("sudo", 1, "quilt.sudo"),
        ("hosts", [1], "quilt.hosts"),
        ("exporter_targets", "a,b", "quilt.exporter_targets"),
        ("exporter_targets", ["a", ""], "quilt.exporter_targets"),
        ("stack_user", "", "quilt.stack_user"),
        ("stack_user", "root@evil", "quilt.stack_user"),
        ("stack_user", "-oProxyCommand=x", "quilt.stack_user"),
    ],
)
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
    assert "FABRIC_QUILT_CONNECT_TIMEOUT" in e.value.message and e.value.code == ExitStatus.USAGE
    with pytest.raises(Exit) as e:
        check_environment({"FABRIC_QUILT_CONTAINERS": "a,b"})
    assert "fabric.yaml" in e.value.message


@pytest.mark.parametrize("host", ["ec2-user@", "", "a b", "h:0", "h:99999", "h:port", "u@:22", "-oProxyCommand=x"])
def test_bad_host_strings(host):
    from quilt_ops.errors import HostError
    from quilt_ops.ssh import check_host_string

    with pytest.raises(HostError, match="invalid host"):
        check_host_string(host)


@pytest.mark.parametrize("host", ["sandbox", "ec2-user@10.0.0.1", "h:2222", "[::1]", "u@h:22"])
def test_good_host_strings(host):
    from quilt_ops.ssh import check_host_string

    check_host_string(host)
