"""The statistics of A/B experiments: two-proportion z-tests and Welch's t-tests.

Pure functions over counts and streaming aggregates (no I/O, no web or database imports), so the
service can keep per-variant sums instead of every outcome. NumPy and SciPy are imported where
they are used, as elsewhere in the package, to keep them off the service's start-up path.

Edge cases return ``None`` rather than dividing by zero or producing NaN/inf (which JSON cannot
carry): a figure is ``None`` when the data cannot define it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Figure = float | int | None


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, not {confidence}")


def _two_sided_p(statistic: float, df: float | None = None) -> float:
    """Under the normal distribution, or Student's t with ``df`` degrees of freedom."""
    from scipy import special  # type: ignore[import-untyped]

    tail = special.ndtr(-abs(statistic)) if df is None else special.stdtr(df, -abs(statistic))
    return min(1.0, 2.0 * float(tail))


def _critical(confidence: float, df: float | None = None) -> float:
    from scipy import special

    level = 0.5 + confidence / 2.0
    return float(special.ndtri(level) if df is None else special.stdtrit(df, level))


@dataclass(frozen=True)
class ProportionTest:
    """Variant b against variant a on a binary outcome; ``difference`` is rate b - rate a."""

    rate_a: float | None
    rate_b: float | None
    difference: float | None
    confidence_interval: tuple[float, float] | None
    statistic: float | None
    p_value: float | None
    confidence: float

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < 1.0 - self.confidence


def _check_counts(successes: int, n: int) -> None:
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} successes of {n}")


def two_proportion_ztest(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = 0.95
) -> ProportionTest:
    """Pooled-variance z test (as statsmodels' ``proportions_ztest``), unpooled Wald interval.

    An empty variant leaves the rates' difference undefined: everything but the defined rate is
    ``None``. When both variants are all successes or all failures the pooled variance is zero;
    the data are then exactly what "no difference" predicts, so z is 0 and the p-value 1.0 (as
    Fisher's exact test gives) rather than ``None``, which would read as "no data".
    """
    _check_confidence(confidence)
    _check_counts(successes_a, n_a)
    _check_counts(successes_b, n_b)
    rate_a = successes_a / n_a if n_a else None
    rate_b = successes_b / n_b if n_b else None
    if rate_a is None or rate_b is None:
        return ProportionTest(rate_a, rate_b, None, None, None, None, confidence)
    difference = rate_b - rate_a
    pooled = (successes_a + successes_b) / (n_a + n_b)
    pooled_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    z = difference / pooled_se if pooled_se > 0.0 else 0.0
    wald_se = math.sqrt(rate_a * (1.0 - rate_a) / n_a + rate_b * (1.0 - rate_b) / n_b)
    margin = _critical(confidence) * wald_se
    return ProportionTest(
        rate_a=rate_a,
        rate_b=rate_b,
        difference=difference,
        confidence_interval=(difference - margin, difference + margin),
        statistic=z,
        p_value=_two_sided_p(z),
        confidence=confidence,
    )


