"""Genetic-algorithm operators: selection (``sel_``), crossover (``cx_``), mutation (``mut_``).

Each is a small pure function: randomness comes only from the ``numpy.random.Generator``
passed in, inputs are never modified, and new objects are returned. Individuals are ``dict``s
gene name -> value (see :mod:`hpsrl.campaign.genes`). Selection works on a ``rank_key`` where lower
is better, as built by :func:`hpsrl.search.moo.nsga2_rank_key` (failed individuals get ``+inf``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hpsrl.campaign.genes import ListGene, SearchSpace

__all__ = ["cx_uniform", "mut_individual", "sel_elites", "sel_tournament"]


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )


def _check_key(rank_key: Any) -> np.ndarray:
    key = np.asarray(rank_key, dtype=np.float64)
    if key.ndim != 1:
        raise ValueError(f"rank_key must be 1-D (one entry per individual), got shape {key.shape}")
    if np.isnan(key).any():
        raise ValueError(
            "rank_key contains NaN; give failed individuals +inf "
            "(see hpsrl.search.moo.nsga2_rank_key)"
        )
    return key


def _check_prob(name: str, p: float) -> None:
    if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


# --- selection -------------------------------------------------------------------------------


def sel_tournament(
    rank_key: np.ndarray, n_select: int, tournament_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of ``n_select`` tournament winners (with replacement across tournaments).

    Each tournament draws ``tournament_size`` distinct individuals at random and picks the
    one with the lowest ``rank_key``; ties are broken at random.
    """
    key = _check_key(rank_key)
    _check_rng(rng)
    n = key.size
    if isinstance(n_select, bool) or not isinstance(n_select, (int, np.integer)) or n_select < 0:
        raise ValueError(f"n_select must be an integer >= 0, got {n_select!r}")
    if (
        isinstance(tournament_size, bool)
        or not isinstance(tournament_size, (int, np.integer))
        or not 1 <= tournament_size <= max(n, 1)
    ):
        raise ValueError(
            f"tournament_size must be an integer in [1, {n}] (the population size), "
            f"got {tournament_size!r}"
        )
    if n == 0 and n_select > 0:
        raise ValueError("cannot select from an empty population")
    winners = np.empty(int(n_select), dtype=np.intp)
    for t in range(int(n_select)):
        candidates = rng.choice(n, size=int(tournament_size), replace=False)
        keys = key[candidates]
        best = candidates[keys == keys.min()]
        winners[t] = best[0] if best.size == 1 else best[int(rng.integers(best.size))]
    return winners


def sel_elites(rank_key: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` individuals with the lowest ``rank_key``, best first; equal keys
    keep their original order."""
    key = _check_key(rank_key)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= key.size:
        raise ValueError(f"n must be an integer in [0, {key.size}], got {n!r}")
    return np.argsort(key, kind="stable")[: int(n)].astype(np.intp)


# --- crossover -------------------------------------------------------------------------------


def cx_uniform(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    space: SearchSpace,
    rng: np.random.Generator,
    swap_prob: float = 0.5,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Uniform crossover of two parents into two children.

    Each gene is swapped between the children with probability ``swap_prob``. For a list
    gene, the children take their lengths from different parents (swapped with
    ``swap_prob``), then every position both parents have is swapped independently with
    ``swap_prob``; positions only the longer parent has come from it. So every element comes
    from a parent, at the same position, and lengths stay within bounds; with ``swap_prob``
    0 the children are copies of ``(a, b)``, with 1 copies of ``(b, a)``.
    """
    space.validate(a)
    space.validate(b)
    _check_rng(rng)
    _check_prob("swap_prob", swap_prob)
    c1: dict[str, Any] = {}
    c2: dict[str, Any] = {}
    for gene in space.genes:
        va, vb = a[gene.name], b[gene.name]
        swap = bool(rng.random() < swap_prob)
        if isinstance(gene, ListGene):
            # c1 takes its length from b if swapped (else from a), c2 from the other parent.
            x, y = (list(vb), list(va)) if swap else (list(va), list(vb))
            for i in range(min(len(va), len(vb))):
                x[i], y[i] = (vb[i], va[i]) if rng.random() < swap_prob else (va[i], vb[i])
            c1[gene.name], c2[gene.name] = x, y
        else:
            c1[gene.name], c2[gene.name] = (vb, va) if swap else (va, vb)
    return c1, c2


# --- mutation --------------------------------------------------------------------------------


def mut_individual(
    ind: Mapping[str, Any],
    space: SearchSpace,
    rng: np.random.Generator,
    gene_prob: float,
    scale: float,
) -> tuple[dict[str, Any], list[str]]:
    """Mutate each gene independently with probability ``gene_prob`` (``gene.mutate`` with
    ``scale``); returns the new individual and the names of the mutated genes, in gene order.

    One uniform number is drawn per gene whether or not it mutates, so the stream of
    decisions does not depend on earlier outcomes.
    """
    space.validate(ind)
    _check_rng(rng)
    _check_prob("gene_prob", gene_prob)
    out: dict[str, Any] = {}
    mutated: list[str] = []
    for gene in space.genes:
        value = ind[gene.name]
        if rng.random() < gene_prob:
            out[gene.name] = gene.mutate(value, rng, scale)
            mutated.append(gene.name)
        else:
            out[gene.name] = list(value) if isinstance(value, list) else value
    return out, mutated
