"""Prometheus metrics, aggregated across gunicorn workers and the supervisor.

In the service, `PROMETHEUS_MULTIPROC_DIR` is set (by the supervisor, before anything imports
prometheus_client) so that every process writes its values to memory-mapped files in one
directory, and `/metrics` merges them. Without it (unit tests), the metrics live in the registry
passed in. Hot-path cost matters: streams count their events locally and add them once at the end.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LIFECYCLE_STATES = ("idle", "loading", "ready", "unloading", "error")
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "appliance_http_requests", "HTTP requests by route and status", ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "appliance_http_request_seconds", "Time to the response headers, by route", ["route"],
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.streams_started = Counter(
            "appliance_streams_started", "SSE streams started", ["route"], registry=registry
        )
        self.streams_finished = Counter(
            "appliance_streams_finished", "SSE streams finished, by outcome", ["route", "outcome"],
            registry=registry,
        )
        self.relayed_events = Counter(
            "appliance_relayed_events", "SSE events relayed to clients", ["route"],
            registry=registry,
        )
        self.receipts = Counter(
            "appliance_receipts", "Receipts signed and stored", registry=registry
        )
        # Written by the supervisor; "mostrecent" keeps the last value across processes.
        self.lifecycle_state = Gauge(
            "appliance_lifecycle_state", "1 for the current model lifecycle state", ["state"],
            multiprocess_mode="mostrecent", registry=registry,
        )
        self.push_failures = Counter(
            "appliance_status_push_failures", "Failed status pushes to the management plane",
            registry=registry,
        )
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.pushes = Counter(
            "appliance_status_pushes", "Status pushes accepted by the management plane",
            registry=registry,
        )

    def count_request(self, route: str, status: int, seconds: float) -> None:
        # labels() takes a lock and builds a key per call; the hot path reuses the children.
        key = (route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(route=route, status=str(status)),
                        self.latency.labels(route=route))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def set_lifecycle_state(self, state: str) -> None:
        for name in LIFECYCLE_STATES:
            self.lifecycle_state.labels(state=name).set(1.0 if name == state else 0.0)

    def exposition(self) -> bytes:
        if multiprocess_enabled():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def mark_worker_dead(pid: int) -> None:
    """gunicorn's child_exit hook: drops a dead worker's live gauges (counters are kept)."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)
