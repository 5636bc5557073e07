"""examples/prometheus (alert rules with their promtool unit tests) and examples/grafana (a
dashboard): checked by Prometheus's own tool, and over metrics quilt-ops really serves."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from quilt_ops import account, metrics
from quilt_ops import exporter as ex
from quilt_ops.account import Database, LastUsed, Snapshot
from quilt_ops.checks import Check, HostHealth, Kind
from quilt_ops.rotation_plan import Key
from quilt_ops.status import ExitStatus
from tests import promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "prometheus" / "quilt-rules.yml"
DASHBOARD = ROOT / "examples" / "grafana" / "quilt-dashboard.json"
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def every_kind_of_report() -> HostHealth:
    """A host with every check that gives a metric."""
    db = Database("db1", "available", 7, NOW - timedelta(minutes=5))
    snap = Snapshot("s1", "db1", "available", NOW - timedelta(days=1), "manual", 20, {}, 100)
    return HostHealth(
        "reg1",
        [
            Check(
                Kind.CONTAINER,
                "registry",
                ExitStatus.OK,
                "running",
                {"exists": True, "state": "running", "started_at": "2026-11-28T02:50:21Z", "restart_count": 1},
            ),
            Check(Kind.PROBE, "registry", ExitStatus.OK, "HTTP 200", {"http_code": 200, "seconds": 0.01}),
            account.key_check(
                "AKIA1", "u", [Key("AKIA1", "Active", NOW - timedelta(days=3))], LastUsed(NOW), NOW, 90, "u"
            ),
            account.policy_check("u", [], "b"),
            account.bucket_check("b", "env file", "Enabled"),
            account.database_check(db, [snap], NOW, "db1"),
            account.stack_check("st", "CREATE_COMPLETE"),
        ],
    )


def served_names() -> set[str]:
    """The name of every sample the exporter serves (health's metrics and its own)."""
    snapshot = ex.Snapshot([ex.Outcome(every_kind_of_report(), True, 0.5)], 0.5, 0.0)
    return {sample.name for family in ex.families(snapshot) for sample in family.samples}


def quilt_names(expression: str) -> set[str]:
    return set(re.findall(r"\bquilt_[a-z_]+\b", expression))


def test_the_report_gives_every_metric_of_health():
    names = {sample.name for family in metrics.families([every_kind_of_report()]) for sample in family.samples}
    declared = {family.name for family in metrics.families([])}
    assert {name.removesuffix("_total") for name in names} | {"quilt_build"} >= declared


def test_rules_pass_promtool_check_rules():
    result = promtool.run("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests_pass_promtool_test_rules():
    result = promtool.run("test", "rules", RULES.with_name("quilt-rules.test.yml"), cwd=RULES.parent)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_rules_cover_what_the_issue_asks_and_use_served_metrics():
    text = RULES.read_text()
    alerts = re.findall(r"^\s*- alert: (\w+)$", text, re.M)
    assert alerts == ["QuiltHostDown", "QuiltRegistryCritical", "QuiltKeyOlderThanLimit", "QuiltNoRecentBackup"]
    used = quilt_names(text)
    assert used and used <= served_names(), used - served_names()


def test_dashboard_queries_only_metrics_quilt_ops_serves():
    doc = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in doc["panels"] for target in panel["targets"]]
    expressions.append(doc["templating"]["list"][1]["definition"])
    used = set().union(*map(quilt_names, expressions))
    served = served_names()
    assert used <= served, used - served
    assert served <= used, served - used  # and every metric served is on the dashboard
