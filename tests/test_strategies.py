"""Search strategies besides the GA (search.strategy): random search, Bayesian optimisation."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess

import h5py
import numpy as np
import optuna
import pytest
import yaml

from hpsrl.campaign.config import ConfigError, load_config, search_space
from hpsrl.campaign.identity import config_hash
from hpsrl.campaign.paths import batch_name
from hpsrl.campaign.storage import read_population, write_generation
from hpsrl.cli import main
from hpsrl.readers.summary import best_summary
from hpsrl.search import generation as hpsrl_generation
from hpsrl.search.bayesopt import history_study
from hpsrl.search.evolve import (
    best_of,
    initial_population,
    next_population,
    retest_population,
)
from tests.test_workflow import BIN, snakemake, write_config

LR_LOW, LR_HIGH = 1e-4, 3e-3  # the tiny config's learning_rate gene


def strategy_config(tiny_config, strategy, sampler="tpe", racing=None, **budget):
    """The tiny config with ``strategy``, judging each generation on its own seeds (pooling has
    tests of its own: tests/test_evidence.py). The GA races its elites (search.racing's
    default); random search and BO race nothing unless ``racing`` says so, as before racing."""
    if racing is None:
        racing = {} if strategy == "ga" else {"share": 0}
    tiny_config["search"] = {
        "strategy": strategy,
        "sampler": sampler,
        "evidence": "fresh",
        "racing": racing,
    }
    tiny_config["budget"].update(budget)
    return load_config(tiny_config)


def lr_position(individual) -> float:
    """Where an individual's learning rate lies in its log range: 0 at the bottom, 1 at the top."""
    return math.log(individual["learning_rate"] / LR_LOW) / math.log(LR_HIGH / LR_LOW)


def generation_record(config, generation, individuals, returns, steps=None, failed=()):
    """Generation ``generation`` with the given returns (and steps to threshold), no training."""
    n, s = len(individuals), config["training"]["seeds"]
    e, p = config["training"]["eval_episodes"], config["training"]["curve_points"]
    first = initial_population(config)
    assert n <= len(first)
    population = dataclasses.replace(
        first,
        batch=batch_name(generation),
        individuals=individuals,
        train_seeds=first.train_seeds[:n],
        eval_seeds=first.eval_seeds[:n],
        steps=None,
        resumes=None,
    )
    per_seed = np.ones((n, s))
    steps = np.full(n, config["training"]["steps"]) if steps is None else steps
    results = {
        "returns": per_seed * np.asarray(returns, float)[:, None],
        "episode_returns": np.zeros((n, s, e)),
        "steps_to_threshold": per_seed * np.asarray(steps, float)[:, None],
        "env_steps": np.full((n, s), config["training"]["steps"]),
        "train_seconds": per_seed,
        "eval_seconds": per_seed,
        "curve_steps": np.arange(p),
        "curve_returns": np.zeros((n, s, p)),
        "status": np.array(["failed" if i in failed else "ok" for i in range(n)]),
        "error": np.array(["diverged" if i in failed else "" for i in range(n)]),
    }
    return hpsrl_generation.generation_record(population, results)


def low_lr_is_better(config, generations, size, seed=1):
    """Random generations where return falls, and steps to threshold rise, with the learning
    rate: the low end of its range is clearly the place to be."""
    space = search_space(config)
    rng = np.random.default_rng(seed)
    history = []
    for g in range(generations):
        individuals = [space.sample(rng) for _ in range(size)]
        position = np.array([lr_position(i) for i in individuals])
        history.append(
            generation_record(config, g, individuals, 500 * (1 - position), 1000 * position)
        )
    return history


# --- random search -------------------------------------------------------------------------


def test_random_search_samples_afresh_reproducibly_whatever_the_history(tiny_config):
    config = strategy_config(tiny_config, "random")
    space = search_space(config)
    gen0 = initial_population(config).individuals
    good = generation_record(config, 0, gen0, [500, 400, 300, 200])
    bad = generation_record(config, 0, gen0, [1, 2, 3, 4], failed=(0, 1))

    gen1 = next_population([good], config)
    assert gen1.batch == "gen001"
    assert gen1.individuals == next_population([bad], config).individuals, "history is ignored"
    assert gen1.operators == ["random"] * 4
    assert (gen1.parents == -1).all()
    assert all(space.contains(individual) for individual in gen1.individuals)
    assert not set(map(repr, gen1.individuals)) & set(map(repr, gen0))

    later = generation_record(config, 1, gen1.individuals, [1, 2, 3, 4])
    gen2 = next_population([good, later], config)
    assert gen2.individuals != gen1.individuals
    assert gen2.individuals == next_population([later], config).individuals


