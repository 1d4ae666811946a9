"""Prometheus metrics of the feature store. Freshness is computed when Prometheus scrapes, from
the newest event time each view holds, so that it grows between refreshes as a real age does."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mlops.features.validation import Failure

EXPECTATION_FAILURES = Counter(
    "mlops_feature_expectation_failures_total",
    "Rows that broke a feature's expectation, by view, feature, expectation and stage "
    "(ingest or materialize).",
    ["view", "feature", "expectation", "stage"],
)
OFFLINE_ROWS = Gauge(
    "mlops_feature_offline_rows",
    "Rows in the offline store for the view's current version.",
    ["view", "version"],
)
MATERIALIZATIONS = Counter(
    "mlops_feature_materializations_total",
    "Materializations into the online store, by view and outcome (succeeded or failed).",
    ["view", "outcome"],
)
MATERIALIZED_ENTITIES = Counter(
    "mlops_feature_materialized_entities_total",
    "Entities written into the online store by materializations, by view.",
    ["view"],
)


class _Freshness(Collector):
    def __init__(self) -> None:
        self.newest_event: dict[str, float] = {}  # view -> POSIX seconds of its newest event

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mlops_feature_freshness_seconds",
            "Age of the newest event time in the view's offline store (current version).",
            labels=["view"],
        )
        now = time.time()
        for view, newest in sorted(self.newest_event.items()):
            family.add_metric([view], max(0.0, now - newest))
        yield family


FRESHNESS = _Freshness()
REGISTRY.register(FRESHNESS)


def record_failures(view: str, stage: str, failures: Sequence[Failure]) -> None:
    for failure in failures:
        EXPECTATION_FAILURES.labels(view, failure.feature, failure.expectation, stage).inc(
            failure.failed_rows
        )


def record_view_state(views: Iterable[tuple[str, int, int, float | None]]) -> None:
    """(view, version, rows, newest event) for every view: the gauges follow, and views that
    are gone leave them."""
    seen: dict[str, float] = {}
    OFFLINE_ROWS.clear()
    for view, version, rows, newest in views:
        OFFLINE_ROWS.labels(view, str(version)).set(rows)
        if newest is not None:
            seen[view] = newest
    FRESHNESS.newest_event = seen
