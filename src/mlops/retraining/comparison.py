"""Champion against challenger on the same holdout: the statistics and the decision.

- **McNemar's test** for classification accuracy: only the rows where exactly one model is right
  count. With fewer than ``EXACT_BELOW`` such rows the exact binomial test is used, otherwise
  the chi-square statistic with continuity correction, ``(|b - c| - 1)^2 / (b + c)``.
- **A paired bootstrap** for any metric (ROC AUC, F1, RMSE, ...): the same resampled rows score
  both models, and the percentile interval of the difference (challenger - champion) is kept.
- **The decision**: too few rows is ``insufficient_data``; the challenger wins only when the test
  is significant *and* its improvement reaches ``min_effect`` (a real but tiny gain does not pay
  for a rollout); anything else keeps the champion, with the reason.

Pure functions (NumPy and SciPy, imported where used); no I/O.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

EXACT_BELOW = 25  # discordant pairs: below this the chi-square approximation is poor

Metric = Callable[[Any, Any], float]
Outcome = Literal["challenger_better", "keep_champion", "insufficient_data"]


@dataclass(frozen=True)
class McNemar:
    rows: int
    champion_only: int  # rows only the champion got right
    challenger_only: int  # rows only the challenger got right
    statistic: float | None  # chi-square with continuity correction; None when exact
    p_value: float
    exact: bool

    @property
    def accuracy_difference(self) -> float:
        """Challenger accuracy - champion accuracy on the same rows."""
        return (self.challenger_only - self.champion_only) / self.rows if self.rows else 0.0


def mcnemar(champion_correct: Sequence[bool], challenger_correct: Sequence[bool]) -> McNemar:
    if len(champion_correct) != len(challenger_correct):
        raise ValueError("both models must be scored on the same rows")
    b = sum(1 for a, c in zip(champion_correct, challenger_correct, strict=True) if a and not c)
    c = sum(1 for a, d in zip(champion_correct, challenger_correct, strict=True) if d and not a)
    discordant = b + c
    if discordant == 0:
        return McNemar(len(champion_correct), b, c, None, 1.0, exact=True)
    if discordant < EXACT_BELOW:
        from scipy.stats import binomtest  # type: ignore[import-untyped]

        p = float(binomtest(min(b, c), discordant, 0.5).pvalue)
        return McNemar(len(champion_correct), b, c, None, min(1.0, p), exact=True)
    from scipy.stats import chi2

    statistic = (abs(b - c) - 1) ** 2 / discordant
    return McNemar(
        len(champion_correct), b, c, statistic, float(chi2.sf(statistic, 1)), exact=False
    )


@dataclass(frozen=True)
class PairedBootstrap:
    champion: float
    challenger: float
    difference: float  # challenger - champion on all rows
    low: float  # percentile interval of the difference
    high: float
    confidence: float
    resamples: int


def paired_bootstrap(
    y_true: Sequence[Any],
    champion: Sequence[Any],
    challenger: Sequence[Any],
    metric: Metric,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrap:
    """``metric(y_true, predictions)`` of both models on the same resampled rows."""
    import numpy as np

    truth, first, second = (np.asarray(v) for v in (y_true, champion, challenger))
    if not len(truth) == len(first) == len(second):
        raise ValueError("truth and both models' predictions must have the same rows")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError("confidence must be in (0, 1) and resamples positive")
    rng = np.random.default_rng(seed)
    differences = np.empty(resamples)
    with warnings.catch_warnings():  # a resample the metric cannot score is dropped, not logged
        warnings.simplefilter("ignore")
        for index in range(resamples):
            rows = rng.integers(0, len(truth), len(truth))
            differences[index] = metric(truth[rows], second[rows]) - metric(
                truth[rows], first[rows]
            )
    finite = differences[np.isfinite(differences)]  # a resample with one class has no ROC AUC
    tail = (1 - confidence) / 2
    low, high = (float(np.quantile(finite, q)) for q in (tail, 1 - tail))
    base, new = float(metric(truth, first)), float(metric(truth, second))
    return PairedBootstrap(base, new, new - base, low, high, confidence, int(finite.size))


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str


def decide(
    rows: int,
    improvement: float,
    significant: bool,
    *,
    min_rows: int,
    min_effect: float,
) -> Decision:
    """``improvement`` is oriented so that positive favours the challenger (for a metric where
    lower is better, pass champion - challenger)."""
    if rows < min_rows:
        return Decision("insufficient_data", f"{rows} labelled rows, fewer than {min_rows}")
    if not significant:
        return Decision("keep_champion", "the difference is not statistically significant")
    if improvement < min_effect or math.isclose(improvement, 0.0):
        return Decision(
            "keep_champion", f"improvement {improvement:+.4g} is below the minimum {min_effect:g}"
        )
    return Decision("challenger_better", f"improvement {improvement:+.4g}, significant")
