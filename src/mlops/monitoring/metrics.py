"""Prometheus metrics of the monitoring domain: drift per feature, model quality per variant."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

DRIFT_SCORE = Gauge(
    "mlops_drift_score",
    "A feature's drift figure in the latest report (psi, js, ks, wasserstein normalised).",
    ["deployment", "feature", "metric"],
)
DRIFT_DETECTED = Gauge(
    "mlops_drift_detected",
    "1 when the latest report flagged the feature (the prediction as 'prediction'), else 0.",
    ["deployment", "feature"],
)
DATASET_DRIFT = Gauge(
    "mlops_drift_dataset_detected",
    "1 when the latest report found dataset drift, else 0.",
    ["deployment"],
)
DRIFTED_SHARE = Gauge(
    "mlops_drift_share", "Share of features flagged in the latest report.", ["deployment"]
)
DRIFT_REPORTS = Counter(
    "mlops_drift_reports_total",
    "Drift reports made, by trigger (on_demand, schedule) and result (drift, stable).",
    ["deployment", "trigger", "result"],
)
FIGURES = ("psi", "js", "ks", "wasserstein")


def record_drift(deployment: str, trigger: str, document: dict[str, Any]) -> None:
    for feature in document["features"]:
        DRIFT_DETECTED.labels(deployment, feature["name"]).set(1 if feature["drifted"] else 0)
        for metric in FIGURES:
            if feature.get(metric) is not None:
                DRIFT_SCORE.labels(deployment, feature["name"], metric).set(feature[metric])
    DATASET_DRIFT.labels(deployment).set(1 if document["dataset_drift"] else 0)
    DRIFTED_SHARE.labels(deployment).set(document["drifted_share"])
    result = "drift" if document["drifted_count"] or document["prediction_drift"] else "stable"
    DRIFT_REPORTS.labels(deployment, trigger, result).inc()


MODEL_QUALITY = Gauge(
    "mlops_model_quality",
    "A model-quality figure (accuracy, f1, roc_auc, rmse, …) of a variant over the last day.",
    ["deployment", "variant", "metric"],
)
LABELLED_ROWS = Gauge(
    "mlops_model_quality_labelled_rows",
    "Rows with their ground truth behind the quality figures of a variant.",
    ["deployment", "variant"],
)


def record_quality(deployment: str, variants: list[Any]) -> None:
    """The figures of each variant (``VariantQuality``) that has labelled rows."""
    for variant in variants:
        LABELLED_ROWS.labels(deployment, variant.variant).set(variant.labelled)
        for metric, value in variant.metrics.items():
            if value is not None:
                MODEL_QUALITY.labels(deployment, variant.variant, metric).set(value)
