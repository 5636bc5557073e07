"""Probe and env-file verdicts, and reading the health script's output."""

import pytest

from quilt_ops import health, shell
from quilt_ops.checks import Kind
from quilt_ops.config import Settings
from quilt_ops.health import EnvFileFacts, ProbeResult
from quilt_ops.status import ExitStatus, label, worst

URL = "http://localhost:5000/healthcheck"


@pytest.mark.parametrize(
    "result,status,words",
    [
        (ProbeResult(0, 200, 0.01, "ok"), "OK", "HTTP 200"),
        (ProbeResult(0, 200, 0.01, "<html>"), "CRITICAL", "not 'ok'"),
        (ProbeResult(0, 502, 0.01, "bad gateway"), "CRITICAL", "HTTP 502"),
        (ProbeResult(7, 0, 0.0), "CRITICAL", "connection refused"),
        (ProbeResult(28, 0, 5.0), "CRITICAL", "timed out"),
    ],
)
def test_registry_probe(result, status, words):
    check = health.probe_check("registry", URL, result)
    assert label(check.status) == status
    assert words in check.summary
    assert check.kind == Kind.PROBE and check.subject == "registry"


def test_catalog_probe_needs_only_2xx():
    check = health.probe_check("catalog", "http://localhost:80/", ProbeResult(0, 200, 0.01, "<html>"))
    assert check.status == ExitStatus.OK


def test_point_9_7_probe_without_curl_is_unknown_naming_curl():
    check = health.probe_check("registry", URL, None, no_curl=True)
    assert check.status == ExitStatus.UNKNOWN and "curl is not installed" in check.summary


KEYS = {"AWS_ACCESS_KEY_ID": 1, "AWS_SECRET_ACCESS_KEY": 1}


@pytest.mark.parametrize(
    "facts,status,words",
    [
        (EnvFileFacts(mode="0600", keys=KEYS), "OK", "key lines present"),
        (EnvFileFacts(mode="0640", keys=KEYS), "WARNING", "chmod 600"),
        (EnvFileFacts(mode="0644", keys=KEYS), "WARNING", "mode 0644"),
        (EnvFileFacts(mode="0600", keys={"AWS_ACCESS_KEY_ID": 1, "AWS_SECRET_KEY": 1}), "WARNING", "AWS_SECRET_KEY"),
        (EnvFileFacts(mode="0600", keys={**KEYS, "AWS_SECRET_KEY": 1}), "OK", "present"),
        (EnvFileFacts(mode="0600", keys={"AWS_SECRET_ACCESS_KEY": 1}), "CRITICAL", "AWS_ACCESS_KEY_ID"),
        (EnvFileFacts(mode="0600", keys={}), "CRITICAL", "no AWS_ACCESS_KEY_ID"),
        (
            EnvFileFacts(mode="0600", keys={"AWS_ACCESS_KEY_ID": 2, "AWS_SECRET_ACCESS_KEY": 1}),
            "WARNING",
            "AWS_ACCESS_KEY_ID on more than one line",
        ),
        (EnvFileFacts(mode="0600", keys=KEYS, export_lines=2), "WARNING", "export"),
        (EnvFileFacts(exists=False, readable=False), "CRITICAL", "missing"),
        (EnvFileFacts(readable=False, mode="0600", owner="root"), "CRITICAL", "not readable"),
        (None, "UNKNOWN", "not checked"),
    ],
)
def test_env_file(facts, status, words):
    check = health.env_file_check("env/registry", facts)
    assert label(check.status) == status
    assert words in check.summary


def sections(m, *lines):
    return shell.parse("\n".join(lines).encode() + b"\n", m)


def test_script_output_is_read_into_a_typed_reading():
    m = "@@quilt-abc"
    output = sections(
        m,
        f"{m} docker sudo",
        f"{m} inspect",
        '{"Name":"/registry","State":{"Status":"running"}}',
        "Error: No such object: catalog",
        f"{m} probe registry 0 200 0.004",
        "> ok",
        f"{m} probe catalog 7 000 0.000",
        "",
        f"{m} envfile",
        "mode 600 ec2-user ec2-user",
        "key AWS_ACCESS_KEY_ID 1",
        "keyid AKIAIOSFODNN7EXAMPLE",
        "exports 0",
        f"{m} end",
    )
    reading = health.read(output)
    assert reading.complete and reading.docker == "sudo"
    assert reading.probes["registry"] == ProbeResult(0, 200, 0.004, "ok")
    assert reading.probes["catalog"].curl_exit == 7
    assert reading.env_file.mode == "0600" and reading.env_file.keys == {"AWS_ACCESS_KEY_ID": 1}
    assert reading.env_file.key_id == "AKIAIOSFODNN7EXAMPLE"
    report = health.evaluate("h", reading, Settings())
    assert label(report.find(Kind.CONTAINER, "catalog").status) == "CRITICAL"
    assert label(report.find(Kind.PROBE, "catalog").status) == "CRITICAL"
    assert report.status == ExitStatus.CRITICAL


def test_point_9_2_docker_that_cannot_be_reached_is_unknown_naming_both_fixes():
    m = "@@m"
    output = sections(
        m,
        f"{m} dockerfail",
        "permission denied on the docker socket; sudo: a password is required",
        f"{m} inspect",
        f"{m} end",
    )
    report = health.evaluate("h", health.read(output), Settings(), probes=False, env_file=False)
    for check in report.of_kind(Kind.CONTAINER):
        assert check.status == ExitStatus.UNKNOWN
        assert "docker group" in check.summary and "sudo" in check.summary


def test_unfinished_script_is_unknown():
    reading = health.read(sections("@@m", "@@m inspect"))
    report = health.evaluate("h", reading, Settings(), probes=False, env_file=False)
    assert report.find(Kind.HOST).status == ExitStatus.UNKNOWN


def test_script_prints_no_values():
    text = health.script(Settings()).text()
    assert "Config.Env" not in text
    assert "sed -n -E 's/^[[:space:]]*(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SECRET_KEY)=.*/key \\1/p'" in text
    assert "keyid" in text and "[A-Z0-9]{16,128}" in text


def test_point_10_12_nothing_runs_when_the_folder_cannot_be_entered():
    text = health.script(Settings.load({"quilt": {"registry_dir": "/no such/dir"}})).text()
    first = text.index("cd -- '/no such/dir'")
    assert "|| { say fail nodir; exit 93; }" in text[first : first + 80]
    assert text.index("qdocker inspect") > first


@pytest.mark.parametrize(
    "statuses,expected",
    [
        ([], ExitStatus.OK),
        ([ExitStatus.OK, ExitStatus.WARNING], ExitStatus.WARNING),
        ([ExitStatus.WARNING, ExitStatus.UNKNOWN], ExitStatus.UNKNOWN),
        ([ExitStatus.UNKNOWN, ExitStatus.CRITICAL], ExitStatus.CRITICAL),
    ],
)
def test_worst_status(statuses, expected):
    assert worst(statuses) == expected
