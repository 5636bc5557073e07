"""The Prometheus metrics of health: one definition, for the exporter and for ``health``.

`families` turns health results into prometheus_client metric families;
`HealthCollector` serves them from a registry, so that the exporter's
``/metrics``, ``health --format prometheus`` (`text`) and ``health --textfile``
(`write_textfile`, prometheus_client's ``write_to_textfile``: a temp file in the
same folder renamed over the target) all come out of prometheus_client's own
exposition code. Nothing is written by hand and nothing is parsed back.

Names follow Prometheus's conventions and pass ``promtool check metrics``:
base units (seconds), counters end in ``_total``, and points in time are
``..._timestamp_seconds`` (Unix time) rather than ages, so that a textfile read
later does not go stale (``time() - quilt_key_created_timestamp_seconds`` is
the age at query time).

prometheus_client is imported here (and by the exporter) only, so the other
tasks do not pay for it.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .checks import Check, HostHealth, Kind
from .containers import _parse_time

DAY = 86400.0


def checked(report: HostHealth) -> bool:
    """Whether the host was reached and its checks ran (not the verdict on an unreachable host)."""
    return not any(check.kind == Kind.HOST and check.subject == "ssh" for check in report.checks)


def timestamp(value: Any) -> float | None:
    """Unix time of an ISO 8601 / RFC 3339 time as checks record them (Docker's or AWS's), or None."""
    when = _parse_time(value) if isinstance(value, str) else None
    return when.timestamp() if when is not None else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return float(len(value))
    return None


#: Metrics of the AWS side (``health --aws``) from the details of its checks: name, help,
#: the check's kind (and subject, "" for any), how the value comes from the details, and
#: the label naming the check's subject ("" for none).
AWS_METRICS: tuple[tuple[str, str, Kind, str, Callable[[dict[str, Any]], float | None], str], ...] = (
    ("quilt_key_created_timestamp_seconds", "When the access key the host runs with was created (Unix time).",
     Kind.AWS_KEY, "in use", lambda d: timestamp(d.get("created")), ""),
    ("quilt_key_last_used_timestamp_seconds", "When the host's access key was last used (Unix time; absent: never).",
     Kind.AWS_KEY, "in use", lambda d: timestamp(d.get("last_used")), ""),
    ("quilt_key_max_age_seconds", "Age at which the host's key is a WARNING (quilt.key_max_age_days); CRITICAL at "
     "twice it.", Kind.AWS_KEY, "in use", lambda d: _scaled(d.get("max_age_days"), DAY), ""),
    ("quilt_policy_extra_actions", "Actions the IAM user's policies allow beyond the registry's bucket actions.",
     Kind.AWS_POLICY, "", lambda d: _number(d.get("extra")), ""),
    ("quilt_bucket_versioning_enabled", "1 when the package bucket's versioning is enabled.",
     Kind.BUCKET, "", lambda d: _number(d.get("versioning_enabled")), "bucket"),
    ("quilt_db_backup_retention_seconds", "How long the stack's database keeps automated backups (0: off).",
     Kind.DATABASE, "", lambda d: _scaled(d.get("backup_retention_days"), DAY), "db"),
    ("quilt_db_latest_restorable_timestamp_seconds", "The database's latest restorable time (Unix time).",
     Kind.DATABASE, "", lambda d: timestamp(d.get("latest_restorable_time")), "db"),
    ("quilt_db_newest_manual_snapshot_timestamp_seconds",
     "When the database's newest manual snapshot was made (Unix time; absent: none).",
     Kind.DATABASE, "", lambda d: timestamp(d.get("newest_manual_snapshot_time")), "db"),
    ("quilt_stack_status_ok", "1 when the stack is not in a failed, rolled-back or deleted state.",
     Kind.STACK, "", lambda d: _number(d.get("status_ok")), "stack"),
)  # fmt: skip


def _scaled(value: Any, factor: float) -> float | None:
    number = _number(value)
    return None if number is None else number * factor


def families(reports: Iterable[HostHealth], up: Mapping[str, bool] | None = None) -> Iterator[Metric]:
    """Every metric family of these results. ``up``: whether each host was checked (the
    exporter knows); by default, every host whose report is not an unreachable host's."""
    build = InfoMetricFamily("quilt_build", "The quilt-ops that made these metrics.")
    build.add_metric([], {"version": __version__, "python": platform.python_version()})
    yield build
    f_up = GaugeMetricFamily(
        "quilt_up", "1 when the host was reached and checked, 0 when it could not be.", labels=["host"]
    )
    health = GaugeMetricFamily(
        "quilt_health_status", "Worst check per host: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.", labels=["host"]
    )
    status = GaugeMetricFamily(
        "quilt_check_status", "Status of each check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.", labels=["host", "check"]
    )
    probe_seconds = GaugeMetricFamily(
        "quilt_probe_duration_seconds", "Time an HTTP probe took on the host.", labels=["host", "probe"]
    )
    probe_code = GaugeMetricFamily(
        "quilt_probe_http_status", "HTTP status a probe answered (0: no answer).", labels=["host", "probe"]
    )
    started = GaugeMetricFamily(
        "quilt_container_start_timestamp_seconds",
        "When a running container started (Unix time).",
        labels=["host", "container"],
    )
    restarts = CounterMetricFamily(
        "quilt_container_restarts",
        "Docker's restart count of a container (starts again from 0 when it is recreated).",
        labels=["host", "container"],
    )
    aws = [GaugeMetricFamily(name, text, labels=["host", *([by] if by else [])]) for name, text, *_, by in AWS_METRICS]
    for report in reports:
        host = report.host
        f_up.add_metric([host], 1 if (checked(report) if up is None else up.get(host, False)) else 0)
        health.add_metric([host], int(report.status))
        for check in report.checks:
            status.add_metric([host, check.name], int(check.status))
            details = check.details
            if check.kind == Kind.PROBE:
                if details.get("seconds") is not None:
                    probe_seconds.add_metric([host, check.subject], float(details["seconds"]))
                probe_code.add_metric([host, check.subject], float(details.get("http_code") or 0))
            if check.kind == Kind.CONTAINER and details.get("exists"):
                when = timestamp(details.get("started_at")) if details.get("state") == "running" else None
                if when is not None:
                    started.add_metric([host, check.subject], when)
                restarts.add_metric([host, check.subject], float(details.get("restart_count") or 0))
            _aws_samples(aws, host, check)
    yield from (f_up, health, status, probe_seconds, probe_code, started, restarts)
    yield from aws