@dataclass(frozen=True)
class Summary:
    """Count, mean and sample variance (ddof=1) of a numeric outcome; variance 0.0 below 2."""

    count: int
    mean: float
    variance: float

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must not be negative, got {self.count}")
        if not (math.isfinite(self.mean) and math.isfinite(self.variance)) or self.variance < 0:
            raise ValueError(f"need a finite mean and variance >= 0, got {self}")

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        import numpy as np

        array = np.asarray(list(values), dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError("values must be finite")
        if array.size == 0:
            return cls(0, 0.0, 0.0)
        variance = float(array.var(ddof=1)) if array.size > 1 else 0.0
        return cls(int(array.size), float(array.mean()), variance)

    @classmethod
    def from_sums(cls, count: int, total: float, total_squares: float) -> Summary:
        """From streaming sums Σx and Σx².

        Σx² - (Σx)²/n loses precision when the spread is small beside the mean: a spread within
        the rounding error that summing n squares may carry (n ulps of Σx², what constant values
        leave, even slightly negative) is taken as zero.
        """
        if count == 0:
            return cls(0, 0.0, 0.0)
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        mean = total / count
        if count == 1:
            return cls(1, mean, 0.0)
        spread = total_squares - total * mean
        if spread <= count * sys.float_info.epsilon * abs(total_squares):
            return cls(count, mean, 0.0)
        return cls(count, mean, spread / (count - 1))


@dataclass(frozen=True)
class MeanTest:
    """Welch's t test of variant b against variant a; ``difference`` is mean b - mean a.

    ``difference`` is ``None`` when a variant is empty; the test figures are ``None`` when a
    variant has fewer than 2 values (no variance estimate) or both variances are zero (t would be
    0/0 or ±inf: SciPy returns NaN or inf there).
    """

    mean_a: float | None
    mean_b: float | None
    difference: float | None
    confidence_interval: tuple[float, float] | None
    statistic: float | None
    degrees_of_freedom: float | None
    p_value: float | None
    confidence: float

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < 1.0 - self.confidence


def welch_ttest(a: Summary, b: Summary, confidence: float = 0.95) -> MeanTest:
    _check_confidence(confidence)
    mean_a = a.mean if a.count else None
    mean_b = b.mean if b.count else None
    difference = mean_b - mean_a if mean_a is not None and mean_b is not None else None
    undefined = MeanTest(mean_a, mean_b, difference, None, None, None, None, confidence)
    if difference is None or a.count < 2 or b.count < 2:
        return undefined
    share_a, share_b = a.variance / a.count, b.variance / b.count
    se = math.sqrt(share_a + share_b)
    if se == 0.0:
        return undefined
    df = (share_a + share_b) ** 2 / (share_a**2 / (a.count - 1) + share_b**2 / (b.count - 1))
    t = difference / se
    margin = _critical(confidence, df) * se
    return MeanTest(
        mean_a=mean_a,
        mean_b=mean_b,
        difference=difference,
        confidence_interval=(difference - margin, difference + margin),
        statistic=t,
        degrees_of_freedom=df,
        p_value=_two_sided_p(t, df),
        confidence=confidence,
    )


@dataclass(frozen=True)
class BinaryVariant:
    name: str
    count: int
    successes: int


@dataclass(frozen=True)
class NumericVariant:
    name: str
    summary: Summary


@dataclass(frozen=True)
class VariantReport:
    """A variant's count and rate or mean (``None`` when empty); ``comparison`` with the control
    is ``None`` for the control itself."""

    name: str
    count: int
    value: float | None
    comparison: ProportionTest | MeanTest | None


@dataclass(frozen=True)
class ExperimentReport:
    """Each challenger against the control (the first variant). The p-values are per comparison,
    not adjusted for there being several challengers."""

    metric: Literal["rate", "mean"]
    control: str
    variants: tuple[VariantReport, ...]


def _check_names(names: Sequence[str]) -> None:
    if not names:
        raise ValueError("an experiment needs at least one variant (the control)")
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {list(names)}")


def compare_rates(variants: Sequence[BinaryVariant], confidence: float = 0.95) -> ExperimentReport:
    _check_names([variant.name for variant in variants])
    control = variants[0]
    reports = []
    for index, variant in enumerate(variants):
        test = two_proportion_ztest(
            control.successes, control.count, variant.successes, variant.count, confidence
        )
        rate = variant.successes / variant.count if variant.count else None
        reports.append(VariantReport(variant.name, variant.count, rate, test if index else None))
    return ExperimentReport("rate", control.name, tuple(reports))


def compare_means(variants: Sequence[NumericVariant], confidence: float = 0.95) -> ExperimentReport:
    _check_names([variant.name for variant in variants])
    control = variants[0]
    reports = []
    for index, variant in enumerate(variants):
        test = welch_ttest(control.summary, variant.summary, confidence)
        summary = variant.summary
        mean = summary.mean if summary.count else None
        reports.append(VariantReport(variant.name, summary.count, mean, test if index else None))
    return ExperimentReport("mean", control.name, tuple(reports))
