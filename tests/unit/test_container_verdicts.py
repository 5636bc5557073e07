"""Given this `docker inspect` output, expect these verdicts (pyinfra-style, data-driven).

The fixtures in fixtures/docker_inspect/ were taken from a real Docker Engine
(the sandbox's) in each state, with Config.Env values replaced by
``fixture-secret-*`` markers that must never reach any rendering.
"""

import json
from datetime import datetime
from pathlib import Path

import pytest

from quilt_ops import containers, output, sh
from quilt_ops.checks import HostHealth
from quilt_ops.config import Containers
from quilt_ops.status import ExitStatus, label

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures" / "docker_inspect").glob("*.json"))


def load(path):
    case = json.loads(path.read_text())
    case["now"] = datetime.fromisoformat(case["now"].replace("Z", "+00:00"))
    return case


def as_docker_prints(case):
    """What plain `docker inspect NAMES 2>&1` prints."""
    text = json.dumps(case["inspect"], indent=4) if case["inspect"] else "[]"
    return text + ("\n" + case["stderr"] if case["stderr"] else "")


def as_template_prints(case):
    """What quilt-ops' own `docker inspect --format` template prints: a subset a line."""
    lines = []
    for doc in case["inspect"]:
        subset = {
            "Name": doc["Name"],
            "State": doc["State"],
            "RestartCount": doc["RestartCount"],
            "Created": doc["Created"],
            "Image": doc["Image"],
            "Config": {"Image": doc["Config"]["Image"]},
        }
        lines.append(json.dumps(subset))
    if case["stderr"]:
        lines.append(case["stderr"])
    return "\n".join(lines)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
@pytest.mark.parametrize("shape", [as_docker_prints, as_template_prints], ids=["docker", "template"])
def test_verdicts(path, shape):
    case = load(path)
    result = containers.parse_inspect(shape(case))
    verdicts = containers.verdicts(result, Containers(*case["containers"]), case["now"])
    assert {v.subject: label(v.status) for v in verdicts} == case["expect"], case["description"]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_no_env_value_reaches_any_rendering(path):
    case = load(path)
    result = containers.parse_inspect(as_docker_prints(case))
    report = HostHealth("h", containers.verdicts(result, Containers(*case["containers"]), case["now"]))
    rendered = output.health_table([report]) + output.health_json([report])
    assert "fixture-secret" not in rendered


def test_template_never_asks_for_the_environment():
    assert "Env" not in containers.INSPECT_TEMPLATE
    assert containers.inspect_command(["registry", "catalog"]).count("docker_inspect") == 1
    assert sh.load(containers.SCRIPT).count('qdocker inspect --format "$di_template"') == 1


def test_names_are_quoted_and_after_the_end_of_options():
    command = containers.inspect_command(["-rm", "a'b"])
    assert command.endswith(" -rm 'a'\"'\"'b'")
    assert 'qdocker inspect --format "$di_template" -- "$@" 2>&1' in sh.load(containers.SCRIPT)


def test_running_verdict_reports_uptime_restarts_and_image():
    case = load(next(p for p in FIXTURES if p.stem == "all_running_no_healthcheck"))
    result = containers.parse_inspect(as_docker_prints(case))
    v = containers.verdicts(result, Containers(*case["containers"]), case["now"])[0]
    assert v.details["image"] == "quiltdata/registry"
    assert v.details["restart_count"] == 0
    assert v.details["uptime_seconds"] > 0
    assert "running" in v.summary and "quiltdata/registry" in v.summary


def test_exited_verdict_names_exit_code():
    case = load(next(p for p in FIXTURES if p.stem == "catalog_exited"))
    result = containers.parse_inspect(as_docker_prints(case))
    catalog = containers.verdicts(result, Containers(*case["containers"]), case["now"])[1]
    assert catalog.status == ExitStatus.CRITICAL
    assert "exit code 3" in catalog.summary


@pytest.mark.parametrize("seconds,text", [(5, "5s"), (75, "1m15s"), (3725, "1h02m"), (90000, "1d01h")])
def test_duration(seconds, text):
    assert containers.duration(seconds) == text


def test_verdicts_carry_the_role_for_other_names():
    names = Containers(registry="qr-app", catalog="qr-web", nginx="qr-proxy")
    result = containers.parse_inspect('{"Name":"/qr-app","State":{"Status":"running"}}')
    verdicts = containers.verdicts(result, names)
    assert [(v.subject, v.details["role"]) for v in verdicts] == [
        ("qr-app", "registry"),
        ("qr-web", "catalog"),
        ("qr-proxy", "nginx"),
    ]
    assert verdicts[1].summary.startswith("missing")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("AKIAIOSFODNN7EXAMPLE\n", "AKIAIOSFODNN7EXAMPLE"),
        ("", None),
        ("AKIA$(reboot)\n", None),
        ("short\n", None),
    ],
)
def test_key_in_effect_is_checked(text, expected):
    assert containers.parse_key_in_effect(text) == expected


def test_key_in_effect_takes_the_last_entry_and_prints_only_that_value():
    command = containers.key_in_effect_command("registry", "AWS_ACCESS_KEY_ID")
    assert command == "docker_key_in_effect registry AWS_ACCESS_KEY_ID"
    with pytest.raises(ValueError):
        containers.key_in_effect_command("registry", "A;B")


@pytest.mark.parametrize(
    "entries,expected",
    [
        (["A=1", "AWS_ACCESS_KEY_ID=AKIAFIRST", "B=2", "AWS_ACCESS_KEY_ID=AKIALAST"], "AKIALAST\n"),
        (["AWS_ACCESS_KEY_IDX=AKIANOT", "XAWS_ACCESS_KEY_ID=AKIANOT"], ""),
        (["AWS_ACCESS_KEY_ID="], "\n"),
        ([], ""),
    ],
)
def test_key_in_effect_on_the_host_takes_the_last_entry_of_that_name_only(entries, expected):
    """sh/docker.sh run with sh, docker's answer faked: only the value of that one name leaves."""
    import shlex
    import subprocess

    script = "\n".join(
        [
            "say() { printf '@@ %s\\n' \"$*\"; }",
            f"qdocker() {{ printf '%s\\n' {' '.join(shlex.quote(e) for e in entries)}; }}",
            sh.load(containers.KEY_SCRIPT),
            containers.key_in_effect_command("registry", "AWS_ACCESS_KEY_ID"),
        ]
    )
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.stdout == "@@ key-in-effect\n" + expected, result
