"""The hash-chained audit log: writing entries, verifying the chain, and the ASGI middleware.

Each entry's hash covers its own fields and the previous entry's hash, and sequence numbers
are contiguous, so altering, inserting or deleting a row in the middle breaks the chain at
that row. Writers serialise: an asyncio lock in-process and, on Postgres, a transaction-scoped
advisory lock shared by every replica.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlops.core.database import Database, utcnow
from mlops.observability.context import current_request_id
from mlops.observability.metrics import AUDIT_WRITE_FAILURES
from mlops.observability.middleware import route_template
from mlops.security.models import AuditEntry

logger = logging.getLogger("mlops.audit")

GENESIS_HASH = "0" * 64
_ADVISORY_LOCK_KEY = 0x6D6C6F7073_02
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class AuditRecord:
    principal: str
    action: str
    resource: str
    outcome: str
    status_code: int
    request_id: str | None = None
    client_ip: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _timestamp(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def entry_hash(prev_hash: str, seq: int, occurred_at: datetime, record: AuditRecord) -> str:
    payload = {
        "seq": seq,
        "occurred_at": _timestamp(occurred_at),
        "principal": record.principal,
        "action": record.action,
        "resource": record.resource,
        "outcome": record.outcome,
        "status_code": record.status_code,
        "request_id": record.request_id,
        "client_ip": record.client_ip,
        "details": record.details,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def _record_of(row: AuditEntry) -> AuditRecord:
    return AuditRecord(
        principal=row.principal,
        action=row.action,
        resource=row.resource,
        outcome=row.outcome,
        status_code=row.status_code,
        request_id=row.request_id,
        client_ip=row.client_ip,
        details=dict(row.details or {}),
    )


class AuditLog:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._lock = asyncio.Lock()

    async def append(self, record: AuditRecord) -> AuditEntry:
        async with self._lock, self.database.sessionmaker() as session, session.begin():
            if self.database.dialect == "postgresql":
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
                )
            last = await session.scalar(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))
            seq = last.seq + 1 if last else 1
            prev_hash = last.entry_hash if last else GENESIS_HASH
            occurred_at = utcnow()
            entry = AuditEntry(
                seq=seq,
                occurred_at=occurred_at,
                request_id=record.request_id,
                principal=record.principal,
                action=record.action,
                resource=record.resource,
                outcome=record.outcome,
                status_code=record.status_code,
                client_ip=record.client_ip,
                details=record.details,
                prev_hash=prev_hash,
                entry_hash=entry_hash(prev_hash, seq, occurred_at, record),
            )
            session.add(entry)
        return entry


@dataclass(frozen=True)
class ChainVerdict:
    checked: int
    broken_seq: int | None = None
    reason: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_seq is None


async def _entries(session: AsyncSession, batch: int = 1000) -> AsyncIterator[AuditEntry]:
    after = 0
    while True:
        rows = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.seq > after)
                .order_by(AuditEntry.seq)
                .limit(batch)
            )
        ).all()
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1].seq


async def verify_chain(session: AsyncSession) -> ChainVerdict:
    """Recompute every hash in order; name the first entry that does not fit."""
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    async for row in _entries(session):
        if row.seq != expected_seq:
            return ChainVerdict(checked, expected_seq, f"entry {expected_seq} is missing")
        if row.prev_hash != prev_hash:
            return ChainVerdict(checked, row.seq, "its link to the previous entry does not match")
        if entry_hash(row.prev_hash, row.seq, row.occurred_at, _record_of(row)) != row.entry_hash:
            return ChainVerdict(checked, row.seq, "its contents do not match its hash")
        checked += 1
        expected_seq, prev_hash = row.seq + 1, row.entry_hash
    return ChainVerdict(checked)


def mark_read_only(state: Any) -> None:
    """A POST that changes nothing (a prediction) is not audited: routes call this with
    ``request.state``. Refused authentications are audited all the same."""
    state.audit_read_only = True


def _read_only(scope: Scope) -> bool:
    return bool(scope.get("state", {}).get("audit_read_only"))


def outcome_of(status: int) -> str:
    if status in (401, 403):
        return "denied"
    if status == 429:
        return "throttled"
    return "success" if status < 400 else "failure"


class AuditMiddleware:
    """Writes an entry for every mutating request and every refused authentication.

    The entry is written before the response starts, so a client that has its answer can rely
    on the audit entry being there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_after_audit(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status in (401, 403) or (
                    scope["method"] in MUTATING_METHODS and not _read_only(scope)
                ):
                    await self._record(scope, status)
            await send(message)

        await self.app(scope, receive, send_after_audit)

    async def _record(self, scope: Scope, status: int) -> None:
        audit_log: AuditLog | None = getattr(scope["app"].state, "audit_log", None)
        if audit_log is None:
            return
        state = scope.get("state", {})
        principal = state.get("principal")
        template = route_template(scope)
        client = scope.get("client")
        record = AuditRecord(
            principal=principal.name if principal is not None else "anonymous",
            action=f"{scope['method']} {template}",
            resource=scope.get("path", ""),
            outcome=outcome_of(status),
            status_code=status,
            request_id=current_request_id(),
            client_ip=client[0] if client else None,
            details=dict(state.get("audit_details", {})),
        )
        try:
            await audit_log.append(record)
        except Exception:
            AUDIT_WRITE_FAILURES.inc()
            logger.exception("audit entry could not be written: %s", record.action)
