from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlops.deployments.canary import (
    CanaryThresholds,
    WindowStats,
    analyse_canary,
    latency_quantile,
)
from mlops.deployments.statistics import (
    BinaryVariant,
    MeanTest,
    NumericVariant,
    ProportionTest,
    Summary,
    compare_means,
    compare_rates,
    two_proportion_ztest,
    welch_ttest,
)

# --- Summary --------------------------------------------------------------------------------------


def test_summary_of_values_is_count_mean_and_sample_variance() -> None:
    summary = Summary.of([1.0, 2.0, 3.0, 4.0])
    assert (summary.count, summary.mean) == (4, 2.5)
    assert summary.variance == pytest.approx(5 / 3)


def test_summary_from_sums_matches_summary_of_values() -> None:
    values = np.random.default_rng(7).normal(120.0, 15.0, size=500)
    from_sums = Summary.from_sums(len(values), float(values.sum()), float((values**2).sum()))
    direct = Summary.of(values.tolist())
    assert from_sums.count == direct.count
    assert from_sums.mean == pytest.approx(direct.mean, rel=1e-12)
    assert from_sums.variance == pytest.approx(direct.variance, rel=1e-9)


@pytest.mark.parametrize("value", [0.1, 0.7, 1e9 + 0.3])
def test_summary_from_sums_of_constant_values_has_zero_variance(value: float) -> None:
    values = [value] * 37
    summary = Summary.from_sums(37, sum(values), sum(v * v for v in values))
    assert summary.variance == 0.0


def test_summary_of_fewer_than_two_values() -> None:
    assert Summary.of([]) == Summary(0, 0.0, 0.0)
    assert Summary.of([3.5]) == Summary(1, 3.5, 0.0)
    assert Summary.from_sums(0, 0.0, 0.0) == Summary(0, 0.0, 0.0)
    assert Summary.from_sums(1, 3.5, 12.25) == Summary(1, 3.5, 0.0)


def test_summary_rejects_invalid_input() -> None:
    with pytest.raises(ValueError):
        Summary.of([1.0, math.nan])
    with pytest.raises(ValueError):
        Summary.from_sums(-1, 0.0, 0.0)
    with pytest.raises(ValueError):
        Summary(3, 1.0, -0.5)
    with pytest.raises(ValueError):
        Summary(-1, 0.0, 0.0)


# --- Welch's t test -------------------------------------------------------------------------------


def _assert_matches_scipy(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> None:
    ours = welch_ttest(Summary.of(a.tolist()), Summary.of(b.tolist()), confidence)
    theirs = stats.ttest_ind(b, a, equal_var=False)  # b - a, as ours
    interval = theirs.confidence_interval(confidence_level=confidence)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-10)
    assert ours.degrees_of_freedom == pytest.approx(theirs.df, rel=1e-10)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-8, abs=1e-300)
    assert ours.difference == pytest.approx(b.mean() - a.mean(), rel=1e-12)
    assert ours.confidence_interval == pytest.approx((interval.low, interval.high), rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_welch_ttest_matches_scipy_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_a, n_b = rng.integers(2, 300, size=2)
    a = rng.normal(rng.uniform(-5, 5), rng.uniform(0.1, 10), size=n_a)
    b = rng.normal(rng.uniform(-5, 5), rng.uniform(0.1, 10), size=n_b)
    _assert_matches_scipy(a, b, confidence=(0.8, 0.9, 0.95, 0.99)[seed % 4])


def test_welch_ttest_from_streaming_sums_matches_scipy() -> None:
    rng = np.random.default_rng(42)
    a, b = rng.exponential(80.0, size=1000), rng.exponential(85.0, size=800)
    summaries = [Summary.from_sums(len(x), float(x.sum()), float((x**2).sum())) for x in (a, b)]
    ours = welch_ttest(*summaries)
    theirs = stats.ttest_ind(b, a, equal_var=False)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-8)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-8)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_welch_ttest_one_constant_variant_matches_scipy() -> None:
    a = np.array([5.0, 5.0, 5.0, 5.0])
    b = np.random.default_rng(3).normal(6.0, 1.0, size=12)
    _assert_matches_scipy(a, b)
    result = welch_ttest(Summary.of(a.tolist()), Summary.of(b.tolist()))
    assert result.degrees_of_freedom == pytest.approx(11.0)


