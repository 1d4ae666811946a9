"""Reference profiles: what drift detection keeps of the reference data, and how a window of
current data is binned against it.

A :class:`ReferenceProfile` is built once per deployment, from the training data or a chosen
window, and stored (``to_dict()`` is plain JSON, with a format version). Comparing a window
(``mlops.monitoring.drift.compare``) needs only the profile, never the reference rows again.

Numeric feature
    Bin edges at the reference's quantiles: every percentile, plus 0.1, 0.25, 0.5 and 99.5,
    99.75, 99.9 % for the tails, plus the minimum and just above the maximum, so that values
    outside the reference's range land in bins of their own, empty in the reference. Equal
    quantiles are merged, so an integer-valued feature gets one bin per value and a constant
    one a single bin. Kept: the reference count and mean value in every bin; the PSI edges
    (the deciles, the minimum and the edge above the maximum: a subset of the fine edges, so
    the PSI bins are sums of fine bins and the window is binned once); the row and missing
    counts (NaN, None and +/-inf are missing); mean, standard deviation, quartiles, minimum
    and maximum.
Categorical feature
    The most frequent categories and an *other* bucket: see ``categorical.py``.

Defaults: ~100 quantile bins keep the binned KS statistic within ~1 % (one bin's share) of
the exact one and Wasserstein within a few percent, at ~4 KB of JSON per feature; the finer
tail quantiles keep a moved tail visible.

How a window's column is binned against a profile is in ``binning.py``; which columns are
monitored, and as what, in ``features.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from mlops.monitoring.binning import (
    BinCounts,
    Binner,
    FloatArray,
    IntArray,
    Scratch,
    _binner,
    as_float_array,
)
from mlops.monitoring.categorical import MAX_CATEGORIES, CategoricalProfile
from mlops.monitoring.features import (
    _ROLES,
    Data,
    FeatureKind,
    FeatureRole,
    FeatureSpec,
    ProfileError,
    column,
    infer_specs,
)

FORMAT_VERSION = 1
PERCENTILE_LEVELS = tuple(k / 100 for k in range(1, 100))
TAIL_LEVELS = (0.001, 0.0025, 0.005, 0.995, 0.9975, 0.999)
PSI_LEVELS = tuple(k / 10 for k in range(1, 10))  # deciles, a subset of the percentiles


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """The reference distribution of one numeric column (see the module docstring)."""

    name: str
    role: FeatureRole
    rows: int
    missing: int
    edges: FloatArray
    psi_edges: FloatArray
    counts: IntArray
    # mean value in each bin between two edges (len(edges) - 1 of them): where the mass sits
    # inside a bin (at its left edge for integer values), for Wasserstein
    bin_means: FloatArray = field(default_factory=lambda: np.empty(0))
    below: float = 0.0  # sum of (edges[0] - x) over values under the first edge, per value
    above: float = 0.0  # sum of (x - edges[-1]) over values from the last edge on, per value
    mean: float | None = None
    std: float | None = None
    q25: float | None = None
    q75: float | None = None
    minimum: float | None = None
    maximum: float | None = None

    kind: FeatureKind = field(default="numeric", init=False)

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def spread(self) -> float:
        """The scale Wasserstein distances are divided by: the interquartile range / 1.349 (a
        normal distribution's standard deviation), else the standard deviation, else 0."""
        if self.q25 is not None and self.q75 is not None and self.q75 > self.q25:
            return (self.q75 - self.q25) / IQR_OF_STANDARD_NORMAL
        return self.std or 0.0

    @property
    def binner(self) -> Binner:
        cached: Binner | None = self.__dict__.get("_binner")
        if cached is None:
            cached = _binner(self.edges, self.counts)
            self.__dict__["_binner"] = cached
        return cached

    @property
    def psi_bins(self) -> npt.NDArray[np.intp]:
        """The PSI bin of every fine bin (fine bin 0 is below every edge)."""
        cached: npt.NDArray[np.intp] | None = self.__dict__.get("_psi_bins")
        if cached is None:
            cached = np.concatenate(
                [[0], np.searchsorted(self.psi_edges, self.edges, side="right")]
            ).astype(np.intp)
            self.__dict__["_psi_bins"] = cached
        return cached

    def bin(self, values: Any, scratch: Scratch | None = None) -> BinCounts:
        return self.binner.count(as_float_array(values, self.name), scratch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "rows": self.rows,
            "missing": self.missing,
            "edges": self.edges.tolist(),
            "psi_edges": self.psi_edges.tolist(),
            "counts": self.counts.tolist(),
            "bin_means": self.bin_means.tolist(),
            "below": self.below,
            "above": self.above,
            "mean": self.mean,
            "std": self.std,
            "q25": self.q25,
            "q75": self.q75,
            "min": self.minimum,
            "max": self.maximum,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> NumericProfile:
        name = str(document["name"])
        edges = np.asarray(document["edges"], dtype=np.float64)
        psi_edges = np.asarray(document["psi_edges"], dtype=np.float64)
        counts = np.asarray(document["counts"], dtype=np.int64)
        if len(counts) != len(edges) + 1:
            raise ProfileError(f"{name}: {len(counts)} counts for {len(edges)} edges")
        if len(edges) and not (np.all(np.diff(edges) > 0) and np.all(np.isfinite(edges))):
            raise ProfileError(f"{name}: edges must be finite and increasing")
        bin_means = np.asarray(document.get("bin_means", []), dtype=np.float64)
        if len(edges) and len(bin_means) != len(edges) - 1:
            raise ProfileError(f"{name}: {len(bin_means)} bin means for {len(edges)} edges")
        if not np.isin(psi_edges, edges).all():
            raise ProfileError(f"{name}: the PSI edges must be among the edges")
        rows, missing = int(document["rows"]), int(document["missing"])
        if int(counts.sum()) != rows - missing:
            raise ProfileError(f"{name}: the counts do not add up to rows - missing")
        return cls(
            name=name,
            role=document.get("role", "feature"),
            rows=rows,
            missing=missing,
            edges=edges,
            psi_edges=psi_edges,
            counts=counts,
            bin_means=bin_means,
            below=float(document.get("below", 0.0)),
            above=float(document.get("above", 0.0)),
            mean=_optional_float(document.get("mean")),
            std=_optional_float(document.get("std")),
            q25=_optional_float(document.get("q25")),
            q75=_optional_float(document.get("q75")),
            minimum=_optional_float(document.get("min")),
            maximum=_optional_float(document.get("max")),
        )

    @classmethod
    def build(cls, name: str, values: Any, role: FeatureRole = "feature") -> NumericProfile:
        array = as_float_array(values, name)
        finite = np.isfinite(array)
        ordered = np.sort(array if finite.all() else array[finite])
        size = len(ordered)
        if size == 0:
            empty = np.empty(0)
            return cls(name, role, len(array), len(array), empty, empty, np.zeros(1, np.int64))
        levels = sorted(set(PERCENTILE_LEVELS) | set(TAIL_LEVELS))
        quantiles = ordered[[_inverted_cdf_index(level, size) for level in levels]]
        top = np.nextafter(ordered[-1], np.inf)
        outer = [ordered[:1], quantiles] + ([np.array([top])] if np.isfinite(top) else [])
        edges = np.unique(np.concatenate(outer))
        deciles = quantiles[[levels.index(level) for level in PSI_LEVELS]]
        psi_edges = np.unique(np.concatenate([edges[:1], deciles, edges[-1:]]))
        starts = np.searchsorted(ordered, edges)
        binned = _binner(edges, np.diff(starts, prepend=0, append=size)).count(array)
        # every bin between two edges holds at least the value at its left edge
        bin_means = (
            np.add.reduceat(ordered, starts[:-1]) / np.diff(starts)
            if len(edges) > 1
            else np.empty(0)
        )
        q25, q75 = np.quantile(ordered, [0.25, 0.75])
        return cls(
            name=name,
            role=role,
            rows=len(array),
            missing=binned.missing,
            edges=edges,
            psi_edges=psi_edges,
            counts=binned.counts,
            bin_means=bin_means,
            below=binned.below / size,
            above=binned.above / size,
            mean=float(ordered.mean()),
            std=float(ordered.std()),
            q25=float(q25),
            q75=float(q75),
            minimum=float(ordered[0]),
            maximum=float(ordered[-1]),
        )


IQR_OF_STANDARD_NORMAL = 1.3489795003921634


def _inverted_cdf_index(level: float, size: int) -> int:
    """Index of the ``level`` quantile in ``size`` sorted values, ``numpy.quantile``'s
    ``inverted_cdf`` (the smallest value with at least that share at or below it), in exact
    integer arithmetic."""
    per_ten_thousand = round(level * 10_000)
    return max(0, -(-per_ten_thousand * size // 10_000) - 1)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


FeatureProfile: TypeAlias = NumericProfile | CategoricalProfile


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    """Everything drift detection keeps of the reference data, built once and stored."""

    features: Mapping[str, FeatureProfile]
    rows: int
    format_version: int = FORMAT_VERSION

    @classmethod
    def build(
        cls,
        data: Data,
        specs: Sequence[FeatureSpec] | None = None,
        *,
        prediction: str | Sequence[str] | None = None,
        kinds: Mapping[str, FeatureKind] | None = None,
        max_categories: int = MAX_CATEGORIES,
    ) -> ReferenceProfile:
        """Profile ``data`` (a DataFrame or a mapping of column -> array). Without ``specs``
        every column is monitored, its kind from ``kinds`` or else from its dtype."""
        if max_categories < 1:
            raise ProfileError(f"max_categories must be at least 1, not {max_categories}")
        if specs is None:
            specs = infer_specs(data, kinds=kinds, prediction=prediction)
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ProfileError("a column is listed twice")
        features: dict[str, FeatureProfile] = {}
        rows: int | None = None
        for spec in specs:
            values = column(data, spec.name)
            if spec.kind == "numeric":
                features[spec.name] = NumericProfile.build(spec.name, values, spec.role)
            else:
                features[spec.name] = CategoricalProfile.build(
                    spec.name, values, spec.role, max_categories
                )
            if rows is not None and features[spec.name].rows != rows:
                raise ProfileError(f"{spec.name}: {features[spec.name].rows} rows, not {rows}")
            rows = features[spec.name].rows
        return cls(features, rows or 0)

    @property
    def specs(self) -> tuple[FeatureSpec, ...]:
        return tuple(FeatureSpec(f.name, f.kind, f.role) for f in self.features.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (lists, numbers, strings): what a database column stores."""
        return {
            "format_version": self.format_version,
            "rows": self.rows,
            "features": [feature.to_dict() for feature in self.features.values()],
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> ReferenceProfile:
        version = document.get("format_version")
        if version != FORMAT_VERSION:
            raise ProfileError(
                f"profile format version {version!r}; this version reads {FORMAT_VERSION}"
            )
        features: dict[str, FeatureProfile] = {}
        for item in document["features"]:
            if item.get("kind") == "numeric":
                feature: FeatureProfile = NumericProfile.from_dict(item)
            elif item.get("kind") == "categorical":
                feature = CategoricalProfile.from_dict(item)
            else:
                raise ProfileError(f"{item.get('name')}: unknown kind {item.get('kind')!r}")
            if feature.role not in _ROLES:
                raise ProfileError(f"{feature.name}: unknown role {feature.role!r}")
            features[feature.name] = feature
        return cls(features, int(document["rows"]), version)
