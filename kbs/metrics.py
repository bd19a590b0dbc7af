"""Prometheus metrics with upstream's names (`kbs/docs/metrics.md`), kept by prometheus_client.

With `worker_count > 1` the supervisor gives its workers one multiprocess directory
(`PROMETHEUS_MULTIPROC_DIR`, set before they start, as prometheus_client requires), each worker
writes its values there, and a scrape of any worker reports the sum over all of them (the
in-flight gauge over the live ones). A single process reads its own registry.
"""

from __future__ import annotations

import os
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # as upstream answers (the names need no 1.0.0 escaping)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.5, 1.0)
SIZE_BUCKETS = (32.0, 128.0, 512.0, 2048.0, 8192.0)


def _version() -> str:
    try:
        return metadata.version("peerpods")
    except metadata.PackageNotFoundError:
        return "unknown"


class KbsMetrics:
    """One KBS's metrics, in a registry of its own (several KBSs may share a test process)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        def counter(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, help_text, labels, registry=registry)

        def histogram(name: str, help_text: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, help_text, buckets=buckets, registry=registry)

        self.build_info = Gauge(
            "kbs_build_info",
            "KBS binary build information.",
            ["version"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.build_info.labels(_version()).set(1)
        self.requests = counter("kbs_http_requests_total", "Total count of HTTP requests to KBS endpoints.")
        self.duration = histogram(
            "kbs_http_request_duration_seconds",
            "Distribution of request handling duration.",
            DURATION_BUCKETS,
        )
        self.request_size = histogram(
            "kbs_http_request_size_bytes", "Distribution of request body sizes in bytes.", SIZE_BUCKETS
        )
        self.response_size = histogram(
            "kbs_http_response_size_bytes", "Distribution of response body sizes in bytes.", SIZE_BUCKETS
        )
        self.active = Gauge(
            "kbs_http_active_connections",
            "Count of HTTP requests being processed.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.resource_reads = counter(
            "kbs_resource_reads_total", "Count of resource read operations.", ("resource_path",)
        )
        self.resource_writes = counter(
            "kbs_resource_writes_total", "Count of resource write operations.", ("resource_path",)
        )
        self.policy_evals = counter("kbs_policy_evaluations_total", "Total count of KBS policy evaluations.")
        self.policy_approvals = counter("kbs_policy_approvals_total", "Requests approved by KBS policy.")
        self.policy_violations = counter("kbs_policy_violations_total", "Requests denied by KBS policy.")
        self.policy_errors = counter("kbs_policy_errors_total", "Errors during KBS policy evaluation.")
        self.attestation_requests = counter("kbs_attestation_requests_total", "Attestation requests.")
        self.attestation_successes = counter(
            "kbs_attestation_successes_total", "Successful attestations.", ("tee_type",)
        )
        self.attestation_failures = counter(
            "kbs_attestation_failures_total", "Failed attestations.", ("tee_type",)
        )
        self.attestation_errors = counter(
            "kbs_attestation_errors_total", "Errors during attestation processing (e.g. malformed requests)."
        )
        self.auth_requests = counter("kbs_auth_requests_total", "Authentication (RCAR handshake) requests.")
        self.auth_successes = counter("kbs_auth_successes_total", "Successful authentication requests.")
        self.auth_errors = counter("kbs_auth_errors_total", "Errors during authentication processing.")

    def value(self, sample: str, **labels: str) -> float:
        """This process's value of one sample (0 when never set)."""
        return self.registry.get_sample_value(sample, labels) or 0.0

    def render(self) -> bytes:
        """The text exposition: of every worker when they share a multiprocess directory."""
        directory = os.environ.get(MULTIPROCESS_ENV)
        if not directory:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, directory)  # type: ignore[no-untyped-call]
        return generate_latest(combined)