def test_welch_ttest_worked_example() -> None:
    # a: mean 3, variance 2.5; b: mean 6, variance 10; se = sqrt(2.5/5 + 10/5) = sqrt(2.5)
    result = welch_ttest(Summary.of([1, 2, 3, 4, 5]), Summary.of([2, 4, 6, 8, 10]))
    assert result.difference == 3.0
    assert result.statistic == pytest.approx(3 / math.sqrt(2.5))  # 1.8974
    assert result.degrees_of_freedom == pytest.approx(100 / 17)  # 6.25 / 1.0625
    assert result.p_value == pytest.approx(0.107531, abs=1e-6)
    assert result.confidence_interval == pytest.approx((-0.887742, 6.887742), abs=1e-6)
    assert not result.significant


def test_welch_ttest_too_few_values_reports_the_difference_only() -> None:
    result = welch_ttest(Summary.of([1.0]), Summary.of([2.0, 3.0, 4.0]))
    assert result == MeanTest(1.0, 3.0, 2.0, None, None, None, None, 0.95)
    assert not result.significant


def test_welch_ttest_empty_variant_has_no_difference() -> None:
    result = welch_ttest(Summary.of([]), Summary.of([2.0, 3.0]))
    assert (result.mean_a, result.mean_b, result.difference) == (None, 2.5, None)
    assert result.p_value is None


@pytest.mark.parametrize("b", [[4.0, 4.0, 4.0], [7.0, 7.0]])
def test_welch_ttest_zero_variances_leave_the_test_undefined(b: list[float]) -> None:
    result = welch_ttest(Summary.of([4.0, 4.0, 4.0]), Summary.of(b))
    assert result.difference == b[0] - 4.0
    assert (result.statistic, result.p_value, result.confidence_interval) == (None, None, None)
    assert result.degrees_of_freedom is None


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1])
def test_tests_reject_a_confidence_outside_0_1(confidence: float) -> None:
    with pytest.raises(ValueError):
        welch_ttest(Summary.of([1.0, 2.0]), Summary.of([1.0, 3.0]), confidence)
    with pytest.raises(ValueError):
        two_proportion_ztest(1, 10, 2, 10, confidence)


# --- two proportions ------------------------------------------------------------------------------


def _reference_ztest(
    s_a: int, n_a: int, s_b: int, n_b: int, confidence: float
) -> tuple[float, float, tuple[float, float]]:
    """statsmodels' proportions_ztest (pooled) and the Wald interval, by hand."""
    p_a, p_b = s_a / n_a, s_b / n_b
    pooled = (s_a + s_b) / (n_a + n_b)
    z = (p_b - p_a) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    p_value = 2 * stats.norm.sf(abs(z))
    margin = stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(
        p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
    )
    return z, p_value, (p_b - p_a - margin, p_b - p_a + margin)


@pytest.mark.parametrize("seed", range(8))
def test_two_proportion_ztest_matches_reference_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n_a, n_b = (int(n) for n in rng.integers(20, 5000, size=2))
    s_a, s_b = int(rng.binomial(n_a, 0.1)), int(rng.binomial(n_b, 0.12))
    confidence = (0.9, 0.95, 0.99)[seed % 3]
    result = two_proportion_ztest(s_a, n_a, s_b, n_b, confidence)
    z, p_value, interval = _reference_ztest(s_a, n_a, s_b, n_b, confidence)
    assert result.statistic == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(p_value, rel=1e-10)
    assert result.confidence_interval == pytest.approx(interval, rel=1e-10)
    # the pooled z test is Pearson's chi-squared test of the 2x2 table
    table = [[s_a, n_a - s_a], [s_b, n_b - s_b]]
    chi2, chi2_p, *_ = stats.chi2_contingency(table, correction=False)
    assert result.statistic**2 == pytest.approx(chi2, rel=1e-9)
    assert result.p_value == pytest.approx(chi2_p, rel=1e-8)


