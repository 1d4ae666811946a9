"""Alerting routes: channels, rules, the current alerts and their history. Thin: each awaits
one service call."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from mlops.core.database import SessionDep
from mlops.core.pagination import Page, PageDep, paginate
from mlops.monitoring.alerting.channel_configs import channel_out
from mlops.monitoring.alerting.schemas import (
    AlertEventOut,
    AlertOut,
    ChannelIn,
    ChannelKind,
    ChannelOut,
    DeliveryOut,
    RuleIn,
    RuleOut,
    RulePatch,
)
from mlops.monitoring.alerting.service import AlertService
from mlops.monitoring.alerting.state import DisplayState, EventStatus
from mlops.monitoring.delivery import RetryPolicy, Severity
from mlops.security.auth import require
from mlops.security.permissions import Permission
from mlops.security.principal import Principal

alerts_router = APIRouter(prefix="/api/v1/monitoring/alerts", tags=["monitoring"])
Read = Annotated[Principal, Depends(require(Permission.MONITORING_READ))]
Write = Annotated[Principal, Depends(require(Permission.MONITORING_WRITE))]
Responses = dict[int | str, dict[str, Any]]
NO_CHANNEL: Responses = {404: {"description": "No such channel"}}
NO_RULE: Responses = {404: {"description": "No such rule"}}
# a person waits for the answer: a second chance after half a second, not the alerts' minute
TEST_MESSAGE_POLICY = RetryPolicy(max_attempts=2, initial_delay=0.5, max_delay=1.0)


async def alert_service(session: SessionDep) -> AlertService:
    return AlertService(session)


ServiceDep = Annotated[AlertService, Depends(alert_service)]

# --------------------------------------------------------------------------- channels


@alerts_router.post(
    "/channels",
    summary="Create a channel: a signed webhook, a Slack-compatible webhook or SMTP email",
    status_code=status.HTTP_201_CREATED,
    response_model=ChannelOut,
    responses={
        409: {"description": "A channel of that name exists"},
        422: {"description": "A field of the configuration is invalid (named, never echoed)"},
    },
)
async def create_channel(body: ChannelIn, principal: Write, service: ServiceDep) -> ChannelOut:
    return channel_out(await service.create_channel(body, principal.name))


@alerts_router.get(
    "/channels",
    summary="The channels by name, secrets masked",
    response_model=Page[ChannelOut],
)
async def list_channels(
    _: Read,
    service: ServiceDep,
    page: PageDep,
    kind: Annotated[ChannelKind | None, Query(description="Only channels of this kind.")] = None,
) -> Page[ChannelOut]:
    return await service.channels_page(page, kind)


@alerts_router.get(
    "/channels/{name}",
    summary="One channel, secrets masked",
    response_model=ChannelOut,
    responses=NO_CHANNEL,
)
async def get_channel(name: str, _: Read, service: ServiceDep) -> ChannelOut:
    return channel_out(await service.channel(name))


@alerts_router.delete(
    "/channels/{name}",
    summary="Delete a channel no rule uses",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**NO_CHANNEL, 409: {"description": "Rules use the channel (they are named)"}},
)
async def delete_channel(name: str, _: Write, service: ServiceDep) -> Response:
    await service.delete_channel(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@alerts_router.post(
    "/channels/{name}/test",
    summary="Send the channel a test message now, and say how its delivery went",
    response_model=DeliveryOut,
    responses={
        **NO_CHANNEL,
        502: {"description": "The receiver did not take the message; the detail says why"},
    },
)
async def test_channel(name: str, _: Write, service: ServiceDep) -> DeliveryOut:
    return await service.send_test(name, TEST_MESSAGE_POLICY)


# --------------------------------------------------------------------------- rules


@alerts_router.post(
    "/rules",
    summary="Create a rule: a condition on a figure of a deployment, held for a while",
    status_code=status.HTTP_201_CREATED,
    response_model=RuleOut,
    responses={
        409: {"description": "A rule of that name exists"},
        422: {"description": "An unknown deployment, channel or figure; a bad condition"},
    },
)
async def create_rule(body: RuleIn, principal: Write, service: ServiceDep) -> RuleOut:
    return await service.create_rule(body, principal.name)


@alerts_router.get(
    "/rules",
    summary="The rules by name, with where each stands",
    response_model=Page[RuleOut],
)
async def list_rules(
    _: Read,
    service: ServiceDep,
    page: PageDep,
    deployment: Annotated[str | None, Query(description="Only this deployment's.")] = None,
    enabled: Annotated[bool | None, Query(description="Only enabled (or disabled) rules.")] = None,
    state: Annotated[DisplayState | None, Query(description="Only rules in this state.")] = None,
) -> Page[RuleOut]:
    return await service.rules_page(page, deployment, enabled, state)


@alerts_router.get(
    "/rules/{name}", summary="One rule and its state", response_model=RuleOut, responses=NO_RULE
)
async def get_rule(name: str, _: Read, service: ServiceDep) -> RuleOut:
    return await service.rule_out(name)


@alerts_router.patch(
    "/rules/{name}",
    summary="Change a rule: enable or disable it, its threshold, window, channels, …",
    response_model=RuleOut,
    responses={**NO_RULE, 422: {"description": "An unknown channel or figure; a null field"}},
)
async def update_rule(name: str, body: RulePatch, _: Write, service: ServiceDep) -> RuleOut:
    return await service.update_rule(name, body)


@alerts_router.delete(
    "/rules/{name}",
    summary="Delete a rule (its history stays; no resolved notice is sent: disable it first)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=NO_RULE,
)
async def delete_rule(name: str, _: Write, service: ServiceDep) -> Response:
    await service.delete_rule(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------- alerts


@alerts_router.get(
    "",
    summary="The current alert of every enabled rule: ok, pending, firing or no_data",
    response_model=Page[AlertOut],
)
async def list_alerts(
    _: Read,
    service: ServiceDep,
    page: PageDep,
    state: Annotated[DisplayState | None, Query(description="Only alerts in this state.")] = None,
    severity: Annotated[Severity | None, Query(description="Only this severity.")] = None,
    deployment: Annotated[str | None, Query(description="Only this deployment's.")] = None,
) -> Page[AlertOut]:
    return await service.alerts_page(page, state, severity, deployment)


@alerts_router.get(
    "/history",
    summary="Transitions of the alerts, newest first, with each notification's delivery",
    response_model=Page[AlertEventOut],
)
async def alert_history(
    _: Read,
    service: ServiceDep,
    page: PageDep,
    rule: Annotated[str | None, Query(description="Only this rule's (deleted ones too).")] = None,
    transition: Annotated[
        EventStatus | None, Query(alias="status", description="Only this transition.")
    ] = None,
    deployment: Annotated[str | None, Query(description="Only this deployment's.")] = None,
) -> Page[AlertEventOut]:
    query = service.history_query(rule, transition, deployment)
    return await paginate(service.session, query, page, AlertEventOut)
