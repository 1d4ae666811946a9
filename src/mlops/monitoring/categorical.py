"""The reference profile of a categorical feature, and how a window's column is counted
against it.

Categorical feature
    The ``MAX_CATEGORIES`` most frequent categories with their counts; the rarer ones are
    folded into one *other* bucket. Values of the window that the reference never had go to
    that bucket as well: when nothing was folded it is empty in the reference, so new values
    are drift evidence on their own (and the report names them); when the reference was
    folded they cannot be told apart from its rare values.

Default: ``MAX_CATEGORIES`` = 100 keeps the profile small while covering most categorical
features whole; past the 100th a category holds under 1 % of the rows (the k-th most frequent
holds at most 1/k), where single shares are noise at common window sizes, so the rest are
watched together as *other*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops.monitoring.binning import Category, CategoryCounts, IntArray, value_counts
from mlops.monitoring.features import FeatureKind, FeatureRole, ProfileError

MAX_CATEGORIES = 100
OTHER = "__other__"  # the label of the folded / unseen bucket in histograms
UNSEEN_LISTED = 5


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    """The reference frequencies of one categorical column: the kept categories, most frequent
    first, and (last) the other bucket holding the folded ones."""

    name: str
    role: FeatureRole
    rows: int
    missing: int
    categories: tuple[Category, ...]
    counts: IntArray
    distinct: int

    kind: FeatureKind = field(default="categorical", init=False)

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def folded(self) -> int:
        """How many reference categories were folded into the other bucket."""
        return self.distinct - len(self.categories)

    @property
    def index(self) -> pd.Index:
        cached: pd.Index | None = self.__dict__.get("_index")
        if cached is None:
            cached = pd.Index(list(self.categories), dtype=object)
            self.__dict__["_index"] = cached
        return cached

    def bin(self, values: Any) -> CategoryCounts:
        found = value_counts(values)
        other = len(self.categories)
        if not found.keys:
            return CategoryCounts(np.zeros(other + 1, np.int64), found.missing, ())
        positions = self.index.get_indexer(pd.Index(found.keys, dtype=object))
        outside = positions < 0
        counts = np.bincount(
            np.where(outside, other, positions), weights=found.counts, minlength=other + 1
        )
        unseen: tuple[tuple[Category, int], ...] = ()
        if self.folded == 0 and outside.any():
            rows = np.flatnonzero(outside & (found.counts > 0))
            top = rows[np.argsort(-found.counts[rows], kind="stable")[:UNSEEN_LISTED]]
            unseen = tuple((found.keys[row], int(found.counts[row])) for row in top)
        return CategoryCounts(np.rint(counts).astype(np.int64), found.missing, unseen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "rows": self.rows,
            "missing": self.missing,
            "categories": list(self.categories),
            "counts": self.counts.tolist(),
            "distinct": self.distinct,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> CategoricalProfile:
        name = str(document["name"])
        categories = tuple(document["categories"])
        counts = np.asarray(document["counts"], dtype=np.int64)
        if len(counts) != len(categories) + 1:
            raise ProfileError(f"{name}: {len(counts)} counts for {len(categories)} categories")
        if len(set(map(repr, categories))) != len(categories):
            raise ProfileError(f"{name}: repeated categories")
        rows, missing = int(document["rows"]), int(document["missing"])
        if int(counts.sum()) != rows - missing:
            raise ProfileError(f"{name}: the counts do not add up to rows - missing")
        return cls(
            name=name,
            role=document.get("role", "feature"),
            rows=rows,
            missing=missing,
            categories=categories,
            counts=counts,
            distinct=int(document["distinct"]),
        )

    @classmethod
    def build(
        cls,
        name: str,
        values: Any,
        role: FeatureRole = "feature",
        max_categories: int = MAX_CATEGORIES,
    ) -> CategoricalProfile:
        found = value_counts(values)
        merged: dict[Category, int] = {}
        for key, count in zip(found.keys, found.counts.tolist(), strict=True):
            if count:
                merged[key] = merged.get(key, 0) + count
        ranked = sorted(merged.items(), key=lambda item: (-item[1], str(item[0])))
        kept = ranked[:max_categories]
        folded = sum(count for _, count in ranked[max_categories:])
        return cls(
            name=name,
            role=role,
            rows=found.missing + sum(merged.values()),
            missing=found.missing,
            categories=tuple(key for key, _ in kept),
            counts=np.array([count for _, count in kept] + [folded], dtype=np.int64),
            distinct=len(merged),
        )