def test_two_proportion_ztest_worked_example() -> None:
    # pooled 0.225, se = sqrt(0.225 * 0.775 * 2 / 1000) = 0.018675; z = 0.05 / se
    result = two_proportion_ztest(200, 1000, 250, 1000)
    assert (result.rate_a, result.rate_b) == (0.2, 0.25)
    assert result.difference == pytest.approx(0.05)
    assert result.statistic == pytest.approx(2.677398, abs=1e-6)
    assert result.p_value == pytest.approx(0.007420, abs=1e-6)
    assert result.confidence_interval == pytest.approx((0.013464, 0.086536), abs=1e-6)
    assert result.significant


def test_two_proportion_ztest_physicians_health_study() -> None:
    # Agresti, Categorical Data Analysis: heart attacks on aspirin 104/11037, placebo 189/11034;
    # difference 0.0077 with 95 % interval (0.005, 0.011), Pearson X² = 25.01.
    result = two_proportion_ztest(104, 11037, 189, 11034)
    assert result.difference == pytest.approx(0.0077, abs=5e-5)
    assert result.confidence_interval is not None
    low, high = result.confidence_interval
    assert (round(low, 3), round(high, 3)) == (0.005, 0.011)
    assert result.statistic is not None
    assert result.statistic**2 == pytest.approx(25.01, abs=0.01)
    assert result.p_value is not None and result.p_value < 1e-6


def test_two_proportion_ztest_empty_variant_is_undefined() -> None:
    assert two_proportion_ztest(0, 0, 3, 10) == ProportionTest(
        None, 0.3, None, None, None, None, 0.95
    )
    assert two_proportion_ztest(0, 0, 0, 0).p_value is None


@pytest.mark.parametrize(("s_a", "s_b"), [(0, 0), (40, 25)])
def test_two_proportion_ztest_all_equal_outcomes_give_p_value_1(s_a: int, s_b: int) -> None:
    result = two_proportion_ztest(s_a, 40 if s_a else 30, s_b, 25 if s_b else 20)
    assert (result.difference, result.statistic, result.p_value) == (0.0, 0.0, 1.0)
    assert result.confidence_interval == (0.0, 0.0)
    assert not result.significant


def test_two_proportion_ztest_equal_rates_have_p_value_1() -> None:
    result = two_proportion_ztest(10, 100, 20, 200)
    assert result.statistic == 0.0
    assert result.p_value == pytest.approx(1.0)


@pytest.mark.parametrize(("successes", "n"), [(-1, 10), (11, 10), (0, -1)])
def test_two_proportion_ztest_rejects_impossible_counts(successes: int, n: int) -> None:
    with pytest.raises(ValueError):
        two_proportion_ztest(successes, n, 1, 10)
    with pytest.raises(ValueError):
        two_proportion_ztest(1, 10, successes, n)


# --- A/B reports ----------------------------------------------------------------------------------


def test_compare_rates_tests_each_challenger_against_the_control() -> None:
    report = compare_rates(
        [
            BinaryVariant("control", 1000, 200),
            BinaryVariant("b", 1000, 250),
            BinaryVariant("c", 0, 0),
        ]
    )
    assert (report.metric, report.control) == ("rate", "control")
    control, b, c = report.variants
    assert (control.name, control.count, control.value, control.comparison) == (
        "control",
        1000,
        0.2,
        None,
    )
    assert (b.value, b.comparison) == (0.25, two_proportion_ztest(200, 1000, 250, 1000))
    assert c.value is None
    assert isinstance(c.comparison, ProportionTest) and c.comparison.p_value is None


def test_compare_means_tests_each_challenger_against_the_control() -> None:
    a, b = Summary.of([1, 2, 3, 4, 5]), Summary.of([2, 4, 6, 8, 10])
    report = compare_means(
        [NumericVariant("control", a), NumericVariant("b", b), NumericVariant("c", Summary.of([]))],
        confidence=0.9,
    )
    assert (report.metric, report.control) == ("mean", "control")
    control, challenger, empty = report.variants
    assert (control.count, control.value, control.comparison) == (5, 3.0, None)
    assert (challenger.count, challenger.value) == (5, 6.0)
    assert challenger.comparison == welch_ttest(a, b, 0.9)
    assert (empty.count, empty.value) == (0, None)


