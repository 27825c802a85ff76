"""Successive halving inside each generation (``search.fidelity``): many new configurations trained
on a fraction of ``training.steps``, the best of them continued, rung by rung, to the whole of it.

With ``rungs: R`` and ``eta``, rung ``r`` trains to ``steps * eta**(r - R + 1)`` env steps (rungs
``1/9, 1/3, 1`` for R 3 and eta 3) and the top ``1/eta`` of a rung (by its objectives at that
point) go on to the next one, **continuing from the checkpoints** their training ended the rung
with: a configuration promoted to the last rung has cost what one full training costs, and its
result is bit-identical to a training that never stopped (``train(..., stop_at=...)``).

Each rung is a batch of its own (``genGGG/rungR/``: population, results and its record
``genGGG/rungR.h5``; :mod:`hpsrl.campaign.paths` names them), so it shows in the DAG and resumes
after a kill like any batch. The generation's record ``genGGG.h5`` combines them: every
configuration of rung 0 with the results of the last rung it reached. The raced copies of the best
configurations so far (``search.racing``) train in full on rung 0.

Budget: a generation spends no more env steps than ``budget.population`` full trainings (of
``training.seeds`` seeds each), as without rungs; rung 0 holds as many new configurations as that
allows (:func:`rung_sizes`). Only configurations that reached the whole of ``training.steps`` are
evidence about what a configuration is worth (:mod:`hpsrl.campaign.evidence`): the others rank after
them, by the last rung they reached, then by their objectives there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpsrl.campaign.model import Generation, Population
from hpsrl.campaign.paths import batch_generation, batch_name, result_path, rung_batch, rung_of


def rungs(config: Mapping[str, Any]) -> int:
    """Rungs per generation; 1: no successive halving (configs made before it existed too)."""
    return int(config.get("search", {}).get("fidelity", {}).get("rungs", 1))


def rung_steps(config: Mapping[str, Any]) -> list[int]:
    """Env steps each rung trains to, the last being training.steps."""
    steps, count = config["training"]["steps"], rungs(config)
    eta = config["search"]["fidelity"]["eta"] if count > 1 else 1
    return [max(1, round(steps * eta ** (r - count + 1))) for r in range(count)]


def rung_sizes(config: Mapping[str, Any], new: int) -> list[int]:
    """How many new configurations each rung trains when ``new`` full trainings' worth of env
    steps go to them: the largest rung 0 whose halvings (``n_{r+1} = n_r // eta``, at least one
    on the last rung) cost no more. ``[new]`` without rungs."""
    if rungs(config) == 1:
        return [new]
    first = _least_first_rung(config)
    while _cost(config, _halvings(config, first + 1)) <= new * config["training"]["steps"]:
        first += 1
    return _halvings(config, first)


def _halvings(config: Mapping[str, Any], first: int) -> list[int]:
    eta = config["search"]["fidelity"]["eta"]
    return [first // eta**r for r in range(rungs(config))]


def _least_first_rung(config: Mapping[str, Any]) -> int:
    """The smallest rung 0 that leaves one configuration on the last rung."""
    return config["search"]["fidelity"]["eta"] ** (rungs(config) - 1)


def _cost(config: Mapping[str, Any], sizes: list[int]) -> int:
    """Env steps (per seed) of rungs of ``sizes`` configurations, each continuing the last."""
    steps = rung_steps(config)
    return sum(n * (s - before) for n, s, before in zip(sizes, steps, [0, *steps], strict=False))


def new_configurations(config: Mapping[str, Any], generation: int, raced: int) -> list[int]:
    """How many new configurations each rung of ``generation`` trains, when ``raced`` of its
    budget.population full trainings re-train the best so far (none in generation 0)."""
    return rung_sizes(config, config["budget"]["population"] - (raced if generation else 0))


def check_fidelity(config: Mapping[str, Any], new: int) -> str | None:
    """Why ``config``'s rungs cannot run with ``new`` full trainings' worth of new
    configurations per generation, or None."""
    count = rungs(config)
    if count == 1:
        return None
    eta, steps = config["search"]["fidelity"]["eta"], rung_steps(config)
    if len(set(steps)) < count:
        return (
            f"{count} rungs with eta {eta} give rungs of {steps} env steps out of "
            f"training.steps {config['training']['steps']}, some equal; use fewer rungs"
        )
    least = _least_first_rung(config)
    if _cost(config, _halvings(config, least)) > new * steps[-1]:
        return (
            f"{count} rungs with eta {eta} need at least {least} new configurations on rung 0, "
            f"more env steps than the {new} full trainings a generation has for new ones; use "
            "fewer rungs, a smaller eta or a larger budget.population"
        )
    return None


def rung_keys(generation: Generation) -> np.ndarray:
    """The rank keys of a rung's record restricted to its new configurations (those that train
    to this rung's steps): lower is better, +inf for the others and the failed."""
    pop = generation.population
    here = pop.steps == np.min(pop.steps)
    return np.where(here, generation.rank_key, np.inf)


