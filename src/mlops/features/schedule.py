"""The feature store's background pass, in one elected process every
``feature_schedule_seconds``: views with ``materialize_every_minutes`` are materialized
(incrementally) when due and when they have new batches, and the row-count and freshness
metrics are refreshed from the database. An in-process online store starts empty: every
process that has one refills it from the offline store at start-up."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.database import Database, as_utc, utcnow
from mlops.core.leadership import ElectedLoop
from mlops.core.tasks import stop_tasks
from mlops.features.metrics import record_view_state
from mlops.features.models import FeatureBatch, FeatureMaterialization
from mlops.features.registry import FeatureRegistry
from mlops.features.service import FeatureStore, Stores

FEATURE_SCHEDULE_LOCK = 0x6D6C6F7073_40
SCHEDULE_ACTOR = "schedule"
REFILL_ACTOR = "start-up"
logger = logging.getLogger("mlops.features")


class FeatureSchedule:
    def __init__(self, database: Database, stores: Stores, interval_seconds: float) -> None:
        self.database = database
        self.stores = stores
        self.refill: asyncio.Task[list[str]] | None = None
        self.loop = ElectedLoop(
            database, FEATURE_SCHEDULE_LOCK, interval_seconds, self.run_once, "feature-schedule"
        )

    async def start(self) -> None:
        if self.stores.online.kind == "memory":
            self.refill = asyncio.create_task(self.refill_online_store(), name="feature-refill")
        await self.loop.start()

    async def stop(self) -> None:
        try:
            await stop_tasks(self.refill)
        finally:
            await self.loop.stop()

    async def refill_online_store(self) -> list[str]:
        """Every current view's latest rows into this process's empty in-memory store."""
        refilled: list[str] = []
        try:
            async with self.database.sessionmaker() as session:
                for view in await FeatureRegistry(session).current_views():
                    if view.rows:
                        store = FeatureStore(session, self.stores)
                        await store.materialize(view.name, REFILL_ACTOR, every_batch=True)
                        await session.commit()
                        refilled.append(view.name)
        except Exception:
            logger.exception("refilling the in-process online store failed")
        return refilled

    async def run_once(self, now: datetime | None = None) -> list[str]:
        """One pass; the views it materialized."""
        moment = now or utcnow()
        materialized: list[str] = []
        async with self.database.sessionmaker() as session:
            views = await FeatureRegistry(session).current_views()
            for view in views:
                every = view.definition.get("materialize_every_minutes")
                if every and await _due(session, view.id, moment, timedelta(minutes=every)):
                    await FeatureStore(session, self.stores).materialize(view.name, SCHEDULE_ACTOR)
                    await session.commit()
                    materialized.append(view.name)
            newest = dict(
                (
                    await session.execute(
                        select(FeatureBatch.view_id, func.max(FeatureBatch.max_event_at)).group_by(
                            FeatureBatch.view_id
                        )
                    )
                ).all()
            )
            record_view_state(
                (
                    view.name,
                    view.version,
                    view.rows,
                    as_utc(newest[view.id]).timestamp() if view.id in newest else None,
                )
                for view in views
            )
        return materialized


async def _due(session: AsyncSession, view_id: uuid.UUID, now: datetime, every: timedelta) -> bool:
    """New batches wait, and the last materialization is at least ``every`` old."""
    waiting = await session.scalar(
        select(FeatureBatch.id)
        .where(FeatureBatch.view_id == view_id, FeatureBatch.materialized_at.is_(None))
        .limit(1)
    )
    if waiting is None:
        return False
    last = await session.scalar(
        select(func.max(FeatureMaterialization.finished_at)).where(
            FeatureMaterialization.view_id == view_id
        )
    )
    return last is None or as_utc(last) + every <= now
