"""What is known about each configuration: all the seeds it was trained on, and what to expect of it
on fresh seeds.

A configuration (a set of genes) can be trained more than once in a campaign: an elite re-trained
on fresh seeds (``search.racing``), a clone without mutation, a repeated proposal, or several copies
in one generation. With ``search.evidence: pooled`` each training adds its seeds to what is known
about the configuration instead of replacing it, so a configuration that stays on top collects
evidence (3 seeds, then 6, 9, ...) and one lucky draw weighs less and less.

Selecting the best of many noisy scores favours the lucky ones (the winner's curse: a search's best
re-tested on fresh seeds scores less than it did in the search). The selection therefore ranks
configurations by :func:`shrunk_estimates`, the empirical-Bayes estimate of each one's mean on fresh
seeds: its pooled mean pulled towards the generation's mean, the more the fewer seeds back it and
the noisier seeds are compared to the spread between configurations. A configuration seen on 3
seeds must then be clearly better than one seen on 12 to outrank it.

Pure numpy; the HDF5 layout is in :mod:`hpsrl.campaign.storage`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

AGGREGATES = {"mean": np.mean, "median": np.median, "min": np.min}


def pools_evidence(config: Mapping[str, Any]) -> bool:
    """Whether a configuration's objectives cover all its seeds so far (``search.evidence``).
    Campaigns made before the key existed trained every copy afresh."""
    return config.get("search", {}).get("evidence", "fresh") == "pooled"


def per_seed_objectives(results: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> np.ndarray:
    """(individuals, seeds, objectives) values of each seed; NaN for every seed of a failed
    individual (an individual fails when any of its seeds does).

    steps_to_threshold counts a seed that never reached the threshold as the whole budget.
    """
    per_seed = {
        "return": results["returns"],
        "steps_to_threshold": np.minimum(
            results["steps_to_threshold"], float(config["training"]["steps"])
        ),
        "train_seconds": results["train_seconds"],
    }
    values = np.stack([per_seed[o["name"]] for o in config["objectives"]], axis=-1).astype(float)
    values[np.asarray(results["status"]) != "ok"] = np.nan
    return values


def configuration_key(individual: Mapping[str, Any]) -> str:
    """The identity of a configuration: its genes as canonical JSON (equal genes, equal key)."""
    return json.dumps(individual, sort_keys=True)


@dataclass
class Evidence:
    """Every seed behind each individual's configuration, as one flat table.

    Individual ``i``'s rows are ``offsets[i]:offsets[i + 1]``; copies of one configuration in a
    generation share the same rows' values (each has them all).
    """

    offsets: np.ndarray  # (n + 1,) int64
    values: np.ndarray  # (rows, objectives) float64: per-seed objective values, NaN: failed
    source: np.ndarray  # (rows, 3) int64: (generation, individual, seed index) that trained it
    train_seeds: np.ndarray  # (rows,) uint32

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def seeds(self) -> np.ndarray:
        """(n,) how many seeds each individual's pooled objectives cover."""
        return np.diff(self.offsets)

    def rows(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


def pool(
    individuals: Sequence[Mapping[str, Any]],
    generation: int,
    per_seed: np.ndarray,
    train_seeds: np.ndarray,
    previous: tuple[Sequence[Mapping[str, Any]], Evidence, np.ndarray] | None,
    complete: np.ndarray | None = None,
) -> Evidence:
    """The evidence of each individual of ``generation``: the seeds of every copy of its
    configuration in this generation (``per_seed``: (n, seeds, objectives) values, NaN where
    failed) after the evidence its configuration had in the previous generation
    (``previous``: that generation's individuals, evidence and which of them trained in full;
    it pooled everything before).

    Only trainings of the whole of training.steps are evidence of what a configuration is worth:
    an individual that stopped on an earlier successive-halving rung (``complete`` False) keeps
    its own seeds, and pools with nothing. A configuration that skipped a generation starts
    afresh: evidence follows a configuration while it stays in the population, as the raced top
    configurations do.
    """
    n, seeds, m = per_seed.shape
    complete = np.ones(n, dtype=bool) if complete is None else np.asarray(complete, dtype=bool)
    earlier: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if previous is not None:
        old_individuals, old, old_complete = previous
        for i, individual in enumerate(old_individuals):
            if old_complete[i]:
                rows = old.rows(i)
                earlier.setdefault(
                    configuration_key(individual),
                    (old.values[rows], old.source[rows], old.train_seeds[rows]),
                )
    keys = [
        configuration_key(individual) if complete[i] else f"#{i}"  # a key no genes have
        for i, individual in enumerate(individuals)
    ]
    copies: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        copies.setdefault(key, []).append(i)
    by_key: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for key, members in copies.items():
        values, source, trained = [], [], []
        if key in earlier:
            values.append(earlier[key][0])
            source.append(earlier[key][1])
            trained.append(earlier[key][2])
        for i in members:
            values.append(per_seed[i])
            source.append(np.array([[generation, i, k] for k in range(seeds)], dtype=np.int64))
            trained.append(np.asarray(train_seeds[i], dtype=np.uint32))
        by_key[key] = (
            np.concatenate(values).reshape(-1, m),
            np.concatenate(source).reshape(-1, 3),
            np.concatenate(trained),
        )
    counts = np.array([len(by_key[key][0]) for key in keys], dtype=np.int64)
    return Evidence(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        values=np.concatenate([by_key[key][0] for key in keys]).reshape(-1, m).astype(float),
        source=np.concatenate([by_key[key][1] for key in keys]).reshape(-1, 3),
        train_seeds=np.concatenate([by_key[key][2] for key in keys]).astype(np.uint32),
    )


def own_evidence(generation: int, per_seed: np.ndarray, train_seeds: np.ndarray) -> Evidence:
    """Each individual's own seeds only (``search.evidence: fresh``: nothing is pooled)."""
    n, seeds, m = per_seed.shape
    source = np.array(
        [[generation, i, k] for i in range(n) for k in range(seeds)], dtype=np.int64
    ).reshape(-1, 3)
    return Evidence(
        offsets=np.arange(0, n * seeds + 1, seeds, dtype=np.int64),
        values=per_seed.reshape(-1, m).astype(float),
        source=source,
        train_seeds=np.asarray(train_seeds, dtype=np.uint32).reshape(-1),
    )


def pooled_objectives(evidence: Evidence, aggregate: str) -> np.ndarray:
    """(n, objectives): each individual's objectives over all its seeds (``training.aggregate``);
    NaN rows where any of them failed: a configuration that diverged once is not trusted."""
    reduce = AGGREGATES[aggregate]
    m = evidence.values.shape[1]
    out = np.full((len(evidence), m), np.nan)
    for i in range(len(evidence)):
        values = evidence.values[evidence.rows(i)]
        if len(values) and not np.isnan(values).any():
            out[i] = reduce(values, axis=0)
    return out


def shrunk_estimates(
    evidence: Evidence, objectives: np.ndarray, among: np.ndarray | None = None
) -> np.ndarray:
    """(n, objectives): the empirical-Bayes estimate of each configuration's objectives on fresh
    seeds, from its pooled ``objectives`` (see :func:`pooled_objectives`) and seed counts.

    Per objective, over the distinct valid configurations: ``sigma2`` is the seed-to-seed variance
    within a configuration (pooled over those with 2 or more seeds), ``mu`` and ``tau2`` the mean
    and the variance of the configurations' true means (the spread of their pooled values less
    what seed noise explains). A configuration with ``n`` seeds is estimated at
    ``mu + w * (value - mu)`` with ``w = n * tau2 / (n * tau2 + sigma2)``. Where nothing measures
    seed noise (no configuration has 2 seeds) or it is zero, the values are returned as they are.
    NaN (failed) rows stay NaN. With ``among`` (a mask), only those rows are estimated, from their
    own statistics (the others: trained on fewer steps, so another quantity, are left as given).
    """
    estimates = objectives.astype(float, copy=True)
    counts = evidence.seeds.astype(float)
    usable = ~np.isnan(objectives).any(axis=1)
    if among is not None:
        usable &= np.asarray(among, dtype=bool)
    valid = np.flatnonzero(usable)
    distinct = _distinct(evidence, valid)
    if len(distinct) < 2:
        return estimates
    for j in range(objectives.shape[1]):
        deviations, dof = 0.0, 0
        for i in distinct:
            values = evidence.values[evidence.rows(i), j]
            if len(values) >= 2:
                deviations += float(np.sum((values - values.mean()) ** 2))
                dof += len(values) - 1
        values = objectives[distinct, j]
        if dof == 0 or not np.isfinite(deviations) or not np.isfinite(values).all():
            continue
        sigma2 = deviations / dof
        if sigma2 <= 0:
            continue
        mu = float(values.mean())
        spread = float(values.var(ddof=1)) - float(np.mean(sigma2 / counts[distinct]))
        # a floor, so that configurations that look alike are still told apart by their
        # evidence (then the ranking follows seeds x distance from the mean)
        tau2 = max(spread, 1e-3 * sigma2)
        weight = counts[valid] * tau2 / (counts[valid] * tau2 + sigma2)
        estimates[valid, j] = mu + weight * (objectives[valid, j] - mu)
    return estimates


def _distinct(evidence: Evidence, individuals: np.ndarray) -> list[int]:
    """The first of each group of ``individuals`` that share their evidence (copies of one
    configuration). A trained seed belongs to one configuration, so the first row names it."""
    seen: set[tuple[int, ...]] = set()
    first = []
    for i in individuals:
        rows = evidence.source[evidence.rows(i)]
        name = tuple(rows[0]) if len(rows) else (-1, int(i), -1)
        if name not in seen:
            seen.add(name)
            first.append(int(i))
    return first
