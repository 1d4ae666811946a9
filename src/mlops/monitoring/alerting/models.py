"""ORM models of alerting: channels, rules (with the state the evaluator keeps on each) and the
history of their transitions.

A rule's state lives on its row: only the evaluator changes it, and it writes it back only if
``revision`` is still the one it read (an API edit bumps it), so that two evaluations racing,
or an edit racing an evaluation, cannot both apply a transition."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from mlops.core.database import Base, UTCDateTime, utcnow

# SQLite gives an autoincrementing key only to a column typed exactly INTEGER
EventId = BigInteger().with_variant(Integer(), "sqlite")


class AlertChannelRecord(Base):
    """Where notifications go. ``config`` is a ``ChannelConfig`` as JSON, secrets included
    (in clear text: the database is trusted with them; responses mask them)."""

    __tablename__ = "alert_channels"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


# A channel in use by a rule cannot be deleted (RESTRICT): the API answers 409 naming the rules.
alert_rule_channels = Table(
    "alert_rule_channels",
    Base.metadata,
    Column("rule_id", Uuid, ForeignKey("alert_rules.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "channel_id",
        Uuid,
        ForeignKey("alert_channels.id", ondelete="RESTRICT"),
        primary_key=True,
        index=True,
    ),
)


class AlertRule(Base):
    """A condition on one figure of one deployment, and where it stands."""

    __tablename__ = "alert_rules"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    variant: Mapped[str | None] = mapped_column(String(63), nullable=True)
    figure: Mapped[str] = mapped_column(String(200))
    condition: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float)
    window_minutes: Mapped[int] = mapped_column(Integer)
    for_minutes: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(16), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, index=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # the evaluator's: ok, pending or firing, held through evaluations without data
    state: Mapped[str] = mapped_column(String(16), default="ok", index=True)
    state_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # the dedup key of the episode in progress (pending or firing), kept for its resolution
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    no_data_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)


class AlertEvent(Base):
    """One transition of a rule, with what was measured and, for ``firing`` and ``resolved``,
    how each channel's delivery went. The rule's name and labels are copied: history outlives
    the rule (``rule_id`` is then null)."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    rule_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("alert_rules.id", ondelete="SET NULL"), nullable=True, index=True
    )
    rule: Mapped[str] = mapped_column(String(63), index=True)
    deployment: Mapped[str] = mapped_column(String(63))
    variant: Mapped[str | None] = mapped_column(String(63), nullable=True)
    figure: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    condition: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float)
    fingerprint: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    # [{"channel", "outcome", "attempt_count", "last_error", "attempts"}]; null: nothing to send
    deliveries: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
