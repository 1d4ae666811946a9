"""The prediction log: every prediction request a model was asked to answer (its failures too),
buffered in memory and written in batches.

Serving only appends its ``ServedPrediction`` to a list (``record``, the runtime's
``on_served``); a task of this process writes what has
gathered every ``FLUSH_SECONDS`` in one transaction, so a prediction never waits for the
database. The buffer is bounded: past ``MAX_BUFFERED`` unwritten entries (the database down or
far too slow) new ones are dropped and counted in ``mlops_prediction_log_dropped_total`` rather
than growing the process without limit. Entries older than the retention are deleted in
chunks, at most every ``PRUNE_SECONDS``. On shutdown what is buffered is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import delete, insert, select

from mlops.core.database import Database
from mlops.core.tasks import stop_tasks
from mlops.deployments.models import Deployment
from mlops.deployments.runtime import ServedPrediction
from mlops.monitoring.models import LoggedPrediction

logger = logging.getLogger("mlops.monitoring")

FLUSH_SECONDS = 0.5
MAX_BUFFERED = 100_000
PRUNE_SECONDS = 600.0
PRUNE_CHUNK = 10_000

LOG_WRITTEN = Counter("mlops_prediction_log_written_total", "Predictions written to the log.")
LOG_DROPPED = Counter(
    "mlops_prediction_log_dropped_total",
    "Predictions not logged because the buffer was full (the database down or too slow).",
)


class PredictionLog:
    def __init__(self, database: Database, retention_days: int) -> None:
        self.database = database
        self.retention = timedelta(days=retention_days)
        self.buffer: list[ServedPrediction] = []
        self.task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    def record(self, served: ServedPrediction) -> None:
        if len(self.buffer) >= MAX_BUFFERED:
            LOG_DROPPED.inc()
            return
        self.buffer.append(served)

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="prediction-log")

    async def stop(self) -> None:
        await stop_tasks(self.task)
        with contextlib.suppress(Exception):
            await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
                if time.monotonic() - self._pruned_at >= PRUNE_SECONDS:
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("writing the prediction log failed; retrying")

    async def flush(self) -> int:
        """Write what is buffered; entries of deployments deleted meanwhile are dropped."""
        batch, self.buffer = self.buffer, []
        if not batch:
            return 0
        try:
            async with self.database.sessionmaker() as session, session.begin():
                ids = await self._ids(session, {served.deployment for served in batch})
                rows = [
                    _row(served, ids[served.deployment])
                    for served in batch
                    if served.deployment in ids
                ]
                if rows:
                    await session.execute(insert(LoggedPrediction), rows)
        except Exception:
            self.buffer[:0] = batch[: MAX_BUFFERED - len(self.buffer)]  # try again next time
            raise
        LOG_WRITTEN.inc(len(rows))
        return len(rows)

    async def prune(self, now: datetime | None = None) -> int:
        """Delete entries past the retention, a chunk per statement."""
        self._pruned_at = time.monotonic()
        cutoff = (now or datetime.now(UTC)) - self.retention
        deleted = 0
        while True:
            async with self.database.sessionmaker() as session, session.begin():
                oldest = select(LoggedPrediction.id).where(LoggedPrediction.created_at < cutoff)
                chunk = (await session.scalars(oldest.limit(PRUNE_CHUNK))).all()
                if not chunk:
                    return deleted
                await session.execute(
                    delete(LoggedPrediction).where(LoggedPrediction.id.in_(chunk))
                )
                deleted += len(chunk)

    async def _ids(self, session: Any, names: set[str]) -> dict[str, Any]:
        """Deployment ids by name, read each flush (one query): a deployment deleted and
        created again under its name has a new id."""
        found = await session.execute(
            select(Deployment.name, Deployment.id).where(Deployment.name.in_(names))
        )
        return dict(found.all())


def _row(served: ServedPrediction, deployment_id: Any) -> dict[str, Any]:
    return {
        "request_id": served.request_id,
        "correlation_id": served.correlation_id,
        "deployment_id": deployment_id,
        "variant": served.variant,
        "model_version": served.model_version,
        "features": {"columns": list(served.columns), "rows": served.rows},
        "predictions": served.predictions,
        "latency_ms": served.latency_ms,
        "error": served.error,
        "created_at": served.at,
    }
