"""Alert evaluation: every ``interval_seconds`` one process (a Postgres advisory lock elects
it; on SQLite there is one process) measures each enabled rule's figure, moves its state
(``state.py``) and notifies its channels when an alert fires or resolves.

Each rule's transition is one transaction: its new state and the event, written only if the
rule is still at the revision read (``models.py``). Notifications go out after the commit, never
inside a transaction, concurrently across channels and rules; a rule's notifications go out in
order (a resolved one waits for its firing one). The loop does not wait for them, so that a
receiver down for a minute delays no evaluation; ``evaluate()`` does by default. Each channel's
outcome and attempts are written to the event once known; a process stopping meanwhile leaves
``sending`` there (the notification is not sent again: at most once) until the next process to
take over evaluation marks it ``interrupted``.

Deduplication: notifications are sent on transitions only, so an alert firing for hours is
sent once, under the fingerprint of its rule and labels (``alert_fingerprint``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic import ValidationError
from sqlalchemy import Text, cast, or_, select, update

from mlops.core.database import Database
from mlops.core.leadership import ElectedLoop
from mlops.core.tasks import stop_tasks
from mlops.deployments.models import Deployment
from mlops.monitoring.alerting.figures import measure, parse_figure
from mlops.monitoring.alerting.models import (
    AlertChannelRecord,
    AlertEvent,
    AlertRule,
    alert_rule_channels,
)
from mlops.monitoring.alerting.schemas import AlertEventOut
from mlops.monitoring.alerting.state import NOTIFYING, HeldState, Step, advance, holds
from mlops.monitoring.channels import channel_from_config, parse_channel_config
from mlops.monitoring.delivery import (
    DEFAULT_RETRY_POLICY,
    AlertMessage,
    RetryPolicy,
    alert_fingerprint,
    deliver,
)

logger = logging.getLogger("mlops.monitoring")

ALERT_LOCK = 0x6D6C6F7073_32

ALERTS_FIRING = Gauge(
    "mlops_alerts_firing",
    "1 while the rule's alert fires (held through a lack of data), else 0.",
    ["rule", "deployment", "severity"],
)
NOTIFICATIONS = Counter(
    "mlops_alert_notifications_total",
    "Alert notifications per channel and outcome (delivered, rejected, exhausted).",
    ["channel", "outcome"],
)


@dataclass
class _Rule:
    """A rule as read at the start of a pass (detached from its session)."""

    row: AlertRule
    deployment: Deployment
    channels: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        labels = {"deployment": self.deployment.name, "figure": self.row.figure}
        if self.row.variant is not None:
            labels["variant"] = self.row.variant
        return labels


class AlertEvaluator:
    def __init__(
        self,
        database: Database,
        interval_seconds: float = 30.0,
        policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.database = database
        self.policy = policy  # tests inject tiny delays here
        self.sleep = sleep
        self.loop = ElectedLoop(
            database, ALERT_LOCK, interval_seconds, self._pass, "alert-evaluation"
        )
        self._sending: dict[uuid.UUID, asyncio.Task[None]] = {}  # per rule, its latest notice
        self._gauges: dict[uuid.UUID, tuple[str, str, str]] = {}
        self._settled = False  # deliveries a previous evaluator left "sending", marked
        # told the deployment's name when one of its alerts starts firing (retraining listens)
        self.on_firing: Callable[[str], None] | None = None

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self) -> None:
        try:
            await self.loop.stop()
        finally:
            await stop_tasks(*self._sending.values())

    async def _pass(self) -> None:
        if not self._settled:
            await self.settle_interrupted()
            self._settled = True
        await self.evaluate(wait=False)

    async def settle_interrupted(self) -> int:
        """Deliveries a stopped or crashed evaluator left ``sending`` (it alone was sending
        them) become ``interrupted``: not sent again, and not shown as in progress for ever."""
        async with self.database.sessionmaker() as session, session.begin():
            events = (
                await session.scalars(
                    select(AlertEvent).where(
                        cast(AlertEvent.deliveries, Text).contains('"sending"')
                    )
                )
            ).all()
            for event in events:
                event.deliveries = [
                    {**d, "outcome": "interrupted"} if d.get("outcome") == "sending" else d
                    for d in event.deliveries or []
                ]
        return len(events)

    async def evaluate(
        self, now: datetime | None = None, *, wait: bool = True
    ) -> list[AlertEventOut]:
        """Evaluate every enabled rule (and resolve disabled ones still firing) at ``now``;
        the transitions made, as ``AlertEventOut``, with their deliveries when ``wait``."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        rules = await self._rules()
        events: list[AlertEvent] = []
        sending: list[asyncio.Task[None]] = []
        for rule in rules:
            try:
                made = await self._evaluate(rule, now)
                if made is None:
                    continue  # changed meanwhile (edited, or evaluated elsewhere): next pass
                state, rule_events = made
                self._set_gauge(rule, state)
                events += rule_events
                sending += [self._notify(rule, e) for e in rule_events if e.status in NOTIFYING]
                if self.on_firing is not None and any(e.status == "firing" for e in rule_events):
                    self.on_firing(rule.deployment.name)
            except Exception:
                logger.exception("evaluating an alert rule failed", extra={"rule": rule.row.name})
        self._forget_gauges({rule.row.id for rule in rules})
        if wait and sending:
            await asyncio.gather(*sending, return_exceptions=True)
        return [AlertEventOut.model_validate(event) for event in events]

    async def _rules(self) -> list[_Rule]:
        async with self.database.sessionmaker() as session:
            rows = await session.execute(
                select(AlertRule, Deployment)
                .join(Deployment, Deployment.id == AlertRule.deployment_id)
                .where(or_(AlertRule.enabled.is_(True), AlertRule.state != "ok"))
                .order_by(AlertRule.name)
            )
            rules = {rule.id: _Rule(rule, deployment) for rule, deployment in rows}
            channels = await session.execute(
                select(
                    alert_rule_channels.c.rule_id,
                    AlertChannelRecord.name,
                    AlertChannelRecord.config,
                )
                .join(AlertChannelRecord, AlertChannelRecord.id == alert_rule_channels.c.channel_id)
                .where(alert_rule_channels.c.rule_id.in_(list(rules)))
                .order_by(AlertChannelRecord.name)
            )
            for rule_id, name, config in channels:
                rules[rule_id].channels.append((name, config))
        return list(rules.values())

    async def _measure(self, rule: _Rule, now: datetime) -> float | None:
        row = rule.row
        since = now - timedelta(minutes=row.window_minutes)
        async with self.database.sessionmaker() as session:
            value = await measure(
                session, parse_figure(row.figure), rule.deployment, row.variant, since, now
            )
        return value if value is not None and math.isfinite(value) else None

    async def _evaluate(
        self, rule: _Rule, now: datetime
    ) -> tuple[HeldState, list[AlertEvent]] | None:
        row = rule.row
        value = await self._measure(rule, now) if row.enabled else None
        held: HeldState = row.state  # type: ignore[assignment]
        step = advance(
            held,
            row.state_since,
            holds(value, row.condition, row.threshold),
            now,
            row.for_minutes,
            row.enabled,
        )
        no_data = row.enabled and value is None
        changes: dict[str, Any] = {
            "last_value": value,
            "last_evaluated_at": now,
            "no_data_since": (row.no_data_since or now) if no_data else None,
            "revision": row.revision + 1,
        }
        fingerprint = row.fingerprint or alert_fingerprint(row.name, rule.labels)
        if step.event is not None:
            changes |= {
                "state": step.state,
                "state_since": step.since,
                "fingerprint": None if step.state == "ok" else fingerprint,
            }
        events = [self._event(rule, step, value, fingerprint, now)] if step.event else []
        async with self.database.sessionmaker() as session, session.begin():
            written = await session.execute(
                update(AlertRule)
                .where(AlertRule.id == row.id, AlertRule.revision == row.revision)
                .values(**changes)
            )
            if written.rowcount != 1:  # type: ignore[attr-defined]
                return None
            session.add_all(events)
            await session.flush()
        return step.state, events

    def _event(
        self, rule: _Rule, step: Step, value: float | None, fingerprint: str, now: datetime
    ) -> AlertEvent:
        row = rule.row
        notifying = step.event in NOTIFYING
        return AlertEvent(
            rule_id=row.id,
            rule=row.name,
            deployment=rule.deployment.name,
            variant=row.variant,
            figure=row.figure,
            severity=row.severity,
            status=step.event,
            value=value,
            condition=row.condition,
            threshold=row.threshold,
            fingerprint=fingerprint,
            reason=_reason(rule, step, value),
            deliveries=[_sending(name) for name, _ in rule.channels] if notifying else None,
            created_at=now,
        )

    # ------------------------------------------------------------------ notifications

    def _notify(self, rule: _Rule, event: AlertEvent) -> asyncio.Task[None]:
        row = rule.row
        firing = event.status == "firing"
        summary = f"{row.description}\n{event.reason}" if row.description else event.reason
        message = AlertMessage(
            rule=row.name,
            severity=row.severity,
            status="firing" if firing else "resolved",
            title=f"{row.figure} {row.condition} {row.threshold:g} on {rule.deployment.name}",
            summary=summary[:4000],
            figure=row.figure,
            value=event.value,
            threshold=row.threshold,
            labels=rule.labels,
            started_at=event.created_at if firing else row.state_since,
            # an evaluation at a "now" before the firing one (a clock stepped back) still resolves
            resolved_at=None if firing else max(event.created_at, row.state_since),
            fingerprint=event.fingerprint,
        )
        previous = self._sending.get(row.id)
        task = asyncio.create_task(
            self._send(previous, event, message, rule.channels), name=f"alert-{row.name}"
        )
        self._sending[row.id] = task
        task.add_done_callback(lambda done: self._finished(row.id, done))
        return task

    def _finished(self, rule_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        if self._sending.get(rule_id) is task:
            del self._sending[rule_id]

    async def _send(
        self,
        previous: asyncio.Task[None] | None,
        event: AlertEvent,
        message: AlertMessage,
        channels: list[tuple[str, dict[str, Any]]],
    ) -> None:
        if previous is not None:  # receivers see an alert fire before they see it resolve
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
        results = await asyncio.gather(
            *(self._deliver(name, config, message) for name, config in channels)
        )
        event.deliveries = list(results)
        try:
            async with self.database.sessionmaker() as session, session.begin():
                await session.execute(
                    update(AlertEvent).where(AlertEvent.id == event.id).values(deliveries=results)
                )
        except Exception:  # sent all the same; the event keeps saying "sending"
            logger.exception("recording alert deliveries failed", extra={"rule": message.rule})

    async def _deliver(
        self, name: str, stored: dict[str, Any], message: AlertMessage
    ) -> dict[str, Any]:
        try:
            channel = channel_from_config(parse_channel_config(stored))
        except ValidationError:
            result = _failed(name, "the channel's stored configuration is no longer valid")
        else:
            try:
                delivered = await deliver(channel, message, self.policy, sleep=self.sleep)
            except Exception as exc:  # a bug in a channel: record it, spare the other channels
                logger.exception("alert delivery failed", extra={"channel": name})
                result = _failed(name, f"internal error ({type(exc).__name__})")
            else:
                result = {"channel": name, **delivered.to_dict()}
        NOTIFICATIONS.labels(name, result["outcome"]).inc()
        return result

    # ------------------------------------------------------------------ metrics

    def _set_gauge(self, rule: _Rule, state: HeldState) -> None:
        labels = (rule.row.name, rule.deployment.name, rule.row.severity)
        before = self._gauges.get(rule.row.id)
        if before is not None and before != labels:
            with contextlib.suppress(KeyError):
                ALERTS_FIRING.remove(*before)
        ALERTS_FIRING.labels(*labels).set(1 if state == "firing" else 0)
        self._gauges[rule.row.id] = labels

    def _forget_gauges(self, present: set[uuid.UUID]) -> None:
        """Rules deleted, or disabled and back to ok, leave the metric."""
        for rule_id in set(self._gauges) - present:
            with contextlib.suppress(KeyError):
                ALERTS_FIRING.remove(*self._gauges.pop(rule_id))


def _sending(channel: str) -> dict[str, Any]:
    return {
        "channel": channel,
        "outcome": "sending",
        "attempt_count": 0,
        "last_error": None,
        "attempts": [],
    }


def _failed(channel: str, reason: str) -> dict[str, Any]:
    return {
        "channel": channel,
        "outcome": "rejected",
        "attempt_count": 0,
        "last_error": reason,
        "attempts": [],
    }


def _reason(rule: _Rule, step: Step, value: float | None) -> str:
    row = rule.row
    measured = f"{row.figure} = {value:.4g}" if value is not None else row.figure
    limit = f"{row.condition} {row.threshold:g}"
    window = f"over the last {row.window_minutes} min"
    if not row.enabled:
        return "the rule was disabled"
    if step.event == "pending":
        return f"{measured} {limit} {window}; fires if it holds for {row.for_minutes} min"
    if step.event == "firing":
        held = f" for {row.for_minutes} min" if row.for_minutes else ""
        return f"{measured} {limit} {window}{held}"
    return f"{measured} {window}: no longer {limit}"