def promoted_population(record: Generation) -> Population:
    """The next rung's population from a rung's record: its best new configurations (the top
    ``1/eta`` of them, as :func:`rung_sizes` counts; ties by index), in rung 0's order, each
    continuing its seeds from their checkpoints to the next rung's steps."""
    pop, config = record.population, record.config
    rung = rung_of(pop.batch)
    generation = batch_generation(pop.batch)
    assert rung is not None and generation is not None, f"{pop.batch} is no rung"
    # the planned number, whatever failed (the DAG is planned before anything trains): failed
    # ones rank last and, having no checkpoint, train from scratch to the next rung's steps
    keys = rung_keys(record)
    candidates = np.flatnonzero(pop.steps == np.min(pop.steps))
    keep = len(candidates) // config["search"]["fidelity"]["eta"]
    chosen = np.sort(candidates[np.lexsort((candidates, keys[candidates]))][:keep])
    steps = rung_steps(config)[rung + 1]
    return Population(
        batch=rung_batch(generation, rung + 1),
        config=dict(config),
        individuals=[dict(pop.individuals[i]) for i in chosen],
        parents=np.array([[i, -1] for i in chosen], dtype=np.int64).reshape(-1, 2),
        operators=["promoted"] * len(chosen),
        train_seeds=pop.train_seeds[chosen],
        eval_seeds=pop.eval_seeds[chosen],
        steps=np.full(len(chosen), steps, dtype=np.int64),
        resumes=[result_path(pop.batch, i) for i in chosen],
    )


def combined_results(records: Sequence[Generation]) -> tuple[Population, dict[str, Any]]:
    """The population of a generation's rung 0, each individual with the step budget and results
    of the last rung it reached (``records``: the generation's rung records in order)."""
    first = records[0]
    n = len(first.population)
    where = [(0, i) for i in range(n)]  # (record, index there) of each individual's last rung
    index_in = np.arange(n)  # each rung-0 individual's index in the current rung, -1: dropped
    for r, record in enumerate(records[1:], start=1):
        parents = record.population.parents[:, 0]
        now = np.full(n, -1)
        for j, parent in enumerate(parents):
            (origin,) = np.flatnonzero(index_in == parent)
            now[origin] = j
            where[origin] = (r, j)
        index_in = now
    results: dict[str, Any] = {}
    for name, column in first.results.items():
        if name == "curve_steps":
            results[name] = column
            continue
        results[name] = np.stack([records[r].results[name][i] for r, i in where])
    pop = first.population
    population = Population(
        batch=batch_name(batch_generation(pop.batch)),
        config=pop.config,
        individuals=pop.individuals,
        parents=pop.parents,
        operators=pop.operators,
        train_seeds=pop.train_seeds,
        eval_seeds=pop.eval_seeds,
        steps=np.array([records[r].population.steps[i] for r, i in where], dtype=np.int64),
        resumes=[records[r].population.resumes[i] for r, i in where],
    )
    return population, results
