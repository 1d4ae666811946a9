"""A/B tests of a deployment: outcomes reported per request id, and the experiment's report
(per-variant counts and rates or means, each challenger tested against the control)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.errors import Conflict
from mlops.deployments.models import Deployment, PredictionRecord
from mlops.deployments.schemas import (
    AbTestSettings,
    Comparison,
    ExperimentOut,
    OutcomesAccepted,
    OutcomesIn,
    VariantResult,
)
from mlops.deployments.statistics import (
    BinaryVariant,
    NumericVariant,
    Summary,
    compare_means,
    compare_rates,
)

SQUARED = PredictionRecord.outcome * PredictionRecord.outcome


class ExperimentService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record_outcomes(self, deployment: Deployment, body: OutcomesIn) -> OutcomesAccepted:
        values = {outcome.request_id: outcome.value for outcome in body.outcomes}
        found = (
            await self.session.scalars(
                select(PredictionRecord).where(
                    PredictionRecord.deployment_id == deployment.id,
                    PredictionRecord.request_id.in_(list(values)),
                )
            )
        ).all()
        now = datetime.now(UTC)
        for record in found:
            record.outcome, record.outcome_at = values[record.request_id], now
        await self.session.flush()
        known = {record.request_id for record in found}
        return OutcomesAccepted(
            accepted=len(known), unknown=[rid for rid in values if rid not in known]
        )

    async def report(self, deployment: Deployment) -> ExperimentOut:
        settings = AbTestSettings.model_validate(deployment.settings.get("ab_test", {}))
        rows = (
            await self.session.execute(
                select(
                    PredictionRecord.variant,
                    func.count(),
                    func.count(PredictionRecord.outcome),
                    func.coalesce(func.sum(PredictionRecord.outcome), 0.0),
                    func.coalesce(
                        func.sum(PredictionRecord.outcome * PredictionRecord.outcome), 0.0
                    ),
                    func.min(PredictionRecord.created_at),
                )
                .where(PredictionRecord.deployment_id == deployment.id)
                .group_by(PredictionRecord.variant)
            )
        ).all()
        if not rows:
            raise Conflict(f"Deployment '{deployment.name}' has recorded no A/B test predictions")
        control = (deployment.rollout or {}).get("previous")
        rows = sorted(rows, key=lambda row: (row[0] != control, row[5]))  # the control first
        counts = {
            row[0]: (int(row[1]), int(row[2]), float(row[3] or 0.0), float(row[4] or 0.0))
            for row in rows
        }
        names = list(counts)
        if settings.metric == "rate":
            report = compare_rates(
                [BinaryVariant(n, counts[n][1], round(counts[n][2])) for n in names],
                settings.confidence,
            )
            test = "two-proportion z-test (pooled), Wald interval of the difference"
        else:
            report = compare_means(
                [
                    NumericVariant(n, Summary.from_sums(counts[n][1], counts[n][2], counts[n][3]))
                    for n in names
                ],
                settings.confidence,
            )
            test = "Welch's t-test, Welch-Satterthwaite interval of the difference"
        return ExperimentOut(
            metric=settings.metric,
            test=test,
            confidence=settings.confidence,
            control=names[0],
            variants=[
                VariantResult(
                    name=variant.name,
                    predictions=counts[variant.name][0],
                    outcomes=counts[variant.name][1],
                    value=variant.value,
                    comparison=None
                    if variant.comparison is None
                    else Comparison(
                        difference=variant.comparison.difference,
                        confidence_interval=variant.comparison.confidence_interval,
                        statistic=variant.comparison.statistic,
                        p_value=variant.comparison.p_value,
                        significant=variant.comparison.significant,
                    ),
                )
                for variant in report.variants
            ],
        )
