"""The committed search-quality figures (benchmarks/results/search_quality.yaml) agree with the
per-seed summaries they were combined from, and those with their own held-out returns: the table in
benchmarks/RESULTS.md can be checked against data in the repository, not only against a run."""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import yaml

from hpsrl.campaign.config import compared_campaigns, compared_name, load_config
from tests.conftest import REPO

RESULTS = REPO / "benchmarks" / "results"
COMBINED = yaml.safe_load((RESULTS / "search_quality.yaml").read_text())["tasks"]


def _seed_summary(task: str, seed: int) -> dict:
    path = RESULTS / "search_quality" / task / f"seed{seed}.yaml"
    assert path.exists(), f"{path} is missing: commit each search seed's summary with the table"
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("task", sorted(COMBINED))
def test_the_combined_figures_are_those_of_the_committed_seeds(task):
    for variant, entry in COMBINED[task].items():
        if not isinstance(entry, dict):  # a reference figure, e.g. ARLBench's own
            continue
        runs = [_seed_summary(task, seed)["variants"][variant] for seed in entry["search_seeds"]]
        heldout = np.array([run["heldout"] for run in runs])
        in_search = np.array([run["in_search"] for run in runs])
        assert entry["heldout_per_seed"] == pytest.approx(heldout.tolist(), abs=0.01), variant
        assert entry["heldout_mean"] == pytest.approx(heldout.mean(), abs=0.01), variant
        assert entry["heldout_std"] == pytest.approx(heldout.std(), abs=0.01), variant
        assert entry["insearch_mean"] == pytest.approx(in_search.mean(), abs=0.01), variant
        for run in runs:  # each answer's held-out score is the mean of its fresh seeds
            assert len(run["heldout_returns"]) == 10
            assert run["heldout"] == pytest.approx(np.mean(run["heldout_returns"]), abs=0.01)


@pytest.mark.parametrize("task", sorted(COMBINED))
def test_the_combined_costs_are_those_the_seeds_recorded(task):
    """What each search cost, per search seed and with the machine it ran on: the seeds of one
    task ran on different machines and loads, so no mean over them is quoted as a cost."""
    for variant, entry in COMBINED[task].items():
        if not isinstance(entry, dict):
            continue
        summaries = [_seed_summary(task, seed) for seed in entry["search_seeds"]]
        runs = [summary["variants"][variant] for summary in summaries]
        assert entry["train_core_minutes_per_seed"] == pytest.approx(
            [run["train_core_seconds"] / 60 for run in runs], abs=0.06
        ), variant
        machines = [
            run.get("machine", s["machine"]) for run, s in zip(runs, summaries, strict=True)
        ]
        assert entry["machine_per_seed"] == machines, variant
    walls = COMBINED[task]["wall_minutes_per_seed"]
    for wall in walls:
        recorded = _seed_summary(task, wall["seed"])["wall_seconds"]
        assert wall["minutes"] == pytest.approx({k: v / 60 for k, v in recorded.items()}, abs=0.06)
    variants = [e for e in COMBINED[task].values() if isinstance(e, dict)]
    assert {w["seed"] for w in walls} == {s for e in variants for s in e["search_seeds"]}


@pytest.mark.parametrize("task", sorted(COMBINED))
def test_each_variant_is_compared_with_the_default_on_the_same_fresh_seeds(task):
    """heldout_minus_default: per search seed both ran, the default's held-out returns minus the
    variant's, fresh seed by fresh seed (their mean and its standard error)."""
    variants = {v: e for v, e in COMBINED[task].items() if isinstance(e, dict)}
    default = next(v for v, e in variants.items() if e["default"])
    assert "heldout_minus_default" not in variants[default]
    for variant, entry in variants.items():
        if variant == default:
            continue
        pairs = entry["heldout_minus_default"]
        shared = [s for s in entry["search_seeds"] if s in variants[default]["search_seeds"]]
        assert [pair["seed"] for pair in pairs] == shared, variant
        for pair in pairs:
            runs = _seed_summary(task, pair["seed"])["variants"]
            differences = np.subtract(
                runs[default]["heldout_returns"], runs[variant]["heldout_returns"]
            )
            standard_error = differences.std(ddof=1) / np.sqrt(len(differences))
            assert pair["mean"] == pytest.approx(differences.mean(), abs=0.01), (variant, pair)
            assert pair["se"] == pytest.approx(standard_error, abs=0.01), (variant, pair)


@pytest.mark.parametrize("task", sorted(COMBINED))
def test_every_strategy_was_charged_the_same_env_steps(task):
    charged = {
        variant: [
            _seed_summary(task, seed)["variants"][variant]["env_steps"]
            for seed in entry["search_seeds"]
        ]
        for variant, entry in COMBINED[task].items()
        if isinstance(entry, dict)
    }
    budget = max(max(steps) for steps in charged.values())
    for variant, steps in charged.items():
        # successive halving's rungs hold whole individuals, so they may leave a little unspent
        assert all(0.9 * budget <= s <= budget for s in steps), (variant, steps, budget)


def test_the_default_is_flagged_and_is_what_a_config_gets_when_it_names_none():
    minimal = {"campaign": "x", "env": {"id": "CartPole-v1"}, "algorithm": "dqn"}
    default_strategy = load_config(minimal)["search"]["strategy"]
    for task, entries in COMBINED.items():
        flagged = [v for v, e in entries.items() if isinstance(e, dict) and e.get("default")]
        assert flagged == [default_strategy], (task, flagged)


@pytest.fixture
def search_quality(monkeypatch):
    """benchmarks/search_quality.py as a module (it imports its sibling _bench)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("search_quality")


@pytest.mark.parametrize("task", sorted(COMBINED))
def test_a_rerun_resumes_from_every_committed_summary(search_quality, task):
    """Each committed run is recognised as today's search, so that rerunning the benchmark
    skips it instead of spending hours on it again; runs made before config keys were renamed
    (their stored configs say ga.population and report.retest_seeds) included."""
    config = search_quality.task_config(task)
    campaigns = compared_campaigns(load_config(config))
    for path in sorted((RESULTS / "search_quality" / task).glob("seed*.yaml")):
        summary = yaml.safe_load(path.read_text())
        for variant, row in summary["variants"].items():
            campaign = campaigns[compared_name(config, variant, summary["search_seed"])]
            assert search_quality.ran_as(row, campaign), (path.name, variant)
            changed = copy.deepcopy(campaign)
            changed["training"]["steps"] //= 2
            assert not search_quality.ran_as(row, changed), (path.name, variant)
