"""Online feature reads, on the request hot path: a feature service's definition comes from a
short-lived copy in this process (changes made through this process apply at once, other
replicas' after ``feature_definitions_cache_seconds``), the values from the online store in
one round trip per view."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from mlops.core.errors import InvalidFields, ServiceUnavailable
from mlops.features.online import OnlineStore, encode_entity_key
from mlops.features.registry import ResolvedService

PRESENT, MISSING, OUTSIDE_TTL = "present", "missing", "outside_ttl"
MAX_ONLINE_ENTITIES = 1000

Resolver = Callable[[str], Awaitable[ResolvedService]]


class OnlineFeatures:
    def __init__(self, store: OnlineStore, resolve: Resolver, cache_seconds: float) -> None:
        self.store = store
        self._resolve = resolve
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, ResolvedService]] = {}

    def forget(self) -> None:
        """Definitions changed here: read them again on the next request."""
        self._cache.clear()

    async def service(self, name: str) -> ResolvedService:
        cached = self._cache.get(name)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        resolved = await self._resolve(name)
        self._cache[name] = (now + self._cache_seconds, resolved)
        return resolved

    async def read(self, service_name: str, entities: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Values and a status per feature for each entity row, in the rows' order."""
        service = await self.service(service_name)
        values, statuses = await self._lookup(service, entities, "entities")
        return {
            "feature_service": service.name,
            "features": service.columns,
            "results": [
                {"values": row_values, "statuses": row_statuses}
                for row_values, row_statuses in zip(values, statuses, strict=True)
            ],
        }

    async def enrich(
        self, service_name: str, instances: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """A prediction request's rows completed with the service's features: join keys
        out, features in, any other column the caller sent kept (it wins over the store).
        A feature the store cannot give is a 422 naming the row and the feature."""
        service = await self.service(service_name)
        values, statuses = await self._lookup(service, instances, "instances")
        columns = service.columns
        key_names = {name for name, _ in service.join_keys}
        rows: list[dict[str, Any]] = []
        problems: list[tuple[list[str | int], str]] = []
        for index, row in enumerate(instances):
            given = {k: v for k, v in row.items() if k not in key_names}
            for column, status in zip(columns, statuses[index], strict=True):
                if status != PRESENT and column not in given:
                    problems.append(
                        (["body", "instances", index, column], f"no online value ({status})")
                    )
            rows.append(dict(zip(columns, values[index], strict=True)) | given)
        if problems:
            raise InvalidFields(problems[:20])
        return rows

    async def _lookup(
        self, service: ResolvedService, rows: Sequence[dict[str, Any]], field: str
    ) -> tuple[list[list[Any]], list[list[str]]]:
        now = time.time()
        values: list[list[Any]] = [[] for _ in rows]
        statuses: list[list[str]] = [[] for _ in rows]
        for part in service.parts:
            view = part.view
            keys = [
                encode_entity_key(_key_values(row, index, view.schema.join_keys, field))
                for index, row in enumerate(rows)
            ]
            try:
                stored = await self.store.read(view.namespace, keys, part.features)
            except (OSError, RedisError) as exc:
                raise ServiceUnavailable(f"the online store is unreachable: {exc}") from None
            ttl = view.ttl.total_seconds() if view.ttl else None
            width = len(part.features)
            for index, found in enumerate(stored):
                if found is None:
                    values[index].extend([None] * width)
                    statuses[index].extend([MISSING] * width)
                    continue
                stale = ttl is not None and now - found.event_time > ttl
                for value, present in zip(found.values, found.present, strict=True):
                    status = MISSING if not present else OUTSIDE_TTL if stale else PRESENT
                    values[index].append(value if status == PRESENT else None)
                    statuses[index].append(status)
        return values, statuses


def _key_values(
    row: dict[str, Any], index: int, join_keys: Sequence[tuple[str, str]], field: str
) -> list[Any]:
    key: list[Any] = []
    for name, kind in join_keys:
        value = row.get(name)
        fits = (
            isinstance(value, int) and not isinstance(value, bool)
            if kind == "int64"
            else isinstance(value, str)
        )
        if not fits:
            problem = "missing" if value is None else f"expected {kind}, got {value!r:.40}"
            raise InvalidFields([(["body", field, index, name], problem)])
        key.append(value)
    return key
