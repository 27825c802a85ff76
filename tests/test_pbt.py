"""Weight inheritance (ga.inherit_weights, PBT-style): the config checks, agents that start from
given weights, and children that start from their parent's weights and record their lineage."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from hpsrl.agents import get_algorithm, make_hyperparameters, ppo
from hpsrl.agents.checkpoints import Checkpointing
from hpsrl.agents.episodes import evaluate
from hpsrl.agents.run import RunSettings
from hpsrl.campaign.config import (
    ConfigError,
    compared_campaigns,
    load_config,
)
from hpsrl.campaign.identity import changed_keys, config_hash
from hpsrl.campaign.model import IndividualResult, Population, SeedResult
from hpsrl.campaign.storage import (
    StorageError,
    read_generation,
    read_individual_arrays,
    read_population,
    read_weights,
    write_generation,
    write_individual,
    write_population,
)
from hpsrl.envs.spec import EnvSpec
from hpsrl.readers.summary import best_summary
from hpsrl.search.evolve import initial_population, next_population
from hpsrl.search.generation import collect
from hpsrl.training.train import inherited_from, train_seed
from tests.test_workflow import snakemake, write_config

CARTPOLE = EnvSpec("CartPole-v1")
BIN = Path(sys.executable).parent
SMALL = {
    "ppo": {"num_envs": 4, "num_steps": 32, "batch_size": 64, "update_epochs": 2},
    "dqn": {"learning_starts": 100, "train_frequency": 16, "gradient_steps": 4},
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _inheriting(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (the tiny campaign) with weight inheritance: its architecture genes fixed."""
    config = copy.deepcopy(config)
    for name in ("activation", "hidden_sizes"):
        del config["genes"][name]
    config["fixed"] |= {"activation": "tanh", "hidden_sizes": [16]}
    config["ga"]["inherit_weights"] = True
    return config


def _train(
    algorithm: str, steps: int, seed: int = 0, hp: dict[str, Any] | None = None, **kwargs: Any
) -> Any:
    """A short run on CartPole (evaluated on 3 episodes of eval seed 5)."""
    hyperparameters = make_hyperparameters(algorithm, {**SMALL[algorithm], **(hp or {})})
    return get_algorithm(algorithm).train(
        CARTPOLE, hyperparameters, RunSettings(steps, seed, eval_seed=5, eval_episodes=3, **kwargs)
    )


def _arrays(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in state.items()}


# -- Config --------------------------------------------------------------------------------------


def test_off_by_default_and_hashed_only_when_on(tiny_config):
    config = load_config(tiny_config)
    assert config["ga"]["inherit_weights"] is False
    # A config stored before the key existed has the same hash: its campaign goes on.
    older = copy.deepcopy(config)
    del older["ga"]["inherit_weights"]
    assert config_hash(older) == config_hash(config)
    assert changed_keys(older, config) == []
    on = load_config(_inheriting(tiny_config))
    off = copy.deepcopy(on)
    off["ga"]["inherit_weights"] = False
    assert config_hash(on) != config_hash(off), "inheriting changes what results mean"
    assert changed_keys(off, on) == ["ga.inherit_weights"]


@pytest.mark.parametrize("strategy", ["random", "bo"])
def test_needs_the_ga(tiny_config, strategy):
    config = _inheriting(tiny_config)
    config["search"] = {"strategy": strategy}
    with pytest.raises(ConfigError, match=f"search.strategy {strategy} has no parents") as info:
        load_config(config)
    assert "ga.inherit_weights: false" in str(info.value)


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
@pytest.mark.parametrize("gene", ["hidden_sizes", "activation"])
def test_genes_that_change_the_network_must_be_fixed(tiny_config, algorithm, gene):
    config = _inheriting(tiny_config)
    config["algorithm"] = algorithm
    config["fixed"] = {}  # the ppo rollout settings mean nothing to dqn
    config["genes"][gene] = tiny_config["genes"][gene]
    with pytest.raises(ConfigError, match=rf"genes \['{gene}'\] change the network") as info:
        load_config(config)
    assert "from 'genes' to 'fixed'" in str(info.value)
    del config["genes"][gene]
    assert load_config(config)["ga"]["inherit_weights"]


