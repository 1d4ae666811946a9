"""The figures a rule can watch, and measuring them from the database (so that whichever
process evaluates gets the same answer).

From the prediction log, over the rule's window (``[now - window, now)``):
    ``prediction_volume``  logged requests (0 is a value: "volume < 1" catches traffic stopping)
    ``error_rate``         share of logged requests the model failed on (``error`` set)
    ``latency_p95_ms``     95th percentile (nearest rank) of the successful requests' latency
From the ground truth of the window's predictions (``MonitoringService.quality``):
    ``quality.<metric>``   accuracy, precision, recall, f1, roc_auc, mae, rmse or r2
From the deployment's latest drift report, however old (drift is per deployment, not variant):
    ``drift.share``        share of features flagged
    ``drift.dataset``      1 when the report found dataset drift, else 0
    ``drift.feature.<name>``            1 when that feature was flagged, else 0
    ``drift.feature.<name>.<metric>``   its psi, js, ks or wasserstein (normalised)

``None`` is "no data": no request in the window (volume excepted), no labelled row, no report,
a feature or metric the report or the task does not have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.deployments.models import Deployment
from mlops.monitoring.models import DriftReportRecord, LoggedPrediction
from mlops.monitoring.service import MonitoringService

LOG_FIGURES = ("prediction_volume", "error_rate", "latency_p95_ms")
QUALITY_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse", "r2")
DRIFT_METRICS = ("psi", "js", "ks", "wasserstein")
LATENCY_PERCENTILE = 0.95
FIGURE_FORMS = (
    "prediction_volume, error_rate, latency_p95_ms, "
    f"quality.<{'|'.join(QUALITY_METRICS)}>, drift.share, drift.dataset, "
    f"drift.feature.<name> or drift.feature.<name>.<{'|'.join(DRIFT_METRICS)}>"
)

Source = Literal["log", "quality", "drift"]


@dataclass(frozen=True)
class Figure:
    source: Source
    name: str  # a log figure, a quality metric, or "share" / "dataset" / "feature"
    feature: str | None = None
    metric: str | None = None  # of a drift feature; None: its 1/0 decision


def parse_figure(text: str) -> Figure:
    """The figure ``text`` names; ``ValueError`` lists the valid forms."""
    if text in LOG_FIGURES:
        return Figure("log", text)
    head, _, rest = text.partition(".")
    if head == "quality" and rest in QUALITY_METRICS:
        return Figure("quality", rest)
    if head == "drift" and rest in ("share", "dataset"):
        return Figure("drift", rest)
    if head == "drift" and rest.startswith("feature.") and len(rest) > len("feature."):
        feature = rest.removeprefix("feature.")
        # a feature named like "x.psi" is read as x's psi: the form is ambiguous only there
        name, _, metric = feature.rpartition(".")
        if name and metric in DRIFT_METRICS:
            return Figure("drift", "feature", name, metric)
        return Figure("drift", "feature", feature)
    raise ValueError(f"unknown figure {text!r}; use one of {FIGURE_FORMS}")


async def measure(
    session: AsyncSession,
    figure: Figure,
    deployment: Deployment,
    variant: str | None,
    since: datetime,
    until: datetime,
) -> float | None:
    """The figure's value now, or None when there is no data to tell."""
    if figure.source == "log":
        return await _from_log(session, figure.name, deployment, variant, since, until)
    if figure.source == "quality":
        return await _from_quality(session, figure.name, deployment, variant, since, until)
    return await _from_drift(session, figure, deployment)


async def _from_log(
    session: AsyncSession,
    name: str,
    deployment: Deployment,
    variant: str | None,
    since: datetime,
    until: datetime,
) -> float | None:
    window = [
        LoggedPrediction.deployment_id == deployment.id,
        LoggedPrediction.created_at >= since,
        LoggedPrediction.created_at < until,
    ]
    if variant is not None:
        window.append(LoggedPrediction.variant == variant)
    if name == "latency_p95_ms":
        succeeded = [*window, LoggedPrediction.error.is_(None)]
        count = int(await session.scalar(select(func.count()).where(*succeeded)) or 0)
        if count == 0:
            return None
        # nearest rank, read by the database: no window's latencies cross the wire
        rank = math.ceil(LATENCY_PERCENTILE * count) - 1
        value = await session.scalar(
            select(LoggedPrediction.latency_ms)
            .where(*succeeded)
            .order_by(LoggedPrediction.latency_ms)
            .offset(rank)
            .limit(1)
        )
        return None if value is None else float(value)
    row = (
        await session.execute(
            select(func.count(), func.count(LoggedPrediction.error)).where(*window)
        )
    ).one()
    total, failed = int(row[0] or 0), int(row[1] or 0)
    if name == "prediction_volume":
        return float(total)
    return failed / total if total else None


async def _from_quality(
    session: AsyncSession,
    metric: str,
    deployment: Deployment,
    variant: str | None,
    since: datetime,
    until: datetime,
) -> float | None:
    quality = await MonitoringService(session).quality(deployment, since, until, variant)
    scored = quality.overall or (quality.variants[0] if len(quality.variants) == 1 else None)
    if scored is None or not scored.labelled:
        return None
    value = scored.metrics.get(metric)
    return None if value is None else float(value)


async def _from_drift(
    session: AsyncSession, figure: Figure, deployment: Deployment
) -> float | None:
    report = await session.scalar(
        select(DriftReportRecord.report)
        .where(DriftReportRecord.deployment_id == deployment.id)
        .order_by(DriftReportRecord.created_at.desc())
        .limit(1)
    )
    if report is None:
        return None
    if figure.name == "share":
        return float(report["drifted_share"])
    if figure.name == "dataset":
        return 1.0 if report["dataset_drift"] else 0.0
    found = next((f for f in report.get("features", []) if f["name"] == figure.feature), None)
    if found is None:
        return None
    if figure.metric is None:
        return 1.0 if found["drifted"] else 0.0
    value = found.get(figure.metric)
    return None if value is None else float(value)
