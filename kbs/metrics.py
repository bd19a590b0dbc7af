"""Prometheus metrics with upstream's names (`kbs/docs/metrics.md`), rendered as text format 0.0.4.

Counters live in each process: with several worker processes a scrape sees the worker that answers,
as with any per-process exporter; sum over `instance` or scrape workers on their own ports. They
are updated from the event loop thread only, so they take no locks (a few per request add up).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from importlib import metadata

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.5, 1.0)
SIZE_BUCKETS = (32.0, 128.0, 512.0, 2048.0, 8192.0)


def _version() -> str:
    try:
        return metadata.version("peerpods")
    except metadata.PackageNotFoundError:
        return "unknown"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def value(self, *label_values: str) -> float:
        return self._values.get(label_values, 0.0)

    def render(self) -> list[str]:
        items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def dec(self, *label_values: str) -> None:
        self.inc(*label_values, amount=-1.0)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self._sum += value

    def render(self) -> list[str]:
        counts, total = self._counts, self._sum
        lines, running = [], 0
        for bound, count in zip(self.buckets, counts, strict=False):
            running += count
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {running}')
        running += counts[-1]
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {running}')
        lines += [f"{self.name}_sum {_number(total)}", f"{self.name}_count {running}"]
        return lines


class KbsMetrics:
    def __init__(self) -> None:
        self.build_info = Gauge("kbs_build_info", "KBS binary build information.", ["version"])
        self.build_info.inc(_version())
        self.requests = Counter("kbs_http_requests_total", "Total count of HTTP requests to KBS endpoints.")
        self.duration = Histogram(
            "kbs_http_request_duration_seconds",
            "Distribution of request handling duration.",
            DURATION_BUCKETS,
        )
        self.request_size = Histogram(
            "kbs_http_request_size_bytes", "Distribution of request body sizes in bytes.", SIZE_BUCKETS
        )
        self.response_size = Histogram(
            "kbs_http_response_size_bytes", "Distribution of response body sizes in bytes.", SIZE_BUCKETS
        )
        self.active = Gauge("kbs_http_active_connections", "Count of HTTP requests being processed.")
        self.resource_reads = Counter(
            "kbs_resource_reads_total", "Count of resource read operations.", ["resource_path"]
        )
        self.resource_writes = Counter(
            "kbs_resource_writes_total", "Count of resource write operations.", ["resource_path"]
        )
        self.policy_evals = Counter("kbs_policy_evaluations_total", "Total count of KBS policy evaluations.")
        self.policy_approvals = Counter("kbs_policy_approvals_total", "Requests approved by KBS policy.")
        self.policy_violations = Counter("kbs_policy_violations_total", "Requests denied by KBS policy.")
        self.policy_errors = Counter("kbs_policy_errors_total", "Errors during KBS policy evaluation.")
        self.attestation_requests = Counter("kbs_attestation_requests_total", "Attestation requests.")
        self.attestation_successes = Counter(
            "kbs_attestation_successes_total", "Successful attestations.", ["tee_type"]
        )
        self.attestation_failures = Counter(
            "kbs_attestation_failures_total", "Failed attestations.", ["tee_type"]
        )
        self.attestation_errors = Counter(
            "kbs_attestation_errors_total", "Errors during attestation processing (e.g. malformed requests)."
        )
        self.auth_requests = Counter("kbs_auth_requests_total", "Authentication (RCAR handshake) requests.")
        self.auth_successes = Counter("kbs_auth_successes_total", "Successful authentication requests.")
        self.auth_errors = Counter("kbs_auth_errors_total", "Errors during authentication processing.")

    def render(self) -> str:
        lines: list[str] = []
        for metric in vars(self).values():
            if isinstance(metric, Counter | Histogram):
                lines += metric.header() + metric.render()
        return "\n".join(lines) + "\n"
