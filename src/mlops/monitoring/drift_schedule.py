"""Scheduled drift checks: every deployment whose reference sets ``check_every_minutes`` gets a
report of its last ``window_minutes`` that often, made by one process (a Postgres advisory lock
elects it; on SQLite there is one process). A window without predictions makes no report."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from mlops.core.database import Database
from mlops.core.leadership import ElectedLoop
from mlops.deployments.models import Deployment
from mlops.monitoring.drift_service import DriftService
from mlops.monitoring.models import DriftReference, DriftReportRecord

logger = logging.getLogger("mlops.monitoring")

DRIFT_LOCK = 0x6D6C6F7073_30
SCAN_SECONDS = 30.0


class DriftScheduler:
    def __init__(self, database: Database, max_window_rows: int) -> None:
        self.database = database
        self.max_window_rows = max_window_rows
        self.loop = ElectedLoop(database, DRIFT_LOCK, SCAN_SECONDS, self.run_due, "drift-schedule")

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()

    async def run_due(self, now: datetime | None = None) -> int:
        """Make the reports that are due; how many were made."""
        now = now or datetime.now(UTC)
        async with self.database.sessionmaker() as session:
            references = (
                await session.scalars(select(DriftReference).order_by(DriftReference.created_at))
            ).all()
            newest = {reference.deployment_id: reference for reference in references}
            latest = (
                select(DriftReportRecord.deployment_id, func.max(DriftReportRecord.created_at))
                .where(DriftReportRecord.trigger == "schedule")
                .group_by(DriftReportRecord.deployment_id)
            )
            last_runs: dict[Any, datetime] = dict((await session.execute(latest)).all())
        made = 0
        for deployment_id, reference in newest.items():
            every = reference.settings.get("check_every_minutes")
            last = last_runs.get(deployment_id)
            if not every or (last is not None and now - last < timedelta(minutes=every)):
                continue
            async with self.database.sessionmaker() as session, session.begin():
                deployment = await session.get(Deployment, deployment_id)
                if deployment is None:
                    continue
                service = DriftService(session, self.max_window_rows)
                if await service.run_report(deployment, until=now, trigger="schedule"):
                    made += 1
        return made