def test_compared_strategies_other_than_ga_train_from_scratch(tiny_config):
    config = _inheriting(tiny_config)
    config["compare"] = {"strategies": ["ga", "random", "bo"], "search_seeds": 1}
    campaigns = compared_campaigns(load_config(config))
    inherit = {c["search"]["strategy"]: c["ga"]["inherit_weights"] for c in campaigns.values()}
    assert inherit == {"ga": True, "random": False, "bo": False}


# -- Agents that start from given weights ----------------------------------------------------------


@pytest.fixture(scope="module")
def trained_ppo() -> Any:
    """A PPO agent that balances CartPole well (default hyperparameters, about a second)."""
    torch.set_num_threads(1)
    result = ppo.train(CARTPOLE, ppo.Hyperparameters(), RunSettings(20_000, seed=0, eval_seed=1))
    assert result.eval_returns.mean() > 200, "the parent must be well trained for these tests"
    return result


def test_ppo_starts_from_the_given_weights(trained_ppo):
    # A learning rate so small that training leaves the weights as they were: the run's
    # evaluation is that of the weights it started from.
    weights = _arrays(trained_ppo.model_state)
    hp = {**dataclasses.asdict(ppo.Hyperparameters()), "learning_rate": 1e-12}
    child = _train("ppo", 512, hp=hp, initial_weights=weights)
    parent_policy = ppo.greedy_policy(CARTPOLE, make_hyperparameters("ppo", hp), weights)
    expected = evaluate(parent_policy, CARTPOLE, 3, seed=5)
    assert expected.mean() > 200
    np.testing.assert_allclose(child.eval_returns, expected)
    for name, tensor in child.model_state.items():
        np.testing.assert_allclose(tensor.numpy(), weights[name], atol=1e-6, err_msg=name)
    scratch = _train("ppo", 512, hp=hp)
    assert scratch.eval_returns.mean() < 50, "from scratch the same run balances nothing"


def test_dqn_starts_from_the_given_weights():
    # learning_starts beyond the budget: no gradient step, so the weights stay the given ones.
    parent = _train("dqn", 600, seed=1)
    weights = _arrays(parent.model_state)
    child = _train("dqn", 64, hp={"learning_starts": 1_000}, initial_weights=weights)
    for name, tensor in child.model_state.items():
        np.testing.assert_array_equal(tensor.numpy(), weights[name], err_msg=name)
    np.testing.assert_array_equal(child.eval_returns, parent.eval_returns)  # same eval seed
    scratch = _train("dqn", 64, hp={"learning_starts": 1_000})
    assert not np.array_equal(scratch.model_state["q.0.weight"].numpy(), weights["q.0.weight"])


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_weights_that_do_not_fit_are_refused_by_name(algorithm):
    weights = _arrays(_train(algorithm, 64, hp={"hidden_sizes": [8]}).model_state)
    first = next(iter(weights))
    with pytest.raises(ValueError, match=rf"wrong shape: {first} \(8, 4\) \(the network's: "):
        _train(algorithm, 64, hp={"hidden_sizes": [16]}, initial_weights=weights)
    renamed = {**weights, "extra.weight": weights[first]}
    del renamed[first]
    with pytest.raises(ValueError, match=rf"missing: {first}; unexpected: extra\.weight"):
        _train(algorithm, 64, hp={"hidden_sizes": [8]}, initial_weights=renamed)


def test_a_checkpoint_of_a_run_from_other_weights_is_not_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "seed0.pt"
    scratch = _train("ppo", 256, checkpoint=Checkpointing(path, every_steps=128))
    weights = _arrays(scratch.model_state)
    with caplog.at_level(logging.WARNING, logger="hpsrl"):
        inherited = _train(
            "ppo", 256, checkpoint=Checkpointing(path, every_steps=128), initial_weights=weights
        )
    assert "belongs to another run (differs in initial_weights)" in caplog.text
    plain = _train("ppo", 256, initial_weights=weights)
    np.testing.assert_array_equal(inherited.eval_returns, plain.eval_returns)
    for name, tensor in plain.model_state.items():
        assert torch.equal(tensor, inherited.model_state[name]), name

    caplog.clear()  # the same weights again: the checkpoint is this run's and resumes
    with caplog.at_level(logging.INFO, logger="hpsrl"):
        _train("ppo", 256, checkpoint=Checkpointing(path, every_steps=128), initial_weights=weights)
    assert "resuming from env step" in caplog.text
    assert "another run" not in caplog.text


# -- One seed of a child: train_seed ---------------------------------------------------------------


