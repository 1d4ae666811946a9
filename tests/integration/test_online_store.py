"""The online store, in memory and in Redis: newest row wins, namespaces isolated, bulk round trips.

Each Redis test works under a key prefix of its own and deletes its keys at the end (other
sessions share the server and may flush it between tests, never relied on here).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from mlops.features.online import (
    MemoryOnlineStore,
    OnlineRow,
    OnlineStore,
    RedisOnlineStore,
    encode_entity_key,
    open_online_store,
)
from tests.conftest import unavailable

NS = "driver_stats:v2"


async def _drop_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()


@asynccontextmanager
async def redis_online_store(redis_url: str) -> AsyncIterator[RedisOnlineStore]:
    """A Redis store under a fresh key prefix; skipped (failed with CI=true) without Redis."""
    prefix = f"test:online:{uuid.uuid4().hex}:"
    store = RedisOnlineStore(redis_url, key_prefix=prefix)
    probe = aioredis.Redis.from_url(redis_url)
    try:
        await probe.ping()
    except (RedisError, OSError) as exc:
        await store.close()
        unavailable(f"Redis does not answer at {redis_url}: {exc}")
    finally:
        await probe.aclose()
    try:
        yield store
    finally:
        await store.close()
        await _drop_prefix(redis_url, prefix)


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisOnlineStore]:
    async with redis_online_store(redis_url) as store:
        yield store


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[OnlineStore]:
    if request.param == "redis":  # redis_url: skips, or fails with CI=true, when unreachable
        async with redis_online_store(request.getfixturevalue("redis_url")) as shared:
            yield shared
        return
    memory = MemoryOnlineStore()
    yield memory
    await memory.close()


def row(key: Any, values: dict[str, Any], event: float = 100.0, created: float = 1.0) -> OnlineRow:
    return OnlineRow(encode_entity_key([key]), values, event, created)


async def test_round_trip_keeps_types_and_times(store: OnlineStore) -> None:
    values = {
        "trips": 42,
        "rating": 4.75,
        "city": 'Zürich, "old" town',
        "active": True,
        "note": None,
    }
    assert await store.write(NS, [row(7, values, event=1_700_000_000.123456, created=5.5)]) == 1
    [got] = await store.read(NS, [encode_entity_key([7])], list(values))
    assert got is not None
    assert got.values == list(values.values())
    assert [type(v) for v in got.values] == [int, float, str, bool, type(None)]
    assert got.present == [True] * 5  # a stored None is present
    assert got.event_time == 1_700_000_000.123456


async def test_absent_entity_is_none_in_request_order(store: OnlineStore) -> None:
    await store.write(NS, [row(1, {"a": 1}), row(3, {"a": 3})])
    keys = [encode_entity_key([k]) for k in (3, 2, 1)]
    got = await store.read(NS, keys, ["a"])
    assert [g.values if g else None for g in got] == [[3], None, [1]]
    assert await store.read(NS, [], ["a"]) == []
    assert await store.read("never:written", keys, ["a"]) == [None, None, None]


async def test_feature_never_stored_is_not_present(store: OnlineStore) -> None:
    await store.write(NS, [row(1, {"a": 1, "b": None})])
    [got] = await store.read(NS, [encode_entity_key([1])], ["zz", "b", "a"])
    assert got is not None
    assert got.values == [None, None, 1]
    assert got.present == [False, True, True]
    [bare] = await store.read(NS, [encode_entity_key([1])], [])
    assert bare is not None and bare.values == [] and bare.event_time == 100.0


async def test_older_write_does_not_replace_newer(store: OnlineStore) -> None:
    key = [encode_entity_key([1])]
    assert await store.write(NS, [row(1, {"v": "t10c5"}, event=10, created=5)]) == 1
    assert await store.write(NS, [row(1, {"v": "t9c99"}, event=9, created=99)]) == 0
    assert await store.write(NS, [row(1, {"v": "t10c4"}, event=10, created=4)]) == 0
    [got] = await store.read(NS, key, ["v"])
    assert got is not None and got.values == ["t10c5"] and got.event_time == 10
    assert await store.write(NS, [row(1, {"v": "t10c6"}, event=10, created=6)]) == 1
    assert await store.write(NS, [row(1, {"w": "same"}, event=10, created=6)]) == 1  # >=: replaced
    [got] = await store.read(NS, key, ["v", "w"])
    # A newer row replaces the entity's whole row: no value outlives the row that wrote it.
    assert got is not None and got.values == [None, "same"] and got.present == [False, True]
    assert await store.write(NS, [row(1, {"v": "t11"}, event=11, created=0)]) == 1
    [got] = await store.read(NS, key, ["v"])
    assert got is not None and got.values == ["t11"] and got.event_time == 11


async def test_duplicates_in_one_call_greatest_times_win(store: OnlineStore) -> None:
    rows = [
        row(1, {"v": "e5"}, event=5),
        row(1, {"v": "e9c2"}, event=9, created=2),
        row(1, {"v": "e7"}, event=7),
        row(1, {"v": "e9c1"}, event=9, created=1),
        row(2, {"v": "first"}, event=3, created=3),
        row(2, {"v": "last of a full tie"}, event=3, created=3),
    ]
    assert await store.write(NS, rows) == 2
    got = await store.read(NS, [encode_entity_key([1]), encode_entity_key([2])], ["v"])
    assert [g.values[0] if g else None for g in got] == ["e9c2", "last of a full tie"]


async def test_concurrent_writes_never_regress(store: OnlineStore) -> None:
    newer = [row(i, {"v": "new"}, event=20) for i in range(300)]
    older = [row(i, {"v": "old"}, event=10) for i in range(300)]
    await asyncio.gather(store.write(NS, older), store.write(NS, newer), store.write(NS, older))
    got = await store.read(NS, [encode_entity_key([i]) for i in range(300)], ["v"])
    assert {g.values[0] if g else None for g in got} == {"new"}


async def test_namespaces_are_isolated(store: OnlineStore) -> None:
    for namespace in ("driver_stats", "driver_stats:v2", "driver_stats:[1]", "other"):
        await store.write(namespace, [row(1, {"ns": namespace})])
    for namespace in ("driver_stats", "driver_stats:v2", "driver_stats:[1]", "other"):
        [got] = await store.read(namespace, [encode_entity_key([1])], ["ns"])
        assert got is not None and got.values == [namespace]


async def test_delete_namespace(store: OnlineStore) -> None:
    await store.write("driver_stats", [row(i, {"a": i}) for i in range(1500)])
    await store.write("driver_stats:v2", [row(1, {"a": 1})])
    await store.write("driver_stats:[1]", [row(1, {"a": 1})])
    assert await store.delete_namespace("driver_stats") == 1500
    assert await store.read("driver_stats", [encode_entity_key([1])], ["a"]) == [None]
    for kept in ("driver_stats:v2", "driver_stats:[1]"):  # a namespace prefix is not a namespace
        [got] = await store.read(kept, [encode_entity_key([1])], ["a"])
        assert got is not None and got.values == [1]
    assert await store.delete_namespace("driver_stats") == 0


async def test_2500_entities_in_one_call_each_way(store: OnlineStore) -> None:
    features = [f"f{i}" for i in range(20)]
    rows = [
        OnlineRow(
            encode_entity_key(["eu", i]), {f: i * j + 0.5 for j, f in enumerate(features)}, i, 0
        )
        for i in range(2500)
    ]
    assert await store.write(NS, rows) == 2500
    keys = [encode_entity_key(["eu", i]) for i in range(2500)]
    random.Random(1).shuffle(keys)
    got = await store.read(NS, keys, features[::-1])
    for key, stored in zip(keys, got, strict=True):
        i = int(orjson.loads(key)[1])
        assert stored is not None and stored.event_time == i
        assert stored.values == [i * j + 0.5 for j in range(19, -1, -1)]


async def test_invalid_input_is_refused(store: OnlineStore) -> None:
    for name in ("@et", "a-b", "1st", ""):
        with pytest.raises(ValueError, match="feature name"):
            await store.write(NS, [row(1, {name: 1})])
        with pytest.raises(ValueError, match="feature name"):
            await store.read(NS, [encode_entity_key([1])], [name])
    with pytest.raises(ValueError, match="non-finite"):
        await store.write(NS, [row(1, {"a": 1}, event=float("nan"))])
    assert await store.read(NS, [encode_entity_key([1])], ["a"]) == [None]
    assert await store.write(NS, []) == 0
    assert await store.read(NS, [encode_entity_key([1])], ["a"]) == [None]  # still answers


def test_encode_entity_key_is_unambiguous() -> None:
    tricky: list[tuple[Any, ...]] = [
        ("a:b", 1),
        ("a", "b:1"),
        ("a", "b", 1),
        ("a:b:1",),
        (1,),
        ("1",),
        (1, 2),
        ("1,2",),
        ("[1]",),
        ('a",1', 2),
        ("",),
        (),
        ("Zürich", -3),
        (2**63 - 1,),
    ]
    encoded = [encode_entity_key(values) for values in tricky]
    assert len(set(encoded)) == len(tricky)
    assert [tuple(orjson.loads(key)) for key in encoded] == tricky
    assert encode_entity_key([1, "x"]) == encode_entity_key((1, "x")) == '[1,"x"]'  # stable
    for bad in (True, 1.0, None, b"x"):
        with pytest.raises(TypeError):
            encode_entity_key([bad])


async def test_factory() -> None:
    memory = open_online_store(None)
    assert memory.kind == "memory" and isinstance(memory, MemoryOnlineStore)
    shared = open_online_store("redis://127.0.0.1:1/0")  # connects on first use only
    assert shared.kind == "redis" and isinstance(shared, RedisOnlineStore)
    await shared.close()


async def test_redis_layout_one_hash_per_entity(
    redis_store: RedisOnlineStore, redis_url: str
) -> None:
    prefix = redis_store._prefix
    await redis_store.write(NS, [row("a:b", {"x": 1.5, "y": "s"}, event=12.5, created=3.0)])
    client = aioredis.Redis.from_url(url=redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        assert keys == [f'{prefix}{NS}:["a:b"]'.encode()]  # no staging hash left behind
        assert await client.ttl(keys[0]) == -1
        stored = await client.hgetall(keys[0])
    finally:
        await client.aclose()
    assert stored == {b"x": b"1.5", b"y": b'"s"', b"@et": b"12.5", b"@ct": b"3.0"}


async def test_redis_cancelled_write_leaves_the_store_usable(redis_store: RedisOnlineStore) -> None:
    rows = [row(i, {f"f{j}": j for j in range(50)}) for i in range(20_000)]
    task = asyncio.create_task(redis_store.write(NS, rows))
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await redis_store.write(NS, [row(1, {"a": "after"}, event=1e9)]) == 1
    [got] = await redis_store.read(NS, [encode_entity_key([1])], ["a"])
    assert got is not None and got.values == ["after"]


async def test_redis_error_reply_raises_after_draining(
    redis_store: RedisOnlineStore, redis_url: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:  # an entity key holding a string: its swap fails with WRONGTYPE
        await client.set(f"{redis_store._prefix}{NS}:{encode_entity_key([5])}", "x")
    finally:
        await client.aclose()
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await redis_store.write(NS, [row(i, {"a": i}) for i in range(2500)])
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await redis_store.read(NS, [encode_entity_key([5])], ["a"])
    [got] = await redis_store.read(NS, [encode_entity_key([4])], ["a"])
    assert got is not None and got.values == [4]  # the connection answers in step
