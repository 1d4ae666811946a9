"""Prometheus metrics of the pipeline domain."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PIPELINE_RUNS = Counter(
    "mlops_pipeline_runs_total",
    "Pipeline runs finished, by pipeline and final status.",
    ["pipeline", "status"],
)
STEP_DURATION = Histogram(
    "mlops_pipeline_step_duration_seconds",
    "Duration of step attempts, by step type and outcome.",
    ["step_type", "status"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
STEP_QUEUE_DEPTH = Gauge(
    "mlops_pipeline_step_queue_depth", "Step attempts accepted by a backend, not started yet."
)
ACTIVE_RUNS = Gauge("mlops_pipeline_active_runs", "Pipeline runs queued or running.")


def record_run_finished(pipeline: str, status: str) -> None:
    PIPELINE_RUNS.labels(pipeline, str(status)).inc()


def record_step_finished(step_type: str, status: str, seconds: float) -> None:
    STEP_DURATION.labels(step_type, str(status)).observe(seconds)
