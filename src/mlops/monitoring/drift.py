"""Drift detection: a window of current data compared with a stored reference profile.

``compare(profile, current)`` bins every column of the window once against the profile's
stored edges or categories (``mlops.monitoring.profiles``; the reference rows are never read
again) and returns a :class:`DriftReport`: per feature the figures, the decision and its
reason in words, both histograms, then the number and share of drifted features and the
dataset-level decision. The prediction column (``role="prediction"``) goes through the same
machinery; its result is the report's ``prediction_drift`` and it is not counted among the
features. Every figure is computed on the non-missing values; the missing shares are reported
beside them.

The other modules of the package:

- ``statistics.py``: the figures (PSI, Kolmogorov-Smirnov and its p-value, Wasserstein-1,
  Jensen-Shannon, chi-square, Benjamini-Hochberg), how they are computed on the profile's
  bins and the reasoning behind their constants.
- ``thresholds.py``: the decision (effect size and BH-adjusted p-value), its settings and
  the reasoning behind their defaults.
- ``profiles.py``: the reference profile and its bins; ``binning.py``: binning a window
  against them; ``features.py``: which columns are monitored, and as what.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from mlops.monitoring.binning import Category, Scratch
from mlops.monitoring.categorical import OTHER, CategoricalProfile
from mlops.monitoring.features import Data, FeatureKind, FeatureRole, ProfileError, column
from mlops.monitoring.profiles import NumericProfile, ReferenceProfile
from mlops.monitoring.statistics import (
    benjamini_hochberg,
    chi_square,
    js_distance,
    ks_p_value,
    ks_statistic,
    psi,
    wasserstein_binned,
)
from mlops.monitoring.thresholds import DriftError, DriftThresholds, Metric, Thresholds

_LABELS = {
    "psi": "PSI",
    "wasserstein": "normalised Wasserstein",
    "ks": "KS statistic",
    "js": "Jensen-Shannon distance",
}
_TESTS = {"ks": "Kolmogorov-Smirnov", "chi_square": "chi-square"}


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Histogram:
    """Both sides' counts over the same bins, for plotting. Numeric: ``edges`` has one entry
    fewer than the counts (the first bin is under the first edge, the last from the last
    edge on). Categorical: ``categories`` labels the buckets, the last being the other one."""

    reference: list[int]
    current: list[int]
    edges: list[float] | None = None
    categories: list[Category] | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"reference": self.reference, "current": self.current}
        if self.edges is not None:
            document["edges"] = self.edges
        if self.categories is not None:
            document["categories"] = self.categories
        return document


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison: figures, decision, reason, histograms."""

    name: str
    kind: FeatureKind
    role: FeatureRole
    reference_rows: int  # non-missing values
    current_rows: int
    reference_missing_share: float
    current_missing_share: float
    thresholds: Thresholds
    histogram: Histogram
    psi: float | None = None
    js: float | None = None
    ks: float | None = None
    wasserstein: float | None = None  # divided by the reference's spread
    wasserstein_raw: float | None = None
    chi_square: float | None = None
    test: Literal["ks", "chi_square"] | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    drifted: bool = False
    reason: str = ""
    unseen: tuple[tuple[Category, int], ...] = ()

    def figure(self, metric: Metric) -> float | None:
        value: float | None = getattr(self, metric)
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "drifted": self.drifted,
            "reason": self.reason,
            "psi": self.psi,
            "js": self.js,
            "ks": self.ks,
            "wasserstein": self.wasserstein,
            "wasserstein_raw": self.wasserstein_raw,
            "chi_square": self.chi_square,
            "test": self.test,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "thresholds": self.thresholds.to_dict(),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "reference_missing_share": self.reference_missing_share,
            "current_missing_share": self.current_missing_share,
            "unseen": [{"value": value, "count": count} for value, count in self.unseen],
            "histogram": self.histogram.to_dict(),
        }


