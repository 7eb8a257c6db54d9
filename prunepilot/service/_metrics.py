"""Prometheus metrics of one app: requests (count and latency) and jobs (from the database).

Each app has its own registry, so several apps in one process (tests, embedded demo) do
not collide. Job gauges are read from the database at scrape time, so they are right
across restarts and across API replicas sharing a database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from prunepilot.schemas import JobStatus

__all__ = ["Metrics", "MetricsMiddleware"]


class _JobCollector(Collector):
    def __init__(self, by_status: Callable[[], dict[str, int]], trials: Callable[[], int]) -> None:
        self.by_status, self.trials = by_status, trials

    def collect(self) -> Iterator[Metric]:
        counts = self.by_status()
        g = GaugeMetricFamily("prunepilot_jobs", "Jobs by status", labels=["status"])
        for st in JobStatus:
            g.add_metric([st.value], float(counts.get(st.value, 0)))
        yield g
        c = CounterMetricFamily(
            "prunepilot_trials_evaluated", "Search trials evaluated over all jobs"
        )
        c.add_metric([], float(self.trials()))
        yield c


class Metrics:
    """The app's registry and request collectors.

    Args:
        by_status: jobs per status (read at scrape time).
        trials: trials evaluated over all jobs.
    """

    def __init__(self, by_status: Callable[[], dict[str, int]], trials: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "prunepilot_http_requests",
            "HTTP requests by method, route and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "prunepilot_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.registry.register(_JobCollector(by_status, trials))


class MetricsMiddleware:
    """Pure ASGI middleware counting requests by route template (streams stay streams)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope.get("method", ""), route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
