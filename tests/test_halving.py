"""Successive halving inside a generation (search.fidelity): budgets, promotion, continuation."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpsrl.campaign.config import ConfigError, load_config
from hpsrl.campaign.halving import promoted_population, rung_sizes, rung_steps
from hpsrl.campaign.storage import read_individual_arrays, read_population, write_population
from hpsrl.search.evolve import initial_population, next_population, planned_size, racing_slots
from hpsrl.search.generation import combine_rungs, generation_record
from hpsrl.training.train import checkpoint_dir, run_job
from tests.conftest import TINY, copy_workflow
from tests.test_resilience import _kill_all, _start_snakemake, _wait_for
from tests.test_workflow import snakemake, write_config


def halving_config(rungs=2, eta=2, population=4, **search):
    config = copy.deepcopy(TINY)
    config["objectives"] = [{"name": "return"}]
    config["budget"]["population"] = population
    config["search"] = {"fidelity": {"rungs": rungs, "eta": eta}, **search}
    return config


def env_steps_planned(config, generation):
    """Env steps per seed a generation's plan trains: raced copies in full, then each rung's
    new configurations from where the last rung stopped."""
    raced = racing_slots(config) if generation else 0
    new = rung_sizes(config, config["budget"]["population"] - raced)
    steps = rung_steps(config)
    return raced * steps[-1] + sum(
        n * (s - before) for n, s, before in zip(new, steps, [0, *steps], strict=False)
    )


@pytest.mark.parametrize("rungs, eta", [(2, 2), (2, 3), (3, 3), (3, 2), (4, 2)])
@pytest.mark.parametrize("population", [8, 9, 16, 64])
@pytest.mark.parametrize("share", [0, 0.25])
def test_rungs_spend_no_more_than_a_generation_of_full_trainings(rungs, eta, population, share):
    raw = halving_config(rungs, eta, population, racing={"share": share})
    raw["training"]["steps"] = 90_000
    try:
        config = load_config(raw)
    except ConfigError as e:  # too few new configurations for these rungs: said up front
        assert "search.fidelity" in str(e)
        return
    budget = population * 90_000
    for generation in (0, 1):
        spent = env_steps_planned(config, generation)
        assert spent <= budget
        # as many rung-0 configurations as fit: one more would overspend
        raced = racing_slots(config) if generation else 0
        sizes = rung_sizes(config, population - raced)
        bigger = copy.deepcopy(config)
        more = [sizes[0] + 1] + [(sizes[0] + 1) // eta**r for r in range(1, rungs)]
        steps = rung_steps(bigger)
        cost = raced * steps[-1] + sum(
            n * (s - b) for n, s, b in zip(more, steps, [0, *steps], strict=False)
        )
        assert cost > budget
        assert sizes[-1] >= 1 and sizes == sorted(sizes, reverse=True)


def test_rungs_train_to_fractions_of_the_budget():
    config = load_config(halving_config(rungs=3, eta=3))
    config["training"]["steps"] = 45_000
    assert rung_steps(config) == [5_000, 15_000, 45_000]
    assert rung_sizes(config, 6) == [26, 8, 2]  # 26/9 + 8*2/9 + 2*2/3 = 6 full trainings


def test_too_many_rungs_for_the_population_is_a_config_error():
    with pytest.raises(ConfigError, match=r"search\.fidelity.*fewer rungs"):
        load_config(halving_config(rungs=4, eta=3, population=4))


def test_fidelity_is_hashed_only_when_on():
    from hpsrl.campaign.identity import config_hash

    off = load_config(copy.deepcopy(TINY))
    older = copy.deepcopy(off)
    del older["search"]["fidelity"]  # made before the key existed
    assert config_hash(older) == config_hash(off)
    assert config_hash(load_config(halving_config())) != config_hash(off)


def record(config, population, returns, failed=()):
    returns = np.asarray(returns, dtype=float)
    n, s = returns.shape
    p = config["training"]["curve_points"]
    results = {
        "returns": returns,
        "episode_returns": returns[..., None].repeat(3, axis=2),
        "steps_to_threshold": np.full((n, s), np.inf),
        "env_steps": np.repeat(population.steps[:, None], s, axis=1),
        "train_seconds": np.ones((n, s)),
        "eval_seconds": np.ones((n, s)),
        "curve_steps": np.arange(1, p + 1),
        "curve_returns": np.zeros((n, s, p)),
        "lineage_env_steps": np.repeat(population.steps[:, None], s, axis=1),
        "status": np.array(["failed" if i in failed else "ok" for i in range(n)]),
        "error": np.array(["diverged" if i in failed else "" for i in range(n)]),
    }
    return generation_record(population, results)


def test_the_best_new_configurations_of_a_rung_go_on_from_their_checkpoints():
    config = load_config(halving_config(rungs=2, eta=2, population=8))
    gen0 = initial_population(config)
    n = len(gen0)
    assert gen0.batch == "gen000/rung0" and n == planned_size(config, "gen000/rung0")
    returns = [[float(10 * i)] * 2 for i in range(n)]
    returns[2] = [np.nan] * 2
    rung0 = record(config, gen0, returns, failed=(2,))
    rung1 = promoted_population(rung0)
    keep = n // 2
    best = sorted(range(n), key=lambda i: -1 if i == 2 else returns[i][0])[-keep:]
    assert rung1.batch == "gen000/rung1"
    assert rung1.parents[:, 0].tolist() == sorted(best)  # rung 0's order
    assert rung1.individuals == [gen0.individuals[i] for i in sorted(best)]
    assert (rung1.steps == config["training"]["steps"]).all()
    assert rung1.resumes == [f"gen000/rung0/ind{i:03d}.h5" for i in sorted(best)]
    np.testing.assert_array_equal(rung1.train_seeds, gen0.train_seeds[sorted(best)])
    assert len(rung1) == planned_size(config, "gen000/rung1")


def test_raced_copies_train_in_full_and_are_not_promoted():
    config = load_config(halving_config(rungs=2, eta=2, population=8))
    gen0 = record(
        config, initial_population(config), [[1.0, 1.0]] * len(initial_population(config))
    )
    combined_pop = gen0.population
    combined_pop.batch = "gen000"  # as if combined: every individual in full
    combined_pop.steps[:] = config["training"]["steps"]
    generation0 = generation_record(combined_pop, gen0.results)
    pop1 = next_population([generation0], config)
    raced = racing_slots(config)
    assert pop1.batch == "gen001/rung0"
    assert pop1.operators[:raced] == ["elite"] * raced
    assert (pop1.steps[:raced] == config["training"]["steps"]).all()
    assert (pop1.steps[raced:] == rung_steps(config)[0]).all()
    rung0 = record(config, pop1, [[1000.0, 1000.0]] * raced + [[1.0, 1.0]] * (len(pop1) - raced))
    promoted = promoted_population(rung0)
    assert min(promoted.parents[:, 0]) >= raced, "the raced copies are already in full"


def test_a_generation_combines_each_configuration_at_the_last_rung_it_reached():
    config = load_config(halving_config(rungs=2, eta=2, population=4))
    pop0 = initial_population(config)
    n = len(pop0)
    rung0 = record(config, pop0, [[float(i)] * 2 for i in range(n)])
    pop1 = promoted_population(rung0)
    rung1 = record(config, pop1, [[100.0 + i] * 2 for i in range(len(pop1))])
    generation = combine_rungs([rung0, rung1])
    assert generation.population.batch == "gen000"
    assert generation.population.individuals == pop0.individuals
    for j, i in enumerate(pop1.parents[:, 0]):
        assert generation.results["returns"][i].tolist() == [100.0 + j] * 2
        assert generation.population.steps[i] == config["training"]["steps"]
    dropped = sorted(set(range(n)) - set(pop1.parents[:, 0]))
    for i in dropped:
        assert generation.results["returns"][i].tolist() == [float(i)] * 2
        assert generation.population.steps[i] == rung_steps(config)[0]
    # whatever their returns, configurations trained in full rank first and alone are evidence
    full = generation.population.complete()
    assert generation.rank_key[full].max() < generation.rank_key[~full].min()
    assert (generation.evidence.seeds == 2).all()


def train_batch(pop, folder: Path) -> list[Path]:
    write_population(folder / "population.h5", pop)
    outs = [folder / f"ind{i:03d}.h5" for i in range(len(pop))]
    run_job(folder / "population.h5", list(range(len(pop))), outs)
    return outs


def test_a_promoted_configuration_ends_as_if_it_had_never_stopped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # results_dir "results" is relative
    config = load_config(halving_config(rungs=2, eta=2, population=4))
    campaign = tmp_path / "results" / "tiny"
    pop0 = initial_population(config)
    outs0 = train_batch(pop0, campaign / "gen000" / "rung0")
    records0 = record(config, pop0, [read_individual_arrays(p)["returns"] for p in outs0])
    pop1 = promoted_population(records0)
    for origin in pop1.parents[:, 0]:  # the rung's checkpoints wait for the next rung
        assert len(list(checkpoint_dir(outs0[origin]).glob("seed*.pt"))) == 2
    outs1 = train_batch(pop1, campaign / "gen000" / "rung1")

    # the same configurations and seeds trained in one go
    straight = read_population(campaign / "gen000" / "rung1" / "population.h5")
    straight.batch, straight.resumes = "gen000", [""] * len(straight)
    outs = train_batch(straight, campaign / "straight")
    for continued, uninterrupted in zip(outs1, outs, strict=True):
        with h5py.File(continued) as a, h5py.File(uninterrupted) as b:
            for name in ("returns", "episode_returns", "env_steps", "curve_returns"):
                np.testing.assert_array_equal(a[name][()], b[name][()])
            for seed in a["weights"]:
                for weight in a["weights"][seed]:
                    np.testing.assert_array_equal(
                        a["weights"][seed][weight][()], b["weights"][seed][weight][()]
                    )
        assert not checkpoint_dir(continued).exists(), "a full training keeps no checkpoint"


def halving_arrays(results: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted([*results.glob("gen*.h5"), *results.glob("gen*/rung*.h5")]):
        with h5py.File(path) as f:
            name = str(path.relative_to(results))
            for dataset in ("returns", "episode_returns", "env_steps", "objectives", "estimate"):
                out[f"{name}/{dataset}"] = f["results"][dataset][()]
            out[f"{name}/steps"] = f["population/steps"][()]
    return out


@pytest.fixture(scope="module")
def uninterrupted_halving(tmp_path_factory) -> dict[str, np.ndarray]:
    workdir = copy_workflow(tmp_path_factory.mktemp("halving"))
    config = halving_config()
    config["retest"]["seeds"] = 0
    write_config(workdir, config)
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    results = workdir / "results" / "tiny"
    assert (results / "gen001" / "rung1.h5").exists()
    assert not list(results.glob("**/*.ckpt")), "no checkpoint outlives its generation"
    return halving_arrays(results)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_point", ["gen000/rung1/*.ckpt/seed*.pt", "gen000/rung1/ind*.h5", "gen001/rung0.h5"]
)
def test_kill_mid_rung_then_rerun_gives_the_same_campaign(
    workdir, uninterrupted_halving, kill_point
):
    config = halving_config()
    config["retest"]["seeds"] = 0
    write_config(workdir, config)
    results = workdir / "results" / "tiny"
    proc = _start_snakemake(workdir)
    _wait_for(lambda: any(results.glob(kill_point)), proc)
    _kill_all(proc)
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    arrays = halving_arrays(results)
    assert arrays.keys() == uninterrupted_halving.keys()
    for key, expected in uninterrupted_halving.items():
        np.testing.assert_array_equal(arrays[key], expected, err_msg=key)


def test_dry_run_shows_each_rung_as_a_batch(workdir):
    write_config(workdir, halving_config())
    done = snakemake(workdir, "-n", "--printshellcmds")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert (
        "hpsrl promote --out results/tiny/gen000/rung1/population.h5 results/tiny/gen000/rung0.h5"
        in out
    )
    assert (
        "hpsrl collect --rungs results/tiny/gen001/rung0.h5 results/tiny/gen001/rung1.h5 "
        "--out results/tiny/gen001.h5 --previous results/tiny/gen000.h5" in out
    )


@pytest.mark.parametrize("strategy", ["ga", "random", "bo"])
@pytest.mark.parametrize(
    "search",
    [
        {"racing": {"share": 0}},
        {},  # racing a quarter of each generation
        {"fidelity": {"rungs": 2, "eta": 2}},
        {"fidelity": {"rungs": 3, "eta": 2}, "racing": {"share": 0.5, "top": 1}},
    ],
)
def test_every_strategy_is_charged_at_most_a_generation_of_full_trainings(strategy, search):
    raw = halving_config(population=8)
    raw["search"] = {"strategy": strategy, **search}
    config = load_config(raw)
    budget = config["budget"]["population"] * config["training"]["steps"]  # per seed
    gen0 = initial_population(config)
    returns = [[float(i)] * 2 for i in range(len(gen0))]
    first = record(config, gen0, returns)
    if len(rung_steps(config)) > 1:  # as if combined: every individual in full
        full = np.full(len(gen0), config["training"]["steps"])
        combined = dataclasses.replace(gen0, batch="gen000", steps=full)
        first = generation_record(combined, first.results)
    pop1 = next_population([first], config)
    for pop, generation in ((gen0, 0), (pop1, 1)):
        spent = env_steps_planned(config, generation)
        if len(rung_steps(config)) == 1:
            assert spent == budget, "without rungs, exactly budget.population full trainings"
            assert int(pop.steps.sum()) == budget
        else:
            assert budget * 0.75 < spent <= budget
            assert int(pop.steps.sum()) <= budget
