"""The deployment loop of each process: keep the served models and splits in step with the
database and, in the elected process, drive rollouts.

Every pass (each ``TICK_SECONDS``, or at once when notified): load what the database says
should be served here (ready and standby variants), drop what it no longer lists, and rebuild
each deployment's split. The leader also loads new variants (a load or warm-up failure means
the variant never takes traffic) and moves each rollout on under its strategy: ``direct``
switches at once, ``blue_green`` switches at once and keeps the old variant loaded for a
rollback window, ``canary`` moves through its weight steps and analyses each against the stable
variant, rolling back by itself when the analysis fails; ``rolling`` moves traffic in equal
batches with the same checks between them (a batch without traffic does not hold it back).
``ready`` is set after the first complete pass, so ``/ready`` holds until the deployments found
at start-up are loaded. ``warm`` is set once the serving target has prepared (for the in-process
target: MLflow, pandas and scikit-learn imported and the registry open, seconds at start-up):
``/ready`` holds for that too, so that a ready process deploys a model in a fraction of a
second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from mlops.core.database import Database
from mlops.core.leadership import Leadership
from mlops.core.tasks import stop_tasks
from mlops.deployments.canary import CanaryThresholds, analyse_canary
from mlops.deployments.models import Deployment, DeploymentVariant, PredictionRecord
from mlops.deployments.runtime import Runtime
from mlops.deployments.schemas import DeploymentState, Strategy, VariantStatus
from mlops.deployments.service import CONTROLLER, DeploymentService
from mlops.deployments.serving import ModelLoadFailed
from mlops.deployments.targets import ServedModel, ServingTarget
from mlops.security.audit import AuditLog, AuditRecord

logger = logging.getLogger("mlops.deployments")
TICK_SECONDS = 0.5
UNLOAD_GRACE_SECONDS = 2.0
DEPLOYMENTS_LOCK = 0x6D6C6F7073_20
ROLLOUT_ENDINGS = ("promoted", "rolled_back", "variant_failed")  # the controller's decisions


class DeploymentManager:
    def __init__(self, database: Database, target: ServingTarget, audit_log: AuditLog) -> None:
        self.database = database
        self.target = target
        self.audit_log = audit_log
        self.runtime = Runtime()
        self.leadership = Leadership(database, DEPLOYMENTS_LOCK)
        self.ready = asyncio.Event()
        self.warm = asyncio.Event()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.imports: asyncio.Task[None] | None = None
        self.failed_here: dict[tuple[str, str], str] = {}  # models this process cannot load
        self.unloading: dict[tuple[str, str], float] = {}  # models to close, and when
        # told the deployment's name once a rollout it drove has ended (retraining listens)
        self.on_rollout_ended: Callable[[str], None] | None = None

    async def start(self) -> None:
        async with self.database.sessionmaker() as session:
            anything = await session.scalar(select(DeploymentVariant.id).limit(1))
        if anything is None:  # nothing to load: ready from the start
            self.ready.set()
        self.task = asyncio.create_task(self._loop(), name="deployments")
        # for the in-process target, seconds of imports: now, rather than in the first deploy
        self.imports = asyncio.create_task(self._warm_up(), name="serving-target")

    async def _warm_up(self) -> None:
        try:
            await self.target.prepare()
        finally:
            self.warm.set()

    async def stop(self) -> None:
        try:
            await stop_tasks(self.task)
            await self.runtime.close()
            if self.imports is not None:  # a thread cannot be stopped: let it end
                await self.imports
        finally:
            await self.leadership.release()

    def notify(self) -> None:
        self.wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                leader = await self.leadership.try_acquire()
                await self.tick(leader)
                self.ready.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("deployment pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self.wake.wait()
            self.wake.clear()

    async def tick(self, leader: bool) -> None:
        if leader:
            await self._load_new_variants()
            await self._drive_rollouts()
        await self._sync()
        await self._write_assignments()

    async def _write_assignments(self) -> None:
        """The A/B predictions answered since the last pass, in one transaction."""
        assigned, self.runtime.assigned = self.runtime.assigned, []
        if not assigned:
            return
        async with self.database.sessionmaker() as session, session.begin():
            names = {name for _, name, _, _, _ in assigned}
            ids = dict(
                (
                    await session.execute(
                        select(Deployment.name, Deployment.id).where(Deployment.name.in_(names))
                    )
                )
                .tuples()
                .all()
            )
            session.add_all(
                PredictionRecord(
                    request_id=request_id,
                    deployment_id=ids[name],
                    variant=variant,
                    request_key=key,
                    created_at=when,
                )
                for request_id, name, variant, key, when in assigned
                if name in ids
            )

    # ------------------------------------------------------------------ serving here

    async def _sync(self) -> None:
        async with self.database.sessionmaker() as session:
            deployments = (await session.scalars(select(Deployment))).all()
            variants = (
                await session.scalars(
                    select(DeploymentVariant).where(
                        DeploymentVariant.status.in_([VariantStatus.READY, VariantStatus.STANDBY])
                    )
                )
            ).all()
        wanted = {(v.model_name, v.model_version) for v in variants}
        for key in wanted - set(self.runtime.models) - set(self.failed_here):
            await self._ensure_loaded(*key)
        by_deployment: dict[Any, list[DeploymentVariant]] = {}
        for variant in variants:
            by_deployment.setdefault(variant.deployment_id, []).append(variant)
        names = set()
        for deployment in deployments:
            names.add(deployment.name)
            self._set_route(deployment, by_deployment.get(deployment.id, []))
        for gone in set(self.runtime.routes) - names:
            self.runtime.drop_route(gone)
        await self._unload(wanted)

    def _set_route(self, deployment: Deployment, variants: Sequence[DeploymentVariant]) -> None:
        self.runtime.set_route(
            deployment.name,
            [
                (v.name, v.model_name, v.model_version, v.weight)
                for v in variants
                if v.status == VariantStatus.READY
            ],
            sticky=(deployment.rollout or {}).get("strategy") == Strategy.AB_TEST,
            key_header=deployment.settings.get("ab_test", {}).get("key_header", "X-User-Id"),
            feature_service=deployment.feature_service,
        )

    async def _unload(self, wanted: set[tuple[str, str]]) -> None:
        """Close models no route uses any more, a pass after the routes left them: a request
        that picked one just before still gets its answer."""
        now = asyncio.get_running_loop().time()
        for key in set(self.runtime.models) - wanted:
            if key not in self.unloading:
                self.unloading[key] = now + UNLOAD_GRACE_SECONDS
            elif self.unloading[key] <= now:
                del self.unloading[key]
                await self.runtime.models.pop(key).close()
        for key in set(self.unloading) & wanted:  # wanted again before it went
            del self.unloading[key]

    async def _ensure_loaded(self, model: str, version: str) -> ServedModel:
        key = (model, version)
        if key not in self.runtime.models:
            try:
                self.runtime.models[key] = await self.target.load(model, version)
            except ModelLoadFailed as exc:
                self.failed_here[key] = str(exc)
                raise
        return self.runtime.models[key]

    # ------------------------------------------------------------------ the leader's work

    async def _load_new_variants(self) -> None:
        async with self.database.sessionmaker() as session:
            loading = (
                await session.scalars(
                    select(DeploymentVariant).where(
                        DeploymentVariant.status == VariantStatus.LOADING
                    )
                )
            ).all()
        for variant in loading:
            key = (variant.model_name, variant.model_version)
            self.failed_here.pop(key, None)  # a new request to load it: try again
            try:
                model = await self._ensure_loaded(*key)
                outcome, detail = True, model.describe()
            except ModelLoadFailed as exc:
                outcome, detail = False, str(exc)
            async with self.database.sessionmaker() as session, session.begin():
                service = DeploymentService(session)
                stored = await session.get(DeploymentVariant, variant.id)
                deployment = await session.get(Deployment, variant.deployment_id)
                if stored is None or deployment is None or stored.status != VariantStatus.LOADING:
                    continue
                if outcome:
                    await service.variant_ready(deployment, stored, detail)
                    # served here as it is committed: a client told "ready" finds it (as in
                    # _drive_rollouts), not only after this tick's _sync
                    self._set_route(deployment, await service.variants(deployment))
                else:
                    await service.variant_failed(deployment, stored, detail)
            await self._audit(service)

    async def _drive_rollouts(self) -> None:
        now = datetime.now(UTC)
        async with self.database.sessionmaker() as session, session.begin():
            service = DeploymentService(session)
            deployments = (await session.scalars(select(Deployment))).all()
            for deployment in deployments:
                await service.retire_expired(deployment, now)
                if deployment.state != DeploymentState.ROLLING_OUT or deployment.rollout is None:
                    continue
                target, previous = await service._rollout_pair(deployment)
                if target.status != VariantStatus.READY:
                    continue  # still loading (a failure ends the rollout in _load_new_variants)
                await self._advance(service, deployment, target, previous, now)
                # this process serves the new split as it commits it, not a pass later: a
                # client told "ready" must not find the deployment unserved here
                variants = await session.scalars(
                    select(DeploymentVariant).where(
                        DeploymentVariant.deployment_id == deployment.id
                    )
                )
                self._set_route(deployment, variants.all())
        await self._audit(service)

    async def _audit(self, service: DeploymentService) -> None:
        """The controller's decisions, committed, into the audit log beside people's requests."""
        for name, kind, reason in service.decisions:
            if kind in ROLLOUT_ENDINGS and self.on_rollout_ended is not None:
                self.on_rollout_ended(name)
            await self.audit_log.append(
                AuditRecord(
                    principal=CONTROLLER,
                    action=f"deployment.{kind}",
                    resource=f"/api/v1/deployments/{name}",
                    outcome="success",
                    status_code=200,
                    details={"reason": reason},
                )
            )
        service.decisions.clear()

    async def _advance(
        self,
        service: DeploymentService,
        deployment: Deployment,
        target: DeploymentVariant,
        previous: DeploymentVariant | None,
        now: datetime,
    ) -> None:
        rollout = deployment.rollout or {}
        strategy = rollout.get("strategy")
        if previous is None or strategy in (Strategy.DIRECT, Strategy.BLUE_GREEN):
            reason = (
                "switched at once (blue-green)" if strategy == Strategy.BLUE_GREEN else "direct"
            )
            await service.finish_rollout(deployment, target, previous, CONTROLLER, reason)
            return
        if strategy == Strategy.AB_TEST:  # a fixed split until someone decides
            if int(rollout.get("step", -1)) < 0:
                share = float(deployment.settings["ab_test"]["share"])
                await service.set_step(
                    deployment,
                    {target.name: share, previous.name: 100.0 - share},
                    0,
                    f"A/B test: {target.name} {share:g} %, {previous.name} {100 - share:g} %",
                    {"share": share},
                )
            return
        settings, steps = _stepping(deployment.settings, strategy)
        step = int(rollout.get("step", -1))
        if step < 0:
            await self._step(
                service, deployment, target, previous, 0, steps, f"first {strategy} step"
            )
            return
        started = datetime.fromisoformat(rollout["step_started_at"])
        if (now - started).total_seconds() < float(settings["analysis_seconds"]):
            return
        since = started.timestamp()
        stable = self.runtime.window(deployment.name, previous.name).since(since)
        canary = self.runtime.window(deployment.name, target.name).since(since)
        verdict = analyse_canary(stable, canary, _thresholds(settings))
        detail = {
            "step": step,
            "weight": steps[step],
            "outcome": verdict.outcome,
            "reasons": list(verdict.reasons),
            "figures": verdict.figures,
        }
        if verdict.outcome == "fail":
            reason = f"{strategy} analysis failed: " + "; ".join(verdict.reasons)
            await service.abort_rollout(
                deployment, target, previous, CONTROLLER, reason, "analysis", detail
            )
        elif verdict.outcome == "inconclusive" and strategy == Strategy.CANARY:
            waited = int(rollout.get("inconclusive", 0)) + 1
            if waited > int(settings["max_inconclusive_steps"]):
                reason = f"canary analysis inconclusive {waited} times: " + "; ".join(
                    verdict.reasons
                )
                await service.abort_rollout(
                    deployment, target, previous, CONTROLLER, reason, "inconclusive", detail
                )
                return
            deployment.rollout = {
                **rollout,
                "inconclusive": waited,
                "step_started_at": now.isoformat(),
            }
            await service.note(
                deployment, "analysis", "inconclusive: " + "; ".join(verdict.reasons), detail
            )
        elif step + 1 < len(steps):
            await self._step(
                service,
                deployment,
                target,
                previous,
                step + 1,
                steps,
                f"analysis {verdict.outcome}: " + "; ".join(verdict.reasons),
                detail,
            )
        else:
            await service.finish_rollout(
                deployment,
                target,
                previous,
                CONTROLLER,
                f"{strategy} analysis passed at every step",
                detail,
            )

    @staticmethod
    async def _step(
        service: DeploymentService,
        deployment: Deployment,
        target: DeploymentVariant,
        previous: DeploymentVariant,
        step: int,
        steps: list[float],
        reason: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        weight = float(steps[step])
        await service.set_step(
            deployment,
            {target.name: weight, previous.name: 100.0 - weight},
            step,
            f"{target.name} at {weight:g} %: {reason}",
            {"step": step, "weight": weight, **(detail or {})},
        )


def _stepping(settings: dict[str, Any], strategy: str | None) -> tuple[dict[str, Any], list[float]]:
    """The analysis settings and weight steps of a canary or rolling rollout."""
    if strategy == Strategy.ROLLING:
        from mlops.deployments.schemas import RollingSettings

        rolling = RollingSettings.model_validate(settings["rolling"])
        values = rolling.model_dump()
        values["analysis_seconds"] = rolling.batch_seconds
        values["max_inconclusive_steps"] = 0
        return values, rolling.steps
    return settings["canary"], list(settings["canary"]["steps"])


def _thresholds(settings: dict[str, Any]) -> CanaryThresholds:
    return CanaryThresholds(
        max_error_rate_increase=float(settings["max_error_rate_increase"]),
        max_latency_p95_ratio=float(settings["max_latency_p95_ratio"]),
        max_latency_p95_increase_ms=settings.get("max_latency_p95_increase_ms"),
        min_requests=int(settings["min_requests"]),
    )
