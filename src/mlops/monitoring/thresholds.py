"""The drift decision's settings: effect-size thresholds by kind and per feature, the
significance level and the dataset-drift share, with their defaults.

Decision (defaults in ``DriftThresholds``)
    A feature drifts when at least one of its effect sizes reaches its threshold **and**, where
    it has a p-value, the Benjamini-Hochberg-adjusted p-value is under ``alpha`` = 0.05.

    - Effect size decides, not the p-value: at 1,000,000 rows a shift of 0.02 standard
      deviations has a KS p-value below 1e-30 while changing nothing that matters; every
      feature of real data would be flagged. The thresholds say how large a change matters.
    - The p-value is a guard for small windows: 50 rows put an effect size far from zero by
      chance (PSI over deciles of pure noise averages ~0.16 at 50 rows, the normalised
      Wasserstein distance of a 50-row sample ~0.16). A large-looking effect is not flagged
      unless the window is big enough to tell it from noise.
    - Benjamini-Hochberg across the features (and prediction) of one report, because 50
      tests at 5 % each would flag two or three features of an unchanged window by chance;
      BH bounds the expected share of false flags at ``alpha`` while keeping more power than
      Bonferroni.

    Numeric defaults: **normalised Wasserstein ≥ 0.1** (a tenth of a standard deviation, as
    Evidently's default, catches mean shifts, scale changes and moved tails alike) or
    **PSI ≥ 0.2** (the usual rule of thumb: < 0.1 stable, 0.1-0.2 moderate, ≥ 0.2
    significant; it catches changes of shape that move little mass far). Categorical defaults:
    **Jensen-Shannon ≥ 0.1** (7 points of share moving from the most frequent of 8 categories,
    31 %, to the rarest, 6 %, give 0.11, while their PSI is 0.07) or **PSI ≥ 0.2**. Evidently
    uses 0.1 too, but with natural logarithms, which is 0.12 in base 2. KS and, for numeric
    features, Jensen-Shannon have no default threshold; any of ``psi``, ``wasserstein``,
    ``ks``, ``js`` (numeric) or ``psi``, ``js`` (categorical) can be set or turned off
    (``None``) by kind or per feature.

    Dataset drift: the share of drifted features (prediction excluded) ≥ ``dataset_share`` =
    0.5, Evidently's default, so that both tools' dataset verdicts mean the same thing; a few
    drifting features are visible per feature without calling the whole dataset drifted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from mlops.monitoring.features import FeatureKind

ALPHA = 0.05
DATASET_SHARE = 0.5

Metric = Literal["psi", "wasserstein", "ks", "js"]
METRICS: tuple[Metric, ...] = ("psi", "wasserstein", "ks", "js")
CATEGORICAL_METRICS: tuple[Metric, ...] = ("psi", "js")


class DriftError(ValueError):
    """Thresholds or data that cannot be compared; the message names the field."""


@dataclass(frozen=True)
class Thresholds:
    """Effect-size thresholds of one feature; ``None`` leaves a figure out of the decision."""

    psi: float | None = None
    wasserstein: float | None = None
    ks: float | None = None
    js: float | None = None

    def __post_init__(self) -> None:
        for metric in METRICS:
            value = getattr(self, metric)
            if value is not None and (
                isinstance(value, bool) or not (isinstance(value, int | float) and value >= 0)
            ):
                raise DriftError(f"{metric}: a threshold is a number >= 0 or null, not {value!r}")

    def merged(self, changes: Mapping[str, float | None]) -> Thresholds:
        unknown = set(changes) - set(METRICS)
        if unknown:
            raise DriftError(f"unknown threshold(s) {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def active(self) -> dict[Metric, float]:
        return {m: v for m in METRICS if (v := getattr(self, m)) is not None}

    def to_dict(self) -> dict[str, float | None]:
        return {metric: getattr(self, metric) for metric in METRICS}


NUMERIC_THRESHOLDS = Thresholds(psi=0.2, wasserstein=0.1)
CATEGORICAL_THRESHOLDS = Thresholds(psi=0.2, js=0.1)


@dataclass(frozen=True)
class DriftThresholds:
    """The decision's settings: thresholds by kind, per-feature changes to them (e.g.
    ``{"income": {"wasserstein": 0.2}}``, ``{"zip": {"psi": None}}``), ``alpha`` for the
    BH-adjusted p-values, and the share of drifted features that makes dataset drift."""

    numeric: Thresholds = NUMERIC_THRESHOLDS
    categorical: Thresholds = CATEGORICAL_THRESHOLDS
    features: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    alpha: float = ALPHA
    dataset_share: float = DATASET_SHARE

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise DriftError(f"alpha must be in (0, 1], not {self.alpha}")
        if not 0 < self.dataset_share <= 1:
            raise DriftError(f"dataset_share must be in (0, 1], not {self.dataset_share}")
        _check_categorical(self.categorical, "categorical")
        for changes in self.features.values():
            self.numeric.merged(changes)  # unknown threshold names fail here

    def for_feature(self, name: str, kind: FeatureKind) -> Thresholds:
        base = self.numeric if kind == "numeric" else self.categorical
        merged = base.merged(self.features.get(name, {}))
        if kind == "categorical":
            _check_categorical(merged, name)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric.to_dict(),
            "categorical": self.categorical.to_dict(),
            "features": {name: dict(changes) for name, changes in self.features.items()},
            "alpha": self.alpha,
            "dataset_share": self.dataset_share,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> DriftThresholds:
        unknown = set(document) - {f.name for f in fields(cls)}
        if unknown:
            raise DriftError(f"unknown setting(s) {', '.join(sorted(unknown))}")
        return cls(
            numeric=NUMERIC_THRESHOLDS.merged(document.get("numeric", {})),
            categorical=CATEGORICAL_THRESHOLDS.merged(document.get("categorical", {})),
            features={str(k): dict(v) for k, v in document.get("features", {}).items()},
            alpha=float(document.get("alpha", ALPHA)),
            dataset_share=float(document.get("dataset_share", DATASET_SHARE)),
        )


def _check_categorical(thresholds: Thresholds, where: str) -> None:
    wrong = [m for m in thresholds.active() if m not in CATEGORICAL_METRICS]
    if wrong:
        raise DriftError(f"{where}: {', '.join(wrong)} do not apply to categorical features")
