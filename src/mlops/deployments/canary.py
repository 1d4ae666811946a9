"""Canary analysis: a canary variant against the stable one over an analysis window, on error
rate and latency p95, with thresholds and a minimum request count.

Pure functions (no I/O, no web or database imports); NumPy is imported where it is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

# Rates are compared after float arithmetic on user-given decimals (0.01 + 0.05): a rate equal to
# its limit up to rounding is within the limit.
_TOLERANCE = 1e-9
Figure = float | int | None


def latency_quantile(latencies_ms: Sequence[float], q: float = 0.95) -> float | None:
    """The q-quantile by linear interpolation (NumPy's default); ``None`` when empty."""
    import numpy as np

    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be between 0 and 1, not {q}")
    if len(latencies_ms) == 0:
        return None
    return float(np.quantile(np.asarray(latencies_ms, dtype=np.float64), q, method="linear"))


@dataclass(frozen=True)
class WindowStats:
    """One variant over the analysis window; ``latency_p95_ms`` is ``None`` when none was timed."""

    requests: int
    errors: int
    latency_p95_ms: float | None = None

    def __post_init__(self) -> None:
        if self.requests < 0 or not 0 <= self.errors <= self.requests:
            raise ValueError(f"need 0 <= errors <= requests, got {self.errors} of {self.requests}")
        if self.latency_p95_ms is not None and not self.latency_p95_ms >= 0.0:
            raise ValueError(f"latency p95 must be >= 0, got {self.latency_p95_ms}")

    @classmethod
    def from_latencies(
        cls, latencies_ms: Sequence[float], errors: int, requests: int | None = None
    ) -> WindowStats:
        """``requests`` defaults to the number of latencies (every request timed)."""
        count = len(latencies_ms) if requests is None else requests
        return cls(count, errors, latency_quantile(latencies_ms))

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class CanaryThresholds:
    max_error_rate_increase: float = 0.05
    max_latency_p95_ratio: float = 1.5
    max_latency_p95_increase_ms: float | None = None
    min_requests: int = 50

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_error_rate_increase <= 1.0 or not self.max_latency_p95_ratio > 0:
            raise ValueError(f"need 0 <= max_error_rate_increase <= 1, a positive ratio: {self}")
        if (self.max_latency_p95_increase_ms or 0.0) < 0.0 or self.min_requests < 1:
            raise ValueError(f"need max_latency_p95_increase_ms >= 0, min_requests >= 1: {self}")


@dataclass(frozen=True)
class CanaryVerdict:
    """``reasons`` says why: the failed checks on "fail", the checks passed (and those that could
    not run) on "pass", what is missing on "inconclusive"."""

    outcome: Literal["pass", "fail", "inconclusive"]
    reasons: tuple[str, ...]
    figures: dict[str, Figure] = field(default_factory=dict)


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f} %"


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def _baseline_error_rate(stable: WindowStats, thresholds: CanaryThresholds) -> float:
    """The stable error rate, or 0 when the stable variant has too few requests for its rate to
    mean anything: the canary is then held to an absolute error rate of at most the allowed
    increase, which is stricter, never blocking."""
    if stable.requests < thresholds.min_requests or stable.error_rate is None:
        return 0.0
    return stable.error_rate


def _error_check(
    stable: WindowStats, canary: WindowStats, thresholds: CanaryThresholds
) -> tuple[bool, str]:
    rate = canary.error_rate or 0.0
    baseline = _baseline_error_rate(stable, thresholds)
    increase = thresholds.max_error_rate_increase
    few = stable.requests < thresholds.min_requests
    base = f"0 % (stable has {stable.requests} requests)" if few else f"stable {_percent(baseline)}"
    against = f"{base} + {_percent(increase)}"
    if _over_limit(rate, baseline, thresholds):
        return False, f"canary error rate {_percent(rate)} exceeds {against}"
    return True, f"canary error rate {_percent(rate)} is within {against}"


