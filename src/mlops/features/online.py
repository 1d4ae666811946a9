"""Online feature store: each entity's latest feature values, for low-latency serving.

``MemoryOnlineStore`` keeps in-process dicts (the embedded default). ``RedisOnlineStore`` keeps one
hash per entity per namespace, ``{prefix}{namespace}:{entity_key}``: a field per feature holding
its orjson encoding, plus ``@et``/``@ct`` (event, created time; no feature name can spell them).
A write replaces an entity's row only if its ``(event_time, created_time)`` is ``>=`` the stored
one, so a late, older row never regresses a newer one, even under concurrent writers: in Redis,
each row is HSET into a staging hash (reply skipped, TTL set), and a Lua script per 100 entities
renames each staged hash over its entity's if newer, else drops it. Values never pass through
Lua, which costs more than the HSET itself. A read is one round trip: an EVALSHA per 100 entities
runs the HMGETs and answers one JSON document, one orjson parse, where redis-py's pure-Python
reply parser (no hiredis here) walking every field costs 5-10 times the server's work. Commands
are packed into RESP here for the same reason.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import operator
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

_FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SCRIPT_BATCH = 100  # entities per EVALSHA: a script blocks the server while it runs
SEND_BATCH = 1000  # entities per write sent; the next is encoded while Redis applies it
MAX_FEATURES = 4000  # Lua's unpack() limit is ~8,000 values
STAGING_TTL_MS = 600_000  # staged rows of an interrupted write expire

# KEYS: staged hash, entity hash, ...; ARGV: event time, created time, ... of each staged row.
# Each staged hash replaces its entity's when (event time, created time) >= the stored one, else
# is dropped. Returns how many entities were replaced.
_SWAP_LUA = b"""
local written, missing = 0, 0
for i = 1, #KEYS, 2 do
  local cur = redis.call('HMGET', KEYS[i + 1], '@et', '@ct')
  local et, cet = tonumber(ARGV[i]), tonumber(cur[1])
  if cet and (et < cet or (et == cet and tonumber(ARGV[i + 1]) < (tonumber(cur[2]) or 0))) then
    redis.call('DEL', KEYS[i])
  elseif redis.pcall('RENAME', KEYS[i], KEYS[i + 1])['err'] then
    missing = missing + 1
  else
    redis.call('PERSIST', KEYS[i + 1])
    written = written + 1
  end
end
if missing > 0 then
  return redis.error_reply('ERR ' .. missing .. ' staged rows missing (HSET refused?)')
