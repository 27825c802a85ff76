from __future__ import annotations

import numpy as np

from hpsrl.campaign.config import load_config, search_space
from hpsrl.campaign.storage import read_population, write_population
from hpsrl.search.evolve import (
    generation_leader,
    initial_population,
    next_population,
    retest_population,
)
from hpsrl.search.generation import generation_record


def _fake_generation(config, returns, failed=()):
    """A generation whose results are given (no training), to test selection bookkeeping."""
    pop = initial_population(config)
    n, s = len(pop), config["training"]["seeds"]
    results = {
        "returns": np.repeat(np.asarray(returns, float)[:, None], s, axis=1),
        "steps_to_threshold": np.full((n, s), np.inf),
        "train_seconds": np.ones((n, s)),
        "status": np.array(["failed" if i in failed else "ok" for i in range(n)]),
    }
    return generation_record(pop, results)


def test_initial_population_is_deterministic_and_in_bounds(tiny_config):
    config = load_config(tiny_config)
    a, b = initial_population(config), initial_population(config)
    assert a.individuals == b.individuals
    assert (a.train_seeds == b.train_seeds).all()
    space = search_space(config)
    for individual in a.individuals:
        space.validate(individual)
    assert a.operators == ["random"] * 4
    assert (a.parents == -1).all()


def test_population_roundtrips_through_hdf5(tiny_config, tmp_path):
    pop = initial_population(load_config(tiny_config))
    write_population(tmp_path / "p.h5", pop)
    back = read_population(tmp_path / "p.h5")
    assert back.individuals == pop.individuals
    assert back.operators == pop.operators
    assert (back.eval_seeds == pop.eval_seeds).all()
    assert back.config == pop.config
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_next_generation_keeps_elites_and_records_lineage(tiny_config):
    config = load_config(tiny_config)
    previous = _fake_generation(config, returns=[10, 400, 50, 20])
    nxt = next_population([previous], config)
    assert nxt.batch == "gen001"
    assert nxt.operators[0] == "elite"
    assert nxt.individuals[0] == previous.population.individuals[1]
    assert tuple(nxt.parents[0]) == (1, -1)
    assert len(nxt) == 4
    for individual, parents in zip(nxt.individuals, nxt.parents, strict=True):
        search_space(config).validate(individual)
        assert parents[0] >= 0
    assert not (nxt.train_seeds == previous.population.train_seeds).any()
    again = next_population([previous], config)
    assert again.individuals == nxt.individuals


def test_the_ga_breeds_from_the_last_generation_of_the_history_only(tiny_config):
    config = load_config(tiny_config)
    earlier = _fake_generation(config, returns=[1, 2, 3, 4], failed=(0,))
    previous = _fake_generation(config, returns=[10, 400, 50, 20])
    assert (
        next_population([earlier, previous], config).individuals
        == next_population([previous], config).individuals
    )


def test_failed_individuals_are_never_parents_when_valid_ones_exist(tiny_config):
    config = load_config(tiny_config)
    config["budget"]["population"] = 6
    config["ga"]["tournament_size"] = 6  # every tournament holds every individual
    previous = _fake_generation(config, returns=[1, 2, 3, 4, 5, 6], failed=(1, 2, 3, 4, 5))
    assert np.isnan(previous.objectives[1:]).all()
    assert generation_leader(previous) == 0
    nxt = next_population([previous], config)
    used = set(nxt.parents.ravel().tolist()) - {-1}
    assert used == {0}, f"failed individuals {used - {0}} were chosen as parents"


def test_retest_takes_the_best_on_fresh_seeds(tiny_config):
    config = load_config(tiny_config)
    final = _fake_generation(config, returns=[10, 400, 50, 20])
    retest = retest_population([final], config)
    assert retest.individuals == [final.population.individuals[1]]
    assert retest.train_seeds.shape == (1, config["retest"]["seeds"])
    assert not np.isin(retest.train_seeds, final.population.train_seeds).any()
