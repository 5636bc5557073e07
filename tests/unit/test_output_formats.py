"""Monitoring formats of `health`: Nagios status line with perfdata, Prometheus exposition."""

import json
import os
import platform
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from quilt_ops import __version__, cli, metrics, output
from quilt_ops.checks import Check, HostHealth, Kind, unreachable
from quilt_ops.status import ExitStatus
from tests import promtool

STARTED = datetime(2026, 11, 28, 2, 50, 21, 286041, tzinfo=timezone.utc)


def report(host="reg1", probe_status=ExitStatus.OK):
    return HostHealth(
        host,
        [
            Check(
                Kind.CONTAINER,
                "registry",
                ExitStatus.OK,
                "running 5m",
                {
                    "exists": True,
                    "state": "running",
                    "started_at": "2026-11-28T02:50:21.286041472Z",
                    "uptime_seconds": 300,
                    "restart_count": 2,
                    "role": "registry",
                },
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


def samples(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_prometheus_exposition():
    text = output.health_prometheus([report(), report("b", ExitStatus.CRITICAL), unreachable("c", "refused")])
    assert text.endswith("\n")
    assert "# TYPE quilt_health_status gauge" in text
    got = samples(text)
    assert got[("quilt_health_status", (("host", "reg1"),))] == 0
    assert got[("quilt_health_status", (("host", "b"),))] == 2
    assert got[("quilt_health_status", (("host", "c"),))] == 3
    assert got[("quilt_check_status", (("check", "probe registry"), ("host", "b")))] == 2
    assert got[("quilt_probe_duration_seconds", (("host", "reg1"), ("probe", "registry")))] == 0.004
    container = (("container", "registry"), ("host", "reg1"))
    assert got[("quilt_container_start_timestamp_seconds", container)] == STARTED.timestamp()
    assert got[("quilt_container_restarts_total", container)] == 2
    assert "# TYPE quilt_container_restarts_total counter" in text
    assert [got[("quilt_up", (("host", h),))] for h in ("reg1", "b", "c")] == [1, 1, 0]
    assert got[("quilt_build_info", (("python", platform.python_version()), ("version", __version__)))] == 1
    promtool.check_metrics(text)


def test_prometheus_names_no_longer_used():
    """The names of 0.3.0 and before (CHANGELOG lists each rename) are gone."""
    text = output.health_prometheus([report()])
    for old in ("quilt_container_uptime_seconds", "quilt_container_restart_count"):
        assert old not in text


def test_prometheus_label_values_are_escaped():
    odd = HostHealth('a"b\\c\nd', [Check(Kind.PROBE, 'x"y', ExitStatus.OK, "ok", {"http_code": 200})])
    text = output.health_prometheus([odd])
    assert got_host(text) == {'a"b\\c\nd'}
    promtool.check_metrics(text)


def got_host(text):
    return {dict(labels)["host"] for (name, labels) in samples(text) if name == "quilt_health_status"}


def test_textfile_is_written_whole_and_renamed(tmp_path):
    path = tmp_path / "quilt.prom"
    path.write_text("old\n")
    metrics.write_textfile(str(path), [report()])
    assert path.read_text() == output.health_prometheus([report()])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quilt.prom"]  # no temp file left


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


# ----------------------------------------------------------------------------- health --textfile


@pytest.fixture
def config(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith(("FABRIC_QUILT_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    path = tmp_path / "fabric.yaml"
    path.write_text(f'{{"quilt": {{"known_hosts": "{tmp_path / "known_hosts"}"}}}}')
    return str(path)


def test_health_textfile_holds_the_metrics_of_an_unreachable_host(config, tmp_path, capsys):
    textfile = tmp_path / "quilt.prom"
    code = cli.run(["-f", config, "-H", "127.0.0.1:1", "health", "--format", "nagios", "--textfile", str(textfile)])
    assert code == ExitStatus.UNKNOWN
    got = samples(textfile.read_text())
    assert got[("quilt_up", (("host", "127.0.0.1:1"),))] == 0
    assert got[("quilt_health_status", (("host", "127.0.0.1:1"),))] == 3
    assert capsys.readouterr().out.startswith("QUILT UNKNOWN - ")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("quilt.prom")) == ["quilt.prom"]
    promtool.check_metrics(textfile.read_text())


@pytest.mark.parametrize(
    "name, words",
    [
        ("quilt.txt", "--textfile must name a .prom file"),
        ("missing/quilt.prom", "--textfile: no folder"),
    ],
)
def test_health_textfile_bad_paths_are_one_error_line_before_any_host(config, tmp_path, capsys, name, words):
    code = cli.run(["-f", config, "-H", "127.0.0.1:1", "health", "--textfile", str(tmp_path / name)])
    assert code == ExitStatus.UNKNOWN
    captured = capsys.readouterr()
    assert captured.out == "" and words in captured.err and "Traceback" not in captured.err
