"""Cron arithmetic in a schedule's own time zone, stored and compared in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter


def next_fire_time(cron: str, timezone: str, after: datetime) -> datetime:
    local = after.astimezone(ZoneInfo(timezone))
    fire: datetime = croniter(cron, local).get_next(datetime)
    return fire.astimezone(UTC)
