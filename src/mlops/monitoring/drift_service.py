"""Drift of a deployment's traffic: its reference profile, and reports comparing windows of the
prediction log with it.

The reference is profiled once (from a window of the log, or from a dataset such as the
training data) and stored as JSON; each report bins only the window's rows against it. Rows
are read as raw JSON text and decoded, framed, profiled and compared in a worker thread, so a
large window never holds the event loop (serving) up. A window is read up to
``max_window_rows`` logged requests, the newest first (the report says when it was cut).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.database import as_utc
from mlops.core.errors import Conflict, InvalidFields, NotFound
from mlops.deployments.models import Deployment
from mlops.monitoring.drift import compare
from mlops.monitoring.features import ProfileError
from mlops.monitoring.metrics import record_drift
from mlops.monitoring.models import DriftReference, DriftReportRecord, LoggedPrediction
from mlops.monitoring.profiles import ReferenceProfile
from mlops.monitoring.schemas import ReferenceIn
from mlops.monitoring.thresholds import DriftError, DriftThresholds
from mlops.steps.framework import StepError

if TYPE_CHECKING:
    import pandas as pd

PREDICTION = "prediction"  # the column the predictions (or a dataset's labels) are profiled as


class DriftService:
    def __init__(self, session: AsyncSession, max_window_rows: int) -> None:
        self.session = session
        self.max_window_rows = max_window_rows

    # ------------------------------------------------------------------ the reference

    async def set_reference(
        self, deployment: Deployment, body: ReferenceIn, actor: str
    ) -> DriftReference:
        thresholds = body.settings.thresholds
        if thresholds is not None:
            _thresholds(thresholds, ("body", "settings", "thresholds"))
        source = body.source
        if source.window is not None:
            since, until = as_utc(source.window.since), as_utc(source.window.until)
            if since >= until:
                raise InvalidFields(
                    [(("body", "source", "window", "since"), "must be before until")]
                )
            raw = await self._window_rows(deployment, since, until)
            if not raw:
                raise InvalidFields(
                    [(("body", "source", "window"), "no logged predictions in this window")]
                )
            profile = await asyncio.to_thread(_profile_rows, raw)
        else:
            assert source.dataset is not None
            profile = await asyncio.to_thread(_profile_dataset, source.dataset.model_dump())
        if thresholds is not None:
            _thresholds(thresholds, ("body", "settings", "thresholds"), profile)
        reference = DriftReference(
            deployment_id=deployment.id,
            source=source.model_dump(mode="json", exclude_none=True),
            settings=body.settings.model_dump(mode="json"),
            profile=profile.to_dict(),
            rows=profile.rows,
            created_by=actor,
        )
        self.session.add(reference)
        await self.session.flush()
        return reference

    async def reference(self, deployment: Deployment) -> DriftReference:
        found = await self.session.scalar(
            select(DriftReference)
            .where(DriftReference.deployment_id == deployment.id)
            .order_by(DriftReference.created_at.desc())
            .limit(1)
        )
        if found is None:
            raise Conflict(
                f"Deployment '{deployment.name}' has no drift reference: "
                f"PUT /api/v1/monitoring/drift/{deployment.name}/reference first"
            )
        return found

    # ------------------------------------------------------------------ reports

    async def run_report(
        self,
        deployment: Deployment,
        since: datetime | None = None,
        until: datetime | None = None,
        trigger: str = "on_demand",
    ) -> DriftReportRecord | None:
        """Compare the window with the reference and store the report; None when the window
        holds no prediction (a 422 for a report asked for)."""
        reference = await self.reference(deployment)
        until = as_utc(until) if until else datetime.now(UTC)
        window = timedelta(minutes=int(reference.settings.get("window_minutes", 60)))
        since = as_utc(since) if since else until - window
        if since >= until:
            raise InvalidFields([(("body", "since"), "must be before until")])
        raw = await self._window_rows(deployment, since, until)
        if not raw:
            if trigger == "schedule":
                return None
            raise InvalidFields([(("body", "since"), "no logged predictions in this window")])
        thresholds = reference.settings.get("thresholds")
        document = await asyncio.to_thread(
            _compare_rows, reference.profile, thresholds, raw, self.max_window_rows
        )
        record = DriftReportRecord(
            deployment_id=deployment.id,
            reference_id=reference.id,
            since=since,
            until=until,
            trigger=trigger,
            dataset_drift=document["dataset_drift"],
            prediction_drift=document["prediction_drift"],
            drifted_count=document["drifted_count"],
            report=document,
        )
        self.session.add(record)
        await self.session.flush()
        record_drift(deployment.name, trigger, document)
        return record

    def reports_query(self, deployment: Deployment, drifted: bool | None = None) -> Select[Any]:
        query = select(DriftReportRecord).where(DriftReportRecord.deployment_id == deployment.id)
        if drifted is True:
            query = query.where(DriftReportRecord.drifted_count > 0)
        elif drifted is False:
            query = query.where(DriftReportRecord.drifted_count == 0)
        return query.order_by(DriftReportRecord.created_at.desc())

    async def report(self, deployment: Deployment, report_id: Any) -> DriftReportRecord:
        found = await self.session.get(DriftReportRecord, report_id)
        if found is None or found.deployment_id != deployment.id:
            raise NotFound(f"No drift report {report_id} of deployment '{deployment.name}'")
        return found

    async def _window_rows(
        self, deployment: Deployment, since: datetime, until: datetime
    ) -> Sequence[Any]:
        """The window's logged (features, predictions) as raw JSON text, newest first."""
        rows = await self.session.execute(
            select(cast(LoggedPrediction.features, Text), cast(LoggedPrediction.predictions, Text))
            .where(
                LoggedPrediction.deployment_id == deployment.id,
                LoggedPrediction.created_at >= since,
                LoggedPrediction.created_at < until,
                LoggedPrediction.error.is_(None),
            )
            .order_by(LoggedPrediction.created_at.desc())
            .limit(self.max_window_rows + 1)
        )
        return rows.all()


