"""hpsrl export --optuna: a campaign as an Optuna study in journal storage, which Optuna loads
and draws like one of its own."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hpsrl.campaign.config import search_space
from hpsrl.campaign.storage import read_generation
from hpsrl.search.bayesopt import individual_parameters
from tests.conftest import TINY, copy_workflow
from tests.test_status import hpsrl, write_made_up_campaign
from tests.test_workflow import snakemake, write_config

matplotlib.use("Agg")


@pytest.fixture
def made_up_campaign(tmp_path) -> Path:
    return write_made_up_campaign(tmp_path / "results" / "tiny")


def load(path: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


def individuals(campaign: Path):
    """(generation record, index) of every individual of the campaign's generations, in order."""
    gens = [read_generation(p) for p in sorted(campaign.glob("gen[0-9][0-9][0-9].h5"))]
    return [(gen, i) for gen in gens for i in range(len(gen.population))]


def test_export_optuna_writes_a_study_optuna_loads(made_up_campaign, tmp_path):
    journal = tmp_path / "studies" / "tiny.journal"
    done = hpsrl("export", str(made_up_campaign), "--optuna", str(journal))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines()[0] == (
        f"wrote {journal}: Optuna study 'tiny', 8 trials (7 complete, 1 fail)"
    )
    assert not (made_up_campaign / "export").exists(), "--optuna alone writes the study alone"

    study = load(journal)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["return", "steps_to_threshold"]
    space = search_space(study.user_attrs["config"])
    expected = individuals(made_up_campaign)
    assert len(study.trials) == len(expected) == 8
    for trial, (gen, i) in zip(study.trials, expected, strict=True):
        assert trial.user_attrs["generation"] == int(gen.population.batch[3:])
        assert trial.user_attrs["individual"] == i
        params, distributions = individual_parameters(space, gen.population.individuals[i])
        assert trial.params == params and trial.distributions == distributions
        assert trial.user_attrs["genes"] == json.loads(json.dumps(gen.population.individuals[i]))
        assert trial.user_attrs["operator"] == gen.population.operators[i]
        assert trial.user_attrs["evidence_seeds"] == int(gen.evidence.seeds[i])
        assert trial.user_attrs["train_seeds"] == gen.population.train_seeds[i].tolist()
        assert trial.datetime_start <= trial.datetime_complete
        if gen.ok[i]:
            assert trial.state == TrialState.COMPLETE
            np.testing.assert_allclose(trial.values, gen.objectives[i])
            assert trial.user_attrs["estimate"]["return"] == pytest.approx(gen.estimate[i, 0])
        else:
            assert trial.state == TrialState.FAIL and trial.values is None
            assert "TrainingDiverged" in trial.user_attrs["error"]
    answer = study.user_attrs["answer"]
    best = yaml.safe_load(hpsrl("best", str(made_up_campaign)).stdout)
    assert study.trials[answer["trial"]].user_attrs["genes"] == {
        name: best["hyperparameters"][name] for name in space.names
    }
    assert {t.number for t in study.best_trials} <= {
        t.number for t in study.trials if t.state == TrialState.COMPLETE
    }

    # Optuna's tools work on it: its dataframe, its plots, its importances.
    frame = study.trials_dataframe()
    assert len(frame) == 8 and "params_learning_rate" in frame and "values_return" in frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        from optuna.visualization import matplotlib as plots

        assert plots.plot_pareto_front(study) is not None
        assert (
            plots.plot_optimization_history(
                study, target=lambda t: t.values[0], target_name="return"
            )
            is not None
        )
        assert plots.plot_timeline(study) is not None
        assert (
            plots.plot_slice(
                study, target=lambda t: t.values[0], target_name="return", params=["gamma"]
            )
            is not None
        )
    with warnings.catch_warnings():  # that it ranks for a low target, always
        warnings.simplefilter("ignore", UserWarning)
        importances = optuna.importance.get_param_importances(  # a low target: -return
            study, target=lambda t: -t.values[0], params=["gamma", "learning_rate"]
        )
    assert set(importances) == {"gamma", "learning_rate"}

    # Exporting again replaces the study instead of adding trials to it; --out also writes the
    # answer's files.
    done = hpsrl(
        "export", str(made_up_campaign), "--optuna", str(journal), "--out", str(tmp_path / "b")
    )
    assert done.returncode == 1  # made-up results have no weights to export
    assert "missing" in done.stderr
    assert len(load(journal).trials) == 8
    assert sorted(p.name for p in journal.parent.iterdir()) == ["tiny.journal"]


def test_export_optuna_of_a_folder_without_generations_says_so(tmp_path):
    done = hpsrl("export", str(tmp_path), "--optuna", str(tmp_path / "x.journal"))
    assert done.returncode == 1
    assert done.stderr.startswith("hpsrl: error: ") and done.stderr.count("\n") == 1
    assert not (tmp_path / "x.journal").exists()


@pytest.fixture(scope="module")
def halving_campaign(tmp_path_factory) -> Path:
    """The tiny campaign with successive halving, run to its end: its campaign folder."""
    workdir = copy_workflow(tmp_path_factory.mktemp("optuna"))
    config = copy.deepcopy(TINY)
    config["search"] = {"fidelity": {"rungs": 2, "eta": 3}}
    write_config(workdir, config)
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir / "results" / "tiny"


@pytest.mark.slow
def test_export_optuna_of_a_campaign_with_rungs(halving_campaign, tmp_path):
    journal = tmp_path / "tiny.journal"
    done = hpsrl("export", str(halving_campaign), "--optuna", str(journal))
    assert done.returncode == 0, done.stderr
    study = load(journal)
    expected = individuals(halving_campaign)
    assert len(study.trials) == len(expected)
    steps = TINY["training"]["steps"]
    states = set()
    for trial, (gen, i) in zip(study.trials, expected, strict=True):
        states.add(trial.state)
        assert trial.user_attrs["steps"] == int(gen.population.steps[i])
        if gen.population.steps[i] < steps:  # stopped on rung 0: pruned there
            assert trial.state == TrialState.PRUNED
            reached = int(gen.population.steps[i])
            assert trial.intermediate_values == {reached: pytest.approx(gen.objectives[i, 0])}
        else:
            assert trial.state == TrialState.COMPLETE
            np.testing.assert_allclose(trial.values, gen.objectives[i])
        assert trial.user_attrs["returns"] == pytest.approx(gen.results["returns"][i].tolist())
    assert states == {TrialState.PRUNED, TrialState.COMPLETE}
    answer = study.user_attrs["answer"]
    best = yaml.safe_load((halving_campaign / "best.yaml").read_text())
    assert (answer["generation"], answer["individual"]) == (best["generation"], best["individual"])
    assert study.trials[answer["trial"]].state == TrialState.COMPLETE
    assert answer["retest"]["returns_per_seed"] == pytest.approx(best["retest"]["returns_per_seed"])