end
return written
"""
# Returns one JSON array: per entity null, or [event_time, [absent indices], value...].
_READ_LUA = b"""#!lua flags=no-writes
local n = #ARGV
local fields = {unpack(ARGV)}
fields[n + 1] = '@et'
local out = {}
for k = 1, #KEYS do
  local got = redis.call('HMGET', KEYS[k], unpack(fields))
  local et = got[n + 1]
  if et then
    local absent = {}
    for i = 1, n do
      if not got[i] then got[i] = 'null'; absent[#absent + 1] = i - 1 end
    end
    local head = '[' .. et .. ',[' .. table.concat(absent, ',') .. ']'
    if n > 0 then head = head .. ',' .. table.concat(got, ',', 1, n) end
    out[k] = head .. ']'
  else
    out[k] = 'null'
  end
end
return '[' .. table.concat(out, ',') .. ']'
"""
_SCRIPTS = {
    s: hashlib.sha1(s, usedforsecurity=False).hexdigest().encode() for s in (_SWAP_LUA, _READ_LUA)
}


_LEN_OF: Callable[[int], bytes] = functools.cache(lambda length: b"$%d\r\n" % length)
_NAMES: dict[str, bytes] = {}  # feature name -> its RESP bulk string, once validated
_NAME_OF = _NAMES.__getitem__


def _bulk(data: bytes) -> bytes:
    return _LEN_OF(len(data)) + data + b"\r\n"


def _name(name: str) -> bytes:
    packed = _NAMES.get(name)
    if packed is None:
        if not isinstance(name, str) or not _FEATURE_NAME.fullmatch(name):
            raise ValueError(f"invalid feature name {name!r}: must match [A-Za-z_][A-Za-z0-9_]*")
        packed = _NAMES[name] = _bulk(name.encode())
    return packed


def _evalsha(script: bytes, keys: list[bytes], args: Sequence[bytes] = ()) -> list[bytes]:
    count = len(keys) + len(args) + 3
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n" % (count, _SCRIPTS[script])
    return [head, _bulk(b"%d" % len(keys)), *keys, *args]


def _fields(values: dict[str, Any]) -> bytes:
    """Name, orjson(value), ... as RESP, in C iterators on the common path (several times faster
    than a Python loop, or than a list item per field, which the GC keeps walking)."""
    try:
        data = list(map(orjson.dumps, values.values()))
        chunks = zip(map(_NAME_OF, values), map(_LEN_OF, map(len, data)), data, repeat(b"\r\n"))
        return b"".join(chain.from_iterable(chunks))
    except (KeyError, TypeError):  # a feature name not validated yet, or a numpy value
        option = orjson.OPT_SERIALIZE_NUMPY
        return b"".join(_name(k) + _bulk(orjson.dumps(v, option=option)) for k, v in values.items())


_TTL = _bulk(b"%d" % STAGING_TTL_MS)
_SKIP = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$4\r\nSKIP\r\n"  # no reply to the next command
_ET, _CT = _bulk(b"@et"), _bulk(b"@ct")  # the reserved fields: event, created time


@dataclass(frozen=True, slots=True)
class OnlineRow:
    entity_key: str  # encode_entity_key(join-key values)
    values: dict[str, Any]  # feature name -> JSON-able scalar
    event_time: float  # POSIX seconds (UTC)
    created_time: float  # POSIX seconds (UTC)


@dataclass(frozen=True, slots=True)
class StoredValues:
    values: list[Any]  # in the order of the requested features; None where absent
    present: list[bool]  # whether each requested feature was stored for the entity
    event_time: float


class OnlineStore(Protocol):
    kind: str  # "memory" | "redis"

    async def write(self, namespace: str, rows: Sequence[OnlineRow]) -> int: ...
    async def read(
        self, namespace: str, entity_keys: Sequence[str], features: Sequence[str]
    ) -> list[StoredValues | None]: ...
    async def delete_namespace(self, namespace: str) -> int: ...
    async def close(self) -> None: ...


def encode_entity_key(values: Sequence[Any]) -> str:
    """A compact JSON array of the join-key values: ``("a:b", 1)`` -> ``'["a:b",1]'``."""
    parts: list[int | str] = []
    for value in values:
        if isinstance(value, str):
            parts.append(str(value))
        elif isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"join-key values must be int or str, not {type(value).__name__}")
        else:
            parts.append(operator.index(value))
    return orjson.dumps(parts).decode()


def _times(row: OnlineRow) -> tuple[float, float]:
    return row.event_time, row.created_time


def _latest_per_entity(rows: Sequence[OnlineRow]) -> dict[str, OnlineRow]:
    """One row per entity: the greatest (event_time, created_time); the later row on a tie."""
    latest: dict[str, OnlineRow] = {}
    for row in rows:
        if not (math.isfinite(row.event_time) and math.isfinite(row.created_time)):
            raise ValueError(f"non-finite event or created time for entity {row.entity_key}")
        if not all(map(_NAMES.__contains__, row.values)):  # validate before writing any
            for name in row.values:
                _name(name)
        held = latest.get(row.entity_key)
        if held is None or _times(row) >= _times(held):
            latest[row.entity_key] = row
    return latest


def _check_features(features: Sequence[str]) -> list[bytes]:
    if len(features) > MAX_FEATURES:
        raise ValueError(f"at most {MAX_FEATURES} features per read")
    return [_name(name) for name in features]


class MemoryOnlineStore:
    """In-process store: no method awaits, so each call is atomic on its event loop."""

    kind: str = "memory"

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, OnlineRow]] = {}

    async def write(self, namespace: str, rows: Sequence[OnlineRow]) -> int:
        table = self._tables.setdefault(namespace, {})
        written = 0
        for key, row in _latest_per_entity(rows).items():
            held = table.get(key)
            if held is None or _times(row) >= _times(held):
                times = float(row.event_time), float(row.created_time)
                table[key] = OnlineRow(key, dict(row.values), *times)
                written += 1
        return written

    async def read(
        self, namespace: str, entity_keys: Sequence[str], features: Sequence[str]
    ) -> list[StoredValues | None]:
        _check_features(features)
        table = self._tables.get(namespace, {})
        out: list[StoredValues | None] = []
        for key in entity_keys:
            held = table.get(key)
            if held is None:
                out.append(None)
                continue
            got = held.values
            present = [f in got for f in features]
            out.append(StoredValues([got.get(f) for f in features], present, held.event_time))
        return out

    async def delete_namespace(self, namespace: str) -> int:
        return len(self._tables.pop(namespace, {}))

    async def close(self) -> None:  # the data stays: the store is the process's
        return None


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class RedisOnlineStore:
    """One Redis hash per entity per namespace; see the module docstring."""

    kind: str = "redis"

    def __init__(self, url: str, key_prefix: str = "mlops:fs:") -> None:
        self._redis = aioredis.Redis.from_url(url)
        self._prefix = key_prefix
        self._scripts_loaded = False

    async def write(self, namespace: str, rows: Sequence[OnlineRow]) -> int:
        latest = list(_latest_per_entity(rows).values())
        if not latest:
            return 0
        base = f"{self._prefix}{namespace}:"

        def payloads() -> Iterator[tuple[list[bytes], int]]:
            stage = f"{self._prefix}~staging:{uuid.uuid4().hex}:"
            stages = [_bulk(f"{stage}{i}".encode()) for i in range(SCRIPT_BATCH)]
            expires = [_SKIP + b"*3\r\n$7\r\nPEXPIRE\r\n" + key + _TTL for key in stages]
            parts: list[bytes] = []
            scripts = 0
            for group in range(0, len(latest), SCRIPT_BATCH):
                keys: list[bytes] = []
                times: list[bytes] = []
                for i, row in enumerate(latest[group : group + SCRIPT_BATCH]):
                    head = _SKIP + b"*%d\r\n$4\r\nHSET\r\n" % (6 + 2 * len(row.values))
                    event = _bulk(repr(float(row.event_time)).encode())
                    created = _bulk(repr(float(row.created_time)).encode())
                    parts += (head, stages[i], _ET, event, _CT, created, _fields(row.values))
                    parts.append(expires[i])
                    keys += (stages[i], _bulk((base + row.entity_key).encode()))
                    times += (event, created)
                parts += _evalsha(_SWAP_LUA, keys, times)
                scripts += 1
                if scripts * SCRIPT_BATCH >= SEND_BATCH or group + SCRIPT_BATCH >= len(latest):
                    yield parts, scripts
                    parts, scripts = [], 0

        return sum(await self._call(payloads))

    async def read(
        self, namespace: str, entity_keys: Sequence[str], features: Sequence[str]
    ) -> list[StoredValues | None]:
        names = _check_features(features)
        if not entity_keys:
            return []
        base = f"{self._prefix}{namespace}:"

        def payloads() -> Iterator[tuple[list[bytes], int]]:
            parts: list[bytes] = []
            for start in range(0, len(entity_keys), SCRIPT_BATCH):
                chunk = entity_keys[start : start + SCRIPT_BATCH]
                parts += _evalsha(_READ_LUA, [_bulk((base + k).encode()) for k in chunk], names)
            yield parts, -(-len(entity_keys) // SCRIPT_BATCH)

        out: list[StoredValues | None] = []
        n = len(features)
        for reply in await self._call(payloads):
            for entry in orjson.loads(reply):
                if entry is None:
                    out.append(None)
                    continue
                present = [True] * n
                for index in entry[1]:
                    present[index] = False
                out.append(StoredValues(entry[2:], present, entry[0]))
        return out

    async def delete_namespace(self, namespace: str) -> int:
        base = f"{self._prefix}{namespace}:".encode()
        deleted, batch = 0, []
        # Entity keys are JSON arrays: "[" after the namespace, and the rest parsing as one, keep
        # namespace "a" from matching the keys of namespace "a:b" or "a:[b".
        pattern = _glob_escape(base.decode()) + r"\[*"
        async for key in self._redis.scan_iter(match=pattern, count=1000):
            with contextlib.suppress(orjson.JSONDecodeError):
                if isinstance(orjson.loads(key[len(base) :]), list):
                    batch.append(key)
            if len(batch) >= SEND_BATCH:
                deleted += await self._redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await self._redis.unlink(*batch)
        return deleted

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, payloads: Callable[[], Iterator[tuple[list[bytes], int]]]) -> list[Any]:
        if not self._scripts_loaded:
            await self._load_scripts()
        try:
            return await self._exchange(payloads())
        except NoScriptError:  # Redis restarted, or SCRIPT FLUSH: load them again, retry once
            await self._load_scripts()
            return await self._exchange(payloads())

    async def _load_scripts(self) -> None:
        for script in _SCRIPTS:
            await self._redis.script_load(script)
        self._scripts_loaded = True

    async def _exchange(self, payloads: Iterator[tuple[list[bytes], int]]) -> list[Any]:
        """Send each payload on one connection, reading a payload's replies only after sending
        the next, so that encoding here overlaps the server's work on the previous batch."""
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        error: ResponseError | None = None
        try:
            pending = 0  # replies owed for the payload sent before
            for parts, count in payloads:
                await connection.send_packed_command(parts)
                failed = await _collect(connection, pending, replies)
                error, pending = error or failed, count
                if error is not None:
                    break
            failed = await _collect(connection, pending, replies)
            error = error or failed
        except BaseException:  # unread replies would answer the connection's next user
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)
        if error is not None:
            raise error
        return replies


async def _collect(connection: Any, count: int, replies: list[Any]) -> ResponseError | None:
    first: ResponseError | None = None
    for _ in range(count):
        try:
            replies.append(await connection.read_response(disable_decoding=True))
        except ResponseError as exc:
            first = first or exc
    return first


def open_online_store(redis_url: str | None) -> OnlineStore:
    """Redis when a URL is configured, else the in-process store."""
    return RedisOnlineStore(redis_url) if redis_url else MemoryOnlineStore()
