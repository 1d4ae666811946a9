"""Drift detection (mlops.monitoring): binning, metrics against scipy, and the decisions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlops.monitoring import (
    DriftError,
    DriftThresholds,
    FeatureSpec,
    ProfileError,
    ReferenceProfile,
    compare,
    infer_specs,
)
from mlops.monitoring.binning import Scratch
from mlops.monitoring.categorical import OTHER
from mlops.monitoring.profiles import NumericProfile
from mlops.monitoring.statistics import (
    benjamini_hochberg,
    chi_square,
    js_distance,
    ks_p_value,
    psi,
)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def numeric_report(reference: np.ndarray, current: np.ndarray, **kwargs: Any) -> Any:
    profile = ReferenceProfile.build({"x": reference})
    return compare(profile, {"x": current}, **kwargs).feature("x")


# --------------------------------------------------------------------------- binning


def _distributions(size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    r = rng(1)
    return {
        "normal": (r.normal(size=size), r.normal(0.3, 1.2, size=size)),
        "lognormal": (r.lognormal(size=size), 1.1 * r.lognormal(size=size)),
        "integers": (r.poisson(3, size).astype(float), r.poisson(3.5, size).astype(float)),
        "zero-inflated": (
            np.where(r.random(size) < 0.6, 0.0, r.exponential(size=size)),
            np.where(r.random(size) < 0.5, 0.0, r.exponential(size=size)),
        ),
        "heavy tail": (r.pareto(0.5, size), r.pareto(0.6, size)),
        "constant": (np.full(size, 2.0), r.integers(0, 4, size).astype(float)),
        "large offset": (1e9 + r.normal(size=size), 1e9 + r.normal(size=size)),
    }


@pytest.mark.parametrize("case", list(_distributions(10)))
def test_binning_equals_searchsorted_with_missing_and_tails(case: str) -> None:
    reference, current = _distributions(200_000)[case]
    current = current.copy()
    current[::97] = np.nan
    current[[5, 6]] = [np.inf, -np.inf]
    profile = NumericProfile.build("x", reference)
    binned = profile.bin(current, Scratch())

    finite = current[np.isfinite(current)]
    edges = profile.edges
    expected = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    assert binned.counts.tolist() == expected.tolist()
    assert binned.missing == len(current) - len(finite)
    assert binned.below == pytest.approx((edges[0] - finite[finite < edges[0]]).sum())
    assert binned.above == pytest.approx((finite[finite >= edges[-1]] - edges[-1]).sum())
    # the reference is binned the same way, and its edges span it
    assert profile.counts.sum() == len(reference)
    assert profile.counts[0] == 0 and profile.counts[-1] == 0
    assert np.isin(profile.psi_edges, edges).all()


def test_integer_valued_feature_gets_one_bin_per_value() -> None:
    reference = rng(2).integers(0, 5, 10_000)
    profile = NumericProfile.build("x", reference)
    assert profile.edges[:5].tolist() == [0, 1, 2, 3, 4]
    assert profile.counts[1:6].sum() == 10_000  # bins [0,1) ... [4, 4+)


# --------------------------------------------------------------------------- metrics vs scipy


def test_psi_formula_and_empty_bins() -> None:
    assert psi([50, 50], [60, 40]) == pytest.approx(0.1 * np.log(1.2) - 0.1 * np.log(0.8))
    assert psi([1, 1, 1], [1, 1, 1]) == 0.0
    # an empty bin counts as a share of 1e-4, not as infinity
    assert psi([50, 50, 0], [50, 40, 10]) == pytest.approx(
        0.0 + (0.4 - 0.5) * np.log(0.4 / 0.5) + (0.1 - 1e-4) * np.log(0.1 / 1e-4)
    )


def test_js_distance_matches_scipy_base_2() -> None:
    r = rng(3)
    for _ in range(20):
        p = r.integers(0, 50, 12)
        q = r.integers(0, 50, 12)
        p[r.integers(0, 12)] = 0  # empty bins on either side
        assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([3, 4], [3, 4]) == 0.0


def test_chi_square_matches_scipy_against_reference_proportions() -> None:
    reference = np.array([5_000, 3_000, 2_000])
    current = np.array([480, 330, 190])
    statistic, p_value, dof = chi_square(reference, current)
    expected = stats.chisquare(current, f_exp=current.sum() * reference / reference.sum())
    assert statistic == pytest.approx(expected.statistic)
    assert p_value == pytest.approx(expected.pvalue)
    assert dof == 2
    # a bucket empty in the reference (a new value) stays finite and is strong evidence
    statistic, p_value, _ = chi_square([100, 100, 0], [90, 90, 20])
    assert np.isfinite(statistic) and p_value < 1e-6


def test_ks_statistic_and_p_value_match_scipy() -> None:
    r = rng(4)
    reference, current = r.normal(size=20_000), r.normal(0.05, 1, size=5_000)
    exact = stats.ks_2samp(reference, current, method="asymp")
    figure = numeric_report(reference, current)
    # the binned statistic is a lower bound, off by at most about one fine bin (1 %)
    assert exact.statistic - 0.012 <= figure.ks <= exact.statistic + 1e-12
    # same p-value for the same statistic (effective n = 4,000: the exact distribution)
    assert ks_p_value(exact.statistic, 20_000, 5_000) == pytest.approx(exact.pvalue, rel=1e-9)
    # large samples: Kolmogorov's limit, within a percent of scipy's even at p ~ 1e-7
    for statistic in (0.002, 0.004, 0.006):
        limit = ks_p_value(statistic, 1_000_000, 1_000_000)
        assert limit == pytest.approx(stats.kstwo.sf(statistic, 500_000), rel=1e-2)


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("mean shift", lambda r: (r.normal(size=100_000), r.normal(0.3, 1, 100_000))),
        ("scale", lambda r: (r.normal(size=100_000), r.normal(0, 1.5, 100_000))),
        ("lognormal", lambda r: (r.lognormal(0, 0.5, 100_000), r.lognormal(0.1, 0.6, 100_000))),
        (
            "far tail",
            lambda r: (
                r.normal(size=100_000),
                np.where(r.random(100_000) < 0.04, r.normal(6, 1, 100_000), r.normal(size=100_000)),
            ),
        ),
        ("integers", lambda r: (r.poisson(4, 100_000), r.poisson(4.6, 100_000))),
    ],
)
def test_wasserstein_matches_scipy(case: str, make: Any) -> None:
    reference, current = make(rng(5))
    figure = numeric_report(reference, current)
    expected = stats.wasserstein_distance(reference, current)
    assert figure.wasserstein_raw == pytest.approx(expected, rel=0.05, abs=0.005), case
    iqr = np.subtract(*np.quantile(reference, [0.75, 0.25]))
    spread = iqr / 1.3489795003921634 if iqr > 0 else reference.std()
    assert figure.wasserstein == pytest.approx(figure.wasserstein_raw / spread)


def test_benjamini_hochberg_matches_scipy() -> None:
    r = rng(6)
    p_values = np.concatenate([r.random(40), r.random(10) * 1e-4, [0.0, 1.0, 0.5, 0.5]])
    assert benjamini_hochberg(p_values) == pytest.approx(
        stats.false_discovery_control(p_values), rel=1e-12
    )
    assert benjamini_hochberg([]).size == 0


# --------------------------------------------------------------------------- decisions


def _known_shifts(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    r = rng(seed)
    letters = np.array([f"c{i}" for i in range(8)], dtype=object)
    weights = 1 / np.arange(1, 9) ** 0.8
    weights /= weights.sum()

    def frame(current: bool) -> pd.DataFrame:
        def normal(shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
            return r.normal(10 + shift, 2 * scale, rows)

        tail = normal()
        if current:  # 4 % of the rows moved four standard deviations out
            moved = r.random(rows) < 0.04
            tail[moved] += 8
        moved_weights = weights.copy()
        if current:  # the top category gives 7 points to the rarest: JS 0.11
            moved_weights[0] -= 0.07
            moved_weights[-1] += 0.07
        colours = np.array(["red", "green", "blue", "black"], dtype=object)
        colour_codes = r.choice(4, rows, p=[0.4, 0.3, 0.2, 0.1])
        colour = colours[colour_codes]
        if current:  # a value the reference never had, in 5 % of the rows
            colour = np.where(r.random(rows) < 0.05, "purple", colour)
        return pd.DataFrame(
            {
                "steady_normal": normal(),
                "steady_lognormal": r.lognormal(0, 0.7, rows),
                "steady_uniform": r.uniform(-3, 9, rows),
                "steady_count": r.poisson(3, rows),
                "tiny_shift": normal(0.04 if current else 0.0),  # 0.02 standard deviations
                "mean_shift": normal(0.5 if current else 0.0),  # 0.25 standard deviations
                "scale_change": normal(scale=1.3 if current else 1.0),
                "tail_change": tail,
                "count_shift": r.poisson(4.6 if current else 4.0, rows),
                "steady_letter": pd.Categorical(letters[r.choice(8, rows, p=weights)]),
                "letter_shift": letters[r.choice(8, rows, p=moved_weights)],
                "new_colour": colour,
            }
        )

    return frame(current=False), frame(current=True)


SHIFTED = {"mean_shift", "scale_change", "tail_change", "count_shift", "letter_shift", "new_colour"}


def test_a_million_rows_flags_exactly_the_shifted_features() -> None:
    reference, current = _known_shifts(1_000_000, seed=7)
    profile = ReferenceProfile.build(reference)
    report = compare(profile, current)

    assert set(report.drifted_features) == SHIFTED
    assert report.drifted_count == len(SHIFTED)
    assert report.drifted_share == pytest.approx(len(SHIFTED) / len(reference.columns))
    assert report.dataset_drift is True  # 6 of 12 >= 0.5
    # effect size decides: 0.02 standard deviations is significant at this size, but small
    tiny = report.feature("tiny_shift")
    assert tiny.p_adjusted is not None and tiny.p_adjusted < 1e-6
    assert not tiny.drifted and "too small to matter" in tiny.reason
    # the subtle categorical shift is under the PSI rule of thumb but over the JS threshold
    letters = report.feature("letter_shift")
    assert letters.psi is not None and letters.psi < 0.1
    assert letters.js is not None and 0.1 <= letters.js < 0.13
    new = report.feature("new_colour")
    assert new.unseen and new.unseen[0][0] == "purple"
    assert new.histogram.categories is not None and new.histogram.categories[-1] == OTHER
    assert "purple" in new.reason
    # the tail change is invisible to decile PSI and caught by Wasserstein
    tail = report.feature("tail_change")
    assert tail.psi is not None and tail.psi < 0.1
    assert tail.wasserstein is not None and tail.wasserstein >= 0.1


def test_a_real_shift_on_fifty_rows_is_not_flagged_unless_significant() -> None:
    r = rng(8)
    reference = r.normal(size=100_000)
    profile = ReferenceProfile.build({"x": reference})
    small = compare(profile, {"x": r.normal(0.15, 1, 50)}).feature("x")
    assert small.wasserstein is not None and small.wasserstein >= 0.1  # the effect looks real
    assert small.p_adjusted is not None and small.p_adjusted >= 0.05
    assert not small.drifted and "not significant" in small.reason
    large = compare(profile, {"x": r.normal(2.0, 1, 50)}).feature("x")
    assert large.drifted  # a two-sigma shift is significant on 50 rows


def test_an_unchanged_window_flags_nothing_at_any_size() -> None:
    reference, _ = _known_shifts(50_000, seed=9)
    profile = ReferenceProfile.build(reference)
    for rows in (50, 1_000, 50_000):
        same, _ = _known_shifts(rows, seed=rows)
        assert compare(profile, same).drifted_features == [], rows


def test_missing_values_are_counted_apart() -> None:
    r = rng(10)
    reference = pd.DataFrame(
        {"x": r.normal(size=20_000), "c": r.choice(["a", "b"], 20_000).astype(object)}
    )
    current = pd.DataFrame(
        {"x": r.normal(size=20_000), "c": r.choice(["a", "b"], 20_000).astype(object)}
    )
    current.loc[current.index % 3 == 0, "x"] = np.nan
    current.loc[current.index % 4 == 0, "c"] = None
    report = compare(ReferenceProfile.build(reference), current)
    x, c = report.feature("x"), report.feature("c")
    assert x.current_missing_share == pytest.approx(1 / 3, abs=1e-3)
    assert c.current_missing_share == pytest.approx(1 / 4)
    assert x.current_rows == 20_000 - 6_667 and c.current_rows == 15_000
    assert x.reference_missing_share == 0.0
    assert report.drifted_features == []


def test_constant_feature() -> None:
    profile = ReferenceProfile.build({"x": np.full(1_000, 3.0)})
    same = compare(profile, {"x": np.full(500, 3.0)}).feature("x")
    assert not same.drifted and same.psi == 0.0 and same.wasserstein_raw == 0.0
    moved = compare(profile, {"x": np.r_[np.full(400, 3.0), np.full(100, 4.0)]}).feature("x")
    assert moved.wasserstein is None  # no spread to divide by
    assert moved.wasserstein_raw == pytest.approx(0.2)
    assert moved.drifted and moved.psi is not None and moved.psi >= 0.2


def test_integer_valued_shift() -> None:
    r = rng(11)
    profile = ReferenceProfile.build({"x": r.integers(0, 6, 100_000)})
    assert not compare(profile, {"x": r.integers(0, 6, 100_000)}).feature("x").drifted
    shifted = compare(profile, {"x": r.integers(1, 7, 100_000)}).feature("x")
    assert shifted.drifted
    assert shifted.wasserstein_raw == pytest.approx(1.0, rel=0.02)


def test_unseen_and_folded_categories() -> None:
    r = rng(12)
    reference = r.choice(["a", "b", "c"], 10_000, p=[0.5, 0.3, 0.2]).astype(object)
    current = r.choice(["a", "b", "c", "d"], 10_000, p=[0.47, 0.28, 0.19, 0.06]).astype(object)
    profile = ReferenceProfile.build({"c": reference})
    result = compare(profile, {"c": current}).feature("c")
    assert result.drifted and result.unseen[0][0] == "d"
    assert result.histogram.reference[-1] == 0 and result.histogram.current[-1] > 0
    # with rare categories folded into "other", new values join them, unnamed
    folded = ReferenceProfile.build({"c": reference}, max_categories=2)
    assert folded.features["c"].counts[-1] > 0  # "c" folded
    assert compare(folded, {"c": current}).feature("c").unseen == ()


@pytest.mark.parametrize(
    "convert",
    [
        lambda v: v,
        lambda v: list(v),
        lambda v: pd.Series(v, dtype=object),
        lambda v: pd.Series(v, dtype="str"),
        lambda v: pd.Series(pd.Categorical(v, categories=["z", "y", "x", "w", "v"])),
    ],
)
def test_categorical_inputs_count_the_same(convert: Any) -> None:
    r = rng(13)
    values = r.choice(["x", "y", "z", "w"], 5_000).astype(object)
    values[::50] = None
    profile = ReferenceProfile.build({"c": values}, kinds={"c": "categorical"})
    feature = profile.features["c"]
    assert feature.missing == 100
    counted = feature.bin(convert(values))  # type: ignore[union-attr]
    assert counted.counts.tolist() == feature.counts.tolist()
    assert counted.missing == 100
    assert counted.unseen == ()


def test_numpy_strings_and_integer_categories() -> None:
    values = rng(13).choice(["x", "y", "z"], 1_000)
    profile = ReferenceProfile.build(
        {"c": values, "n": np.arange(1_000) % 7}, kinds={"n": "categorical"}
    )
    assert profile.features["c"].kind == "categorical"
    assert set(profile.features["n"].categories) == set(range(7))  # type: ignore[union-attr]
    report = compare(profile, {"c": values.astype(object), "n": (np.arange(1_000) % 7).tolist()})
    assert report.feature("c").psi == 0.0 and report.feature("n").psi == 0.0


def test_profile_round_trip_gives_the_same_report() -> None:
    reference, current = _known_shifts(20_000, seed=14)
    profile = ReferenceProfile.build(reference, prediction="steady_uniform")
    stored = json.dumps(profile.to_dict(), allow_nan=False)
    restored = ReferenceProfile.from_dict(json.loads(stored))
    assert restored.specs == profile.specs
    first, second = compare(profile, current), compare(restored, current)
    assert second.to_dict() == first.to_dict()
    json.dumps(first.to_dict(), allow_nan=False)  # strict JSON, no NaN or infinity


def test_profile_documents_are_checked() -> None:
    document = ReferenceProfile.build({"x": np.arange(100.0)}).to_dict()
    with pytest.raises(ProfileError, match="format version"):
        ReferenceProfile.from_dict({**document, "format_version": 99})
    broken = json.loads(json.dumps(document))
    broken["features"][0]["counts"] = broken["features"][0]["counts"][:-1]
    with pytest.raises(ProfileError, match="counts for"):
        ReferenceProfile.from_dict(broken)


def test_prediction_drift_is_reported_apart_from_the_features() -> None:
    r = rng(15)
    reference = pd.DataFrame({"x": r.normal(size=20_000), "score": r.beta(2, 5, 20_000)})
    current = pd.DataFrame({"x": r.normal(size=20_000), "score": r.beta(3, 4, 20_000)})
    profile = ReferenceProfile.build(reference, prediction="score")
    assert profile.features["score"].role == "prediction"
    report = compare(profile, current)
    assert report.prediction_drift is True
    assert report.drifted_features == [] and report.drifted_share == 0.0
    assert report.to_dict()["feature_count"] == 1
    assert compare(ReferenceProfile.build(reference), current).prediction_drift is None


def test_thresholds_per_kind_and_per_feature() -> None:
    r = rng(16)
    reference = pd.DataFrame({"a": r.normal(size=20_000), "b": r.normal(size=20_000)})
    current = pd.DataFrame({"a": r.normal(0.3, 1, 20_000), "b": r.normal(0.3, 1, 20_000)})
    profile = ReferenceProfile.build(reference)
    assert compare(profile, current).drifted_features == ["a", "b"]
    relaxed = DriftThresholds(features={"b": {"wasserstein": 0.5}})
    report = compare(profile, current, relaxed)
    assert report.drifted_features == ["a"]
    assert report.feature("b").thresholds.wasserstein == 0.5
    assert report.feature("b").thresholds.psi == 0.2  # the kind's default is kept
    stored = DriftThresholds.from_dict(json.loads(json.dumps(relaxed.to_dict())))
    assert compare(profile, current, stored).drifted_features == ["a"]
    # KS as a decision figure, by kind
    ks_only = DriftThresholds(
        numeric=DriftThresholds().numeric.merged({"wasserstein": None, "psi": None, "ks": 0.5})
    )
    assert compare(profile, current, ks_only).drifted_features == []


def test_bad_thresholds_and_columns_are_refused() -> None:
    profile = ReferenceProfile.build({"x": np.arange(100.0), "c": np.array(["a", "b"] * 50)})
    window = {"x": np.arange(10.0), "c": ["a"] * 10}
    with pytest.raises(DriftError, match="do not apply"):
        compare(profile, window, DriftThresholds(features={"c": {"wasserstein": 0.1}}))
    with pytest.raises(DriftError, match="unknown threshold"):
        DriftThresholds(features={"x": {"wasserstien": 0.1}})
    with pytest.raises(DriftError, match="unprofiled"):
        compare(profile, {"x": np.arange(10.0)}, DriftThresholds(features={"y": {"psi": 0.1}}))
    with pytest.raises(DriftError, match=">= 0"):
        DriftThresholds(features={"x": {"psi": -1.0}}).for_feature("x", "numeric")
    with pytest.raises(DriftError, match="lacks column"):
        compare(profile, {"x": np.arange(10.0)})
    with pytest.raises(DriftError, match="alpha"):
        DriftThresholds(alpha=0.0)
    with pytest.raises(DriftError, match="a threshold is a number"):
        DriftThresholds(features={"x": {"js": True}}).for_feature("x", "numeric")


def test_kinds_are_inferred_from_dtypes() -> None:
    frame = pd.DataFrame(
        {
            "f": [1.0, 2.0],
            "i": [1, 2],
            "s": ["a", "b"],
            "b": [True, False],
            "k": pd.Categorical(["a", "b"]),
            "o": pd.Series(["a", "b"], dtype=object),
        }
    )
    assert infer_specs(frame, prediction="f") == (
        FeatureSpec("f", "numeric", "prediction"),
        FeatureSpec("i", "numeric"),
        FeatureSpec("s", "categorical"),
        FeatureSpec("b", "categorical"),
        FeatureSpec("k", "categorical"),
        FeatureSpec("o", "categorical"),
    )
    assert infer_specs(frame, kinds={"i": "categorical"})[1].kind == "categorical"
    with pytest.raises(ProfileError, match="dates"):
        infer_specs(pd.DataFrame({"t": pd.to_datetime(["2026-01-01"])}))