def _aws_samples(aws: list[GaugeMetricFamily], host: str, check: Check) -> None:
    for family, (_, _, kind, subject, value_of, by) in zip(aws, AWS_METRICS, strict=True):
        if check.kind != kind or (subject and check.subject != subject):
            continue
        value = value_of(check.details)
        if value is not None:
            family.add_metric([host, *([check.subject] if by else [])], value)


class HealthCollector(Collector):
    """A prometheus_client collector of health results: ``results`` is called on each
    collection and returns the reports and, optionally, each host's ``up``."""

    def __init__(self, results: Callable[[], tuple[list[HostHealth], Mapping[str, bool] | None]]) -> None:
        self.results = results

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not collect (the exporter's collection checks every host)

    def collect(self) -> Iterator[Metric]:
        reports, up = self.results()
        yield from families(reports, up)


def registry_of(reports: list[HostHealth]) -> CollectorRegistry:
    """A registry holding these results only."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(lambda: (reports, None)))
    return registry


def text(reports: list[HostHealth]) -> str:
    """The text exposition format (``health --format prometheus``)."""
    return generate_latest(registry_of(reports)).decode()


def write_textfile(path: str, reports: list[HostHealth]) -> None:
    """Writes the metrics for node_exporter's textfile collector: to a temp file in the same
    folder, then renamed over ``path`` (node_exporter never reads half a file).
    Raises OSError when it cannot."""
    write_to_textfile(path, registry_of(reports))
