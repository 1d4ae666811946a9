"""The drift figures: pure functions of histograms (counts over the same bins), which
``drift.compare`` applies to every feature.

Figures
    Numeric features, on the profile's ~107 quantile bins (percentiles, finer tails, and bins
    below the reference's minimum and above its maximum):

    - **PSI** (population stability index) on the reference deciles, the industry's usual
      10 bins (sums of the fine bins, so the window is binned once). An empty bin's share is
      taken as ``PSI_EPSILON`` = 1e-4 in both terms, so one empty bin adds at most about
      ``p * ln(p / 1e-4)`` (0.7 for a decile) instead of infinity.
    - **Kolmogorov-Smirnov**: the largest gap between the two binned CDFs, at the bin edges. It
      is a lower bound of the exact statistic, off by at most one fine bin's share (~1 %). Its
      p-value uses the effective size n·m/(n+m), as ``scipy.stats.ks_2samp(method="asymp")``
      does: ``kstwo`` up to 10,000, Kolmogorov's limit above (the same to three digits there,
      and ``kstwo`` takes most of a second deep in the tail at 500,000).
    - **Wasserstein-1**, the area between the two CDFs, with each bin's mass (on both sides)
      at the reference's mean value in that bin, and the parts under the reference's minimum
      and over its maximum from the window's own tail means: exact for integer values, and
      otherwise off only by how values spread inside a bin. It is divided by the reference's
      spread, the interquartile range / 1.349 (a normal distribution's standard deviation,
      else the standard deviation when the IQR is 0): for a shift of the mean it reads as
      "by how many standard deviations", while one outlier in the reference cannot inflate it
      the way it inflates a standard deviation (heavy tails would make every shift look
      small). 0.1 means the average value moved by a tenth of the reference's typical spread.
    - **Jensen-Shannon distance**, base 2 (0 = same distribution, 1 = disjoint), on the fine
      bins, for information (no default threshold: on ~107 bins its sampling noise alone is
      above 0.1 in windows of under ~2,000 rows).

    Categorical features, on the kept categories plus the *other* bucket (folded rare
    categories; values the reference never had): PSI (same epsilon), the **chi-square**
    statistic and p-value of the window's counts against the reference proportions (a bucket
    empty in the reference, such as new values, gives every reference bucket half a count so
    that it stays finite), and the Jensen-Shannon distance.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from mlops.monitoring.binning import FloatArray

PSI_EPSILON = 1e-4
KS_EXACT_MAX_N = 10_000


def _shares(counts: npt.ArrayLike) -> FloatArray:
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else array


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two histograms (counts or shares over the same bins):
    sum of (q - p) * ln(q / p), with shares under ``epsilon`` raised to it."""
    p = np.maximum(_shares(reference), epsilon)
    q = np.maximum(_shares(current), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Jensen-Shannon distance, base 2, of two histograms over the same bins (0 to 1)."""
    p, q = _shares(reference), _shares(current)
    middle = (p + q) / 2
    total = 0.0
    for share in (p, q):
        kept = share > 0
        total += float(np.sum(share[kept] * np.log2(share[kept] / middle[kept])))
    return float(min(1.0, math.sqrt(max(0.0, total / 2))))


def ks_statistic(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """The largest gap between the CDFs of two histograms over the same bins, at the bins'
    edges."""
    gap = np.cumsum(_shares(reference)) - np.cumsum(_shares(current))
    return float(np.max(np.abs(gap[:-1]))) if len(gap) > 1 else 0.0


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """Two-sample KS p-value with the effective size n·m/(n+m) (``ks_2samp``'s asymptotic
    method): the exact one-sample distribution up to ``KS_EXACT_MAX_N``, its limit above."""
    from scipy import special, stats  # type: ignore[import-untyped]

    if n <= 0 or m <= 0:
        return 1.0
    effective = n * m / (n + m)
    if effective <= KS_EXACT_MAX_N:
        value = float(stats.kstwo.sf(statistic, max(1, round(effective))))
    else:
        value = float(special.kolmogorov(math.sqrt(effective) * statistic))
    return min(1.0, max(0.0, value))


def wasserstein_binned(
    edges: npt.ArrayLike,
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    reference_tails: tuple[float, float] = (0.0, 0.0),
    current_tails: tuple[float, float] = (0.0, 0.0),
    bin_means: npt.ArrayLike | None = None,
) -> float:
    """Wasserstein-1 distance of two histograms over ``edges`` (the counts have one more
    entry: under the first edge, between each pair, from the last edge on): the area between
    the two CDFs. Inside a bin both sides' mass is taken to sit at ``bin_means`` (the
    reference's mean value in each bin between two edges; default the bin's middle), so
    integer values sitting on the edges come out exact; under the first and from the last edge
    on, ``*_tails`` are the means of (first edge - x)+ and (x - last edge)+ of each side."""
    points = np.asarray(edges, dtype=np.float64)
    gap = np.abs(np.cumsum(_shares(reference)) - np.cumsum(_shares(current)))
    area = abs(reference_tails[0] - current_tails[0]) + abs(reference_tails[1] - current_tails[1])
    if len(points) < 2:
        return float(area)
    width = np.diff(points)
    if bin_means is None:
        position = np.full(len(width), 0.5)
    else:
        position = np.clip((np.asarray(bin_means, np.float64) - points[:-1]) / width, 0.0, 1.0)
    # in the bin between edges i and i+1 the CDF gap is gap[i] (bins up to i) left of the
    # mass and gap[i + 1] right of it
    area += float(np.sum(width * (position * gap[:-2] + (1 - position) * gap[1:-1])))
    return float(area)


def chi_square(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[float, float, int]:
    """Pearson's chi-square of the current counts against the reference proportions:
    (statistic, p-value, degrees of freedom). Buckets empty on both sides are left out; if the
    reference has an empty bucket left, every reference bucket gets half a count."""
    from scipy import stats

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    kept = (ref > 0) | (cur > 0)
    ref, cur = ref[kept], cur[kept]
    if len(ref) < 2 or cur.sum() == 0:
        return 0.0, 1.0, max(0, len(ref) - 1)
    if (ref == 0).any():
        ref = ref + 0.5
    expected = cur.sum() * ref / ref.sum()
    statistic = float(np.sum((cur - expected) ** 2 / expected))
    dof = len(ref) - 1
    return statistic, float(stats.chi2.sf(statistic, dof)), dof


def benjamini_hochberg(p_values: npt.ArrayLike) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    result = np.empty_like(p)
    result[order] = np.minimum(adjusted, 1.0)
    return result
