"""From a population's training results to its generation record: objectives, fronts and ranks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpsrl.campaign.evidence import (
    AGGREGATES,
    own_evidence,
    per_seed_objectives,
    pool,
    pooled_objectives,
    pools_evidence,
    shrunk_estimates,
)
from hpsrl.campaign.halving import combined_results
from hpsrl.campaign.model import PER_SEED_RESULTS, Generation, Population
from hpsrl.campaign.paths import batch_generation, rung_of
from hpsrl.campaign.storage import StorageError, read_individual_arrays
from hpsrl.search.moo import non_dominated_sort, nsga2_rank_key, to_losses


def compute_objectives(results: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> np.ndarray:
    """(individuals, objectives) values over each individual's own seeds (this batch's
    training, ``training.aggregate``); NaN rows for failed individuals."""
    aggregate = AGGREGATES[config["training"]["aggregate"]]
    return aggregate(per_seed_objectives(results, config), axis=1)


def collect(
    population: Population,
    individual_paths: Sequence[str | Path],
    previous: Generation | None = None,
) -> Generation:
    """Stack the individuals' result files (in population order) into a Generation; ``previous``
    is the generation before it, whose evidence it pools (``search.evidence: pooled``)."""
    if len(individual_paths) != len(population):
        raise StorageError(
            f"{population.batch}: {len(individual_paths)} result files for "
            f"{len(population)} individuals; give the manifests of all its training jobs"
        )
    # each checked to hold the training of its individual (CorruptResultError otherwise)
    rows = [read_individual_arrays(path, population, i) for i, path in enumerate(individual_paths)]
    results: dict[str, Any] = {name: np.stack([r[name] for r in rows]) for name in PER_SEED_RESULTS}
    results["curve_steps"] = rows[0]["curve_steps"]
    results["lineage_env_steps"] = np.stack([r["lineage_env_steps"] for r in rows])
    results["status"] = np.array([r["status"] for r in rows])
    results["error"] = np.array([r["error"] for r in rows])
    return generation_record(population, results, previous)


def combine_rungs(records: Sequence[Generation], previous: Generation | None = None) -> Generation:
    """A generation's record from the records of its successive-halving rungs, in order: every
    individual of its first rung with the results of the last rung it reached
    (:func:`hpsrl.campaign.halving.combined_results`); ``previous`` as for :func:`collect`."""
    population, results = combined_results(records)
    return generation_record(population, results, previous)


def generation_record(
    population: Population, results: dict[str, Any], previous: Generation | None = None
) -> Generation:
    """A population with its stacked per-seed results, objectives, evidence, estimates, fronts
    and selection keys (see :mod:`hpsrl.campaign.evidence`).

    With pooled evidence a generation pools with ``previous`` (the generation before it, needed
    from generation 1 on) and selection ranks the configurations' shrunk estimates; otherwise
    (and for the re-test and the rungs of successive halving, whose records select nothing
    across generations) the estimates are the batch's own objectives. Individuals that trained
    on fewer than training.steps (an earlier rung) rank after all that trained in full, by the
    steps they reached, then by their objectives there (:func:`staged_rank_key`).
    """
    config = population.config
    objectives = compute_objectives(results, config)
    per_seed = per_seed_objectives(results, config)
    generation = batch_generation(population.batch)
    complete = population.complete()
    is_generation = generation is not None and rung_of(population.batch) is None
    if is_generation and pools_evidence(config):
        if generation > 0 and (
            previous is None or batch_generation(previous.population.batch) != generation - 1
        ):
            got = "nothing" if previous is None else previous.population.batch
            raise ValueError(
                f"{population.batch} pools its evidence with generation {generation - 1}'s "
                f"record, got {got}"
            )
        earlier = None
        if previous is not None:
            earlier = (
                previous.population.individuals,
                previous.evidence,
                previous.population.complete(),
            )
        evidence = pool(
            population.individuals, generation, per_seed, population.train_seeds, earlier, complete
        )
        pooled = pooled_objectives(evidence, config["training"]["aggregate"])
        estimate = shrunk_estimates(evidence, pooled, among=complete)
    else:
        evidence = own_evidence(
            -1 if generation is None else generation, per_seed, population.train_seeds
        )
        estimate = objectives
    directions = [o["direction"] for o in config["objectives"]]
    front = non_dominated_sort(to_losses(estimate, directions))
    return Generation(
        population=population,
        results=results,
        objectives=objectives,
        front=front,
        rank_key=staged_rank_key(estimate, population.steps, directions, front),
        evidence=evidence,
        estimate=estimate,
    )


def staged_rank_key(
    values: np.ndarray, steps: np.ndarray, directions: Sequence[str], fronts: np.ndarray
) -> np.ndarray:
    """NSGA-II rank keys (lower is better) within each group of individuals that trained for the
    same number of steps, the groups that trained longer first: a configuration measured on the
    whole budget outranks every one measured on part of it. One group: plain NSGA-II keys
    (``fronts``: the values' non-dominated fronts, used then)."""
    budgets = sorted(set(np.asarray(steps).tolist()), reverse=True)
    if len(budgets) == 1:
        return nsga2_rank_key(values, directions, fronts)
    key = np.full(len(values), np.inf)
    offset = 0.0
    for budget in budgets:
        members = np.flatnonzero(steps == budget)
        group = nsga2_rank_key(values[members], directions)
        key[members] = group + offset
        finite = group[np.isfinite(group)]
        offset += (finite.max() + 1.0) if finite.size else 0.0
    return key