@dataclass(frozen=True)
class DriftReport:
    """The comparison of one window with the reference profile."""

    features: tuple[FeatureDrift, ...]
    reference_rows: int
    current_rows: int
    thresholds: DriftThresholds

    @property
    def monitored(self) -> tuple[FeatureDrift, ...]:
        """The features proper (the prediction excluded)."""
        return tuple(f for f in self.features if f.role == "feature")

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.monitored if f.drifted]

    @property
    def drifted_count(self) -> int:
        return len(self.drifted_features)

    @property
    def drifted_share(self) -> float:
        return self.drifted_count / len(self.monitored) if self.monitored else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.monitored) and self.drifted_share >= self.thresholds.dataset_share

    @property
    def prediction_drift(self) -> bool | None:
        predictions = [f for f in self.features if f.role == "prediction"]
        return any(f.drifted for f in predictions) if predictions else None

    def feature(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "prediction_drift": self.prediction_drift,
            "drifted_features": self.drifted_features,
            "drifted_count": self.drifted_count,
            "drifted_share": self.drifted_share,
            "feature_count": len(self.monitored),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "thresholds": self.thresholds.to_dict(),
            "features": [feature.to_dict() for feature in self.features],
        }


# --------------------------------------------------------------------------- compare


def compare(
    profile: ReferenceProfile,
    current: Data,
    thresholds: DriftThresholds | None = None,
    *,
    features: Iterable[str] | None = None,
) -> DriftReport:
    """Compare ``current`` (a DataFrame or a mapping of column -> array) with ``profile``,
    for every profiled column or only ``features``."""
    settings = thresholds or DriftThresholds()
    unknown = set(settings.features) - set(profile.features)
    if unknown:
        raise DriftError(f"thresholds for unprofiled feature(s) {', '.join(sorted(unknown))}")
    names = list(features) if features is not None else list(profile.features)
    missing = [name for name in names if name not in profile.features]
    if missing:
        raise DriftError(f"not in the profile: {', '.join(missing)}")
    columns = {}
    for name in names:
        with contextlib.suppress(ProfileError):
            columns[name] = column(current, name)
    absent = [name for name in names if name not in columns]
    if absent:
        raise DriftError(f"the current data lacks column(s) {', '.join(absent)}")
    scratch = Scratch()
    measured = []
    for name in names:
        feature = profile.features[name]
        if isinstance(feature, NumericProfile):
            measured.append(_measure_numeric(feature, columns[name], scratch))
        else:
            measured.append(_measure_categorical(feature, columns[name]))
    tested = [(i, m.p_value) for i, m in enumerate(measured) if m.p_value is not None]
    adjusted = benjamini_hochberg([p for _, p in tested])
    for (i, _), value in zip(tested, adjusted, strict=True):
        measured[i] = replace(measured[i], p_adjusted=float(value))
    results = tuple(
        _decide(m, settings.for_feature(m.name, m.kind), settings.alpha) for m in measured
    )
    rows = len(next(iter(columns.values()))) if columns else 0
    return DriftReport(results, profile.rows, rows, settings)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _measure_numeric(profile: NumericProfile, values: Any, scratch: Scratch) -> FeatureDrift:
    binned = profile.bin(values, scratch)
    n, m = profile.present, binned.present
    result = FeatureDrift(
        name=profile.name,
        kind="numeric",
        role=profile.role,
        reference_rows=n,
        current_rows=m,
        reference_missing_share=_share(profile.missing, profile.rows),
        current_missing_share=_share(binned.missing, m + binned.missing),
        thresholds=Thresholds(),
        histogram=Histogram(
            reference=profile.counts.tolist(),
            current=binned.counts.tolist(),
            edges=profile.edges.tolist(),
        ),
    )
    if n == 0 or m == 0:
        return result
    coarse = len(profile.psi_edges) + 1
    statistic = ks_statistic(profile.counts, binned.counts)
    raw = wasserstein_binned(
        profile.edges,
        profile.counts,
        binned.counts,
        (profile.below, profile.above),
        (binned.below / m, binned.above / m),
        profile.bin_means,
    )
    spread = profile.spread
    return replace(
        result,
        psi=psi(
            np.bincount(profile.psi_bins, weights=profile.counts, minlength=coarse),
            np.bincount(profile.psi_bins, weights=binned.counts, minlength=coarse),
        ),
        js=js_distance(profile.counts, binned.counts),
        ks=statistic,
        wasserstein=raw / spread if spread > 0 else None,
        wasserstein_raw=raw,
        test="ks",
        p_value=ks_p_value(statistic, n, m),
    )