def _latency_limit_ms(stable: WindowStats, thresholds: CanaryThresholds) -> float | None:
    """Over stable p95 x ratio and, when set, over stable p95 + the absolute increase too (so
    2 ms against 1 ms does not fail); ``None`` when the stable p95 is not a baseline."""
    if stable.latency_p95_ms is None or stable.requests < thresholds.min_requests:
        return None
    limit = stable.latency_p95_ms * thresholds.max_latency_p95_ratio
    if thresholds.max_latency_p95_increase_ms is None:
        return limit
    return max(limit, stable.latency_p95_ms + thresholds.max_latency_p95_increase_ms)


def _latency_check(
    stable: WindowStats, canary: WindowStats, thresholds: CanaryThresholds
) -> tuple[bool | None, str]:
    """Passed, failed, or ``None`` when there is nothing to compare with."""
    limit = _latency_limit_ms(stable, thresholds)
    if stable.requests < thresholds.min_requests:
        return None, f"latency p95 not compared: stable has only {stable.requests} requests"
    if limit is None or stable.latency_p95_ms is None or canary.latency_p95_ms is None:
        return None, "latency p95 not compared: no latencies timed"
    failed = canary.latency_p95_ms > limit
    against = f"stable {_ms(stable.latency_p95_ms)} x {thresholds.max_latency_p95_ratio:g}"
    if thresholds.max_latency_p95_increase_ms is not None:
        joiner = "and" if failed else "or"
        against += f" {joiner} stable + {_ms(thresholds.max_latency_p95_increase_ms)}"
    verb = "exceeds" if failed else "is within"
    return not failed, f"canary latency p95 {_ms(canary.latency_p95_ms)} {verb} {against}"


def _figures(
    stable: WindowStats, canary: WindowStats, thresholds: CanaryThresholds
) -> dict[str, Figure]:
    baseline = _baseline_error_rate(stable, thresholds)
    return {
        "stable_requests": stable.requests,
        "stable_errors": stable.errors,
        "stable_error_rate": stable.error_rate,
        "stable_latency_p95_ms": stable.latency_p95_ms,
        "canary_requests": canary.requests,
        "canary_errors": canary.errors,
        "canary_error_rate": canary.error_rate,
        "canary_latency_p95_ms": canary.latency_p95_ms,
        "error_rate_baseline": baseline,
        "error_rate_limit": baseline + thresholds.max_error_rate_increase,
        "latency_p95_limit_ms": _latency_limit_ms(stable, thresholds),
        "min_requests": thresholds.min_requests,
    }


def _over_limit(rate: float, baseline: float, thresholds: CanaryThresholds) -> bool:
    return rate - baseline > thresholds.max_error_rate_increase + _TOLERANCE


def _early_failure(
    stable: WindowStats, canary: WindowStats, thresholds: CanaryThresholds
) -> str | None:
    """Why the canary fails already below ``min_requests``: its errors so far put it over the
    limit even if every request still needed to reach ``min_requests`` succeeds."""
    baseline = _baseline_error_rate(stable, thresholds)
    if not _over_limit(canary.errors / thresholds.min_requests, baseline, thresholds):
        return None
    limit = _percent(baseline + thresholds.max_error_rate_increase)
    return (
        f"canary has {canary.errors} errors in {canary.requests} requests: over the error rate "
        f"limit of {limit} even if all its next requests up to {thresholds.min_requests} succeed"
    )


def analyse_canary(
    stable: WindowStats, canary: WindowStats, thresholds: CanaryThresholds
) -> CanaryVerdict:
    """Fail on either check, early fail on errors below ``min_requests``, else inconclusive until
    the canary has ``min_requests``. A stable variant with few requests never blocks: see
    ``_baseline_error_rate``; its latency is then not compared."""
    figures = _figures(stable, canary, thresholds)
    if canary.requests < thresholds.min_requests:
        early = _early_failure(stable, canary, thresholds)
        if early is not None:
            return CanaryVerdict("fail", (early,), figures)
        needed = (
            f"canary has {canary.requests} requests, fewer than the "
            f"{thresholds.min_requests} needed"
        )
        return CanaryVerdict("inconclusive", (needed,), figures)
    checks = [_error_check(stable, canary, thresholds), _latency_check(stable, canary, thresholds)]
    failed = tuple(reason for passed, reason in checks if passed is False)
    if failed:
        return CanaryVerdict("fail", failed, figures)
    return CanaryVerdict("pass", tuple(reason for _, reason in checks), figures)