# --- Bayesian optimisation -----------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_bo_proposals_are_valid_reproducible_and_not_random(tiny_config, sampler):
    config = strategy_config(tiny_config, "bo", sampler, population=6)
    history = low_lr_is_better(config, generations=2, size=6)

    proposed = next_population(history, config)
    assert proposed.batch == "gen002"
    assert proposed.operators == [f"bo-{sampler}"] * 6
    assert (proposed.parents == -1).all()
    space = search_space(config)
    assert all(space.contains(individual) for individual in proposed.individuals)
    assert next_population(history, config).individuals == proposed.individuals
    random = next_population(history, strategy_config(tiny_config, "random", population=6))
    assert proposed.individuals != random.individuals
    assert len({repr(individual) for individual in proposed.individuals}) == 6, "a batch spreads"


@pytest.mark.parametrize("sampler, size", [("tpe", 16), ("gp", 6)])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_bo_proposes_where_the_history_is_better(tiny_config, sampler, size, direction):
    tiny_config["objectives"] = [{"name": "return", "direction": direction}]
    config = strategy_config(tiny_config, "bo", sampler, population=size)
    history = low_lr_is_better(config, generations=3, size=size)
    random_share = np.mean(
        [lr_position(i) < 0.5 for g in history for i in g.population.individuals]
    )

    proposed = next_population(history, config).individuals
    share = np.mean([lr_position(individual) < 0.5 for individual in proposed])
    # Random samples fall into the better half about half the time; the proposals nearly always
    # do (all of them here), on the side the objective's direction makes better.
    if direction == "maximize":
        assert share >= 0.75 > random_share
    else:
        assert share <= 0.25 < random_share


def test_bo_with_two_objectives_proposes_where_both_are_better(tiny_config):
    config = strategy_config(tiny_config, "bo", population=8)
    assert [o["direction"] for o in config["objectives"]] == ["maximize", "minimize"]
    history = low_lr_is_better(config, generations=3, size=8)
    proposed = next_population(history, config).individuals
    assert np.mean([lr_position(individual) < 0.5 for individual in proposed]) >= 0.75


def test_history_becomes_finished_trials_with_conditional_list_positions(tiny_config):
    config = strategy_config(tiny_config, "bo")
    gen0 = initial_population(config).individuals
    history = [generation_record(config, 0, gen0, [10, 20, 30, 40], failed=(1, 3))]
    study = history_study(history, config, seed=0)

    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    states = [trial.state for trial in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL] * 2
    assert study.trials[2].values == list(history[0].objectives[2])
    for trial, individual in zip(study.trials, gen0, strict=True):
        widths = individual["hidden_sizes"]
        assert trial.params["hidden_sizes.length"] == len(widths)
        positions = sorted(name for name in trial.params if name.startswith("hidden_sizes["))
        assert positions == [f"hidden_sizes[{i}]" for i in range(len(widths))]
        assert trial.params["activation"] == individual["activation"]


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_bo_after_only_failures_still_proposes_valid_genes(tiny_config, sampler):
    config = strategy_config(tiny_config, "bo", sampler)
    gen0 = initial_population(config).individuals
    history = [generation_record(config, 0, gen0, [0, 0, 0, 0], failed=(0, 1, 2, 3))]
    proposed = next_population(history, config).individuals
    assert all(search_space(config).contains(individual) for individual in proposed)


def test_bo_needs_the_whole_history(tiny_config):
    config = strategy_config(tiny_config, "bo")
    gen1 = low_lr_is_better(config, generations=2, size=4)[1]
    with pytest.raises(ValueError, match="pass every earlier generation file"):
        next_population([gen1], config)


# --- the best individual -------------------------------------------------------------------