def _child_of(config: dict[str, Any], parents: list[int]) -> Population:
    """Generation 1 of ``config`` with one child per entry of ``parents`` (its first parent)."""
    pop = initial_population(config)
    n = len(parents)
    return Population(
        batch="gen001",
        config=config,
        individuals=pop.individuals[:n],
        parents=np.array([[p, -1] for p in parents], dtype=np.int64),
        operators=["elite"] * n,
        train_seeds=pop.train_seeds[:n] + 1,
        eval_seeds=pop.eval_seeds[:n] + 1,
    )


def _write_parent(config: dict[str, Any], seeds: list[SeedResult]) -> Path:
    """gen000/ind000.h5 of ``config``'s campaign holding ``seeds``."""
    pop = initial_population(config)
    path = Path(config["results_dir"]) / config["campaign"] / "gen000" / "ind000.h5"
    result = IndividualResult(
        batch="gen000",
        individual=0,
        hyperparameters=pop.hyperparameters(0),
        train_seeds=pop.train_seeds[0],
        eval_seeds=pop.eval_seeds[0],
        seeds=seeds,
        eval_episodes=config["training"]["eval_episodes"],
        curve_points=config["training"]["curve_points"],
        steps=config["training"]["steps"],
    )
    write_individual(path, result, config)
    return path


def test_a_child_of_a_well_trained_parent_evaluates_well_at_once(
    tiny_config, tmp_path, trained_ppo
):
    config = _inheriting(tiny_config)
    config["results_dir"] = str(tmp_path / "results")
    config["genes"] = {"gamma": config["genes"]["gamma"]}
    # Default (parent's) network and rollouts, a learning rate that leaves the weights as they are,
    # one rollout of training.
    config["fixed"] = {"hidden_sizes": [64, 64], "activation": "tanh", "learning_rate": 1e-12}
    config["training"] |= {"steps": 512, "seeds": 2}
    config = load_config(config)
    weights = _arrays(trained_ppo.model_state)
    parent = SeedResult(status="ok", weights=weights, env_steps=20_480, lineage_env_steps=20_480)
    failed = SeedResult(status="failed", error="TrainingDiverged: loss became nan")
    _write_parent(config, [parent, failed])
    child = _child_of(config, [0])

    result = train_seed(child, 0, 0)
    assert result.status == "ok", result.error
    assert result.eval_returns.mean() > 200  # a random policy gets about 22
    assert result.weights_from == "gen000/ind000.h5"
    assert result.lineage_env_steps == 20_480 + result.env_steps

    scratch = copy.deepcopy(child)
    scratch.config["ga"]["inherit_weights"] = False
    assert inherited_from(scratch, 0) == ""
    alone = train_seed(scratch, 0, 0)
    assert alone.eval_returns.mean() < 50
    assert alone.lineage_env_steps == alone.env_steps and alone.weights_from == ""

    # The parent's seed 1 failed, so the child's seed 1 has nothing to start from: it fails.
    orphan = train_seed(child, 0, 1)
    assert orphan.status == "failed"
    assert "gen000/ind000.h5 seed 1 failed (TrainingDiverged: loss became nan)" in orphan.error
    assert orphan.weights_from == "gen000/ind000.h5"


def test_a_missing_parent_file_fails_the_job_not_the_child(tiny_config, tmp_path):
    config = _inheriting(tiny_config)
    config["results_dir"] = str(tmp_path / "results")
    config = load_config(config)
    with pytest.raises(StorageError, match=r"gen000/ind002\.h5 \(ga.inherit_weights\), which is"):
        train_seed(_child_of(config, [0, 2]), 1, 0)
    # Generation 0 trains from scratch.
    assert inherited_from(initial_population(config), 0) == ""


# -- Two generations through the training command ------------------------------------------------


def _train_batch(campaign: Path, batch: str, n: int, cwd: Path) -> tuple[list[Path], str]:
    """``hpsrl train`` of a whole batch in one job, from ``cwd``; its result files and log."""
    outs = [campaign / batch / f"ind{i:03d}.h5" for i in range(n)]
    command = [sys.executable, "-m", "hpsrl", "train",
               "--population", str(campaign / batch / "population.h5"),
               "--individual", *map(str, range(n)), "--out", *map(str, outs)]  # fmt: skip
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return outs, done.stderr


