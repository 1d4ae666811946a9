"""Model quality for Prometheus: every ``quality_refresh_seconds``, one process (a Postgres
advisory lock elects it) scores each deployment's last day of labelled predictions, per
variant, into ``mlops_model_quality``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mlops.core.database import Database
from mlops.core.leadership import ElectedLoop
from mlops.deployments.models import Deployment
from mlops.monitoring.metrics import record_quality
from mlops.monitoring.service import MonitoringService

logger = logging.getLogger("mlops.monitoring")

QUALITY_LOCK = 0x6D6C6F7073_31
WINDOW = timedelta(days=1)


class QualityExport:
    def __init__(self, database: Database, refresh_seconds: float) -> None:
        self.database = database
        self.loop = ElectedLoop(
            database, QUALITY_LOCK, refresh_seconds, self.refresh, "quality-export"
        )

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()

    async def refresh(self, now: datetime | None = None) -> int:
        """Score every deployment; how many had labelled rows."""
        until = now or datetime.now(UTC)
        scored = 0
        async with self.database.sessionmaker() as session:
            service = MonitoringService(session)
            for deployment in (await session.scalars(select(Deployment))).all():
                quality = await service.quality(deployment, until - WINDOW, until)
                labelled = [v for v in quality.variants if v.labelled]
                record_quality(deployment.name, labelled)
                scored += bool(labelled)
        return scored
