"""Request and response bodies of alerting."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops.monitoring.alerting.figures import FIGURE_FORMS, parse_figure
from mlops.monitoring.alerting.state import Condition, DisplayState, EventStatus, HeldState
from mlops.monitoring.channels import ChannelConfig
from mlops.monitoring.delivery import Severity

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
MAX_CHANNELS_PER_RULE = 20
MAX_WINDOW_MINUTES = 7 * 24 * 60
ChannelKind = Literal["webhook", "slack", "email"]
DeliveryOutcome = Literal["sending", "delivered", "rejected", "exhausted", "interrupted"]

# --------------------------------------------------------------------------- channels


class ChannelIn(BaseModel):
    """A named channel. Its secrets (a webhook's secret and header values, a Slack URL, an
    SMTP password) are stored and used, never shown again."""

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "oncall-webhook",
                    "description": "The on-call bridge",
                    "config": {
                        "kind": "webhook",
                        "url": "https://alerts.example.com/hooks/mlops",
                        "secret": "a-shared-secret-of-16-or-more",
                    },
                },
                {
                    "name": "ml-slack",
                    "config": {
                        "kind": "slack",
                        "webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
                        "channel": "#ml-alerts",
                    },
                },
            ]
        },
    )

    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="A DNS label.")
    description: str | None = Field(default=None, max_length=2000)
    config: ChannelConfig


class ChannelOut(BaseModel):
    name: str
    kind: ChannelKind
    description: str | None
    config: dict[str, Any] = Field(
        description="The configuration with every secret masked ('***', a URL's host only).",
        examples=[{"kind": "slack", "webhook_url": "https://hooks.slack.com/***"}],
    )
    created_by: str
    created_at: datetime


class AttemptOut(BaseModel):
    number: int
    started_at: datetime
    finished_at: datetime
    waited_seconds: float = Field(description="The backoff waited before this attempt.")
    error: str | None = Field(description="Why it failed (no secret); null: delivered.")
    transient: bool | None = Field(description="Whether the failure could pass by itself.")


class DeliveryOut(BaseModel):
    channel: str
    outcome: DeliveryOutcome = Field(
        description="delivered; rejected: a permanent failure; exhausted: every attempt failed; "
        "sending: still being tried; interrupted: the process sending it stopped first (not "
        "sent again)."
    )
    attempt_count: int
    last_error: str | None
    attempts: list[AttemptOut]


# --------------------------------------------------------------------------- rules


def _figure(value: str) -> str:
    parse_figure(value)  # a ValueError names the valid forms
    return value


def _unique(channels: list[str]) -> list[str]:
    repeated = sorted({name for name in channels if channels.count(name) > 1})
    if repeated:
        raise ValueError(f"listed more than once: {', '.join(repeated)}")
    return channels


class RuleIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "bc-errors",
                    "deployment": "bc",
                    "figure": "error_rate",
                    "condition": ">",
                    "threshold": 0.05,
                    "window_minutes": 10,
                    "for_minutes": 5,
                    "severity": "critical",
                    "channels": ["oncall-webhook"],
                }
            ]
        },
    )

    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="A DNS label.")
    deployment: str = Field(min_length=1, max_length=63)
    variant: str | None = Field(
        default=None, max_length=63, description="Only this variant's traffic (log figures)."
    )
    figure: str = Field(max_length=200, description=f"One of {FIGURE_FORMS}.")
    condition: Condition
    threshold: float = Field(allow_inf_nan=False)
    window_minutes: int = Field(
        default=5, ge=1, le=MAX_WINDOW_MINUTES, description="The window figures are read over."
    )
    for_minutes: int = Field(
        default=0,
        ge=0,
        le=MAX_WINDOW_MINUTES,
        description="How long the condition must hold before firing; 0: fire at once.",
    )
    severity: Severity = "warning"
    channels: list[str] = Field(
        default_factory=list,
        max_length=MAX_CHANNELS_PER_RULE,
        description="Names of the channels notified when the alert fires and resolves.",
    )
    enabled: bool = True
    description: str | None = Field(default=None, max_length=2000)

    @field_validator("figure")
    @classmethod
    def _valid_figure(cls, value: str) -> str:
        return _figure(value)

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[str]) -> list[str]:
        return _unique(value)


class RulePatch(BaseModel):
    """The fields to change; the others are kept. The name and deployment are fixed."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"enabled": False}, {"threshold": 0.1, "for_minutes": 10}]},
    )

    variant: str | None = Field(default=None, max_length=63)
    figure: str | None = Field(default=None, max_length=200)
    condition: Condition | None = None
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    window_minutes: int | None = Field(default=None, ge=1, le=MAX_WINDOW_MINUTES)
    for_minutes: int | None = Field(default=None, ge=0, le=MAX_WINDOW_MINUTES)
    severity: Severity | None = None
    channels: list[str] | None = Field(default=None, max_length=MAX_CHANNELS_PER_RULE)
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=2000)

    @field_validator("figure")
    @classmethod
    def _valid_figure(cls, value: str | None) -> str | None:
        return None if value is None else _figure(value)

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _unique(value)


class RuleStatus(BaseModel):
    """Where a rule stands after its latest evaluation."""

    state: DisplayState = Field(
        description="ok, pending, firing, or no_data when the latest evaluation had no data."
    )
    held_state: HeldState = Field(
        description="The state held through a lack of data: a firing alert fires on until its "
        "figure is seen to recover."
    )
    since: datetime = Field(description="When the held state was entered.")
    no_data_since: datetime | None
    value: float | None = Field(description="The figure at the latest evaluation.")
    last_evaluated_at: datetime | None
    fingerprint: str | None = Field(description="The dedup key of the alert pending or firing.")


class RuleOut(BaseModel):
    name: str
    deployment: str
    variant: str | None
    figure: str
    condition: Condition
    threshold: float
    window_minutes: int
    for_minutes: int
    severity: Severity
    channels: list[str]
    enabled: bool
    description: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    status: RuleStatus


class AlertOut(RuleStatus):
    """A rule's current alert."""

    rule: str
    deployment: str
    variant: str | None
    figure: str
    condition: Condition
    threshold: float
    severity: Severity
    enabled: bool


class AlertEventOut(BaseModel):
    """One transition of a rule."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    rule: str
    deployment: str
    variant: str | None
    figure: str
    severity: Severity
    status: EventStatus
    value: float | None
    condition: Condition
    threshold: float
    fingerprint: str
    reason: str
    deliveries: list[DeliveryOut] | None = Field(
        description="Per channel, for firing and resolved; null for pending and cleared."
    )
    created_at: datetime
