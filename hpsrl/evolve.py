"""Where each generation's individuals come from: random, or elites plus selected, crossed, mutated.

Everything random here draws from a Generator derived from the campaign's root seed and the
generation number, so the same config always gives the same genes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hpsrl.config import (
    STREAM_EVAL,
    STREAM_GA,
    STREAM_RETEST_EVAL,
    STREAM_RETEST_TRAIN,
    STREAM_TRAIN,
    SeedPlan,
    search_space,
)
from hpsrl.generation import best_index
from hpsrl.operators import cx_uniform, mut_individual, sel_elites, sel_tournament
from hpsrl.storage import Generation, Population

RETEST_BATCH = "retest"


class NothingToRetest(RuntimeError):
    """Every individual of the final generation failed."""


def batch_name(generation: int) -> str:
    return f"gen{generation:03d}"


def _seeded_population(
    config: Mapping[str, Any],
    generation: int,
    individuals: list[dict[str, Any]],
    parents: np.ndarray,
    operators: list[str],
) -> Population:
    plan = SeedPlan(config["seed"])
    n, seeds = len(individuals), config["training"]["seeds"]
    return Population(
        batch=batch_name(generation),
        config=dict(config),
        individuals=individuals,
        parents=parents,
        operators=operators,
        train_seeds=plan.seeds(STREAM_TRAIN, generation, n, seeds),
        eval_seeds=plan.seeds(STREAM_EVAL, generation, n, seeds),
    )


def initial_population(config: Mapping[str, Any]) -> Population:
    """Generation 0: individuals sampled uniformly (log-uniformly where a gene says so)."""
    rng = SeedPlan(config["seed"]).generator(STREAM_GA, 0)
    space = search_space(config)
    n = config["ga"]["population"]
    individuals = [space.sample(rng) for _ in range(n)]
    parents = np.full((n, 2), -1, dtype=np.int64)
    return _seeded_population(config, 0, individuals, parents, ["random"] * n)


def next_population(previous: Generation, config: Mapping[str, Any]) -> Population:
    """Generation g+1 from generation g: elitism, tournament selection, crossover, mutation.

    Elites are copied unchanged and trained again on fresh seeds, so a configuration cannot stay on
    top through one lucky draw. Failed individuals have rank key +inf and so lose every tournament
    that has a valid candidate.
    """
    ga = config["ga"]
    generation = int(previous.population.batch.removeprefix("gen")) + 1
    rng = SeedPlan(config["seed"]).generator(STREAM_GA, generation)
    space = search_space(config)
    parents_pool = previous.population.individuals
    key = previous.rank_key

    individuals: list[dict[str, Any]] = []
    parents: list[tuple[int, int]] = []
    operators: list[str] = []
    for e in sel_elites(key, ga["elites"]):
        individuals.append(dict(parents_pool[e]))
        parents.append((int(e), -1))
        operators.append("elite")
    while len(individuals) < ga["population"]:
        i, j = (int(x) for x in sel_tournament(key, 2, ga["tournament_size"], rng))
        if rng.random() < ga["crossover_prob"]:
            child, _ = cx_uniform(parents_pool[i], parents_pool[j], space, rng)
            made, lineage = ["crossover"], (i, j)
        else:
            child, made, lineage = dict(parents_pool[i]), ["clone"], (i, -1)
        child, mutated = mut_individual(
            child, space, rng, ga["mutation_prob"], ga["mutation_scale"]
        )
        if mutated:
            made.append("mutation")
        individuals.append(child)
        parents.append(lineage)
        operators.append("+".join(made))
    return _seeded_population(
        config, generation, individuals, np.array(parents, dtype=np.int64), operators
    )


def retest_population(final: Generation, config: Mapping[str, Any]) -> Population:
    """The final generation's best individual, to be trained again on fresh seeds."""
    best = best_index(final)
    if best is None:
        raise NothingToRetest(
            f"every individual of {final.population.batch} failed, so there is nothing to re-test "
            "(see why with: hpsrl status RESULTS_DIR/CAMPAIGN); set report.retest_seeds: 0 to "
            "finish without a re-test"
        )
    plan = SeedPlan(config["seed"])
    seeds = config["report"]["retest_seeds"]
    return Population(
        batch=RETEST_BATCH,
        config=dict(config),
        individuals=[dict(final.population.individuals[best])],
        parents=np.array([[best, -1]], dtype=np.int64),
        operators=["retest"],
        train_seeds=plan.seeds(STREAM_RETEST_TRAIN, 0, 1, seeds),
        eval_seeds=plan.seeds(STREAM_RETEST_EVAL, 0, 1, seeds),
    )
