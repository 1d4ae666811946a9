"""Whether each of a policy's triggers fires now, and why, with the figures it read.

Every check reads the database (and, for a relative quality drop, the champion's registered
evaluation), so whichever process evaluates gets the same answer. ``since`` is when the policy
last started a retraining (or was created): data volume counts from it, and a drift report
older than it has been acted on already.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.database import as_utc
from mlops.deployments.models import Deployment
from mlops.features.models import FeatureBatch, FeatureViewVersion
from mlops.monitoring.models import DriftReportRecord, GroundTruth
from mlops.monitoring.service import MonitoringService
from mlops.pipelines.schedule import next_fire_time
from mlops.retraining.schemas import (
    LOWER_IS_BETTER,
    DriftTrigger,
    PerformanceTrigger,
    ScheduleTrigger,
    TriggerCheck,
    VolumeTrigger,
)

# the champion's own evaluation of a metric: (value, where it was read), or None
Baseline = Callable[[str], Awaitable[tuple[float, str] | None]]


@dataclass(frozen=True)
class Context:
    session: AsyncSession
    deployment: Deployment
    now: datetime
    since: datetime  # the policy's last retraining started then (or it was created)
    since_what: str  # "the last retraining" or "the policy"
    champion_since: datetime | None  # when the champion's variant was deployed
    schedule_origin: Callable[[int], datetime]  # when trigger N last fired, or its origin
    baseline: Baseline


async def check(
    trigger: PerformanceTrigger | DriftTrigger | ScheduleTrigger | VolumeTrigger,
    index: int,
    context: Context,
) -> TriggerCheck:
    if isinstance(trigger, PerformanceTrigger):
        return await _performance(trigger, index, context)
    if isinstance(trigger, DriftTrigger):
        return await _drift(trigger, index, context)
    if isinstance(trigger, ScheduleTrigger):
        return _schedule(trigger, index, context)
    return await _volume(trigger, index, context)


def _worse(metric: str, value: float, limit: float) -> bool:
    return value > limit if metric in LOWER_IS_BETTER else value < limit


async def _performance(trigger: PerformanceTrigger, index: int, context: Context) -> TriggerCheck:
    # the champion's own quality: the window starts no earlier than its deployment
    since = context.now - timedelta(hours=trigger.window_hours)
    if context.champion_since is not None:
        since = max(since, context.champion_since)
    quality = await MonitoringService(context.session).quality(
        context.deployment, since, context.now
    )
    scored = quality.overall or (quality.variants[0] if quality.variants else None)
    labelled = scored.labelled if scored else 0
    figures: dict[str, object] = {"labelled": labelled, "window_hours": trigger.window_hours}
    if labelled < trigger.min_labelled:
        reason = f"{labelled} labelled row(s) in the window, fewer than {trigger.min_labelled}"
        return _result(trigger.type, index, False, reason, figures)
    value = scored.metrics.get(trigger.metric) if scored else None
    if value is None:
        reason = f"monitoring has no {trigger.metric} for this window"
        return _result(trigger.type, index, False, reason, figures)
    figures[trigger.metric] = value
    if trigger.threshold is not None:
        limit, against = trigger.threshold, f"the threshold {trigger.threshold:g}"
    else:
        assert trigger.max_relative_drop is not None
        baseline = await context.baseline(trigger.metric)
        if baseline is None:
            reason = f"the champion has no recorded {trigger.metric} to compare with"
            return _result(trigger.type, index, False, reason, figures)
        base, where = baseline
        figures["champion_evaluation"], figures["champion_evaluation_source"] = base, where
        drop = trigger.max_relative_drop
        limit = base * (1 + drop) if trigger.metric in LOWER_IS_BETTER else base * (1 - drop)
        against = f"{limit:.4g} ({drop:.0%} worse than the champion's {base:.4g})"
    figures["limit"] = limit
    fired = _worse(trigger.metric, value, limit)
    verb = "is worse than" if fired else "is within"
    reason = f"{trigger.metric} {value:.4g} over {labelled} labelled row(s) {verb} {against}"
    return _result(trigger.type, index, fired, reason, figures)


async def _drift(trigger: DriftTrigger, index: int, context: Context) -> TriggerCheck:
    record = await context.session.scalar(
        select(DriftReportRecord)
        .where(DriftReportRecord.deployment_id == context.deployment.id)
        .order_by(DriftReportRecord.created_at.desc())
        .limit(1)
    )
    if record is None:
        return _result(trigger.type, index, False, "no drift report yet", {})
    made = as_utc(record.created_at)
    report = record.report
    drifted = [f["name"] for f in report.get("features", []) if f.get("drifted")]
    figures: dict[str, object] = {
        "report_id": str(record.id),
        "report_created_at": made.isoformat(),
        "drifted_features": drifted,
        "drifted_share": report.get("drifted_share"),
        "dataset_drift": record.dataset_drift,
    }
    if made <= context.since:
        reason = f"the newest drift report predates {context.since_what}"
        return _result(trigger.type, index, False, reason, figures)
    if made < context.now - timedelta(hours=trigger.max_report_age_hours):
        reason = f"the newest drift report is older than {trigger.max_report_age_hours:g} h"
        return _result(trigger.type, index, False, reason, figures)
    if trigger.features:
        hit = [name for name in trigger.features if name in drifted]
        fired = bool(hit)
    elif trigger.min_drifted_features is not None:
        fired = len(drifted) >= trigger.min_drifted_features
    elif trigger.min_drifted_share is not None:
        fired = float(report.get("drifted_share") or 0.0) >= trigger.min_drifted_share
    else:
        fired = bool(record.dataset_drift)
    found = ", ".join(drifted) if drifted else "none"
    reason = (
        f"drift report {record.id}: drifted features {found}; "
        f"{'meets' if fired else 'does not meet'} {trigger.rule}"
    )
    return _result(trigger.type, index, fired, reason, figures)


def _schedule(trigger: ScheduleTrigger, index: int, context: Context) -> TriggerCheck:
    due = next_fire_time(trigger.cron, trigger.timezone, context.schedule_origin(index))
    fired = due <= context.now
    figures: dict[str, object] = {
        "due_at": due.isoformat(),
        "cron": trigger.cron,
        "timezone": trigger.timezone,
    }
    reason = (
        f"'{trigger.cron}' ({trigger.timezone}) was due at {due.isoformat()}"
        if fired
        else f"next due at {due.isoformat()}"
    )
    return _result(trigger.type, index, fired, reason, figures)


async def _volume(trigger: VolumeTrigger, index: int, context: Context) -> TriggerCheck:
    since = context.since
    if trigger.min_new_labelled_rows is not None:
        rows = await context.session.scalar(
            select(func.coalesce(func.sum(func.json_array_length(GroundTruth.labels)), 0)).where(
                GroundTruth.deployment_id == context.deployment.id,
                GroundTruth.received_at > since,
            )
        )
        needed, what = trigger.min_new_labelled_rows, "new labelled row(s)"
    else:
        assert trigger.feature_view is not None and trigger.min_new_rows is not None
        rows = await context.session.scalar(
            select(func.coalesce(func.sum(FeatureBatch.rows), 0))
            .join(FeatureViewVersion, FeatureViewVersion.id == FeatureBatch.view_id)
            .where(
                FeatureViewVersion.name == trigger.feature_view,
                FeatureBatch.created_at > since,
            )
        )
        needed, what = trigger.min_new_rows, f"new row(s) in feature view {trigger.feature_view}"
    count = int(rows or 0)
    fired = count >= needed
    reason = f"{count} {what} since {since.isoformat()}, {'≥' if fired else '<'} {needed}"
    return _result(trigger.type, index, fired, reason, {"new_rows": count, "since": since})


def _result(
    kind: str, index: int, fired: bool, reason: str, figures: dict[str, object]
) -> TriggerCheck:
    plain = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in figures.items()}
    return TriggerCheck(type=kind, index=index, fired=fired, reason=reason, figures=plain)
