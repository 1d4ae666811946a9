"""Filters of the audit log listing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Query
from sqlalchemy import Select, select

from mlops.security.models import AuditEntry


@dataclass
class AuditFilter:
    principal: Annotated[str | None, Query(description="Exact principal name.")] = None
    action: Annotated[
        str | None, Query(description="Substring of the action, e.g. 'POST /api/v1/auth'.")
    ] = None
    resource: Annotated[str | None, Query(description="Resource path prefix.")] = None
    outcome: Annotated[
        Literal["success", "failure", "denied", "throttled"] | None,
        Query(description="Only entries with this outcome."),
    ] = None
    since: Annotated[
        datetime | None, Query(description="From this time (inclusive, ISO 8601).")
    ] = None
    until: Annotated[datetime | None, Query(description="Before this time (ISO 8601).")] = None


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
