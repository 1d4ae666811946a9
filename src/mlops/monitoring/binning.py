"""Binning and counting a column against a reference profile: numeric values against the
profile's sorted edges (:class:`Binner`), categorical values by distinct value
(:func:`value_counts`).

Binning a numeric column is a few vectorised passes: each value's cell on a uniform grid of
``GRID_CELLS`` cells (spanning the edges around the reference's 1st and 99th percentiles,
narrowed until no two edges share a cell) comes from one subtraction, one multiplication and
a cast; a cell with no edge in it maps straight to its bin (one ``bincount`` over the cells),
a cell with one edge is split at it (one comparison; for every value when point masses such
as integer values sit on the edges, else only for the values in such cells), and only values
outside the grid or missing are binned one by one (``searchsorted``). The edges' own cells
come from the same floating-point operations, which are monotone, so the result equals
``searchsorted(edges, x, side="right")`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from mlops.monitoring.features import ProfileError

GRID_CELLS = 1 << 14
MIN_GRID_EDGES = 4  # below this, searchsorted is as cheap as the grid

Category: TypeAlias = str | int | float | bool
FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]


def as_float_array(values: Any, name: str = "") -> FloatArray:
    """A float64 view of a numeric column (a copy only when the dtype is not float64)."""
    if isinstance(values, pd.Series):
        if values.dtype == np.float64:
            array = values.to_numpy()
        else:
            try:
                array = values.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as error:
                raise ProfileError(f"{name}: not numeric ({error})") from None
    else:
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ProfileError(f"{name}: not numeric ({error})") from None
    if array.ndim != 1:
        raise ProfileError(f"{name}: expected one dimension, got shape {array.shape}")
    result: FloatArray = array
    return result


# --------------------------------------------------------------------------- numeric binning


@dataclass
class Scratch:
    """Work arrays reused across the columns of one comparison (about 17 bytes a row)."""

    rows: int = 0
    grid: FloatArray = field(default_factory=lambda: np.empty(0))
    cells: npt.NDArray[np.intp] = field(default_factory=lambda: np.empty(0, np.intp))
    flags: npt.NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, np.bool_))

    def take(self, rows: int) -> tuple[FloatArray, npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        if rows > self.rows:
            self.rows = rows
            self.grid = np.empty(rows)
            self.cells = np.empty(rows, np.intp)
            self.flags = np.empty(rows, np.bool_)
        return self.grid[:rows], self.cells[:rows], self.flags[:rows]


@dataclass(frozen=True)
class BinCounts:
    """A column binned against a profile's edges: ``counts[i]`` holds the values in
    ``[edges[i-1], edges[i])`` (``counts[0]`` below the first edge, ``counts[-1]`` from the
    last on); ``below`` and ``above`` are the sums of ``edges[0] - x`` over the values under
    the first edge and of ``x - edges[-1]`` over those from the last on (for Wasserstein)."""

    counts: IntArray
    missing: int
    below: float
    above: float

    @property
    def present(self) -> int:
        return int(self.counts.sum())


class Binner:
    """Bins values against fixed sorted edges; see the module docstring for how."""

    def __init__(
        self, edges: FloatArray, grid_low: float, grid_high: float, split: bool = False
    ) -> None:
        self.edges = edges
        self.size = len(edges) + 1
        width = (grid_high - grid_low) / GRID_CELLS
        self.use_grid = len(edges) >= MIN_GRID_EDGES and math.isfinite(width) and width > 0
        if not self.use_grid or not math.isfinite(1.0 / width):
            self.use_grid = False
            return
        self.scale = 1.0 / width
        # cell(x) = trunc((x - origin) * scale), clipped to [0, GRID_CELLS + 1]: cell 0 is
        # below the grid (and NaN), the last cell above it.
        self.origin = grid_low - width
        self.last_cell = GRID_CELLS + 1
        positions = np.multiply(np.subtract(edges, self.origin), self.scale)
        np.fmax(positions, 0.0, out=positions)
        np.fmin(positions, float(self.last_cell), out=positions)
        edge_cells = positions.astype(np.intp)
        per_cell = np.bincount(edge_cells, minlength=self.last_cell + 1)
        # bin of a cell with no edge in it: the number of edges in the cells below it
        self.bin_of_cell = np.concatenate([[0], np.cumsum(per_cell)[:-1]]).astype(np.intp)
        # 0: no edge in the cell (the cell decides the bin); 1: one edge (compare with it);
        # 2: several edges, outside the grid, or missing (searchsorted)
        flags = np.where(per_cell == 0, 0, np.where(per_cell == 1, 1, 2)).astype(np.uint8)
        flags[0] = flags[self.last_cell] = 2
        self.flags = flags
        self.flagged = flags != 0
        self.cell_edge = np.full(self.last_cell + 1, np.inf)
        single = per_cell[edge_cells] == 1
        self.cell_edge[edge_cells[single]] = edges[single]
        self.pure_weight = (flags == 0).astype(np.float64)
        self.split = split
        if split:
            self.split_bin = np.repeat(self.bin_of_cell, 2)
            self.split_bin[1::2] += 1
            np.minimum(self.split_bin, self.size - 1, out=self.split_bin)  # past the last edge
            self.split_pure = np.repeat(flags != 2, 2).astype(np.float64)
            self.split_flags = np.repeat(flags == 2, 2)

    def count(self, values: FloatArray, scratch: Scratch | None = None) -> BinCounts:
        if not self.use_grid or len(values) == 0:
            return self._count_exact(values)
        grid, cells, flags = (scratch or Scratch()).take(len(values))
        np.subtract(values, self.origin, out=grid)
        np.multiply(grid, self.scale, out=grid)
        np.fmax(grid, 0.0, out=grid)  # NaN and -inf -> cell 0
        np.fmin(grid, float(self.last_cell), out=grid)
        np.copyto(cells, grid, casting="unsafe")  # truncation = floor here: grid >= 0
        if self.split:
            return self._count_split(values, grid, cells, flags)
        per_cell = np.bincount(cells, minlength=self.last_cell + 1)
        counts = np.bincount(
            self.bin_of_cell, weights=per_cell * self.pure_weight, minlength=self.size
        )
        np.take(self.flagged, cells, out=flags)
        rows = np.flatnonzero(flags)
        picked = values[rows]
        picked_cells = cells[rows]
        bins = self.bin_of_cell[picked_cells] + (picked >= self.cell_edge[picked_cells])
        several = self.flags[picked_cells] == 2
        if several.any():
            bins[several] = np.searchsorted(self.edges, picked[several], side="right")
        finite = np.isfinite(picked)
        missing = len(picked) - int(finite.sum())
        return self._finish(np.rint(counts).astype(np.int64), picked[finite], bins[finite], missing)

    def _count_split(
        self,
        values: FloatArray,
        grid: FloatArray,
        cells: npt.NDArray[np.intp],
        flags: npt.NDArray[np.bool_],
    ) -> BinCounts:
        """Every cell split in two at its edge: virtual cell 2c + (x >= edge of c)."""
        np.take(self.cell_edge, cells, out=grid)
        np.greater_equal(values, grid, out=flags)
        np.left_shift(cells, 1, out=cells)
        np.add(cells, flags, out=cells)
        per_cell = np.bincount(cells, minlength=2 * (self.last_cell + 1))
        counts = np.bincount(
            self.split_bin, weights=per_cell * self.split_pure, minlength=self.size
        )
        np.take(self.split_flags, cells, out=flags)
        rows = np.flatnonzero(flags)
        picked = values[rows]
        finite = np.isfinite(picked)
        kept = picked[finite]
        bins = np.searchsorted(self.edges, kept, side="right")
        missing = len(picked) - len(kept)
        return self._finish(np.rint(counts).astype(np.int64), kept, bins, missing)

    def _count_exact(self, values: FloatArray) -> BinCounts:
        finite = np.isfinite(values)
        kept = values if finite.all() else values[finite]
        bins = np.searchsorted(self.edges, kept, side="right")
        return self._finish(np.zeros(self.size, np.int64), kept, bins, len(values) - len(kept))

    def _finish(
        self, counts: IntArray, values: FloatArray, bins: npt.NDArray[np.intp], missing: int
    ) -> BinCounts:
        counts = counts + np.bincount(bins, minlength=self.size)[: self.size]
        below = above = 0.0
        if len(self.edges):
            low, high = self.edges[0], self.edges[-1]
            below = float(np.subtract(low, values[bins == 0]).sum())
            above = float(np.subtract(values[bins == self.size - 1], high).sum())
        return BinCounts(counts, missing, below, above)


def _binner(edges: FloatArray, counts: IntArray) -> Binner:
    """The binner for a profile's edges: its grid spans the edges around the reference's 1st
    and 99th percentiles (so that outliers do not stretch it), narrowed until no two edges
    share a cell (a heavy tail would otherwise crowd the bulk's edges into a few cells); cells
    are split at their edge when point masses (ties, integer values) hold much of the data.
    Any choice gives the same bins: only the speed differs."""
    total = int(counts.sum())
    if len(edges) < 2 or total == 0:
        return Binner(edges, 0.0, 0.0)
    share_below = np.cumsum(counts[:-1]) / total  # share of values under edges[j]
    low = max(0, int(np.searchsorted(share_below, 0.01, side="right")) - 1)
    high = min(int(np.searchsorted(share_below, 0.99)), len(edges) - 1)
    gaps = np.diff(edges)
    while high - low >= 2 and (edges[high] - edges[low]) / GRID_CELLS > float(gaps[low:high].min()):
        if gaps[high - 1] >= gaps[low]:
            high -= 1
        else:
            low += 1
    shares = counts / total
    point_masses = float(shares[shares > 0.02].sum()) > 0.05
    return Binner(edges, float(edges[low]), float(edges[high]), split=point_masses)


# --------------------------------------------------------------------------- categories


def _scalar(value: Any) -> Category:
    """A category as a JSON scalar: numpy scalars unwrapped, anything else as its text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)


