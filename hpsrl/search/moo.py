"""Multi-objective ranking (NSGA-II), in one place and in plain numpy.

Objective values are turned into *losses* once (:func:`to_losses`: lower is better in every
column); everything after that works on losses. What an objective's direction means (which way
is better, which value is best, how a person reads it) is answered here and nowhere else.

Failed individuals and infinities
---------------------------------
- A failed individual has NaN objectives. :func:`to_losses` keeps NaN as NaN (it does *not*
  map it to ``+inf``: that would tie a failed individual with a valid one whose loss is
  ``+inf``, and would let a row with one NaN and one excellent objective onto the Pareto
  front). Any row containing a NaN counts as failed.
- :func:`non_dominated_sort` puts all failed rows together in one last front, after every
  front of valid rows; :func:`crowding_distance` gives them 0; :func:`nsga2_rank_key` gives
  them ``+inf``, so they rank after every valid individual.
- ``+inf`` and ``-inf`` are ordinary, comparable values: ``-inf`` loss beats everything,
  ``+inf`` loses to everything finite, and equal infinities tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "DIRECTIONS",
    "best_value",
    "better_words",
    "crowding_distance",
    "higher_is_better",
    "loss_sign",
    "non_dominated_sort",
    "nsga2_rank_key",
    "pareto_front",
    "to_losses",
]

DIRECTIONS = ("minimize", "maximize")


def _as_2d(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D, shape (n_individuals, n_objectives), got shape {arr.shape}"
        )
    return arr


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; use one of {list(DIRECTIONS)}")


def higher_is_better(direction: str) -> bool:
    """Whether larger values of an objective of ``direction`` are better."""
    _check_direction(direction)
    return direction == "maximize"


def loss_sign(direction: str) -> float:
    """The factor that turns a value of an objective of ``direction`` into its loss: -1.0 where
    it is maximized, 1.0 where minimized."""
    return -1.0 if higher_is_better(direction) else 1.0


def best_value(values: np.ndarray, direction: str, skip_nan: bool = False) -> Any:
    """The best of 1-D ``values`` of an objective of ``direction`` (the largest where it is
    maximized, the smallest where minimized), as numpy gives it. Any NaN makes it NaN, unless
    ``skip_nan`` (then NaN only where every value is, with numpy's warning)."""
    if higher_is_better(direction):
        return np.nanmax(values) if skip_nan else np.max(values)
    return np.nanmin(values) if skip_nan else np.min(values)


def better_words(direction: str) -> str:
    """Which way is better, for an axis label or a table: "higher is better" or "lower is
    better"."""
    return "higher is better" if higher_is_better(direction) else "lower is better"


def to_losses(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Objective values ``(n, m)`` -> losses ``(n, m)``: ``"minimize"`` columns are kept,
    ``"maximize"`` columns negated. NaN stays NaN (a failed individual) and infinities keep
    their meaning (``+inf`` of a maximized objective becomes a ``-inf`` loss). Returns a new
    array."""
    vals = _as_2d("values", values)
    if isinstance(directions, str):
        raise ValueError(f"directions must be a list of strings, got the string {directions!r}")
    dirs = list(directions)
    if len(dirs) != vals.shape[1]:
        raise ValueError(
            f"got {len(dirs)} directions for {vals.shape[1]} objectives; give one per objective"
        )
    bad = [d for d in dirs if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"unknown direction(s) {bad}; use one of {list(DIRECTIONS)}")
    sign = np.array([loss_sign(d) for d in dirs])
    return vals * sign


def _failed(losses: np.ndarray) -> np.ndarray:
    return np.isnan(losses).any(axis=1)


def non_dominated_sort(losses: np.ndarray) -> np.ndarray:
    """Front index per row (0 = Pareto front) of a loss matrix ``(n, m)``.

    Row ``p`` dominates ``q`` when it is no worse in every column and better in one.
    Identical rows never dominate each other, so they share a front. Rows containing NaN
    (failed) all go into one front after the last front of valid rows.
    """
    loss = _as_2d("losses", losses)
    n = loss.shape[0]
    fronts = np.full(n, -1, dtype=np.int64)
    failed = _failed(loss)
    valid = np.flatnonzero(~failed)
    v = loss[valid]
    if loss.shape[1] == 1:  # one objective: the fronts are its distinct values, in order
        distinct, rank = np.unique(v[:, 0], return_inverse=True)
        fronts[valid] = rank
        fronts[failed] = distinct.size
        return fronts
    # dominates[i, j]: valid row i dominates valid row j (comparisons only: no inf - inf).
    le = (v[:, None, :] <= v[None, :, :]).all(axis=2)
    lt = (v[:, None, :] < v[None, :, :]).any(axis=2)
    dominates = le & lt
    n_dominators = dominates.sum(axis=0)
    remaining = np.ones(valid.size, dtype=bool)
    front = 0
    while remaining.any():
        current = remaining & (n_dominators == 0)
        fronts[valid[current]] = front
        remaining &= ~current
        n_dominators = n_dominators - dominates[current].sum(axis=0)
        front += 1
    fronts[failed] = front
    return fronts


def pareto_front(losses: np.ndarray) -> np.ndarray:
    """Per row of a loss matrix ``(n, m)``: whether it is valid and no valid row dominates it,
    i.e. front 0 of :func:`non_dominated_sort` without the later fronts, whose sort compares
    every pair of rows (an (n, n) matrix) where this compares the rows with each front row.

    Each row still standing is compared with all the others, in lexicographic order so that
    the first rows dominate many; a row dominated by one already struck out is dominated by
    that row's dominator too (dominance is transitive), so it is struck out all the same."""
    loss = _as_2d("losses", losses)
    front = ~_failed(loss)
    valid = loss[front]
    order = np.flatnonzero(front)[np.lexsort(valid.T[::-1])]
    for i in order:
        if front[i]:
            front &= ~((loss[i] <= loss).all(axis=1) & (loss[i] < loss).any(axis=1))
    return front


def crowding_distance(losses: np.ndarray, fronts: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within its front (larger = less crowded).

    Per objective with a non-zero range in the front, the rows holding the front's minimum
    or maximum get ``inf``; every other row adds the gap between the nearest distinct values
    below and above its own, divided by the objective's range. Details that keep it free of
    NaN and independent of row order:

    - identical rows get identical distances (gaps are between *distinct* values);
    - objectives with zero range in the front are skipped; a front where every objective
      has zero range (e.g. one row, or identical rows) gets ``inf`` throughout, so fronts
      of one or two rows are all ``inf``;
    - ``-inf``/``+inf`` losses are the front's extremes (so ``inf`` distance); for the
      gaps of other rows they are clipped to the finite minimum/maximum, and the range is
      that of the finite values (no finite range: the objective adds nothing to them);
    - failed rows (containing NaN) get 0.
    """
    loss = _as_2d("losses", losses)
    fr = np.asarray(fronts)
    if fr.shape != (loss.shape[0],):
        raise ValueError(
            f"fronts must have one entry per row of losses ({loss.shape[0]}), got shape {fr.shape}"
        )
    dist = np.zeros(loss.shape[0], dtype=np.float64)
    failed = _failed(loss)
    for f in np.unique(fr[~failed]):
        idx = np.flatnonzero((fr == f) & ~failed)
        d = np.zeros(idx.size, dtype=np.float64)
        extreme = np.zeros(idx.size, dtype=bool)
        any_range = False
        for k in range(loss.shape[1]):
            col = loss[idx, k]
            lo, hi = col.min(), col.max()
            if not lo < hi:
                continue
            any_range = True
            extreme |= (col == lo) | (col == hi)
            finite = col[np.isfinite(col)]
            if finite.size < 2 or not finite.min() < finite.max():
                continue
            flo, fhi = finite.min(), finite.max()
            distinct = np.unique(col)  # sorted, no NaN here, at least 3 values if interior rows
            pos = np.searchsorted(distinct, col)
            inner = (pos > 0) & (pos < distinct.size - 1)
            above = np.clip(distinct[np.minimum(pos + 1, distinct.size - 1)], flo, fhi)
            below = np.clip(distinct[np.maximum(pos - 1, 0)], flo, fhi)
            d[inner] += (above[inner] - below[inner]) / (fhi - flo)
        d[extreme] = np.inf
        if not any_range:
            d[:] = np.inf
        dist[idx] = d
    return dist


def nsga2_rank_key(
    values: np.ndarray, directions: Sequence[str], fronts: np.ndarray | None = None
) -> np.ndarray:
    """A float key per individual, lower is better, for :mod:`hpsrl.search.operators` selection.

    Orders by non-dominated front, then by larger crowding distance within a front. The key
    is the dense rank of (front, -crowding) starting at 0, so equally good individuals get
    equal keys (and selection breaks their ties at random). With one objective the fronts
    are the distinct values in order, so the key is the dense rank of the objective.
    Failed individuals (any NaN objective) get ``+inf``. ``fronts``: their
    :func:`non_dominated_sort`, where the caller has it already (it costs O(n^2) for several
    objectives).
    """
    losses = to_losses(values, directions)
    if fronts is None:
        fronts = non_dominated_sort(losses)
    crowd = crowding_distance(losses, fronts)
    failed = _failed(losses)
    key = np.full(losses.shape[0], np.inf)
    valid = np.flatnonzero(~failed)
    if valid.size:
        f, c = fronts[valid], -crowd[valid]
        order = np.lexsort((c, f))
        f_sorted, c_sorted = f[order], c[order]
        new_group = np.ones(valid.size, dtype=bool)
        new_group[1:] = (f_sorted[1:] != f_sorted[:-1]) | (c_sorted[1:] != c_sorted[:-1])
        key[valid[order]] = np.cumsum(new_group) - 1.0
    return key
