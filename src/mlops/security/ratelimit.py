"""Moving-window rate limits per principal (per client IP when anonymous).

In-process on the embedded default; in Redis when ``MLOPS_REDIS_URL`` is set, so that every
replica shares one budget. When Redis fails, the configured policy decides: fail open (admit
and report the degradation on ``/ready``) or fail closed (answer 503).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from mlops.core.errors import RateLimited, ServiceUnavailable
from mlops.core.settings import Settings

logger = logging.getLogger("mlops.ratelimit")


@dataclass(frozen=True)
class RateDecision:
    limit: int
    remaining: int
    reset_seconds: int
    window_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": f"{self.limit};w={self.window_seconds}",
        }


class InProcessMovingWindow(MemoryStorage):
    """The in-process moving window, at a cost that does not grow with traffic.

    ``limits``' own memory storage inserts each hit at the front of a list and schedules an
    expiry task per hit, so a busy key costs more the more requests its window holds. Here each
    key keeps a deque of hit times, oldest first: hits append, expired times pop off the left.
    One event loop runs every check, so no lock is needed between the check and the append.
    """

    _SWEEP_EVERY = 10_000

    def __init__(self) -> None:
        super().__init__()
        self._windows: dict[str, tuple[int, deque[float]]] = {}
        self._hits_since_sweep = 0

    def _window(self, key: str, expiry: int, now: float) -> deque[float]:
        entry = self._windows.get(key)
        if entry is None:
            window: deque[float] = deque()
            self._windows[key] = (expiry, window)
        else:
            window = entry[1]
        horizon = now - expiry
        while window and window[0] <= horizon:
            window.popleft()
        return window

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        now = time.time()
        window = self._window(key, expiry, now)
        if len(window) + amount > limit:
            return False
        window.extend([now] * amount)
        self._hits_since_sweep += 1
        if self._hits_since_sweep >= self._SWEEP_EVERY:
            self._sweep(now)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        window = self._window(key, expiry, now)
        return (window[0], len(window)) if window else (now, 0)

    async def clear(self, key: str) -> None:
        self._windows.pop(key, None)
        await super().clear(key)

    async def reset(self) -> int | None:
        self._windows.clear()
        return await super().reset()

    def _sweep(self, now: float) -> None:
        """Forget keys whose newest hit has left their window."""
        self._hits_since_sweep = 0
        idle = [
            key
            for key, (expiry, hits) in self._windows.items()
            if not hits or hits[-1] <= now - expiry
        ]
        for key in idle:
            del self._windows[key]


def _redis_storage_uri(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"async+{scheme}://{rest}"


class RateLimiter:
    def __init__(
        self,
        *,
        principal_limit: RateLimitItem,
        anonymous_limit: RateLimitItem,
        storage: Storage,
        fail_open: bool,
        shared: bool,
    ) -> None:
        self.principal_limit = principal_limit
        self.anonymous_limit = anonymous_limit
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self.fail_open = fail_open
        self.shared = shared
        self.degraded_reason: str | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, key_prefix: str = "mlops-ratelimit"
    ) -> RateLimiter:
        storage: Storage
        if settings.redis_dsn:
            storage = RedisStorage(
                _redis_storage_uri(settings.redis_dsn),
                implementation="redispy",
                key_prefix=key_prefix,
                wrap_exceptions=True,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
            )
        else:
            storage = InProcessMovingWindow()
        return cls(
            principal_limit=parse(settings.rate_limit),
            anonymous_limit=parse(settings.rate_limit_anonymous),
            storage=storage,
            fail_open=settings.rate_limit_fail_open,
            shared=settings.redis_dsn is not None,
        )

    async def hit(self, bucket: str, *, anonymous: bool) -> RateDecision | None:
        """Count one request; raise ``RateLimited`` past the limit.

        Returns ``None`` when the store is down and the policy is to fail open.
        """
        item = self.anonymous_limit if anonymous else self.principal_limit
        try:
            admitted = await self.strategy.hit(item, bucket)
            stats = await self.strategy.get_window_stats(item, bucket)
        except Exception as exc:  # any storage failure: Redis down, timeout, protocol error
            self._storage_failed(exc)
            return None
        if self.degraded_reason is not None:
            logger.warning("rate limit store recovered")
            self.degraded_reason = None
        window = int(item.get_expiry())
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        decision = RateDecision(item.amount, max(0, stats.remaining), reset, window)
        if not admitted:
            raise RateLimited(
                f"Rate limit of {item.amount} requests per {window} s exceeded; "
                f"retry in {max(reset, 1)} s",
                headers={**decision.headers(), "Retry-After": str(max(reset, 1))},
            )
        return decision

    def _storage_failed(self, exc: Exception) -> None:
        reason = f"rate limit store unavailable: {type(exc).__name__}"
        if self.degraded_reason is None:
            logger.error("%s; failing %s", reason, "open" if self.fail_open else "closed")
        self.degraded_reason = reason
        if not self.fail_open:
            raise ServiceUnavailable("Rate limiting is unavailable; try again shortly")

    async def check_storage(self) -> bool:
        try:
            healthy = bool(await self.storage.check())
        except Exception:
            healthy = False
        if healthy:
            self.degraded_reason = None
        elif self.degraded_reason is None:
            self.degraded_reason = "rate limit store unavailable"
        return healthy
