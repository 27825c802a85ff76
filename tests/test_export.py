"""Exporting the best individual (hyperparameters, RL Zoo file, weights) and retraining from it."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from hpsrl.agents import make_hyperparameters
from hpsrl.campaign.storage import read_weights
from hpsrl.readers.export import full_hyperparameters, rl_zoo_yaml, zoo_hyperparameters
from tests.conftest import TINY, copy_workflow
from tests.test_workflow import BIN, snakemake, write_config

# Stable-Baselines3's argument names (PPO/DQN constructors, plus the zoo's n_envs, n_timesteps).
SB3_PPO = {
    "n_envs",
    "n_timesteps",
    "policy",
    "n_steps",
    "batch_size",
    "n_epochs",
    "gamma",
    "gae_lambda",
    "clip_range",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "learning_rate",
    "normalize_advantage",
    "policy_kwargs",
}
SB3_DQN = {
    "n_envs",
    "n_timesteps",
    "policy",
    "learning_rate",
    "gamma",
    "buffer_size",
    "batch_size",
    "learning_starts",
    "train_freq",
    "gradient_steps",
    "target_update_interval",
    "tau",
    "exploration_fraction",
    "exploration_initial_eps",
    "exploration_final_eps",
    "max_grad_norm",
    "policy_kwargs",
}


def hpsrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hpsrl"), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A one-generation tiny campaign and its export: (campaign folder, export folder)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("export"))
    config = copy.deepcopy(TINY)
    config["budget"]["generations"] = 1
    config["retest"]["seeds"] = 0
    write_config(workdir, config)
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    campaign = workdir / "results" / "tiny"
    out = workdir / "export"
    done = hpsrl("export", str(campaign), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return campaign, out


@pytest.mark.slow
def test_export_writes_the_best_individuals_files(exported):
    campaign, out = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "hyperparameters.yaml",
        "rl-zoo.yml",
        "weights_seed0.pt",
        "weights_seed1.pt",
    ]
    best = yaml.safe_load((campaign / "best.yaml").read_text())
    mine = yaml.safe_load((out / "hyperparameters.yaml").read_text())
    assert (mine["generation"], mine["individual"]) == (best["generation"], best["individual"])
    assert mine["env"]["id"] == "CartPole-v1" and mine["algorithm"] == "ppo"
    assert make_hyperparameters("ppo", mine["hyperparameters"]) == make_hyperparameters(
        "ppo", best["hyperparameters"]
    )


@pytest.mark.slow
def test_rl_zoo_file_uses_sb3_names(exported):
    _, out = exported
    zoo = yaml.safe_load((out / "rl-zoo.yml").read_text())
    hp = yaml.safe_load((out / "hyperparameters.yaml").read_text())["hyperparameters"]
    entry = zoo["CartPole-v1"]
    assert set(entry) == SB3_PPO
    assert entry["n_steps"] == hp["num_steps"] and entry["n_epochs"] == hp["update_epochs"]
    assert entry["learning_rate"] == f"lin_{hp['learning_rate']}"  # anneal_lr
    activation = {"tanh": "nn.Tanh", "relu": "nn.ReLU"}[hp["activation"]]
    assert entry["policy_kwargs"] == (
        f"dict(net_arch={hp['hidden_sizes']}, activation_fn={activation})"
    )


def test_dqn_settings_without_an_sb3_equivalent_are_listed():
    hp = full_hyperparameters("dqn", {"double_dqn": True, "hidden_sizes": [64]})
    entry, unmapped = zoo_hyperparameters("dqn", hp, 5000)
    assert set(entry) == SB3_DQN
    assert entry["train_freq"] == hp["train_frequency"]
    assert entry["exploration_final_eps"] == hp["epsilon"]
    assert unmapped == {"double_dqn": True}
    config = {
        "campaign": "c",
        "algorithm": "dqn",
        "env": {"id": "Acrobot-v1", "kwargs": {"max_episode_steps": 200}},
        "training": {"steps": 5000},
    }
    text = rl_zoo_yaml(config, hp)
    assert "#   double_dqn: True" in text
    assert yaml.safe_load(text)["Acrobot-v1"]["env_kwargs"] == {"max_episode_steps": 200}


@pytest.mark.slow
def test_weights_load_without_unpickling_and_match_the_result_file(exported):
    campaign, out = exported
    mine = yaml.safe_load((out / "hyperparameters.yaml").read_text())
    result_file = campaign / mine["generation"] / f"ind{mine['individual']:03d}.h5"
    for k in range(2):
        state = torch.load(out / f"weights_seed{k}.pt", weights_only=True)
        stored = read_weights(result_file, k)
        assert set(state) == set(stored) and stored
        for name, array in stored.items():
            assert tuple(state[name].shape) == array.shape
            assert torch.equal(state[name], torch.from_numpy(array))


@pytest.mark.slow
def test_retrain_trains_the_exported_hyperparameters_on_fresh_seeds(exported):
    _, out = exported
    done = hpsrl(
        "retrain",
        str(out / "hyperparameters.yaml"),
        "--seeds",
        "2",
        "--seed",
        "3",
        "--steps",
        "512",
    )
    assert done.returncode == 0, done.stderr
    returns = re.findall(r"\(training seed \d+\): mean evaluation return ([\d.]+)", done.stdout)
    assert len(returns) == 2 and all(float(r) > 0 for r in returns)
    assert "mean over seeds" in done.stdout


def test_retrain_refuses_a_file_that_is_not_an_export(tmp_path):
    path = tmp_path / "hyperparameters.yaml"
    path.write_text(yaml.safe_dump({"algorithm": "ppo", "hyperparameters": {}}))
    done = hpsrl("retrain", str(path))
    assert done.returncode == 1
    assert "lacks ['env', 'training']" in done.stderr and "hpsrl export" in done.stderr


@pytest.mark.parametrize(
    ("hyperparameters", "problem"),
    [
        ({"learning_rat": 1e-3}, "unknown ppo hyperparameter(s) ['learning_rat']; valid names: "),
        ({"gamma": 7}, "gamma must be in (0, 1], got 7"),
    ],
)
def test_retrain_of_hyperparameters_hpsrl_cannot_train_is_one_line_and_status_1(
    tmp_path, hyperparameters, problem
):
    # A hand-edited export: a misspelt name or a value out of range.
    path = tmp_path / "hyperparameters.yaml"
    exported = {
        "env": {"id": "CartPole-v1"},
        "algorithm": "ppo",
        "training": {"steps": 512},
        "hyperparameters": hyperparameters,
    }
    path.write_text(yaml.safe_dump(exported))
    done = hpsrl("retrain", str(path))
    assert done.returncode == 1
    assert done.stderr.startswith(f"hpsrl: error: {path}") and done.stderr.count("\n") == 1, (
        done.stderr
    )
    assert problem in done.stderr and "hpsrl export" in done.stderr
    assert done.stdout == ""


def test_export_of_a_folder_without_generations_says_so(tmp_path):
    done = hpsrl("export", str(tmp_path))
    assert done.returncode == 1
    assert "holds no finished generation" in done.stderr


def test_retrain_where_this_python_lacks_the_envs_module_is_one_line_and_status_1(tmp_path):
    # An export carried to another machine whose Python lacks the module that registers the env.
    path = tmp_path / "hyperparameters.yaml"
    exported = {
        "env": {"id": "Mine-v0", "imports": ["no_such_env_module"]},
        "algorithm": "ppo",
        "training": {"steps": 512},
        "hyperparameters": {},
    }
    path.write_text(yaml.safe_dump(exported))
    done = hpsrl("retrain", str(path), "--seeds", "1")
    assert done.returncode == 1
    assert done.stderr.startswith("hpsrl: error: could not import module 'no_such_env_module'")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
