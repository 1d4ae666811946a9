"""Prometheus metrics. Route labels are route templates, never raw paths or ids."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from starlette.requests import Request
from starlette.responses import Response

HTTP_REQUESTS = Counter(
    "mlops_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "mlops_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_IN_FLIGHT = Gauge("mlops_http_requests_in_flight", "HTTP requests being answered now.")
AUDIT_WRITE_FAILURES = Counter(
    "mlops_audit_write_failures_total", "Audit entries that could not be written."
)

UNMATCHED_ROUTE = "<unmatched>"

Metric = TypeVar("Metric", bound=MetricWrapperBase)


class Children(Generic[Metric]):
    """A metric's labelled children, each looked up once: ``labels()`` checks the values and
    takes a lock on every call, a measurable share of a prediction's CPU. For metrics whose
    children are never removed; past ``limit`` label sets it stops remembering new ones."""

    def __init__(self, metric: Metric, limit: int = 10_000) -> None:
        self.metric = metric
        self.limit = limit
        self._known: dict[tuple[str, ...], Metric] = {}

    def __call__(self, *labels: str) -> Metric:
        child: Metric | None = self._known.get(labels)
        if child is None:
            child = self.metric.labels(*labels)
            if len(self._known) < self.limit:
                self._known[labels] = child
        return child


HTTP_REQUESTS_BY = Children(HTTP_REQUESTS)
HTTP_DURATION_BY = Children(HTTP_DURATION)


async def metrics_endpoint(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