_PLAIN_KEYS = frozenset({"string", "integer", "floating", "boolean", "empty"})


@dataclass(frozen=True)
class ValueCounts:
    """Non-missing distinct values of a column with their counts, and the missing count."""

    keys: list[Category]
    counts: IntArray
    missing: int


def value_counts(values: Any) -> ValueCounts:
    """One hashing pass (pandas ``value_counts``), or a ``bincount`` of the codes of a
    pandas ``Categorical``."""
    series = values if isinstance(values, pd.Series) else pd.Series(values, copy=False)
    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = series.cat.categories
        per_code = np.bincount(
            np.add(series.cat.codes.to_numpy(), 1, dtype=np.intp),
            minlength=len(categories) + 1,
        )
        keys: pd.Index = categories
        counts = per_code[1:]
        missing = int(per_code[0])
    else:
        found = series.value_counts(dropna=False, sort=False)
        keys = found.index
        counts = found.to_numpy(dtype=np.int64)
        null = np.asarray(keys.isna())
        missing = int(counts[null].sum())
        if null.any():
            keys, counts = keys[~null], counts[~null]
    if keys.dtype == object and pd.api.types.infer_dtype(keys, skipna=True) not in _PLAIN_KEYS:
        listed = [_scalar(key) for key in keys]
    else:
        listed = keys.tolist()
    return ValueCounts(listed, counts.astype(np.int64, copy=False), missing)


@dataclass(frozen=True)
class CategoryCounts:
    """A column counted against a profile's categories: ``counts[-1]`` is the other bucket;
    ``unseen`` the most frequent values the reference never had (when it kept them all)."""

    counts: IntArray
    missing: int
    unseen: tuple[tuple[Category, int], ...]

    @property
    def present(self) -> int:
        return int(self.counts.sum())