def _measure_categorical(profile: CategoricalProfile, values: Any) -> FeatureDrift:
    counted = profile.bin(values)
    n, m = profile.present, counted.present
    result = FeatureDrift(
        name=profile.name,
        kind="categorical",
        role=profile.role,
        reference_rows=n,
        current_rows=m,
        reference_missing_share=_share(profile.missing, profile.rows),
        current_missing_share=_share(counted.missing, m + counted.missing),
        thresholds=Thresholds(),
        histogram=Histogram(
            reference=profile.counts.tolist(),
            current=counted.counts.tolist(),
            categories=[*profile.categories, OTHER],
        ),
        unseen=counted.unseen,
    )
    if n == 0 or m == 0:
        return result
    statistic, p_value, _ = chi_square(profile.counts, counted.counts)
    return replace(
        result,
        psi=psi(profile.counts, counted.counts),
        js=js_distance(profile.counts, counted.counts),
        chi_square=statistic,
        test="chi_square",
        p_value=p_value,
    )


def _number(value: float) -> str:
    return f"{value:.3g}"


def _decide(feature: FeatureDrift, thresholds: Thresholds, alpha: float) -> FeatureDrift:
    feature = replace(feature, thresholds=thresholds)
    if feature.reference_rows == 0:
        return replace(feature, reason="the reference has no values for this feature")
    if feature.current_rows == 0:
        return replace(feature, reason="no values in the current window")
    active = thresholds.active()
    if not active:
        return replace(feature, reason="no threshold is set for this feature")
    checked = [
        (m, value, limit) for m, limit in active.items() if (value := feature.figure(m)) is not None
    ]
    passed = [f"{_LABELS[m]} {_number(v)} ≥ {_number(t)}" for m, v, t in checked if v >= t]
    under = [f"{_LABELS[m]} {_number(v)} < {_number(t)}" for m, v, t in checked if v < t]
    test = _TESTS[feature.test] if feature.test else None
    p = feature.p_adjusted
    significant = p is None or p < alpha
    unseen = _unseen_note(feature)
    if passed and significant:
        because = ", ".join(passed)
        if test and p is not None:
            because += f"; {test} p-value (BH-adjusted) {_number(p)} < {_number(alpha)}"
        return replace(feature, drifted=True, reason=because + unseen)
    if passed:
        return replace(
            feature,
            reason=f"{', '.join(passed)}, but not significant: {test} p-value (BH-adjusted) "
            f"{_number(p or 1.0)} ≥ {_number(alpha)} with {feature.current_rows} rows" + unseen,
        )
    because = f"every effect size under its threshold ({', '.join(under) or 'none computed'})"
    if test and p is not None and p < alpha:
        because += (
            f"; the {test} test is significant (BH-adjusted p {_number(p)}) but the change "
            "is too small to matter"
        )
    return replace(feature, reason=because + unseen)


def _unseen_note(feature: FeatureDrift) -> str:
    if not feature.unseen or feature.current_rows == 0:
        return ""
    listed = ", ".join(
        f"{value!r} ({100 * count / feature.current_rows:.2g} %)" for value, count in feature.unseen
    )
    return f"; values the reference never had: {listed}"
