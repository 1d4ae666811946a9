"""The DAG engine: moves every run forward, one transaction per state change.

It runs in exactly one process (``leadership.py`` elects it on Postgres). Each pass over a run
starts ready steps (or completes them from the cache), skips steps whose upstream failed, and
finishes the run when every step is final. Results from backends are recorded as they arrive.
On start it adopts what a dead process left running: those attempts are retried under their
retry policy or failed as interrupted, and their runs go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.backends import create_backend, is_whole_run, whole_run_backends
from mlops.backends.base import OrchestratorBackend, StepResult, StepTask
from mlops.core.database import Database
from mlops.core.leadership import Leadership
from mlops.core.settings import Settings
from mlops.core.tasks import stop_tasks
from mlops.pipelines.caching import cache_key_for
from mlops.pipelines.logs import step_log_path
from mlops.pipelines.metrics import (
    ACTIVE_RUNS,
    STEP_QUEUE_DEPTH,
    record_run_finished,
    record_step_finished,
)
from mlops.pipelines.models import Pipeline, PipelineRun, StepRun
from mlops.pipelines.remote import RemoteRuns
from mlops.pipelines.schedule import next_fire_time
from mlops.pipelines.spec import RetryPolicy, resolve_templates
from mlops.pipelines.states import (
    DONE_STEP,
    FINAL_RUN,
    FINAL_STEP,
    RunStatus,
    StepStatus,
    settle_cancelled,
)

logger = logging.getLogger("mlops.pipelines.engine")
RunFinished = Callable[[uuid.UUID, str], Awaitable[None]]
FULL_SCAN_SECONDS = 1.0
INTERRUPTED = "interrupted: the service stopped while this attempt ran"
_BLOCKING = frozenset({StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED})


class PipelineEngine:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.backends: dict[str, OrchestratorBackend] = {}
        self.results: asyncio.Queue[StepResult] = asyncio.Queue()
        # Runs to advance, in the order they were marked (dicts keep insertion order).
        self.dirty: dict[uuid.UUID, None] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.inflight: dict[str, str] = {}  # task id -> backend name
        # Runs with ready steps but no free slot, by creation time: when slots free up, only as
        # many of the oldest are woken, so a deep queue costs no work per result and runs
        # start first come, first served.
        self.waiting: dict[uuid.UUID, datetime] = {}
        self.leadership = Leadership(database)
        self.artifact_root = settings.effective_artifact_root
        self.finish_hooks: dict[str, list[RunFinished]] = {}
        self.hook_tasks: set[asyncio.Task[None]] = set()
        self.remote = RemoteRuns(database, settings, self._run_finished)
        # A whole-run backend polled more often than a full scan gets scans that often.
        self.scan_seconds = min([FULL_SCAN_SECONDS, *self.remote.poll_intervals()])

    def on_run_finished(self, pipeline_name: str, hook: RunFinished) -> None:
        """Call ``hook(run_id, status)`` when a run of ``pipeline_name`` ends (again for each
        notification of a cancelled run: hooks must be idempotent). Hooks add up."""
        self.finish_hooks.setdefault(pipeline_name, []).append(hook)

    def _run_finished(self, pipeline_name: str, run_id: uuid.UUID, status: str) -> None:
        for hook in self.finish_hooks.get(pipeline_name, []):
            task = asyncio.create_task(self._call_hook(hook, run_id, status))
            self.hook_tasks.add(task)
            task.add_done_callback(self.hook_tasks.discard)

    @staticmethod
    async def _call_hook(hook: RunFinished, run_id: uuid.UUID, status: str) -> None:
        try:
            await hook(run_id, status)
        except Exception:
            logger.exception("the finish hook of run %s failed", run_id)

    async def start(self) -> None:
        self.task = asyncio.create_task(self._lead(), name="pipeline-engine")

    async def stop(self) -> None:
        """Stop the loop and the backends; whatever fails, give up leadership."""
        try:
            await stop_tasks(self.task)
            for backend in self.backends.values():
                try:
                    await backend.close()
                except Exception:
                    logger.exception("backend %s did not close cleanly", backend.name)
            await self.remote.close()
        finally:
            await self.leadership.release()

    async def _lead(self) -> None:
        await self.leadership.wait()
        logger.info("this process runs the pipeline engine")
        while True:  # the engine must not die with its first pass: retry until recovery holds
            try:
                await self.recover()
                break
            except Exception:
                logger.exception("recovering interrupted attempts failed; retrying")
                await asyncio.sleep(1)
        await self._loop()

    def notify(self, run_id: uuid.UUID | None = None) -> None:
        if run_id is not None:
            self.dirty[run_id] = None
        self.wake.set()

    async def _record_result(self, result: StepResult) -> None:
        await self.results.put(result)
        self.wake.set()

    async def backend(self, name: str) -> OrchestratorBackend:
        if name not in self.backends:
            backend = create_backend(name, self._record_result, self.settings)
            await backend.start()
            self.backends[name] = backend
        return self.backends[name]

    def queue_depth(self) -> int:
        return sum(backend.queue_depth() for backend in self.backends.values())

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> None:
        """Adopt attempts a dead process left running: retry them or fail them. (Runs on
        whole-run backends go on there: they are observed again, not adopted.)"""
        now = datetime.now(UTC)
        async with self.database.sessionmaker() as session, session.begin():
            orphans = (
                await session.scalars(
                    select(StepRun)
                    .join(PipelineRun, PipelineRun.id == StepRun.run_id)
                    .where(
                        StepRun.status == StepStatus.RUNNING,
                        PipelineRun.backend.not_in(whole_run_backends()),
                    )
                )
            ).all()
            for step in orphans:
                if step.attempts < step.max_attempts:
                    step.status = StepStatus.PENDING
                    step.next_attempt_at = now
                    step.error = f"{INTERRUPTED}; retrying"
                else:
                    step.status = StepStatus.FAILED
                    step.finished_at = now
                    step.error = INTERRUPTED
                self.dirty[step.run_id] = None
        if orphans:
            logger.warning("adopted %d interrupted step attempts", len(orphans))

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        last_scan = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._drain_results()
                if loop.time() - last_scan >= self.scan_seconds:
                    last_scan = loop.time()
                    await self._full_scan()
                while self.dirty:
                    run_id = next(iter(self.dirty))
                    del self.dirty[run_id]
                    await self._advance(run_id)
                    await self._drain_results()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pipeline engine pass failed; retrying")
                await asyncio.sleep(0.5)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.scan_seconds):
                    await self.wake.wait()
            self.wake.clear()

    async def _full_scan(self) -> None:
        """Pick up what other processes changed: new runs, due retries, cancellations, schedules."""
        now = datetime.now(UTC)
        async with self.database.sessionmaker() as session, session.begin():
            await self._fire_schedules(session, now)
            active = await session.scalars(
                select(PipelineRun.id)
                .where(PipelineRun.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
                .order_by(PipelineRun.created_at)
            )
            active_ids = active.all()
            for run_id in await session.scalars(
                select(PipelineRun.id).where(PipelineRun.external_cancel_pending.is_(True))
            ):
                self.dirty[run_id] = None
            for run_id in active_ids:
                if run_id not in self.waiting:  # those wait for a slot: _wake_waiting's call
                    self.dirty[run_id] = None
            self._wake_waiting()
            ACTIVE_RUNS.set(len(active_ids))
            STEP_QUEUE_DEPTH.set(self.queue_depth())
            stale = await self._stale_inflight(session)
        for task_id in stale:
            await self._cancel_task(task_id)

    async def _stale_inflight(self, session: AsyncSession) -> list[str]:
        """Attempts running here whose step is no longer running (cancelled by any replica)."""
        if not self.inflight:
            return []
        ids = [uuid.UUID(task_id.partition(":")[0]) for task_id in self.inflight]
        running = set(
            (
                await session.scalars(
                    select(StepRun.id).where(
                        StepRun.id.in_(ids), StepRun.status == StepStatus.RUNNING
                    )
                )
            ).all()
        )
        return [t for t in self.inflight if uuid.UUID(t.partition(":")[0]) not in running]

    async def _cancel_task(self, task_id: str) -> None:
        backend_name = self.inflight.pop(task_id, None)
        if backend_name is not None:
            await (await self.backend(backend_name)).cancel(task_id)
            self._wake_waiting()  # its slot is free again

    async def _fire_schedules(self, session: AsyncSession, now: datetime) -> None:
        from mlops.pipelines.service import PipelineService

        due = (
            await session.scalars(
                select(Pipeline).where(
                    Pipeline.next_fire_at.is_not(None),
                    Pipeline.next_fire_at <= now,
                    Pipeline.schedule_paused.is_(False),
                )
            )
        ).all()
        service = PipelineService(
            session,
            default_backend=self.settings.pipeline_backend,
        )
        for pipeline in due:
            fire_at = pipeline.next_fire_at
            assert fire_at is not None and pipeline.schedule_cron and pipeline.schedule_timezone
            run, _ = await service.create_run(
                pipeline.name,
                {},
                "scheduler",
                idempotency_key=f"schedule:{fire_at.isoformat()}",
                trigger="schedule",
            )
            pipeline.next_fire_at = next_fire_time(
                pipeline.schedule_cron, pipeline.schedule_timezone, now
            )
            self.dirty[run.id] = None

    async def _drain_results(self) -> None:
        while not self.results.empty():
            result = self.results.get_nowait()
            run_id = await self._apply_result(result)
            if run_id is not None:
                self.dirty[run_id] = None
            self._wake_waiting()  # a slot is free again

    def _wake_waiting(self) -> None:
        """Mark the oldest waiting runs dirty, as many as there are free slots (all of them
        when a backend has no limit); the others stay asleep."""
        if not self.waiting:
            return
        free: int | None = 0
        for backend in self.backends.values():
            slots = backend.free_slots()
            free = None if slots is None or free is None else free + slots
        oldest = sorted(self.waiting, key=self.waiting.__getitem__)
        for run_id in oldest if free is None else oldest[: max(free, 1)]:
            del self.waiting[run_id]
            self.dirty[run_id] = None

    async def _apply_result(self, result: StepResult) -> uuid.UUID | None:
        self.inflight.pop(result.task_id, None)
        step_id, _, attempt = result.task_id.partition(":")
        now = datetime.now(UTC)
        async with self.database.sessionmaker() as session, session.begin():
            step = await session.get(StepRun, uuid.UUID(step_id))
            if step is None or step.status != StepStatus.RUNNING or str(step.attempts) != attempt:
                return None  # cancelled or superseded meanwhile
            if result.ok:
                step.status = StepStatus.SUCCEEDED
                step.outputs = result.outputs
                step.digests = result.digests
                step.error = None
                step.finished_at = now
            elif step.attempts < step.max_attempts:
                policy = RetryPolicy(
                    max=step.max_attempts - 1,
                    backoff_seconds=step.backoff_seconds,
                    max_backoff_seconds=step.max_backoff_seconds,
                )
                delay = policy.delay(step.attempts)
                step.status = StepStatus.PENDING
                step.next_attempt_at = now + timedelta(seconds=delay)
                step.error = f"attempt {step.attempts} failed: {result.error}"
            else:
                step.status = StepStatus.FAILED
                step.error = result.error
                step.finished_at = now
            record_step_finished(step.type, step.status, result.duration_seconds)
            return step.run_id

    # ------------------------------------------------------------------ one run

    async def _advance(self, run_id: uuid.UUID) -> None:
        if not await self._advance_steps(run_id):
            await self.remote.advance(run_id)

    async def _advance_steps(self, run_id: uuid.UUID) -> bool:
        """Move a run on a step-level backend forward; False for a whole-run backend's run."""
        launches: list[tuple[str, StepTask]] = []
        cancelled_run = finished = False
        async with self.database.sessionmaker() as session, session.begin():
            run = await session.get(PipelineRun, run_id)
            if run is None:
                return True
            if is_whole_run(run.backend):
                return False
            pipeline_name = run.pipeline_name
            unavailable = None
            try:
                slots = (await self.backend(run.backend)).free_slots()
            except Exception as exc:  # unconfigured, or its client cannot be built
                logger.exception("backend %s could not start", run.backend)
                slots, unavailable = 0, f"backend {run.backend!r} cannot start: {exc}"
            if slots and self.waiting and run.created_at > min(self.waiting.values()):
                slots = 0  # older runs wait for a slot: first come, first served
            steps = (
                await session.scalars(
                    select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.position)
                )
            ).all()
            now = datetime.now(UTC)
            if run.status == RunStatus.CANCELLED:
                cancelled_run = True
                settle_cancelled(list(steps), now)
            elif unavailable and run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                self._fail_unlaunchable(run, list(steps), unavailable, now)
                finished = True
            elif run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                if run.status == RunStatus.QUEUED:
                    run.status = RunStatus.RUNNING
                    run.started_at = now
                launches = await self._start_ready(session, run, list(steps), now, slots)
                self._finish_if_done(run, list(steps), now)
                finished = run.status in FINAL_RUN
            status = run.status
        if cancelled_run:
            prefixes = tuple(f"{step.id}:" for step in steps)
            for task_id in [t for t in self.inflight if t.startswith(prefixes)]:
                await self._cancel_task(task_id)
        if cancelled_run or finished:
            self._run_finished(pipeline_name, run_id, status)
        for backend_name, task in launches:
            self.inflight[task.task_id] = backend_name
            await (await self.backend(backend_name)).launch(task)
        return True

    async def _start_ready(
        self,
        session: AsyncSession,
        run: PipelineRun,
        steps: list[StepRun],
        now: datetime,
        slots: int | None,
    ) -> list[tuple[str, StepTask]]:
        by_name = {step.name: step for step in steps}
        launches: list[tuple[str, StepTask]] = []
        progressed = True
        while progressed:  # a cache hit can make the next step ready at once
            progressed = False
            for step in steps:
                if step.status != StepStatus.PENDING:
                    continue
                upstream = [by_name[name] for name in step.depends_on]
                blocked = [u.name for u in upstream if u.status in _BLOCKING]
                if blocked:
                    step.status, step.finished_at = StepStatus.SKIPPED, now
                    step.error = f"upstream {', '.join(blocked)} did not succeed"
                    progressed = True
                    continue
                if any(u.status not in DONE_STEP for u in upstream):
                    continue
                if step.next_attempt_at is not None and step.next_attempt_at > now:
                    continue
                can_launch = slots is None or len(launches) < slots
                task = await self._prepare(session, run, step, by_name, now, can_launch)
                progressed = progressed or step.status in (StepStatus.CACHED, StepStatus.FAILED)
                if task is not None:
                    launches.append((run.backend, task))
                elif step.status == StepStatus.PENDING:
                    self.waiting[run.id] = run.created_at
        return launches

    async def _prepare(
        self,
        session: AsyncSession,
        run: PipelineRun,
        step: StepRun,
        by_name: dict[str, StepRun],
        now: datetime,
        can_launch: bool,
    ) -> StepTask | None:
        """Complete ``step`` from the cache, or make its next attempt if a slot is free."""
        outputs = {name: s.outputs or {} for name, s in by_name.items() if s.status in DONE_STEP}
        try:
            params: dict[str, Any] = resolve_templates(step.params, run.params, outputs)
        except KeyError as exc:
            step.status, step.finished_at, step.error = StepStatus.FAILED, now, str(exc.args[0])
            return None
        upstream_digests: dict[str, str] = {}
        for name in step.depends_on:
            upstream_digests.update(by_name[name].digests or {})
        step.resolved_params = params
        step.cache_key = cache_key_for(step.type, params, upstream_digests)
        if step.cache:
            hit = await session.scalar(
                select(StepRun)
                .where(StepRun.cache_key == step.cache_key, StepRun.status == StepStatus.SUCCEEDED)
                .order_by(StepRun.finished_at.desc())
                .limit(1)
            )
            if hit is not None:
                step.status, step.started_at, step.finished_at = StepStatus.CACHED, now, now
                step.outputs, step.digests, step.cached_from = hit.outputs, hit.digests, hit.id
                step.error = None
                return None
        if not can_launch:
            return None
        step.status = StepStatus.RUNNING
        step.attempts += 1
        step.started_at = now
        step.next_attempt_at = None
        log_path = step_log_path(self.settings.data_dir, run.id, step.name, step.attempts)
        return StepTask(
            task_id=f"{step.id}:{step.attempts}",
            run_id=str(run.id),
            step=step.name,
            type=step.type,
            attempt=step.attempts,
            params=params,
            timeout_seconds=step.timeout_seconds,
            artifact_root=self.artifact_root,
            work_dir=str(Path(self.settings.data_dir) / "work" / str(run.id) / step.name),
            log_path=str(log_path),
        )

    @staticmethod
    def _fail_unlaunchable(
        run: PipelineRun, steps: list[StepRun], reason: str, now: datetime
    ) -> None:
        """A run whose backend cannot start fails at once, with the reason; what never ran is
        skipped (attempts already out are not the engine's to judge: none can be, as the
        backend never started in this process)."""
        for step in steps:
            if step.status == StepStatus.PENDING:
                step.status, step.finished_at, step.error = StepStatus.SKIPPED, now, reason
        run.status, run.error, run.finished_at = RunStatus.FAILED, reason, now
        run.started_at = run.started_at or now
        record_run_finished(run.pipeline_name, run.status)

    def _finish_if_done(self, run: PipelineRun, steps: list[StepRun], now: datetime) -> None:
        if any(step.status not in FINAL_STEP for step in steps):
            return
        failed = [step.name for step in steps if step.status == StepStatus.FAILED]
        run.status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
        run.error = f"failed steps: {', '.join(failed)}" if failed else None
        run.finished_at = now
        record_run_finished(run.pipeline_name, run.status)
