"""Filters of the audit log listing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Select, select

from mlops.security.models import AuditEntry


class AuditFilter(BaseModel):
    """Query parameters of the audit listing (a query model: parsed without a threadpool hop)."""

    principal: str | None = Field(default=None, description="Exact principal name.")
    action: str | None = Field(
        default=None, description="Substring of the action, e.g. 'POST /api/v1/auth'."
    )
    resource: str | None = Field(default=None, description="Resource path prefix.")
    outcome: Literal["success", "failure", "denied", "throttled"] | None = Field(
        default=None, description="Only entries with this outcome."
    )
    since: datetime | None = Field(
        default=None, description="From this time (inclusive, ISO 8601)."
    )
    until: datetime | None = Field(default=None, description="Before this time (ISO 8601).")


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def audit_query(filters: AuditFilter) -> Select[Any]:
    query = select(AuditEntry).order_by(AuditEntry.seq.desc())
    if filters.principal:
        query = query.where(AuditEntry.principal == filters.principal)
    if filters.action:
        query = query.where(AuditEntry.action.contains(filters.action, autoescape=True))
    if filters.resource:
        query = query.where(AuditEntry.resource.startswith(filters.resource, autoescape=True))
    if filters.outcome:
        query = query.where(AuditEntry.outcome == filters.outcome)
    if filters.since:
        query = query.where(AuditEntry.occurred_at >= _aware(filters.since))
    if filters.until:
        query = query.where(AuditEntry.occurred_at < _aware(filters.until))
    return query
