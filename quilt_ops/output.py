"""What the operator sees: progress during waits, health tables, JSON, Nagios, Prometheus.

`Progress` is the `quilt_ops.reporting.Reporter` for people: a spinner redrawn
in place when the stream is a terminal, plain timestamped lines otherwise, so
logs of cron jobs and CI stay readable. The rest renders results. Nothing here
ever receives a secret.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from . import streams
from .checks import Check, HostHealth, Kind
from .errors import ConfigError, QuiltError
from .status import ExitStatus, label, worst

SPINNER = "|/-\\"
_print_lock = threading.Lock()


class Progress:
    """Steps with their elapsed time, and waits that show they are alive."""

    def __init__(self, stream: TextIO | None = None, prefix: str = "", quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.prefix = f"{prefix}: " if prefix else ""
        self.quiet = quiet
        self.started = time.monotonic()
        self._frame = 0
        self._last_plain = ("", 0.0)
        self._drawn = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _write(self, text: str) -> None:
        with _print_lock:
            self.stream.write(text)
            self.stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\033[K")
            self._drawn = False

    def step(self, text: str) -> None:
        """A line saying what is being done (or was done), with the time so far."""
        if self.quiet:
            return
        self._clear()
        self._write(f"[{self.elapsed():6.1f}s] {self.prefix}{text}\n")

    def waiting(self, text: str) -> None:
        """Called on each poll of a wait: redraws the spinner, or prints a line
        when the status text changes (and every 10 s while it does not)."""
        if self.quiet:
            return
        if self.tty:
            self._frame = (self._frame + 1) % len(SPINNER)
            self._write(f"\r\033[K{SPINNER[self._frame]} [{self.elapsed():6.1f}s] {self.prefix}{text}")
            self._drawn = True
            return
        last_text, last_time = self._last_plain
        if text != last_text or time.monotonic() - last_time >= 10:
            self._write(f"[{self.elapsed():6.1f}s] {self.prefix}{text}\n")
            self._last_plain = (text, time.monotonic())

    def done(self) -> None:
        self._clear()

    def show(self, lines: list[str]) -> None:
        """Lines shown as they are (a plan)."""
        if self.quiet:
            return
        self._clear()
        self._write("".join(f"{self.prefix}{line}\n" if self.prefix else f"{line}\n" for line in lines))


def table(rows: Iterable[Iterable[Any]], headers: Iterable[str]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(x) for x in r] for r in rows]
    heads = list(headers)
    widths = [max(len(x) for x in col) for col in zip(heads, *cells, strict=True)] if cells else [len(h) for h in heads]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def health_table(reports: list[HostHealth]) -> str:
    """Every check of every host, then one summary line a host."""
    rows = []
    for report in reports:
        for check in report.checks:
            rows.append((report.host, check.name, label(check.status), check.summary))
    lines = [table(rows, ("HOST", "CHECK", "STATUS", "DETAIL")), ""]
    for report in reports:
        failing = report.failing()
        counts = f"{len(report.checks) - len(failing)}/{len(report.checks)} checks OK"
        lines.append(f"{report.host}: {label(report.status)} ({counts})")
    return "\n".join(lines)


def health_json(reports: list[HostHealth]) -> str:
    """One JSON document with every check of every host."""
    status = overall(reports)
    doc: dict[str, Any] = {"status": label(status), "exit_code": int(status), "hosts": [r.as_dict() for r in reports]}
    return json.dumps(doc, indent=2, default=str)


def overall(reports: list[HostHealth]) -> ExitStatus:
    return worst(r.status for r in reports)


def _perf_label(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def nagios_text(text: str) -> str:
    """Plugin output text safe before the perfdata: ``|`` starts the perfdata, so it is
    written %7C (as in a URL), and the line stays one line."""
    return " ".join(text.replace("|", "%7C").splitlines())


def health_nagios(reports: list[HostHealth]) -> str:
    """One Nagios plugin status line with perfdata (for check_by_ssh-style monitoring)."""
    status = overall(reports)
    if len(reports) == 1:
        report = reports[0]
        failing = report.failing()
        detail = (
            f"{report.host}: " + "; ".join(f"{c.name}: {c.summary}" for c in failing[:3])
            if failing
            else f"{report.host}: {len(report.checks)}/{len(report.checks)} checks OK"
        )
    else:
        bad = [r for r in reports if r.status != ExitStatus.OK]
        detail = f"{len(reports) - len(bad)}/{len(reports)} hosts OK" + (
            ": " + "; ".join(f"{r.host} {label(r.status)}" for r in bad[:5]) if bad else ""
        )
    perf = []
    for report in reports:
        prefix = _perf_label(report.host) + "_" if len(reports) > 1 else ""
        ok = sum(c.status == ExitStatus.OK for c in report.checks)
        perf.append(f"{prefix}checks_ok={ok};;;0;{len(report.checks)}")
        for check in report.of_kind(Kind.PROBE):
            if check.details.get("seconds") is not None:
                perf.append(f"{prefix}{_perf_label(check.name)}={check.details['seconds']:.4f}s;;;0")
        for check in report.checks:
            for (*_, name, unit, thresholds), value in aws_numbers(check):
                if name == "key_age":
                    days = float(check.details.get("max_age_days") or 0) * 86400
                    thresholds = f"{days:.0f};{2 * days:.0f}"
                perf.append(f"{prefix}{name}={_number(value)}{unit};{thresholds or ';'};0")
    return f"QUILT {label(status)} - {nagios_text(detail)} | {' '.join(perf)}"


#: The AWS side's numbers (``health --aws``) in Nagios perfdata, from the details of its checks:
#: the check's kind (and subject, "" for any), the detail, then the perfdata label, unit, and
#: warn;crit thresholds. (Prometheus's are in `quilt_ops.metrics`.)
AWS_PERFDATA: tuple[tuple[Kind, str, str, str, str, str], ...] = (
    (Kind.AWS_KEY, "in use", "age_seconds", "key_age", "s", ""),
    (Kind.AWS_KEY, "in use", "last_used_seconds", "key_last_used", "s", ""),
    (Kind.AWS_POLICY, "", "extra", "policy_extra_actions", "", ""),
    (Kind.BUCKET, "", "versioning_enabled", "bucket_versioning", "", ""),
    (Kind.DATABASE, "", "backup_retention_days", "db_backup_retention_days", "", ""),
    (Kind.DATABASE, "", "latest_restorable_age_seconds", "db_restorable_age", "s", ""),
    (Kind.DATABASE, "", "newest_manual_snapshot_age_seconds", "db_manual_snapshot_age", "s", ""),
    (Kind.STACK, "", "status_ok", "stack_status_ok", "", ""),
)


def aws_numbers(check: Check) -> list[tuple[tuple[Kind, str, str, str, str, str], float]]:
    """The AWS perfdata a check gives, with their values (a list counts its items, a bool is 0 or 1)."""
    found = []
    for item in AWS_PERFDATA:
        kind, subject, detail, *_ = item
        value = check.details.get(detail)
        if check.kind != kind or (subject and check.subject != subject) or value is None:
            continue
        found.append((item, float(len(value) if isinstance(value, list) else value)))
    return found


def _number(value: float) -> str:
    """Whole numbers as such, others with 3 decimals (no exponent: monitoring parsers vary)."""
    return str(int(value)) if value == int(value) else f"{value:.3f}"


def health_prometheus(reports: list[HostHealth]) -> str:
    """Prometheus text exposition format (for node_exporter's textfile collector), from
    `quilt_ops.metrics` (imported here so that other formats do not load prometheus_client)."""
    from . import metrics

    return metrics.text(reports)


def textfile_path(value: Any) -> str:
    """``health --textfile``: a ``.prom`` file (node_exporter reads no other) in a folder that exists."""
    text = value if isinstance(value, str) else ""
    if not text.endswith(".prom") or os.path.basename(text) == ".prom":
        raise ConfigError(f"--textfile must name a .prom file (node_exporter reads no other), not {value!r}")
    folder = os.path.dirname(text) or "."
    if not os.path.isdir(folder):
        raise ConfigError(f"--textfile: no folder {folder}")
    return text


def write_textfile(path: str, reports: list[HostHealth]) -> None:
    """Writes the metrics to ``path`` whole (`quilt_ops.metrics.write_textfile`); `QuiltError` when it cannot."""
    from . import metrics

    try:
        metrics.write_textfile(path, reports)
    except OSError as e:
        raise QuiltError(f"cannot write {path}: {e.strerror or type(e).__name__}") from None


FORMATS = {"table": health_table, "json": health_json, "nagios": health_nagios, "prometheus": health_prometheus}


def report_results(results: Any, describe: Any) -> ExitStatus:
    """Prints each host's result line (stdout) or error (stderr, one ``Error:`` line each);
    returns the most urgent status (`quilt_ops.hosts.Results`)."""
    many = len(results) > 1
    for result in results:
        if result.error is not None:
            print(f"Error: {result.host}: {result.error}" if many else f"Error: {result.error}", file=sys.stderr)
        elif result.value is not None:
            line = describe(result.value)
            if line:
                streams.out(line)
    return ExitStatus(results.status)