# --------------------------------------------------------------------------- in a thread


def window_frame(raw: Sequence[Any]) -> pd.DataFrame:
    """Logged requests as one frame: each row's features, and its prediction as
    ``prediction`` when every prediction is a scalar. Requests answered by versions with
    other columns are framed apart and stacked (their missing columns empty)."""
    import pandas as pd

    groups: dict[tuple[str, ...], tuple[list[Any], list[Any]]] = {}
    for features_text, predictions_text in raw:
        features = json.loads(features_text)
        rows, predictions = groups.setdefault(tuple(features["columns"]), ([], []))
        rows.extend(features["rows"])
        predictions.extend(json.loads(predictions_text))
    frames = []
    scalar = True
    for columns, (rows, predictions) in groups.items():
        frame = pd.DataFrame(rows, columns=list(columns))
        scalar = scalar and not any(isinstance(p, dict | list) for p in predictions)
        if scalar:
            frame[PREDICTION] = predictions
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return frame if scalar or PREDICTION not in frame else frame.drop(columns=PREDICTION)


def _profile_rows(raw: Sequence[Any]) -> ReferenceProfile:
    frame = window_frame(raw)
    try:
        return ReferenceProfile.build(frame, prediction=_prediction(frame))
    except ProfileError as exc:
        raise InvalidFields([(("body", "source", "window"), str(exc))]) from None


def _profile_dataset(source: dict[str, Any]) -> ReferenceProfile:
    from mlops.steps.datasets import load_dataset

    where = ("body", "source", "dataset")
    try:
        frame = load_dataset(source["uri"])
    except StepError as exc:
        raise InvalidFields([((*where, "uri"), str(exc))]) from None
    unknown = [c for c in [*source["exclude"], source["label_column"]] if c and c not in frame]
    if unknown:
        raise InvalidFields([((*where,), f"not in the dataset: {', '.join(unknown)}")])
    frame = frame.drop(columns=source["exclude"])
    if source["label_column"]:
        frame = frame.rename(columns={source["label_column"]: PREDICTION})
    try:
        return ReferenceProfile.build(frame, prediction=_prediction(frame))
    except ProfileError as exc:
        raise InvalidFields([((*where,), str(exc))]) from None


def _compare_rows(
    profile: dict[str, Any], thresholds: dict[str, Any] | None, raw: Sequence[Any], limit: int
) -> dict[str, Any]:
    cut = len(raw) > limit
    frame = window_frame(raw[:limit])
    reference = ReferenceProfile.from_dict(profile)
    settings = DriftThresholds.from_dict(thresholds) if thresholds else None
    present = [name for name in reference.features if name in frame]
    document = compare(reference, frame, settings, features=present).to_dict()
    document["window_cut"] = cut
    return document


def _prediction(frame: pd.DataFrame) -> str | None:
    return PREDICTION if PREDICTION in frame else None


def _thresholds(
    document: dict[str, Any], where: tuple[str, ...], profile: ReferenceProfile | None = None
) -> None:
    try:
        settings = DriftThresholds.from_dict(document)
    except (DriftError, TypeError, ValueError) as exc:
        raise InvalidFields([(where, str(exc))]) from None
    if profile is not None:
        unknown = set(settings.features) - set(profile.features)
        if unknown:
            raise InvalidFields([(where, f"not profiled: {', '.join(sorted(unknown))}")])
