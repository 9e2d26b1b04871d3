"""Prometheus metrics of the REST API, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "push_api_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "push_api_request_duration_seconds",
    "Time from request to response",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ROWS_WRITTEN = Counter("push_api_rows_written_total", "Rows inserted by API requests", ["table"])
