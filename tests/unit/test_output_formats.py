"""Monitoring formats of `health`: Nagios status line with perfdata, Prometheus exposition."""

import json
import re

from quilt_ops import output
from quilt_ops.checks import Check, HostHealth, Kind
from quilt_ops.status import ExitStatus


def report(host="reg1", probe_status=ExitStatus.OK):
    return HostHealth(
        host,
        [
            Check(
                Kind.CONTAINER,
                "registry",
                ExitStatus.OK,
                "running 5m",
                {"exists": True, "uptime_seconds": 300, "restart_count": 0, "role": "registry"},
            ),
            Check(
                Kind.PROBE,
                "registry",
                probe_status,
                "HTTP 200",
                {"url": "http://x/healthcheck", "http_code": 200, "seconds": 0.004},
            ),
            Check(Kind.ENV_FILE, "env/registry", ExitStatus.OK, "ok", {}),
        ],
    )


def test_nagios_one_host_ok():
    line = output.health_nagios([report()])
    assert line.startswith("QUILT OK - reg1: 3/3 checks OK | ")
    assert "checks_ok=3;;;0;3" in line and "probe_registry=0.0040s;;;0" in line
    assert "\n" not in line


def test_nagios_names_the_failing_check():
    line = output.health_nagios([report(probe_status=ExitStatus.CRITICAL)])
    assert line.startswith("QUILT CRITICAL - reg1: probe registry: HTTP 200")


def test_nagios_many_hosts():
    line = output.health_nagios([report("a"), report("b", ExitStatus.CRITICAL)])
    assert line.startswith("QUILT CRITICAL - 1/2 hosts OK: b CRITICAL | ")
    assert "a_checks_ok=3" in line and "b_checks_ok=2" in line


def test_prometheus_exposition():
    text = output.health_prometheus([report(), report("b", ExitStatus.CRITICAL)])
    assert text.endswith("\n")
    assert "# TYPE quilt_health_status gauge" in text
    assert 'quilt_health_status{host="reg1"} 0' in text
    assert 'quilt_health_status{host="b"} 2' in text
    assert 'quilt_check_status{host="b",check="probe registry"} 2' in text
    assert 'quilt_probe_duration_seconds{host="reg1",probe="registry"} 0.004' in text
    assert 'quilt_container_uptime_seconds{host="reg1",container="registry"} 300' in text
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-z_]+\{[^}]*\} [0-9.]+$", line), line


def test_json_format_carries_kind_and_subject():
    doc = json.loads(output.health_json([report()]))
    check = doc["hosts"][0]["checks"][1]
    assert doc["status"] == "OK" and check["details"]["http_code"] == 200
    assert (check["kind"], check["subject"], check["name"]) == ("probe", "registry", "probe registry")


def test_nagios_escapes_a_pipe_before_the_perfdata():
    failing = report(probe_status=ExitStatus.CRITICAL)
    failing.checks[1] = Check(
        Kind.PROBE, "registry", ExitStatus.CRITICAL, "no answer from http://x/a|b\nnext", {"url": "http://x/a|b"}
    )
    line = output.health_nagios([failing])
    assert line.count("|") == 1 and "http://x/a%7Cb next" in line.split(" | ")[0]
