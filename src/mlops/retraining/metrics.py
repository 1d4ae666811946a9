"""Prometheus metrics of the retraining domain (counted where a retraining ends)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TRIGGERS = ("performance_degradation", "data_drift", "schedule", "data_volume", "manual")
OUTCOMES = ("promoted", "kept_champion", "rejected", "rolled_back", "failed")

RETRAININGS = Counter(
    "mlops_retraining_runs_total",
    "Finished retrainings, by the trigger that started them and their outcome.",
    ["trigger", "outcome"],
)
TO_PROMOTION = Histogram(
    "mlops_retraining_trigger_to_promotion_seconds",
    "Time from a trigger firing to its challenger becoming the champion.",
    buckets=(30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86_400, 3 * 86_400),
)

# every series exists at 0 from the start: increase() then sees a first retraining
for _trigger in TRIGGERS:
    for _outcome in OUTCOMES:
        RETRAININGS.labels(_trigger, _outcome)


def record_outcome(trigger: str, outcome: str, seconds_to_promotion: float | None) -> None:
    RETRAININGS.labels(trigger, outcome).inc()
    if seconds_to_promotion is not None:
        TO_PROMOTION.observe(seconds_to_promotion)
