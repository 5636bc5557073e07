"""Probe and env-file verdicts, and parsing of the health script's output."""

import pytest

from quilt_ops import health
from quilt_ops.config import Settings
from quilt_ops.status import ExitStatus, label, worst

URL = "http://localhost:5000/healthcheck"


@pytest.mark.parametrize("result,status,words", [
    ({"curl_exit": 0, "http_code": 200, "body": "ok", "seconds": 0.01}, "OK", "HTTP 200"),
    ({"curl_exit": 0, "http_code": 200, "body": "<html>", "seconds": 0.01}, "CRITICAL", "not 'ok'"),
    ({"curl_exit": 0, "http_code": 502, "body": "bad gateway", "seconds": 0.01}, "CRITICAL", "HTTP 502"),
    ({"curl_exit": 7, "http_code": 0, "body": "", "seconds": 0.0}, "CRITICAL", "connection refused"),
    ({"curl_exit": 28, "http_code": 0, "body": "", "seconds": 5.0}, "CRITICAL", "timed out"),
])
def test_registry_probe(result, status, words):
    check = health.probe_check("registry", URL, result)
    assert label(check.status) == status
    assert words in check.summary


def test_catalog_probe_needs_only_2xx():
    check = health.probe_check("catalog", "http://localhost:80/",
                               {"curl_exit": 0, "http_code": 200, "body": "<html>", "seconds": 0.01})
    assert check.status == ExitStatus.OK


def test_probe_without_curl_is_unknown():
    assert health.probe_check("registry", URL, None, nocurl=True).status == ExitStatus.UNKNOWN


KEYS = ["key AWS_ACCESS_KEY_ID", "key AWS_SECRET_ACCESS_KEY"]


@pytest.mark.parametrize("lines,status,words", [
    (["mode 600 ec2-user ec2-user", *KEYS, "exports 0"], "OK", "key lines present"),
    (["mode 640 ec2-user ec2-user", *KEYS, "exports 0"], "WARNING", "chmod 600"),
    (["mode 644 ec2-user ec2-user", *KEYS, "exports 0"], "WARNING", "mode 0644"),
    (["mode 600 ec2-user ec2-user", "key AWS_ACCESS_KEY_ID", "key AWS_SECRET_KEY", "exports 0"],
     "WARNING", "AWS_SECRET_KEY"),
    (["mode 600 ec2-user ec2-user", "key AWS_ACCESS_KEY_ID", "key AWS_SECRET_ACCESS_KEY", "key AWS_SECRET_KEY",
      "exports 0"], "OK", "present"),
    (["mode 600 ec2-user ec2-user", "key AWS_SECRET_ACCESS_KEY", "exports 0"], "CRITICAL", "AWS_ACCESS_KEY_ID"),
    (["mode 600 ec2-user ec2-user", "exports 0"], "CRITICAL", "no AWS_ACCESS_KEY_ID"),
    (["mode 600 ec2-user ec2-user", *KEYS, "exports 2"], "WARNING", "export"),
    (["missing"], "CRITICAL", "missing"),
    (["unreadable", "mode 600 root root"], "CRITICAL", "not readable"),
])
def test_env_file(lines, status, words):
    check = health.env_file_check("env/registry", lines)
    assert label(check.status) == status
    assert words in check.summary


def test_script_output_is_parsed_into_sections():
    m = "@@quilt-abc"
    out = "\n".join([
        f"{m} inspect", '{"Name":"/registry","State":{"Status":"running"}}', "Error: No such object: catalog",
        f"{m} probe registry 0 200 0.004", "ok",
        f"{m} probe catalog 7 000 0.000", "",
        f"{m} envfile", "mode 600 ec2-user ec2-user", "key AWS_ACCESS_KEY_ID", "exports 0",
        f"{m} end",
    ])
    sections = health.parse(out, m)
    assert sections["complete"]
    assert sections["probes"]["registry"] == {"curl_exit": 0, "http_code": 200, "seconds": 0.004, "body": "ok"}
    assert sections["probes"]["catalog"]["curl_exit"] == 7
    assert sections["envfile"][0] == "mode 600 ec2-user ec2-user"
    report = health.evaluate("h", sections, Settings())
    statuses = {c.name: label(c.status) for c in report.checks}
    assert statuses["container catalog"] == "CRITICAL"
    assert statuses["probe catalog"] == "CRITICAL"
    assert report.status == ExitStatus.CRITICAL


def test_unfinished_script_is_unknown():
    sections = health.parse("@@m inspect\n", "@@m")
    report = health.evaluate("h", sections, Settings(), probes=False, env_file=False)
    assert report.check("host").status == ExitStatus.UNKNOWN


def test_script_prints_no_values():
    text = health.script(Settings(), "@@m")
    assert "grep -oE '^(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SECRET_KEY)='" in text
    assert "cat " not in text and "Config.Env" not in text


@pytest.mark.parametrize("statuses,expected", [
    ([], ExitStatus.OK),
    ([ExitStatus.OK, ExitStatus.WARNING], ExitStatus.WARNING),
    ([ExitStatus.WARNING, ExitStatus.UNKNOWN], ExitStatus.UNKNOWN),
    ([ExitStatus.UNKNOWN, ExitStatus.CRITICAL], ExitStatus.CRITICAL),
])
def test_worst_status(statuses, expected):
    assert worst(statuses) == expected