def _train_child(pop: Population, i: int, k: int, parent: Path) -> Any:
    """Seed ``k`` of individual ``i`` trained here, from seed ``k`` of ``parent``."""
    config = pop.config
    return get_algorithm(config["algorithm"]).train(
        CARTPOLE,
        make_hyperparameters(config["algorithm"], pop.hyperparameters(i)),
        RunSettings(
            config["training"]["steps"],
            int(pop.train_seeds[i, k]),
            eval_seed=int(pop.eval_seeds[i, k]),
            eval_episodes=config["training"]["eval_episodes"],
            curve_points=config["training"]["curve_points"],
            return_threshold=50.0,
            initial_weights=read_weights(parent, k),
        ),
    )


def test_children_record_their_parents_and_lineage(tiny_config, tmp_path):
    tiny_config["budget"]["population"] = 3
    config = load_config(_inheriting(tiny_config))  # results_dir "results", relative to the job
    campaign = tmp_path / "results" / "tiny"
    pop, generation = initial_population(config), None
    for g in (0, 1):
        batch = f"gen{g:03d}"
        write_population(campaign / batch / "population.h5", pop)
        outs, _ = _train_batch(campaign, batch, len(pop), cwd=tmp_path)
        generation = collect(read_population(campaign / batch / "population.h5"), outs, generation)
        write_generation(campaign / f"{batch}.h5", generation)
        pop = next_population([read_generation(campaign / f"{batch}.h5")], config)

    gen0, gen1 = (read_generation(campaign / f"gen00{g}.h5") for g in (0, 1))
    assert gen0.ok.all() and gen1.ok.all()
    np.testing.assert_array_equal(gen0.results["lineage_env_steps"], gen0.results["env_steps"])
    for i, (parent, _) in enumerate(gen1.population.parents):
        path = campaign / "gen001" / f"ind{i:03d}.h5"
        source = f"gen000/ind{parent:03d}.h5"
        assert read_individual_arrays(path)["weights_from"].tolist() == [source, source]
        np.testing.assert_array_equal(
            gen1.results["lineage_env_steps"][i],
            gen0.results["lineage_env_steps"][parent] + gen1.results["env_steps"][i],
        )
    assert (gen1.results["lineage_env_steps"] == 2 * gen0.results["env_steps"]).all()

    # Seed 1 of a child is what training its hyperparameters from its parent's seed 1 gives.
    i, parent = 1, int(gen1.population.parents[1, 0])
    child = _train_child(gen1.population, i, 1, campaign / "gen000" / f"ind{parent:03d}.h5")
    for name, array in read_weights(campaign / "gen001" / f"ind{i:03d}.h5", 1).items():
        np.testing.assert_array_equal(child.model_state[name].numpy(), array, err_msg=name)

    best = best_summary(campaign)
    assert best["generation"] == "gen001"
    lineage = gen1.results["lineage_env_steps"][best["individual"]]
    assert best["lineage_env_steps"] == lineage.tolist()

    # As after a kill: the job's rerun keeps the results there and trains the missing one again,
    # from the same parent weights, to the same result.
    lost = campaign / "gen001" / "ind002.h5"
    before = read_weights(lost, 0)
    lost.unlink()
    _, log = _train_batch(campaign, "gen001", len(gen1.population), cwd=tmp_path)
    assert "ind000.h5: already trained, kept" in log
    assert "ind002.h5: already trained" not in log
    for name, array in read_weights(lost, 0).items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


@pytest.mark.slow
def test_a_campaign_with_inheritance_runs_through_snakemake(workdir, tiny_config):
    # The DAG trains generation 1 only once generation 0 is collected, so its parents' result
    # files are there; the re-test trains the best from scratch.
    write_config(workdir, _inheriting(tiny_config))
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    results = workdir / "results" / "tiny"
    gen1 = read_generation(results / "gen001.h5")
    for i, (parent, _) in enumerate(gen1.population.parents):
        weights_from = read_individual_arrays(results / "gen001" / f"ind{i:03d}.h5")["weights_from"]
        assert weights_from.tolist() == [f"gen000/ind{parent:03d}.h5"] * 2
    retest = read_individual_arrays(results / "retest" / "ind000.h5")
    assert retest["weights_from"].tolist() == ["", ""]
    best = yaml.safe_load((results / "best.yaml").read_text())
    assert len(best["lineage_env_steps"]) == 2
    assert "from scratch" in best["retest"]["note"]

    again = snakemake(workdir, "-j2")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
