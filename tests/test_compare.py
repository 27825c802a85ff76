"""`snakemake compare`: the strategies of a compare section, each on several search seeds."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from hpsrl.campaign.config import (
    ConfigError,
    compared_campaigns,
    load_config,
    shared_first_generations,
)
from hpsrl.campaign.identity import config_hash
from tests.test_workflow import planned_jobs, snakemake, write_config


def test_compared_campaigns_vary_strategy_and_search_seed(tiny_config):
    tiny_config["compare"] = {"strategies": ["ga", "bo"], "search_seeds": 2}
    campaigns = compared_campaigns(load_config(tiny_config))
    assert list(campaigns) == ["tiny-ga-s0", "tiny-ga-s1", "tiny-bo-s0", "tiny-bo-s1"]
    assert [c["seed"] for c in campaigns.values()] == [7, 8, 7, 8]
    assert [c["search"]["strategy"] for c in campaigns.values()] == ["ga", "ga", "bo", "bo"]
    for campaign in campaigns.values():  # everything else is the config's
        assert campaign["genes"] == load_config(tiny_config)["genes"]


def test_the_first_strategy_of_each_search_seed_trains_generation_0(tiny_config):
    tiny_config["compare"] = {"strategies": ["bo", "ga", "random"], "search_seeds": 2}
    assert shared_first_generations(load_config(tiny_config)) == {
        "tiny-ga-s0": "tiny-bo-s0",
        "tiny-ga-s1": "tiny-bo-s1",
        "tiny-random-s0": "tiny-bo-s0",
        "tiny-random-s1": "tiny-bo-s1",
    }
    tiny_config["compare"] = {"strategies": ["ga"], "search_seeds": 3}
    assert shared_first_generations(load_config(tiny_config)) == {}


def test_the_compare_section_does_not_change_what_results_mean(tiny_config):
    other = copy.deepcopy(tiny_config)
    other["compare"] = {"strategies": ["random"], "search_seeds": 5}
    assert config_hash(load_config(other)) == config_hash(load_config(tiny_config))


def test_a_strategy_the_config_does_not_fit_is_named(tiny_config):
    tiny_config["search"] = {"strategy": "bo"}
    tiny_config["budget"].update(population=2)
    tiny_config["ga"].update(tournament_size=3)  # fine for bo, not for ga
    tiny_config["compare"] = {"strategies": ["bo", "ga"]}
    with pytest.raises(ConfigError, match=r"compare.strategies, ga: config key 'ga.tourn"):
        compared_campaigns(load_config(tiny_config))


def test_compare_plans_every_search_and_all_plans_none(workdir, tiny_config):
    tiny_config["compare"] = {"strategies": ["ga", "random"], "search_seeds": 2}
    write_config(workdir, tiny_config)
    assert "compare_strategies" not in planned_jobs(workdir)
    counts = planned_jobs(workdir, "compare")
    # 4 searches x (2 generations x 4 individuals + the re-test of the best)
    assert counts["train_individuals"] == 4 * 9
    assert counts["compare_strategies"] == 1


def test_the_first_strategy_trains_generation_0_for_all(workdir, tiny_config):
    tiny_config["compare"] = {"strategies": ["random", "ga", "bo"], "search_seeds": 2}
    tiny_config["training"]["individuals_per_job"] = 4
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-n", "--printshellcmds", "compare")
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if "hpsrl train" in line]
    copying = [c for c in commands if "--same-training-as" in c]
    # generation 0 of ga and bo on each search seed, from random's on the same search seed
    assert len(copying) == 4
    for strategy in ("ga", "bo"):
        for k in range(2):
            (command,) = [c for c in copying if f"results/tiny-{strategy}-s{k}/gen000/" in c]
            twins = [f"results/tiny-random-s{k}/gen000/ind{i:03d}.h5" for i in range(4)]
            assert f"--same-training-as {' '.join(twins)} " in command


@pytest.mark.slow
def test_compare_runs_the_searches_and_plots_them(workdir, tiny_config):
    tiny_config["budget"]["generations"] = 2
    tiny_config["compare"] = {"strategies": ["ga", "random"], "search_seeds": 2}
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-j2", "compare", timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    results = workdir / "results"

    # The strategies of one search seed start from the same generation 0.
    for k in range(2):
        with (
            h5py.File(results / f"tiny-ga-s{k}" / "gen000.h5") as ga,
            h5py.File(results / f"tiny-random-s{k}" / "gen000.h5") as random,
        ):
            np.testing.assert_array_equal(ga["results/returns"][()], random["results/returns"][()])
        for i in range(4):  # trained by ga's jobs, copied by random's
            with h5py.File(results / f"tiny-random-s{k}" / "gen000" / f"ind{i:03d}.h5") as f:
                assert f.attrs["same_training_as"].startswith(f"results/tiny-ga-s{k}/gen000/")
    summary = yaml.safe_load((results / "tiny-compare" / "comparison.yaml").read_text())
    assert summary["objective"] == "return"
    assert list(summary["strategies"]) == ["ga", "random"]
    for strategy in summary["strategies"].values():
        # 2 generations x 4 individuals x 2 seeds x 1024 steps (whole PPO rollouts of 256)
        assert strategy["env_steps"]["per_search_seed"] == [16 * 1024] * 2
        assert len(strategy["in_search"]["per_search_seed"]) == 2
        assert strategy["in_search"]["mean"] > 0
        assert len(strategy["heldout"]["per_search_seed"]) == 2
    picture = imread(results / "tiny-compare" / "comparison.png")
    assert picture.shape[0] > 300 and picture[..., :3].std() > 0.05
    assert picture.shape[1] > 2 * picture.shape[0]  # the search traces and the re-test panel
    assert not (results / "tiny").exists(), "compare runs the searches, not the campaign itself"


def test_only_searches_of_one_problem_and_budget_compare(tiny_config):
    from hpsrl.readers.compare import SearchTrace, check_comparable

    def trace(config):
        config = load_config(config)
        return SearchTrace(config["campaign"], "ga", config, np.ones(1), np.ones(1), 1.0, None)

    other = copy.deepcopy(tiny_config)
    other["training"]["individuals_per_job"] = 4  # does not change what results mean
    other["search"] = {"strategy": "bo"}
    check_comparable([trace(tiny_config), trace(other)])
    other["training"]["steps"] = 2048
    with pytest.raises(ConfigError, match=r"differ in training.steps: only searches"):
        check_comparable([trace(tiny_config), trace(other)])


def test_plot_shows_searches_with_and_without_a_retest(tiny_config, tmp_path):
    from hpsrl.readers.compare import SearchTrace, plot

    config = load_config(tiny_config)
    trained = np.array([4096, 8192])  # env steps
    traces = [
        SearchTrace("a", "ga", config, trained, np.array([10.0, 30.0]), 1.0, 25.0),
        SearchTrace("b", "ga", config, trained, np.array([np.nan, 20.0]), 1.0, None),  # no re-test
        SearchTrace("c", "random", config, trained, np.array([5.0, 5.0]), 1.0, 4.0),
    ]
    plot(traces, tmp_path / "plots" / "comparison.png")
    picture = imread(tmp_path / "plots" / "comparison.png")
    assert picture.shape[1] > 2 * picture.shape[0] > 600  # two panels side by side
    assert picture[..., :3].std() > 0.05
