"""What the adaptor measures for Prometheus: sandboxes by state, StartVM/StopVM latency, tunnel redials.

Cloud API calls, throttles and errors are counted where they are made, in providers.retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adaptor.state import SandboxRecord, SandboxState
from protocols.ttrpc.status import Code, TtrpcError

# A cloud VM takes tens of seconds to a few minutes to boot; a local one well under a second.
START_VM_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600)
STOP_VM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)

START_VM_SECONDS = Histogram(
    "peerpods_start_vm_duration_seconds", "StartVM latency (instance and tunnel), by outcome",
    ["code"], buckets=START_VM_BUCKETS,
)  # fmt: skip
STOP_VM_SECONDS = Histogram(
    "peerpods_stop_vm_duration_seconds", "StopVM latency (tunnel down, instance deleted), by outcome",
    ["code"], buckets=STOP_VM_BUCKETS,
)  # fmt: skip
TUNNEL_REDIALS = Counter(
    "peerpods_tunnel_redials", "Dials of a pod VM's forwarder after its agent tunnel had been up"
)


@contextlib.contextmanager
def timed(histogram: Histogram) -> Iterator[None]:
    """Observe the block's duration under the ttrpc code it ends with (OK, or the error's code)."""
    started = time.monotonic()
    code = "UNKNOWN"
    try:
        yield
        code = "OK"
    except TtrpcError as exc:
        code = Code(exc.code).name if exc.code in Code.__members__.values() else str(exc.code)
        raise
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    finally:
        histogram.labels(code).observe(time.monotonic() - started)


class SandboxStates(Collector):
    """`peerpods_sandboxes{state}`, counted from the state store at each scrape, so it never drifts."""

    def __init__(self, records: Callable[[], Iterable[SandboxRecord]]) -> None:
        self._records = records

    def collect(self) -> Iterable[Metric]:
        tally = Tally(record.state for record in self._records())
        family = GaugeMetricFamily("peerpods_sandboxes", "Sandboxes known to this adaptor", labels=["state"])
        for state in SandboxState:
            family.add_metric([state.value], tally[state])
        yield family
