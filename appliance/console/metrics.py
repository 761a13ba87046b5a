"""`GET /metrics`: the console's counts in the Prometheus text format, read from its state at
scrape time (so every worker, and a restarted console, reports the same numbers)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from appliance.console.store import AcceptedStatus, RefusalTally


class _Snapshot(Collector):
    def __init__(self, statuses: Mapping[str, AcceptedStatus],
                 refusals: Iterable[RefusalTally]) -> None:
        self._statuses = statuses
        self._refusals = list(refusals)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        accepted = CounterMetricFamily("appliance_console_pushes_accepted",
                                       "Status pushes accepted, by enclave", labels=["enclave"])
        last = GaugeMetricFamily("appliance_console_last_push_timestamp_seconds",
                                 "When the last accepted push arrived (console clock)",
                                 labels=["enclave"])
        for enclave_id, status in sorted(self._statuses.items()):
            accepted.add_metric([enclave_id], status.pushes_accepted)
            last.add_metric([enclave_id], status.received_at.timestamp())
        refused = CounterMetricFamily(
            "appliance_console_push_refusals",
            "Status pushes refused, by enclave ('' when none is named) and reason",
            labels=["enclave", "reason"])
        for tally in self._refusals:
            refused.add_metric([tally.enclave_id, tally.reason], tally.count)
        yield accepted
        yield last
        yield refused


def exposition(statuses: Mapping[str, AcceptedStatus], refusals: Iterable[RefusalTally]) -> bytes:
    registry = CollectorRegistry()
    registry.register(_Snapshot(statuses, refusals))
    return generate_latest(registry)
