"""Where each generation's individuals come from, and which one is the campaign's best.

Generation 0 is sampled at random for every search strategy; each later one comes from the
strategy (``search.strategy``): ``ga`` selects, crosses and mutates the previous generation,
``random`` samples afresh, ``bo`` asks an Optuna sampler fitted to all earlier generations
(:mod:`hpsrl.search.bayesopt`). Everything random here draws from a Generator or a seed derived from
the campaign's root seed and the generation number, so the same config always gives the same genes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from hpsrl import HpsrlError
from hpsrl.campaign.config import (
    STREAM_EVAL,
    STREAM_GA,
    STREAM_RETEST_EVAL,
    STREAM_RETEST_TRAIN,
    STREAM_TRAIN,
    SeedPlan,
    search_space,
)
from hpsrl.campaign.evidence import configuration_key, pools_evidence
from hpsrl.campaign.halving import new_configurations, rung_steps, rungs
from hpsrl.campaign.model import Generation, Population
from hpsrl.campaign.paths import RETEST_BATCH, batch_generation, batch_name, rung_batch, rung_of
from hpsrl.search.moo import nsga2_rank_key, to_losses
from hpsrl.search.operators import cx_uniform, mut_individual, sel_elites, sel_tournament

T = TypeVar("T")


class NothingToRetest(HpsrlError, RuntimeError):
    """Every individual the best is chosen from failed."""


def first_batch(config: Mapping[str, Any], generation: int) -> str:
    """The batch a generation's population is proposed as: the generation itself, or its first
    successive-halving rung (:mod:`hpsrl.campaign.halving`)."""
    return rung_batch(generation, 0) if rungs(config) > 1 else batch_name(generation)


def _seeded_population(
    config: Mapping[str, Any],
    generation: int,
    individuals: list[dict[str, Any]],
    parents: np.ndarray,
    operators: list[str],
    raced: int = 0,
) -> Population:
    """A generation's first batch with fresh seeds: the ``raced`` first individuals train on the
    whole of training.steps, the new ones to the first rung's steps (all of it without rungs)."""
    plan = SeedPlan(config["seed"])
    n, seeds = len(individuals), config["training"]["seeds"]
    steps = np.full(n, rung_steps(config)[0], dtype=np.int64)
    steps[:raced] = config["training"]["steps"]
    return Population(
        batch=first_batch(config, generation),
        config=dict(config),
        individuals=individuals,
        parents=parents,
        operators=operators,
        train_seeds=plan.seeds(STREAM_TRAIN, generation, n, seeds),
        eval_seeds=plan.seeds(STREAM_EVAL, generation, n, seeds),
        steps=steps,
    )


def _unrelated_population(
    config: Mapping[str, Any], generation: int, individuals: list[dict[str, Any]], operator: str
) -> Population:
    """Individuals that descend from none of the previous generation."""
    n = len(individuals)
    parents = np.full((n, 2), -1, dtype=np.int64)
    return _seeded_population(config, generation, individuals, parents, [operator] * n)


def _random_individuals(config: Mapping[str, Any], generation: int, n: int) -> list[dict[str, Any]]:
    """``n`` individuals sampled uniformly (log-uniformly where a gene says so)."""
    rng = SeedPlan(config["seed"]).generator(STREAM_GA, generation)
    space = search_space(config)
    return [space.sample(rng) for _ in range(n)]


def racing_slots(config: Mapping[str, Any]) -> int:
    """How many individuals of each generation after the first re-train the top configurations
    on fresh seeds (``search.racing.share`` of the population). Campaigns made before the key
    existed: the GA's elites."""
    racing = config.get("search", {}).get("racing")
    if racing is None:
        strategy = config.get("search", {}).get("strategy", "ga")
        return config["ga"].get("elites", 1) if strategy == "ga" else 0
    return round(racing["share"] * config["budget"]["population"])


def _raced(previous: Generation, config: Mapping[str, Any]) -> list[int]:
    """Individuals of ``previous`` to copy into the next generation, one per racing slot: the
    ``search.racing.top`` best distinct configurations (by rank key, so by their estimates), the
    best first, taking the slots in turn (3 slots and top 2: best, second, best)."""
    slots = racing_slots(config)
    racing = config.get("search", {}).get("racing")
    top = slots if racing is None else racing["top"]
    order = sel_elites(previous.rank_key, len(previous.population))
    best: list[int] = []
    seen: set[str] = set()
    for i in order:
        key = configuration_key(previous.population.individuals[i])
        if np.isfinite(previous.rank_key[i]) and key not in seen:
            seen.add(key)
            best.append(int(i))
    best = best[:top]
    return [best[s % len(best)] for s in range(slots)] if best else []