@pytest.mark.parametrize("names", [[], ["a", "a"]])
def test_experiments_need_a_control_and_unique_names(names: list[str]) -> None:
    with pytest.raises(ValueError):
        compare_rates([BinaryVariant(name, 10, 1) for name in names])
    with pytest.raises(ValueError):
        compare_means([NumericVariant(name, Summary.of([1.0])) for name in names])


# --- latency quantiles ----------------------------------------------------------------------------


def test_latency_quantile_is_numpy_linear_percentile() -> None:
    latencies = np.random.default_rng(5).lognormal(3.0, 0.5, size=333).tolist()
    expected = np.percentile(latencies, 95, method="linear")
    assert latency_quantile(latencies) == pytest.approx(expected)
    assert latency_quantile([10.0, 20.0], 0.5) == 15.0
    assert latency_quantile([]) is None
    with pytest.raises(ValueError):
        latency_quantile([1.0], 1.5)


def test_window_stats_from_latencies() -> None:
    window = WindowStats.from_latencies([float(ms) for ms in range(1, 101)], errors=3)
    assert (window.requests, window.errors) == (100, 3)
    assert window.latency_p95_ms == pytest.approx(95.05)
    assert window.error_rate == 0.03
    assert WindowStats.from_latencies([], errors=2, requests=2).latency_p95_ms is None
    assert WindowStats(0, 0).error_rate is None


@pytest.mark.parametrize(("requests", "errors", "p95"), [(-1, 0, 1.0), (5, 6, 1.0), (5, 1, -1.0)])
def test_window_stats_rejects_impossible_figures(requests: int, errors: int, p95: float) -> None:
    with pytest.raises(ValueError):
        WindowStats(requests, errors, p95)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_error_rate_increase": -0.01},
        {"max_error_rate_increase": 1.5},
        {"max_latency_p95_ratio": 0.0},
        {"max_latency_p95_increase_ms": -1.0},
        {"min_requests": 0},
    ],
)
def test_canary_thresholds_reject_impossible_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CanaryThresholds(**kwargs)  # type: ignore[arg-type]


# --- canary analysis ------------------------------------------------------------------------------

THRESHOLDS = CanaryThresholds(
    max_error_rate_increase=0.05, max_latency_p95_ratio=1.5, min_requests=50
)


def test_canary_passes_within_both_limits() -> None:
    verdict = analyse_canary(WindowStats(1000, 10, 100.0), WindowStats(100, 3, 120.0), THRESHOLDS)
    assert verdict.outcome == "pass"
    assert verdict.reasons == (
        "canary error rate 3.0 % is within stable 1.0 % + 5.0 %",
        "canary latency p95 120.0 ms is within stable 100.0 ms x 1.5",
    )
    assert verdict.figures["canary_error_rate"] == 0.03
    assert verdict.figures["error_rate_limit"] == pytest.approx(0.06)
    assert verdict.figures["latency_p95_limit_ms"] == 150.0


def test_canary_fails_on_its_error_rate() -> None:
    verdict = analyse_canary(WindowStats(1000, 0, 100.0), WindowStats(50, 10, 100.0), THRESHOLDS)
    assert verdict.outcome == "fail"
    assert verdict.reasons == ("canary error rate 20.0 % exceeds stable 0.0 % + 5.0 %",)


def test_canary_at_exactly_the_error_limit_passes() -> None:
    # 0.06 - 0.01 > 0.05 in floating point; a rate at its limit is within it
    verdict = analyse_canary(WindowStats(100, 1, 10.0), WindowStats(100, 6, 10.0), THRESHOLDS)
    assert verdict.outcome == "pass"


def test_canary_fails_on_its_latency() -> None:
    verdict = analyse_canary(WindowStats(1000, 0, 100.0), WindowStats(60, 0, 151.0), THRESHOLDS)
    assert verdict.outcome == "fail"
    assert verdict.reasons == ("canary latency p95 151.0 ms exceeds stable 100.0 ms x 1.5",)


