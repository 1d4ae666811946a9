"""The alerting manager: channels (secrets kept, never shown), rules, their alerts and
history. The evaluator (``evaluator.py``) moves the alerts; this module only reads them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.errors import Conflict, InvalidFields, NotFound, UpstreamFailed
from mlops.core.pagination import Page, PageParams
from mlops.deployments.models import Deployment
from mlops.monitoring.alerting.channel_configs import channel_config, channel_out, stored_config
from mlops.monitoring.alerting.figures import parse_figure
from mlops.monitoring.alerting.models import (
    AlertChannelRecord,
    AlertEvent,
    AlertRule,
    alert_rule_channels,
)
from mlops.monitoring.alerting.schemas import (
    AlertOut,
    ChannelIn,
    ChannelOut,
    DeliveryOut,
    RuleIn,
    RuleOut,
    RulePatch,
    RuleStatus,
)
from mlops.monitoring.alerting.state import HeldState, display_state
from mlops.monitoring.channels import channel_from_config
from mlops.monitoring.delivery import AlertMessage, RetryPolicy, deliver

NOT_NULL_RULE_FIELDS = (
    "figure",
    "condition",
    "threshold",
    "window_minutes",
    "for_minutes",
    "severity",
    "channels",
    "enabled",
)

# --------------------------------------------------------------------------- rule views


def rule_status(rule: AlertRule) -> RuleStatus:
    held: HeldState = rule.state  # type: ignore[assignment]
    return RuleStatus(
        state=display_state(held, rule.no_data_since is not None),
        held_state=held,
        since=rule.state_since,
        no_data_since=rule.no_data_since,
        value=rule.last_value,
        last_evaluated_at=rule.last_evaluated_at,
        fingerprint=rule.fingerprint,
    )


def alert_out(rule: AlertRule, deployment: str) -> AlertOut:
    return AlertOut(
        **rule_status(rule).model_dump(),
        rule=rule.name,
        deployment=deployment,
        variant=rule.variant,
        figure=rule.figure,
        condition=rule.condition,
        threshold=rule.threshold,
        severity=rule.severity,
        enabled=rule.enabled,
    )


class AlertService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------------ channels

    async def create_channel(self, body: ChannelIn, actor: str) -> AlertChannelRecord:
        record = AlertChannelRecord(
            name=body.name,
            kind=body.config.kind,
            config=stored_config(body.config),
            description=body.description,
            created_by=actor,
        )
        self.session.add(record)
        try:
            await self.session.flush()
        except IntegrityError:
            raise Conflict(f"A channel named '{body.name}' already exists") from None
        return record

    async def channels_page(self, page: PageParams, kind: str | None = None) -> Page[ChannelOut]:
        query = select(AlertChannelRecord).order_by(AlertChannelRecord.name)
        if kind:
            query = query.where(AlertChannelRecord.kind == kind)
        total = await self.session.scalar(
            select(func.count()).select_from(query.order_by(None).subquery())
        )
        records = await self.session.scalars(query.limit(page.limit).offset(page.offset))
        return Page[ChannelOut](
            items=[channel_out(record) for record in records],
            total=int(total or 0),
            limit=page.limit,
            offset=page.offset,
        )

    async def channel(self, name: str) -> AlertChannelRecord:
        found = await self.session.scalar(
            select(AlertChannelRecord).where(AlertChannelRecord.name == name)
        )
        if found is None:
            raise NotFound(f"No alert channel '{name}'")
        return found

    async def delete_channel(self, name: str) -> None:
        """Refused while a rule uses the channel: a rule silently losing where it notifies
        would fire into the void."""
        record = await self.channel(name)
        users = await self._rules_using(record)
        if users:
            raise Conflict(f"Channel '{name}' is used by rule(s) {', '.join(users)}: detach it")
        try:
            await self.session.execute(
                delete(AlertChannelRecord).where(AlertChannelRecord.id == record.id)
            )
        except IntegrityError:  # a rule took it up meanwhile
            raise Conflict(f"Channel '{name}' was just taken up by a rule") from None

    async def _rules_using(self, record: AlertChannelRecord) -> list[str]:
        names = await self.session.scalars(
            select(AlertRule.name)
            .join(alert_rule_channels, alert_rule_channels.c.rule_id == AlertRule.id)
            .where(alert_rule_channels.c.channel_id == record.id)
            .order_by(AlertRule.name)
        )
        return list(names)

    async def send_test(self, name: str, policy: RetryPolicy) -> DeliveryOut:
        """Deliver a test message; ``UpstreamFailed`` (with the secret-free reason) unless
        the receiver took it."""
        record = await self.channel(name)
        try:
            config = channel_config(record)
        except ValidationError:
            raise Conflict(f"Channel '{name}' holds a configuration no longer valid") from None
        await self.session.commit()  # nothing written: no transaction open across the delivery
        result = await deliver(channel_from_config(config), AlertMessage.test_message(), policy)
        if not result.delivered:
            last = result.last_error
            raise UpstreamFailed(
                f"Channel '{name}' did not deliver the test message ({result.outcome} after "
                f"{result.attempt_count} attempt(s)): {last.reason if last else 'no attempt'}"
            )
        return DeliveryOut.model_validate({"channel": name, **result.to_dict()})

    # ------------------------------------------------------------------ rules

    async def create_rule(self, body: RuleIn, actor: str) -> RuleOut:
        deployment = await self.session.scalar(
            select(Deployment).where(Deployment.name == body.deployment)
        )
        problems: list[tuple[Sequence[str | int], str]] = []
        if deployment is None:
            problems.append((("body", "deployment"), f"no deployment named '{body.deployment}'"))
        problems += _variant_problems(body.figure, body.variant)
        channels = await self._channels(body.channels, problems)
        if problems:
            raise InvalidFields(problems)
        assert deployment is not None
        now = datetime.now(UTC)
        rule = AlertRule(
            **body.model_dump(exclude={"deployment", "channels"}),
            deployment_id=deployment.id,
            created_by=actor,
            created_at=now,
            updated_at=now,
            state="ok",
            state_since=now,
            revision=1,
        )
        self.session.add(rule)
        try:
            await self.session.flush()
        except IntegrityError:
            raise Conflict(f"A rule named '{body.name}' already exists") from None
        await self._attach(rule, channels)
        return await self._out(rule, deployment.name)

    async def _channels(
        self, names: list[str], problems: list[tuple[Sequence[str | int], str]]
    ) -> list[AlertChannelRecord]:
        found = {
            record.name: record
            for record in await self.session.scalars(
                select(AlertChannelRecord).where(AlertChannelRecord.name.in_(names))
            )
        }
        for index, name in enumerate(names):
            if name not in found:
                problems.append((("body", "channels", index), f"no alert channel named '{name}'"))
        return [found[name] for name in names if name in found]

    async def _attach(self, rule: AlertRule, channels: list[AlertChannelRecord]) -> None:
        await self.session.execute(
            delete(alert_rule_channels).where(alert_rule_channels.c.rule_id == rule.id)
        )
        if channels:
            await self.session.execute(
                insert(alert_rule_channels),
                [{"rule_id": rule.id, "channel_id": channel.id} for channel in channels],
            )

    async def rule(self, name: str) -> tuple[AlertRule, str]:
        row = (
            await self.session.execute(
                select(AlertRule, Deployment.name)
                .join(Deployment, Deployment.id == AlertRule.deployment_id)
                .where(AlertRule.name == name)
            )
        ).first()
        if row is None:
            raise NotFound(f"No alert rule '{name}'")
        return row[0], row[1]

    async def rule_out(self, name: str) -> RuleOut:
        return await self._out(*await self.rule(name))

    async def update_rule(self, name: str, patch: RulePatch) -> RuleOut:
        """Apply the change; the state stays, and the next evaluation judges the rule as it
        now reads (a firing rule disabled resolves there, notifying)."""
        rule, deployment = await self.rule(name)
        changes = patch.model_dump(exclude_unset=True)
        problems: list[tuple[Sequence[str | int], str]] = [
            (("body", field), "may not be null")
            for field in NOT_NULL_RULE_FIELDS
            if field in changes and changes[field] is None
        ]
        problems += _variant_problems(
            changes.get("figure") or rule.figure, changes.get("variant", rule.variant)
        )
        channels = await self._channels(changes.pop("channels", None) or [], problems)
        if problems:
            raise InvalidFields(problems)
        for field, value in changes.items():
            setattr(rule, field, value)
        rule.updated_at = datetime.now(UTC)
        rule.revision += 1  # an evaluation that read the rule before must not write after
        await self.session.flush()
        if patch.channels is not None:
            await self._attach(rule, channels)
        return await self._out(rule, deployment)

    async def delete_rule(self, name: str) -> None:
        """The rule goes, its history stays (the events keep its name)."""
        rule, _ = await self.rule(name)
        await self.session.execute(delete(AlertRule).where(AlertRule.id == rule.id))

    async def rules_page(
        self,
        page: PageParams,
        deployment: str | None = None,
        enabled: bool | None = None,
        state: str | None = None,
    ) -> Page[RuleOut]:
        query = _rules_query(deployment=deployment, state=state).order_by(AlertRule.name)
        if enabled is not None:
            query = query.where(AlertRule.enabled.is_(enabled))
        rows, total = await self._rows(query, page)
        names = await self._channel_names([rule.id for rule, _ in rows])
        items = [_rule_out(rule, name, names.get(rule.id, [])) for rule, name in rows]
        return Page[RuleOut](items=items, total=total, limit=page.limit, offset=page.offset)

    async def _out(self, rule: AlertRule, deployment: str) -> RuleOut:
        names = await self._channel_names([rule.id])
        return _rule_out(rule, deployment, names.get(rule.id, []))

    async def _channel_names(self, rule_ids: list[Any]) -> dict[Any, list[str]]:
        rows = await self.session.execute(
            select(alert_rule_channels.c.rule_id, AlertChannelRecord.name)
            .join(AlertChannelRecord, AlertChannelRecord.id == alert_rule_channels.c.channel_id)
            .where(alert_rule_channels.c.rule_id.in_(rule_ids))
            .order_by(AlertChannelRecord.name)
        )
        found: dict[Any, list[str]] = {}
        for rule_id, name in rows:
            found.setdefault(rule_id, []).append(name)
        return found

    async def _rows(
        self, query: Select[AlertRule, str], page: PageParams
    ) -> tuple[list[tuple[AlertRule, str]], int]:
        total = await self.session.scalar(
            select(func.count()).select_from(query.order_by(None).subquery())
        )
        rows = await self.session.execute(query.limit(page.limit).offset(page.offset))
        return list(rows.all()), int(total or 0)

    # ------------------------------------------------------------------ alerts and history

    async def alerts_page(
        self,
        page: PageParams,
        state: str | None = None,
        severity: str | None = None,
        deployment: str | None = None,
    ) -> Page[AlertOut]:
        """Enabled rules, and disabled ones still to be resolved, by name."""
        query = (
            _rules_query(deployment=deployment, state=state)
            .where(or_(AlertRule.enabled.is_(True), AlertRule.state != "ok"))
            .order_by(AlertRule.name)
        )
        if severity:
            query = query.where(AlertRule.severity == severity)
        rows, total = await self._rows(query, page)
        items = [alert_out(rule, name) for rule, name in rows]
        return Page[AlertOut](items=items, total=total, limit=page.limit, offset=page.offset)

    def history_query(
        self, rule: str | None = None, status: str | None = None, deployment: str | None = None
    ) -> Select[Any]:
        query = select(AlertEvent).order_by(AlertEvent.created_at.desc(), AlertEvent.id.desc())
        if rule:
            query = query.where(AlertEvent.rule == rule)
        if status:
            query = query.where(AlertEvent.status == status)
        if deployment:
            query = query.where(AlertEvent.deployment == deployment)
        return query


def _rules_query(deployment: str | None, state: str | None) -> Select[AlertRule, str]:
    query = select(AlertRule, Deployment.name).join(
        Deployment, Deployment.id == AlertRule.deployment_id
    )
    if deployment:
        query = query.where(Deployment.name == deployment)
    if state == "no_data":
        query = query.where(AlertRule.no_data_since.is_not(None))
    elif state:
        query = query.where(AlertRule.state == state, AlertRule.no_data_since.is_(None))
    return query


def _rule_out(rule: AlertRule, deployment: str, channels: list[str]) -> RuleOut:
    return RuleOut(
        name=rule.name,
        deployment=deployment,
        variant=rule.variant,
        figure=rule.figure,
        condition=rule.condition,
        threshold=rule.threshold,
        window_minutes=rule.window_minutes,
        for_minutes=rule.for_minutes,
        severity=rule.severity,
        channels=channels,
        enabled=rule.enabled,
        description=rule.description,
        created_by=rule.created_by,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
        status=rule_status(rule),
    )


def _variant_problems(figure: str, variant: str | None) -> list[tuple[Sequence[str | int], str]]:
    if variant is not None and parse_figure(figure).source == "drift":
        return [(("body", "variant"), "drift is measured per deployment: leave variant out")]
    return []
