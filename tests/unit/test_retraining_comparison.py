"""Champion against challenger: McNemar's test against known values and statsmodels, the paired
bootstrap against SciPy, and the decision rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from mlops.retraining.comparison import decide, mcnemar, paired_bootstrap


def pairs(both: int, champion_only: int, challenger_only: int, neither: int) -> tuple[list, list]:
    champion = (
        [True] * both + [True] * champion_only + [False] * challenger_only + [False] * neither
    )
    challenger = (
        [True] * both + [False] * champion_only + [True] * challenger_only + [False] * neither
    )
    return champion, challenger


def test_mcnemar_uses_the_exact_binomial_test_on_few_discordant_rows() -> None:
    result = mcnemar(*pairs(40, 2, 9, 5))
    assert result.exact and result.statistic is None
    # two-sided binomial: 2 * P(X <= 2), X ~ Bin(11, 1/2) = 2 * 67 / 2048
    assert result.p_value == pytest.approx(0.0654296875)
    assert result.accuracy_difference == pytest.approx(7 / 56)


def test_mcnemar_uses_the_corrected_chi_square_on_many() -> None:
    # the classic 2x2 table [[101, 121], [59, 33]]: (|121 - 59| - 1)^2 / 180
    result = mcnemar(*pairs(101, 121, 59, 33))
    assert not result.exact
    assert result.statistic == pytest.approx(20.6722222)
    assert result.p_value == pytest.approx(5.4500948e-06, rel=1e-6)
    assert result.accuracy_difference < 0  # the champion is the better one here


@pytest.mark.parametrize(
    "table",
    [(40, 2, 9, 5), (120, 0, 6, 30), (60, 12, 12, 8), (101, 121, 59, 33), (300, 20, 45, 35)],
)
def test_mcnemar_matches_statsmodels(table: tuple[int, int, int, int]) -> None:
    from statsmodels.stats.contingency_tables import mcnemar as reference

    both, champion_only, challenger_only, neither = table
    ours = mcnemar(*pairs(*table))
    # rows: champion right / wrong; columns: challenger right / wrong
    contingency = [[both, champion_only], [challenger_only, neither]]
    theirs = reference(contingency, exact=ours.exact, correction=True)
    assert ours.p_value == pytest.approx(float(theirs.pvalue), rel=1e-9)
    if not ours.exact:
        assert ours.statistic == pytest.approx(float(theirs.statistic), rel=1e-9)
    assert ours.exact == (champion_only + challenger_only < 25)


def test_mcnemar_without_disagreement_and_on_mismatched_rows() -> None:
    assert mcnemar(*pairs(10, 0, 0, 3)).p_value == 1.0
    with pytest.raises(ValueError, match="same rows"):
        mcnemar([True], [True, False])


def test_the_paired_bootstrap_interval_matches_scipy() -> None:
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 600)
    champion = np.where(rng.random(600) < 0.7, truth, 1 - truth)
    challenger = np.where(rng.random(600) < 0.9, truth, 1 - truth)
    ours = paired_bootstrap(truth, champion, challenger, accuracy_score, resamples=4000, seed=1)

    def difference(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float(accuracy_score(t, b) - accuracy_score(t, a))

    theirs = bootstrap(
        (truth, champion, challenger),
        difference,
        paired=True,
        vectorized=False,
        n_resamples=4000,
        method="percentile",
        random_state=2,
    ).confidence_interval
    assert ours.difference == pytest.approx(
        accuracy_score(truth, challenger) - accuracy_score(truth, champion)
    )
    assert ours.low == pytest.approx(theirs.low, abs=0.01)
    assert ours.high == pytest.approx(theirs.high, abs=0.01)
    assert 0 < ours.low < ours.difference < ours.high


def test_the_bootstrap_takes_any_metric_and_skips_undefined_resamples() -> None:
    truth = np.array([0, 1] * 20)
    scores_a = np.linspace(0, 1, 40)
    scores_b = truth * 0.6 + 0.2
    result = paired_bootstrap(truth, scores_a, scores_b, roc_auc_score, resamples=300)
    assert result.challenger == 1.0 and result.difference > 0
    tiny = paired_bootstrap([0, 1], [0.2, 0.8], [0.1, 0.9], roc_auc_score, resamples=200)
    assert tiny.resamples < 200  # resamples with a single class have no ROC AUC


@pytest.mark.parametrize(
    ("rows", "improvement", "significant", "outcome"),
    [
        (50, 0.2, True, "insufficient_data"),
        (500, 0.2, False, "keep_champion"),
        (500, 0.004, True, "keep_champion"),
        (500, -0.05, True, "keep_champion"),
        (500, 0.05, True, "challenger_better"),
    ],
)
def test_the_decision_needs_rows_significance_and_effect(
    rows: int, improvement: float, significant: bool, outcome: str
) -> None:
    decision = decide(rows, improvement, significant, min_rows=100, min_effect=0.01)
    assert decision.outcome == outcome and decision.reason