def test_canary_failing_both_checks_gives_both_reasons() -> None:
    verdict = analyse_canary(WindowStats(1000, 0, 100.0), WindowStats(60, 30, 400.0), THRESHOLDS)
    assert verdict.outcome == "fail"
    assert len(verdict.reasons) == 2


def test_absolute_latency_margin_keeps_small_latencies_from_failing() -> None:
    thresholds = CanaryThresholds(max_latency_p95_increase_ms=10.0)
    small = analyse_canary(WindowStats(100, 0, 1.0), WindowStats(100, 0, 2.0), thresholds)
    assert small.outcome == "pass"
    assert (
        small.reasons[1]
        == "canary latency p95 2.0 ms is within stable 1.0 ms x 1.5 or stable + 10.0 ms"
    )
    assert small.figures["latency_p95_limit_ms"] == 11.0
    large = analyse_canary(WindowStats(100, 0, 1.0), WindowStats(100, 0, 12.0), thresholds)
    assert large.outcome == "fail"
    assert large.reasons == (
        "canary latency p95 12.0 ms exceeds stable 1.0 ms x 1.5 and stable + 10.0 ms",
    )
    # above the margin but within the ratio
    slow = analyse_canary(WindowStats(100, 0, 100.0), WindowStats(100, 0, 140.0), thresholds)
    assert slow.outcome == "pass"


def test_canary_with_too_few_requests_is_inconclusive() -> None:
    verdict = analyse_canary(WindowStats(1000, 0, 100.0), WindowStats(49, 2, 500.0), THRESHOLDS)
    assert verdict.outcome == "inconclusive"
    assert verdict.reasons == ("canary has 49 requests, fewer than the 50 needed",)
    empty = analyse_canary(WindowStats(1000, 0, 100.0), WindowStats(0, 0), THRESHOLDS)
    assert empty.outcome == "inconclusive"
    assert empty.figures["canary_error_rate"] is None


def test_broken_canary_fails_before_min_requests() -> None:
    # limit 1 % + 5 % of 50 requests = 3 errors: a 4th cannot be made up by successes
    stable = WindowStats(1000, 10, 100.0)
    at_limit = analyse_canary(stable, WindowStats(10, 3, 100.0), THRESHOLDS)
    assert at_limit.outcome == "inconclusive"
    verdict = analyse_canary(stable, WindowStats(10, 4, 100.0), THRESHOLDS)
    assert verdict.outcome == "fail"
    assert verdict.reasons == (
        "canary has 4 errors in 10 requests: over the error rate limit of 6.0 % even if all its "
        "next requests up to 50 succeed",
    )


def test_stable_with_few_requests_holds_canary_to_an_absolute_error_rate() -> None:
    stable = WindowStats(10, 5, 100.0)  # 50 % over 10 requests: no baseline
    passing = analyse_canary(stable, WindowStats(100, 5, 900.0), THRESHOLDS)
    assert passing.outcome == "pass"
    assert passing.reasons == (
        "canary error rate 5.0 % is within 0 % (stable has 10 requests) + 5.0 %",
        "latency p95 not compared: stable has only 10 requests",
    )
    assert passing.figures["error_rate_baseline"] == 0.0
    assert passing.figures["latency_p95_limit_ms"] is None
    failing = analyse_canary(stable, WindowStats(100, 6, 100.0), THRESHOLDS)
    assert failing.outcome == "fail"
    early = analyse_canary(WindowStats(0, 0), WindowStats(5, 3), THRESHOLDS)
    assert early.outcome == "fail"


def test_canary_without_latencies_is_judged_on_errors() -> None:
    verdict = analyse_canary(WindowStats(1000, 0, None), WindowStats(100, 0, 50.0), THRESHOLDS)
    assert verdict.outcome == "pass"
    assert verdict.reasons[1] == "latency p95 not compared: no latencies timed"
    verdict = analyse_canary(WindowStats(1000, 0, 50.0), WindowStats(100, 0, None), THRESHOLDS)
    assert verdict.outcome == "pass"
