"""Evidence accumulates (search.evidence: pooled) and racing re-trains the best (search.racing)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hpsrl.campaign.config import load_config, search_space
from hpsrl.campaign.evidence import Evidence, pooled_objectives, shrunk_estimates
from hpsrl.campaign.paths import batch_name
from hpsrl.campaign.storage import read_generation, write_generation
from hpsrl.search.evolve import (
    best_of,
    generation_leader,
    initial_population,
    next_population,
    racing_slots,
)
from hpsrl.search.generation import generation_record


def record(config, population, returns, failed=(), previous=None):
    """The generation record of ``population`` whose seed k of individual i returned
    ``returns[i][k]`` (no training)."""
    returns = np.asarray(returns, dtype=float)
    n, s = returns.shape
    episodes, points = config["training"]["eval_episodes"], config["training"]["curve_points"]
    results = {
        "returns": returns,
        "episode_returns": returns[..., None].repeat(episodes, axis=2),
        "steps_to_threshold": np.full((n, s), np.inf),
        "env_steps": np.full((n, s), config["training"]["steps"]),
        "train_seconds": np.ones((n, s)),
        "eval_seconds": np.ones((n, s)),
        "curve_steps": np.arange(1, points + 1),
        "curve_returns": np.zeros((n, s, points)),
        "status": np.array(["failed" if i in failed else "ok" for i in range(n)]),
        "error": np.array(["diverged" if i in failed else "" for i in range(n)]),
    }
    return generation_record(population, results, previous)


@pytest.fixture
def config(tiny_config):
    tiny_config["objectives"] = [{"name": "return"}]
    tiny_config["training"]["seeds"] = 3
    return load_config(tiny_config)


def test_an_elites_objective_covers_all_its_seeds_across_generations(config):
    gen0 = record(config, initial_population(config), [[10] * 3, [400] * 3, [50] * 3, [20] * 3])
    pop1 = next_population([gen0], config)
    assert pop1.operators[0] == "elite" and tuple(pop1.parents[0]) == (1, -1)
    gen1 = record(config, pop1, [[300, 300, 300], [1, 1, 1], [2, 2, 2], [3, 3, 3]], previous=gen0)
    pop2 = next_population([gen1], config)
    assert pop2.individuals[0] == gen0.population.individuals[1], "still the best: raced again"
    gen2 = record(config, pop2, [[350, 350, 350], [1, 1, 1], [2, 2, 2], [3, 3, 3]], previous=gen1)

    rows = gen2.evidence.rows(0)
    assert gen2.evidence.seeds[0] == 9
    np.testing.assert_array_equal(
        gen2.evidence.values[rows, 0], [400, 400, 400, 300, 300, 300, 350, 350, 350]
    )
    # which seeds: (generation, individual, seed index) of each, and the training seeds
    assert gen2.evidence.source[rows].tolist() == [[0, 1, k] for k in range(3)] + [
        [1, 0, k] for k in range(3)
    ] + [[2, 0, k] for k in range(3)]
    np.testing.assert_array_equal(
        gen2.evidence.train_seeds[rows],
        np.concatenate([gen0.population.train_seeds[1], pop1.train_seeds[0], pop2.train_seeds[0]]),
    )
    assert pooled_objectives(gen2.evidence, "mean")[0, 0] == pytest.approx(350)
    assert gen2.objectives[0, 0] == 350, "objectives stay the batch's own seeds"
    # a new configuration has its own seeds only; an unmutated clone adds its parent's
    for i in range(1, 4):
        cloned = pop2.individuals[i] in pop1.individuals
        assert gen2.evidence.seeds[i] == (6 if cloned else 3)


def test_copies_of_one_configuration_share_their_seeds(config):
    pop = initial_population(config)
    pop = dataclasses.replace(
        pop,
        individuals=[
            pop.individuals[0],
            pop.individuals[1],
            pop.individuals[0],
            pop.individuals[2],
        ],
    )
    gen = record(config, pop, [[100] * 3, [5] * 3, [200] * 3, [7] * 3])
    assert gen.evidence.seeds.tolist() == [6, 3, 6, 3]
    assert gen.estimate[0, 0] == gen.estimate[2, 0]
    assert pooled_objectives(gen.evidence, "mean")[0, 0] == 150


def test_a_configuration_that_skipped_a_generation_starts_afresh(config):
    pop0 = initial_population(config)
    gen0 = record(config, pop0, [[10] * 3] * 4)
    space = search_space(config)
    rng = np.random.default_rng(9)
    pop1 = dataclasses.replace(
        next_population([gen0], config),
        individuals=[space.sample(rng) for _ in range(4)],
    )
    gen1 = record(config, pop1, [[20] * 3] * 4, previous=gen0)
    pop2 = dataclasses.replace(
        next_population([gen1], config),
        batch=batch_name(2),
        individuals=[pop0.individuals[0], *pop1.individuals[1:]],
    )
    gen2 = record(config, pop2, [[30] * 3] * 4, previous=gen1)
    assert gen2.evidence.seeds[0] == 3, "gen000's seeds are not carried past gen001"
    assert gen2.evidence.seeds[1] == 6


def test_a_configuration_that_failed_once_stays_failed(config):
    gen0 = record(config, initial_population(config), [[400] * 3, [1] * 3, [2] * 3, [3] * 3])
    pop1 = next_population([gen0], config)
    gen1 = record(
        config, pop1, [[np.nan] * 3, [1] * 3, [2] * 3, [3] * 3], failed=(0,), previous=gen0
    )
    assert np.isnan(gen1.estimate[0]).all()
    assert not np.isfinite(gen1.rank_key[0])
    assert generation_leader(gen1) != 0


def evidence_of(values: list[list[float]]) -> Evidence:
    """Evidence of distinct configurations with the given per-seed values (one objective)."""
    counts = [len(v) for v in values]
    return Evidence(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        values=np.concatenate([np.asarray(v, float) for v in values])[:, None],
        source=np.array(
            [[0, i, k] for i, v in enumerate(values) for k in range(len(v))], dtype=np.int64
        ),
        train_seeds=np.zeros(sum(counts), dtype=np.uint32),
    )


def test_many_good_seeds_outrank_a_few_lucky_ones():
    # Seeds as noisy as on CartPole-v1 DQN (seed-to-seed sd 100, more than the configurations'
    # spread): twelve seeds averaging 470 against three averaging 500.
    noise = [-100, 0, 100]
    values = [[470 + x for x in noise * 4], [500 + x for x in noise]] + [
        [mean + x for x in noise] for mean in (250, 300, 350, 280, 320, 310)
    ]
    evidence = evidence_of(values)
    means = pooled_objectives(evidence, "mean")
    estimate = shrunk_estimates(evidence, means)
    assert means[1, 0] > means[0, 0]
    assert estimate[0, 0] > estimate[1, 0], "the configuration seen on 12 seeds ranks first"
    # equal evidence keeps the order of the means, pulled towards their mean
    others = estimate[2:, 0]
    assert (np.argsort(others) == np.argsort(means[2:, 0])).all()
    assert np.ptp(others) < np.ptp(means[2:, 0])


def test_without_a_measure_of_seed_noise_estimates_are_the_values():
    evidence = evidence_of([[1.0], [5.0], [3.0]])
    means = pooled_objectives(evidence, "mean")
    np.testing.assert_array_equal(shrunk_estimates(evidence, means), means)
    same = evidence_of([[2.0, 2.0], [4.0, 4.0]])  # seeds agree exactly
    means = pooled_objectives(same, "mean")
    np.testing.assert_array_equal(shrunk_estimates(same, means), means)


def test_failed_configurations_stay_failed_in_the_estimates():
    evidence = evidence_of([[1.0, 2.0], [np.nan, 4.0], [3.0, 5.0]])
    means = pooled_objectives(evidence, "mean")
    assert np.isnan(means[1, 0])
    estimate = shrunk_estimates(evidence, means)
    assert np.isnan(estimate[1, 0]) and np.isfinite(estimate[[0, 2], 0]).all()


def test_fresh_evidence_judges_each_training_alone(tiny_config):
    tiny_config["search"] = {"evidence": "fresh"}
    tiny_config["objectives"] = [{"name": "return"}]
    config = load_config(tiny_config)
    gen0 = record(config, initial_population(config), [[400, 400], [1, 1], [2, 2], [3, 3]])
    pop1 = next_population([gen0], config)
    gen1 = record(config, pop1, [[100, 100], [1, 1], [2, 2], [3, 3]])
    assert gen1.evidence.seeds.tolist() == [2, 2, 2, 2]
    np.testing.assert_array_equal(gen1.estimate, gen1.objectives)


def test_evidence_round_trips_through_hdf5(config, tmp_path):
    gen0 = record(config, initial_population(config), [[10, 20, 30], [400] * 3, [5] * 3, [1] * 3])
    gen1 = record(config, next_population([gen0], config), [[9] * 3] * 4, previous=gen0)
    write_generation(tmp_path / "gen001.h5", gen1)
    back = read_generation(tmp_path / "gen001.h5")
    for field in dataclasses.fields(Evidence):
        np.testing.assert_array_equal(
            getattr(back.evidence, field.name), getattr(gen1.evidence, field.name)
        )
    np.testing.assert_array_equal(back.estimate, gen1.estimate)


def test_pooling_needs_the_previous_generation(config):
    gen0 = record(config, initial_population(config), [[1] * 3] * 4)
    with pytest.raises(ValueError, match="gen001 pools its evidence with generation 0"):
        record(config, next_population([gen0], config), [[1] * 3] * 4)


# -- racing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["ga", "random", "bo"])
@pytest.mark.parametrize(
    "share, top, expected",
    [(0.5, 2, [1, 3, 1, 3]), (0.25, 2, [1, 3]), (0.75, 1, [1] * 6), (0, 2, [])],
)
def test_racing_copies_the_top_configurations_in_turn(tiny_config, strategy, share, top, expected):
    tiny_config["search"] = {"strategy": strategy, "racing": {"share": share, "top": top}}
    tiny_config["objectives"] = [{"name": "return"}]
    tiny_config["budget"]["population"] = 8
    config = load_config(tiny_config)
    returns = [[10.0] * 2 for _ in range(8)]
    returns[1], returns[3] = [400.0] * 2, [300.0] * 2
    gen0 = record(config, initial_population(config), returns)
    assert racing_slots(config) == len(expected)
    pop1 = next_population([gen0], config)
    raced = [i for i, op in enumerate(pop1.operators) if op == "elite"]
    assert raced == list(range(len(expected)))
    assert [int(p) for p in pop1.parents[raced, 0]] == expected
    for i, parent in zip(raced, expected, strict=True):
        assert pop1.individuals[i] == gen0.population.individuals[parent]
    assert len(pop1) == 8
    # every copy trains on fresh seeds
    assert not np.isin(pop1.train_seeds, gen0.population.train_seeds).any()


def test_the_answer_is_a_raced_configuration_not_a_new_one_with_few_seeds(config):
    gen0 = record(config, initial_population(config), [[470] * 3, [1] * 3, [2] * 3, [3] * 3])
    pop1 = next_population([gen0], config)
    assert pop1.operators[0] == "elite"
    # a new configuration of the final generation scores 500 on its 3 seeds
    gen1 = record(config, pop1, [[470] * 3, [500] * 3, [2] * 3, [3] * 3], previous=gen0)
    assert generation_leader(gen1) == 1, "it leads the generation by its estimate"
    source, answer = best_of([gen0, gen1])
    assert (source, answer) == (gen1, 0), "the answer is the raced configuration, 6 seeds"
    # the GA before pooling answers with the final generation's best on its own seeds
    fresh = load_config({**config, "search": {**config["search"], "evidence": "fresh"}})
    fresh_gen0 = record(fresh, initial_population(fresh), [[470] * 3, [1] * 3, [2] * 3, [3] * 3])
    fresh_gen1 = record(
        fresh, next_population([fresh_gen0], fresh), [[470] * 3, [500] * 3, [2] * 3, [3] * 3]
    )
    assert best_of([fresh_gen0, fresh_gen1])[1] == 1