def early_peak(config):
    """Three generations whose best return is in generation 0 (individual 2); generation 2's best
    is its individual 1."""
    space = search_space(config)
    rng = np.random.default_rng(3)
    returns = [[10, 20, 500, 30], [100, 200, 150, 50], [60, 300, 70, 80]]
    return [
        generation_record(config, g, [space.sample(rng) for _ in range(4)], r)
        for g, r in enumerate(returns)
    ]


@pytest.mark.parametrize(
    "strategy, generation, individual", [("ga", 2, 1), ("random", 0, 2), ("bo", 0, 2)]
)
def test_retest_takes_the_best_of_all_generations_except_for_ga(
    tiny_config, strategy, generation, individual
):
    config = strategy_config(tiny_config, strategy)
    history = early_peak(config)
    retest = retest_population(history, config)
    assert retest.individuals == [history[generation].population.individuals[individual]]
    assert retest.parents.tolist() == [[individual, -1]]


def test_best_of_several_generations_breaks_primary_ties_by_the_other_objectives(tiny_config):
    config = strategy_config(tiny_config, "random")
    space = search_space(config)
    rng = np.random.default_rng(4)
    # Both generations reach return 500; generation 1's does it in fewer steps.
    history = [
        generation_record(config, g, [space.sample(rng) for _ in range(4)], r, s)
        for g, (r, s) in enumerate([([500, 1, 2, 3], [900] * 4), ([4, 5, 500, 6], [300] * 4)])
    ]
    source, best = best_of(history)
    assert (source.population.batch, best) == ("gen001", 2)


@pytest.mark.parametrize("strategy, generation", [("ga", "gen002"), ("bo", "gen000")])
def test_hpsrl_best_reports_the_best_of_all_generations_except_for_ga(
    tiny_config, tmp_path, strategy, generation
):
    config = strategy_config(tiny_config, strategy)
    history = early_peak(config)
    for record in history:
        write_generation(tmp_path / f"{record.population.batch}.h5", record)
    retest = retest_population(history, config)
    write_generation(
        tmp_path / "retest.h5",
        dataclasses.replace(
            generation_record(config, 0, retest.individuals, [480]), population=retest
        ),
    )

    summary = best_summary(tmp_path)
    assert summary["generation"] == generation
    assert summary["objectives"]["return"] == (500 if strategy == "bo" else 300)
    assert summary["retest"]["returns_per_seed"] == [480, 480]


def test_a_retest_of_another_individual_is_not_reported(tiny_config, tmp_path):
    config = strategy_config(tiny_config, "random")
    history = early_peak(config)
    for record in history:
        write_generation(tmp_path / f"{record.population.batch}.h5", record)
    stale = retest_population(history[1:], config)  # planned before generation 0 was counted
    write_generation(
        tmp_path / "retest.h5",
        dataclasses.replace(
            generation_record(config, 0, stale.individuals, [480]), population=stale
        ),
    )
    assert "retest" not in best_summary(tmp_path)


# --- the command line and the workflow ------------------------------------------------------


def test_evolve_command_reads_every_generation_given_and_sets_damaged_ones_aside(
    tiny_config, tmp_path, capsys
):
    config = strategy_config(tiny_config, "bo")
    files = []
    for record in low_lr_is_better(config, generations=2, size=4):
        files.append(tmp_path / f"{record.population.batch}.h5")
        write_generation(files[-1], record)
    out = tmp_path / "gen002" / "population.h5"
    assert main(["evolve", "--out", str(out), *map(str, files)]) == 0
    with h5py.File(out) as f:
        assert list(f["population/operator"].asstr()[()]) == ["bo-tpe"] * 4
        assert (f["population/parents"][()] == -1).all()

    files[0].write_bytes(files[0].read_bytes()[:300])
    assert main(["evolve", "--out", str(out), *map(str, files)]) == 1
    assert "moved it aside" in capsys.readouterr().err
    assert files[0].with_name("gen000.h5.corrupt").exists()


