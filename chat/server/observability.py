"""What an operator asks a running server on its own port, over plain HTTP GET
(README "Health and metrics"):

- ``/healthz``: whether the server can serve (its database answers), as JSON, with the
  users online and the connections open; 200 when healthy, 503 otherwise;
- ``/metrics``: counters and gauges in the Prometheus text format (prometheus_client),
  for a scraper. Nothing in either says who is online or what anyone wrote.

Each server has its own registry, so several servers in one process (tests) do not mix.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from websockets.datastructures import Headers
from websockets.http11 import Response

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
#: Seconds the database has to answer the health check.
HEALTH_TIMEOUT = 2.0


class _Collector(Collector):
    """Reads the server's state at each scrape."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        for name, text in GAUGES:
            yield GaugeMetricFamily(f"chat_{name}", text, value=state[name])
        messages = CounterMetricFamily("chat_messages", "messages sent since start, by kind", labels=["kind"])
        for kind, count in sorted(state["messages"].items()):
            messages.add_metric([kind], count)
        yield messages
        yield CounterMetricFamily("chat_logins", "successful logins since start", value=state["logins"])


#: Gauges: (name, help).
GAUGES = [
    ("connections", "WebSocket connections open"),
    ("users_online", "users logged in, sessions waiting to be resumed included"),
    ("sessions_lingering", "lost sessions waiting for their clients to resume them"),
    ("handshakes_pending", "RSA decryptions queued or running"),
]


class Metrics:
    """The server's metrics, read from ``state`` (a snapshot of counts) when scraped."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(state))

    def response(self) -> Response:
        body = generate_latest(self.registry)
        headers = Headers({"Content-Type": CONTENT_TYPE_LATEST, "Content-Length": str(len(body))})
        return Response(200, "OK", headers, body)


async def health(
    state: dict[str, Any], database_check: Callable[[], Any], redis_up: bool | None = None
) -> Response:
    """``/healthz``: the database answers within HEALTH_TIMEOUT, this node's link to
    Redis is up (None: not in a cluster), and the counts."""
    try:
        await asyncio.wait_for(database_check(), HEALTH_TIMEOUT)
        database = "ok"
    except Exception as exc:  # any failure is an unhealthy database, said as such
        database = f"failing: {type(exc).__name__}"
    redis = "not configured" if redis_up is None else "ok" if redis_up else "unreachable"
    healthy = database == "ok" and redis_up is not False
    report = {
        "status": "ok" if healthy else "failing",
        "database": database,
        "redis": redis,
        "users": int(state["users_online"]),
        "connections": int(state["connections"]),
    }
    body = (json.dumps(report) + "\n").encode()
    headers = Headers({"Content-Type": "application/json", "Content-Length": str(len(body))})
    return Response(200 if healthy else 503, "OK" if healthy else "Service Unavailable", headers, body)
