"""The monitoring domain's manager: ground truth, logged predictions and model quality."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.errors import InvalidFields, NotFound
from mlops.deployments.models import Deployment
from mlops.monitoring.models import GroundTruth, LoggedPrediction
from mlops.monitoring.quality import QualityError, Task, score
from mlops.monitoring.schemas import (
    MAX_UNMATCHED_LISTED,
    GroundTruthAccepted,
    GroundTruthIn,
    QualityOut,
    VariantQuality,
)

LOOKUP_CHUNK = 500  # ids per IN (...) list


class MonitoringService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def deployment(self, name: str) -> Deployment:
        found = await self.session.scalar(select(Deployment).where(Deployment.name == name))
        if found is None:
            raise NotFound(f"No deployment '{name}'")
        return found

    # ------------------------------------------------------------------ ground truth

    async def record_ground_truth(self, body: GroundTruthIn) -> GroundTruthAccepted:
        """Match each item to the logged predictions it names; check every label count first,
        so that a bad item leaves nothing half-written; a repeated report replaces the truth."""
        by_request = await self._logged(
            LoggedPrediction.request_id, [i.request_id for i in body.items if i.request_id]
        )
        by_correlation = await self._logged(
            LoggedPrediction.correlation_id,
            [i.correlation_id for i in body.items if i.correlation_id],
        )
        labelled: dict[int, tuple[Any, list[Any]]] = {}
        problems: list[tuple[Sequence[str | int], str]] = []
        unmatched: list[str] = []
        matched = 0
        for index, item in enumerate(body.items):
            if item.request_id is not None:
                key, entries = item.request_id, by_request.get(item.request_id, [])
            else:
                key = str(item.correlation_id)
                entries = by_correlation.get(key, [])
            if not entries:
                unmatched.append(key)
                continue
            matched += 1
            values = item.values
            for entry in entries:
                rows = len(entry.predictions)
                if len(values) != rows:
                    field = "labels" if item.labels is not None else "label"
                    problems.append(
                        (
                            ("body", "items", index, field),
                            f"{len(values)} label(s) for request {entry.request_id} of "
                            f"{rows} row(s)",
                        )
                    )
                    break
                labelled[entry.id] = (entry.deployment_id, values)
        if problems:
            raise InvalidFields(problems[:20])
        ids = list(labelled)
        for chunk in _chunks(ids):
            await self.session.execute(
                delete(GroundTruth).where(GroundTruth.prediction_id.in_(chunk))
            )
        if ids:
            await self.session.execute(
                insert(GroundTruth),
                [
                    {"prediction_id": id_, "deployment_id": deployment_id, "labels": values}
                    for id_, (deployment_id, values) in labelled.items()
                ],
            )
        return GroundTruthAccepted(
            items=len(body.items),
            matched=matched,
            predictions_labelled=len(ids),
            unmatched=unmatched[:MAX_UNMATCHED_LISTED],
        )

    async def _logged(self, column: Any, keys: list[str]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for chunk in _chunks(sorted(set(keys))):
            rows = await self.session.execute(
                select(
                    LoggedPrediction.id,
                    column,
                    LoggedPrediction.request_id,
                    LoggedPrediction.deployment_id,
                    LoggedPrediction.predictions,
                ).where(column.in_(chunk), LoggedPrediction.error.is_(None))
            )
            for row in rows:
                found.setdefault(row[1], []).append(row)
        return found

    # ------------------------------------------------------------------ reading the log

    def predictions_query(
        self,
        deployment: Deployment,
        since: datetime,
        until: datetime,
        variant: str | None = None,
    ) -> Select[tuple[LoggedPrediction, Any]]:
        query = (
            select(LoggedPrediction, GroundTruth.labels)
            .outerjoin(GroundTruth, GroundTruth.prediction_id == LoggedPrediction.id)
            .where(
                LoggedPrediction.deployment_id == deployment.id,
                LoggedPrediction.created_at >= since,
                LoggedPrediction.created_at < until,
            )
            .order_by(LoggedPrediction.created_at.desc(), LoggedPrediction.id.desc())
        )
        if variant is not None:
            query = query.where(LoggedPrediction.variant == variant)
        return query

    async def quality(
        self,
        deployment: Deployment,
        since: datetime,
        until: datetime,
        variant: str | None = None,
        task: Task | None = None,
    ) -> QualityOut:
        query = (
            select(
                LoggedPrediction.variant,
                LoggedPrediction.model_version,
                LoggedPrediction.predictions,
                GroundTruth.labels,
            )
            .outerjoin(GroundTruth, GroundTruth.prediction_id == LoggedPrediction.id)
            .where(
                LoggedPrediction.deployment_id == deployment.id,
                LoggedPrediction.created_at >= since,
                LoggedPrediction.created_at < until,
                LoggedPrediction.error.is_(None),
            )
        )
        if variant is not None:
            query = query.where(LoggedPrediction.variant == variant)
        groups: dict[str, list[Any]] = {}
        for row in await self.session.execute(query):
            groups.setdefault(row.variant, []).append(row)
        variants = [_variant_quality(name, rows, task) for name, rows in sorted(groups.items())]
        every = [row for rows in groups.values() for row in rows]
        overall = _variant_quality("*", every, task) if len(groups) > 1 else None
        return QualityOut(
            deployment=deployment.name, since=since, until=until, variants=variants, overall=overall
        )


def _variant_quality(name: str, rows: Iterable[Any], task: Task | None) -> VariantQuality:
    labels: list[Any] = []
    predictions: list[Any] = []
    versions: set[str] = set()
    predicted = 0
    for row in rows:
        versions.add(row.model_version)
        predicted += len(row.predictions)
        if row.labels is not None:
            labels.extend(row.labels)
            predictions.extend(row.predictions)
    out = VariantQuality(
        variant=name,
        model_versions=sorted(versions, key=lambda v: (len(v), v)),
        predictions=predicted,
        labelled=len(labels),
        task=None,
        metrics={},
        notes=[],
    )
    try:
        quality = score(labels, predictions, task)
    except QualityError as exc:
        out.notes.append(str(exc))
        return out
    out.task, out.metrics, out.notes = quality.task, quality.metrics, quality.notes
    return out


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), LOOKUP_CHUNK):
        yield values[start : start + LOOKUP_CHUNK]