def initial_population(config: Mapping[str, Any]) -> Population:
    """Generation 0, random for every search strategy."""
    individuals = _random_individuals(config, 0, new_configurations(config, 0, 0)[0])
    return _unrelated_population(config, 0, individuals, "random")


def planned_size(config: Mapping[str, Any], batch: str) -> int:
    """How many individuals a generation's batch (or one of its rungs) trains, known before
    anything is trained: budget.population without rungs."""
    generation = batch_generation(batch)
    raced = racing_slots(config) if generation else 0
    rung = rung_of(batch)
    if rung is None:
        return config["budget"]["population"]
    return (raced if rung == 0 else 0) + new_configurations(config, generation, raced)[rung]


def reads_whole_history(config: Mapping[str, Any]) -> bool:
    """Whether proposing a generation reads every earlier generation (bo refits its model on all
    of them) or only the previous one (ga breeds from it; random needs nothing but its number)."""
    return config["search"]["strategy"] == "bo"


def next_population(history: Sequence[Generation], config: Mapping[str, Any]) -> Population:
    """Generation g+1 from the generations before it, in order (the last is generation g).

    ``history`` needs to hold every earlier generation only where :func:`reads_whole_history`.
    """
    previous = history[-1]
    generation = batch_generation(previous.population.batch) + 1
    strategy = config["search"]["strategy"]
    if strategy == "ga":
        return _bred_population(previous, config, generation)
    raced = _raced(previous, config)
    n = new_configurations(config, generation, len(raced))[0]
    if strategy == "random":
        individuals, operator = _random_individuals(config, generation, n), "random"
    else:
        individuals, operator = _proposals(history, config, generation, n)
    return _seeded_population(
        config,
        generation,
        [dict(previous.population.individuals[i]) for i in raced] + individuals,
        np.array([(i, -1) for i in raced] + [(-1, -1)] * n, dtype=np.int64).reshape(-1, 2),
        ["elite"] * len(raced) + [operator] * n,
        raced=len(raced),
    )


def _proposals(
    history: Sequence[Generation], config: Mapping[str, Any], generation: int, n: int
) -> tuple[list[dict[str, Any]], str]:
    """``n`` individuals proposed by Bayesian optimisation on all earlier generations, and
    their operator name."""
    from hpsrl.search.bayesopt import history_study, propose  # optuna only where bo runs

    sampler = config["search"]["sampler"]
    seed = int(SeedPlan(config["seed"]).generator(STREAM_GA, generation).integers(2**32))
    study = history_study(history, config, seed)
    return propose(study, search_space(config), n), f"bo-{sampler}"


def _bred_population(
    previous: Generation, config: Mapping[str, Any], generation: int
) -> Population:
    """Elitism (the raced top configurations: :func:`_raced`), tournament selection, crossover and
    mutation on the previous generation.

    Elites are copied unchanged and trained again on fresh seeds, so a configuration cannot stay on
    top through one lucky draw (with pooled evidence its new seeds add to its old ones). Failed
    individuals have rank key +inf and so lose every tournament that has a valid candidate.
    """
    ga = config["ga"]
    rng = SeedPlan(config["seed"]).generator(STREAM_GA, generation)
    space = search_space(config)
    parents_pool = previous.population.individuals
    key = previous.rank_key

    individuals: list[dict[str, Any]] = []
    parents: list[tuple[int, int]] = []
    operators: list[str] = []
    raced = _raced(previous, config)
    for e in raced:
        individuals.append(dict(parents_pool[e]))
        parents.append((int(e), -1))
        operators.append("elite")
    size = len(raced) + new_configurations(config, generation, len(raced))[0]
    while len(individuals) < size:
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
        config,
        generation,
        individuals,
        np.array(parents, dtype=np.int64),
        operators,
        raced=len(raced),
    )


