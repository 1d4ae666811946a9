from __future__ import annotations

import pytest
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter

from mlops.security import ratelimit
from mlops.security.ratelimit import InProcessMovingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ratelimit.time, "time", fake.time)
    return fake


async def test_moving_window_admits_exactly_the_limit(clock: Clock) -> None:
    limiter = MovingWindowRateLimiter(InProcessMovingWindow())
    item = parse("3/minute")
    admitted = []
    for _ in range(5):
        admitted.append(await limiter.hit(item, "alice"))
        clock.now += 1
    assert admitted == [True, True, True, False, False]
    assert await limiter.hit(item, "bob")  # another key, its own budget

    stats = await limiter.get_window_stats(item, "alice")
    assert stats.remaining == 0
    assert stats.reset_time == pytest.approx(1_000_000.0 + 60)

    clock.now = 1_000_000.0 + 60.5  # the first hit has left the window, the second not yet
    assert await limiter.hit(item, "alice")
    assert not await limiter.hit(item, "alice")
    clock.now += 2  # the hits at +1 s and +2 s have left too: only the one at +60.5 s remains
    assert (await limiter.get_window_stats(item, "alice")).remaining == 2


async def test_idle_keys_are_forgotten(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = InProcessMovingWindow()
    monkeypatch.setattr(InProcessMovingWindow, "_SWEEP_EVERY", 3)
    await storage.acquire_entry("idle", 10, 60)
    clock.now += 61
    await storage.acquire_entry("busy", 10, 60)
    await storage.acquire_entry("busy", 10, 60)
    assert set(storage._windows) == {"busy"}