def test_bo_proposals_are_the_same_in_another_process(tiny_config, tmp_path):
    """Nothing in the proposals depends on the process (e.g. on the hash seed of sets)."""
    config = strategy_config(tiny_config, "bo")
    files = []
    for record in low_lr_is_better(config, generations=2, size=4):
        files.append(str(tmp_path / f"{record.population.batch}.h5"))
        write_generation(files[-1], record)
    genes = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed / "population.h5"
        done = subprocess.run(
            [str(BIN / "hpsrl"), "evolve", "--out", str(out), *files],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        genes.append(read_population(out).individuals)
    assert genes[0] == genes[1]


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("strategy", "bayes", ["'search.strategy'", "ga, random, bo"]),
        ("sampler", "cmaes", ["'search.sampler'", "tpe, gp"]),
    ],
)
def test_unknown_strategy_or_sampler_is_a_one_line_config_error(tiny_config, key, value, words):
    tiny_config["search"] = {key: value}
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_ga_settings_are_checked_only_for_the_ga(tiny_config):
    tiny_config["budget"].update(population=2)
    tiny_config["ga"].update(tournament_size=3)
    for strategy in ("random", "bo"):
        tiny_config["search"] = {"strategy": strategy}
        load_config(tiny_config)
    tiny_config["search"] = {"strategy": "ga"}
    with pytest.raises(ConfigError, match=r"ga\.tournament_size"):
        load_config(tiny_config)


def test_the_strategy_is_part_of_the_config_hash(tiny_config):
    hashes = {config_hash(strategy_config(tiny_config, s)) for s in ("ga", "random", "bo")}
    assert len(hashes) == 3


def test_bo_plan_reads_every_generation(workdir, tiny_config):
    """Proposals read every generation; so does the re-test where racing carries nothing."""
    tiny_config["search"] = {"strategy": "bo", "racing": {"share": 0}}
    tiny_config["budget"]["generations"] = 3
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-n", "--printshellcmds")
    assert done.returncode == 0, done.stderr[-2000:]
    results = "results/tiny"
    gens = [f"{results}/gen00{g}.h5" for g in range(3)]
    assert f"hpsrl evolve --out {results}/gen002/population.h5 {gens[0]} {gens[1]} " in done.stdout
    assert f"hpsrl retest --out {results}/retest/population.h5 {' '.join(gens)} " in done.stdout


def test_ga_plan_reads_only_the_previous_and_the_final_generation(workdir, tiny_config):
    tiny_config["budget"]["generations"] = 3
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-n", "--printshellcmds")
    assert done.returncode == 0, done.stderr[-2000:]
    results = "results/tiny"
    assert f"--out {results}/gen002/population.h5 {results}/gen001.h5 >" in done.stdout
    assert f"--out {results}/retest/population.h5 {results}/gen002.h5 >" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("strategy, operator", [("bo", "bo-tpe"), ("random", "random")])
def test_tiny_campaign_with_another_strategy(workdir, tiny_config, strategy, operator):
    """The strategy proposes what racing leaves (by default a quarter of the population: one of
    the tiny 4 re-trains the best so far), and the answer is that raced configuration."""
    tiny_config["search"] = {"strategy": strategy}
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    results = workdir / "results" / "tiny"

    for g in range(2):
        with h5py.File(results / f"gen00{g}.h5") as f:
            assert f["results/returns"].shape == (4, 2)
            assert f["results/objectives"].shape == (4, 2)
            # its own genes and ppo's default ones
            assert set(f["population/genes"]) == set(search_space(load_config(tiny_config)).names)
            assert f["population/genes/hidden_sizes"].shape == (4, 2)
            operators = list(f["population/operator"].asstr()[()])
            parents = f["population/parents"][()]
            if g == 0:
                assert operators == ["random"] * 4 and (parents == -1).all()
            else:
                assert operators == ["elite"] + [operator] * 3
                assert parents[0, 0] >= 0 and (parents[1:] == -1).all()
            assert (f["results/status"].asstr()[()] == "ok").all()
            assert json.loads(f.attrs["config"])["search"]["strategy"] == strategy
    best = yaml.safe_load((results / "best.yaml").read_text())
    assert (best["generation"], best["individual"]) == ("gen001", 0), "the raced configuration"
    assert best["evidence_seeds"] == 4, "its 2 seeds of generation 0 and 2 fresh ones"
    assert len(best["retest"]["returns_per_seed"]) == 2
    with h5py.File(results / "retest.h5") as f:
        assert list(f["population/operator"].asstr()[()]) == ["retest"]