def best_candidates(config: Mapping[str, Any], generations: Sequence[T]) -> Sequence[T]:
    """Of a campaign's generations so far (files or records, in order), those :func:`best_of`
    chooses from: what a reader of the answer needs to read.

    Where each generation re-trains the top configurations (racing, the GA's elites), the final
    generation only: racing carries the best configurations forward, re-trained on fresh seeds,
    so an earlier generation's best is either still there (with more evidence) or was beaten,
    possibly after a lucky first draw. Without racing nothing is carried forward, so the best is
    that of all generations.
    """
    return generations[-1:] if racing_slots(config) > 0 else generations


def best_of(generations: Sequence[Generation]) -> tuple[Generation, int] | None:
    """The campaign's best individual after ``generations`` (all so far, in order, or only
    their :func:`best_candidates`): the configuration the campaign returns, as (its generation,
    its index there); None if every candidate failed. Every reader of "the best" asks this.

    It is the best estimate (:func:`_best_by_estimate`) among the candidates. With pooled
    evidence and racing, among the final generation's raced copies first: the top
    configurations so far, re-trained on fresh seeds in it, so that the answer was good on many
    seeds. A new configuration of the final generation has only its first seeds, and no later
    generation to race it: it cannot be the answer (unless no raced copy is valid). SMAC's
    incumbent is kept the same way, until a challenger has been run as often.
    """
    config = generations[-1].config
    candidates = best_candidates(config, generations)
    final = candidates[-1]
    if pools_evidence(config) and racing_slots(config) > 0:
        raced = np.array([op == "elite" for op in final.population.operators])
        found = _best_by_estimate([final], [raced])
        if found is not None:
            return found
    return _best_by_estimate(candidates)


def generation_leader(generation: Generation) -> int | None:
    """The index of a generation's leader, None if it has none: its best estimate
    (:func:`_best_by_estimate`), new configurations included, which ``hpsrl status`` and the
    report show per generation. The campaign's answer is :func:`best_of`'s."""
    found = _best_by_estimate([generation])
    return None if found is None else found[1]


def _best_by_estimate(
    generations: Sequence[Generation], eligible: Sequence[np.ndarray] | None = None
) -> tuple[Generation, int] | None:
    """The valid individual of ``generations`` trained on the whole of training.steps (not
    stopped on an earlier rung) with the best estimate of its primary (first) objective (see
    :mod:`hpsrl.campaign.evidence`; its own objective where evidence is not pooled), as (its
    generation, its index there); None if there is none. ``eligible`` (a mask per generation)
    narrows the choice further.

    Ties are broken by the NSGA-II rank key over all the individuals, then by generation order
    and index.
    """
    objectives = np.concatenate([g.estimate for g in generations])
    usable = np.concatenate([g.ok & g.population.complete() for g in generations])
    if eligible is not None:
        usable &= np.concatenate(eligible)
    ok = np.flatnonzero(usable)
    if ok.size == 0:
        return None
    config = generations[-1].config
    directions = [o["direction"] for o in config["objectives"]]
    rank_key = nsga2_rank_key(objectives, directions)
    primary_loss = to_losses(objectives[:, :1], directions[:1])[:, 0]
    order = np.lexsort((ok, rank_key[ok], primary_loss[ok]))
    where = [(g, i) for g in generations for i in range(len(g.population))]
    return where[int(ok[order[0]])]


def retest_population(generations: Sequence[Generation], config: Mapping[str, Any]) -> Population:
    """The campaign's answer (:func:`best_of` its generations, given in order), to be trained
    again on fresh seeds that nothing selected on."""
    candidates = best_candidates(config, generations)
    found = best_of(generations)
    if found is None:
        batches = ", ".join(g.population.batch for g in candidates)
        raise NothingToRetest(
            f"every individual of {batches} failed, so there is nothing to re-test "
            "(see why with: hpsrl status RESULTS_DIR/CAMPAIGN); set retest.seeds: 0 to "
            "finish without a re-test"
        )
    source, best = found
    plan = SeedPlan(config["seed"])
    seeds = config["retest"]["seeds"]
    return Population(
        batch=RETEST_BATCH,
        config=dict(config),
        individuals=[dict(source.population.individuals[best])],
        parents=np.array([[best, -1]], dtype=np.int64),
        operators=["retest"],
        train_seeds=plan.seeds(STREAM_RETEST_TRAIN, 0, 1, seeds),
        eval_seeds=plan.seeds(STREAM_RETEST_EVAL, 0, 1, seeds),
    )
