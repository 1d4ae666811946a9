"""Prometheus metrics of the deployment domain."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from mlops.observability.metrics import Children

PREDICTIONS = Counter(
    "mlops_predictions_total",
    "Prediction requests answered, by deployment, variant and outcome (ok or error).",
    ["deployment", "variant", "outcome"],
)
PREDICTION_LATENCY = Histogram(
    "mlops_prediction_latency_seconds",
    "Time to answer a prediction request (queueing, micro-batch and model), by variant.",
    ["deployment", "variant"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
TRAFFIC_WEIGHT = Gauge(
    "mlops_deployment_traffic_weight",
    "The share of a deployment's traffic (%) each variant is given.",
    ["deployment", "variant"],
)
ROLLBACKS = Counter(
    "mlops_deployment_rollbacks_total",
    "Rollbacks, by deployment and reason (analysis, inconclusive, load_failed, manual).",
    ["deployment", "reason"],
)


PREDICTIONS_BY = Children(PREDICTIONS)
PREDICTION_LATENCY_BY = Children(PREDICTION_LATENCY)


def record_prediction(deployment: str, variant: str, ok: bool, seconds: float) -> None:
    PREDICTIONS_BY(deployment, variant, "ok" if ok else "error").inc()
    PREDICTION_LATENCY_BY(deployment, variant).observe(seconds)


ROLLBACK_REASONS = ("analysis", "inconclusive", "load_failed", "manual")


def record_weights(deployment: str, weights: dict[str, float]) -> None:
    for variant, weight in weights.items():
        TRAFFIC_WEIGHT.labels(deployment, variant).set(weight)
    # Rollback counters exist at 0 before the first rollback: a series that appears already at 1
    # is no increase to Prometheus, so increase() would miss a deployment's first rollback.
    for reason in ROLLBACK_REASONS:
        ROLLBACKS.labels(deployment, reason)


def record_rollback(deployment: str, reason: str) -> None:
    ROLLBACKS.labels(deployment, reason).inc()
