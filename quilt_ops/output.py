"""What the operator sees: progress during waits, health tables, JSON, Nagios, Prometheus.

`Progress` is the `quilt_ops.reporting.Reporter` for people: a spinner redrawn
in place when the stream is a terminal, plain timestamped lines otherwise, so
logs of cron jobs and CI stay readable. The rest renders results. Nothing here
ever receives a secret.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from .checks import HostHealth, Kind
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
    return f"QUILT {label(status)} - {detail} | {' '.join(perf)}"


def _prom_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def health_prometheus(reports: list[HostHealth]) -> str:
    """Prometheus text exposition format (for node_exporter's textfile collector)."""
    metrics: dict[str, tuple[str, list[str]]] = {
        "quilt_health_status": ("Worst check per host: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.", []),
        "quilt_check_status": ("Status of each check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.", []),
        "quilt_probe_duration_seconds": ("Time an HTTP probe took on the host.", []),
        "quilt_probe_http_status": ("HTTP status a probe answered (0: no answer).", []),
        "quilt_container_uptime_seconds": ("Seconds since a container started.", []),
        "quilt_container_restart_count": ("Docker's restart count of a container.", []),
    }
    for report in reports:
        host = _prom_escape(report.host)
        metrics["quilt_health_status"][1].append(f'quilt_health_status{{host="{host}"}} {int(report.status)}')
        for check in report.checks:
            name = _prom_escape(check.name)
            metrics["quilt_check_status"][1].append(
                f'quilt_check_status{{host="{host}",check="{name}"}} {int(check.status)}'
            )
            details = check.details
            if check.kind == Kind.PROBE:
                probe = _prom_escape(check.subject)
                if details.get("seconds") is not None:
                    metrics["quilt_probe_duration_seconds"][1].append(
                        f'quilt_probe_duration_seconds{{host="{host}",probe="{probe}"}} {details["seconds"]}'
                    )
                metrics["quilt_probe_http_status"][1].append(
                    f'quilt_probe_http_status{{host="{host}",probe="{probe}"}} {details.get("http_code") or 0}'
                )
            if check.kind == Kind.CONTAINER and details.get("exists"):
                container = _prom_escape(check.subject)
                if details.get("uptime_seconds") is not None:
                    metrics["quilt_container_uptime_seconds"][1].append(
                        f'quilt_container_uptime_seconds{{host="{host}",container="{container}"}} '
                        f"{details['uptime_seconds']}"
                    )
                metrics["quilt_container_restart_count"][1].append(
                    f'quilt_container_restart_count{{host="{host}",container="{container}"}} '
                    f"{details.get('restart_count') or 0}"
                )
    lines = []
    for name, (help_text, samples) in metrics.items():
        if samples:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples]
    return "\n".join(lines) + "\n"


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
                print(line)
    return ExitStatus(results.status)
