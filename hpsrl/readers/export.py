"""The best individual of a campaign, taken elsewhere: ``hpsrl export`` and ``hpsrl retrain``.

``hpsrl export RESULTS_DIR/CAMPAIGN`` writes, for the individual ``hpsrl best`` picks:

- ``hyperparameters.yaml``: its full hyperparameters (genes, fixed values and the algorithm's
  defaults) with the env, the algorithm and the training budget; ``hpsrl retrain`` trains from it;
- ``rl-zoo.yml``: the same for Stable-Baselines3, in RL Baselines3 Zoo's hyperparameter file
  format (hpsrl's names mapped to SB3's here, in :func:`zoo_hyperparameters`), with whatever has
  no SB3 equivalent listed in comments;
- ``weights_seedK.pt``: the network trained on each training seed, a plain state dict of tensors
  (``torch.load(path, weights_only=True)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hpsrl import HpsrlError
from hpsrl.campaign.config import (
    STREAM_RETEST_EVAL,
    STREAM_RETEST_TRAIN,
    ConfigError,
    SeedPlan,
    load_yaml,
)
from hpsrl.campaign.model import Generation
from hpsrl.campaign.paths import result_path
from hpsrl.campaign.storage import read_all_weights, read_generation
from hpsrl.readers.summary import best_summary

HYPERPARAMETERS_FILE = "hyperparameters.yaml"
ZOO_FILE = "rl-zoo.yml"

# SAC's, TD3's and DDPG's shared fields: hpsrl field -> SB3 argument.
_OFF_POLICY_ACTOR_CRITIC = {
    "num_envs": "n_envs",
    "learning_rate": "learning_rate",
    "gamma": "gamma",
    "tau": "tau",
    "buffer_size": "buffer_size",
    "batch_size": "batch_size",
    "learning_starts": "learning_starts",
    "train_frequency": "train_freq",
    "gradient_steps": "gradient_steps",
}

# hpsrl field -> SB3 argument, where only the name differs. What needs converting (learning-rate
# schedule, value-loss weight, network) is done in zoo_hyperparameters.
SB3_NAMES: dict[str, dict[str, str]] = {
    "ppo": {
        "num_envs": "n_envs",
        "num_steps": "n_steps",
        "batch_size": "batch_size",
        "update_epochs": "n_epochs",
        "gamma": "gamma",
        "gae_lambda": "gae_lambda",
        "clip_coef": "clip_range",
        "ent_coef": "ent_coef",
        "max_grad_norm": "max_grad_norm",
        "normalize_advantages": "normalize_advantage",
    },
    "dqn": {
        "num_envs": "n_envs",
        "learning_rate": "learning_rate",
        "gamma": "gamma",
        "buffer_size": "buffer_size",
        "batch_size": "batch_size",
        "learning_starts": "learning_starts",
        "train_frequency": "train_freq",
        "gradient_steps": "gradient_steps",
        "target_update_interval": "target_update_interval",
        "tau": "tau",
        "exploration_fraction": "exploration_fraction",
        "epsilon_start": "exploration_initial_eps",
        "epsilon": "exploration_final_eps",
        "max_grad_norm": "max_grad_norm",
    },
    "sac": _OFF_POLICY_ACTOR_CRITIC,
    "td3": {
        **_OFF_POLICY_ACTOR_CRITIC,
        "policy_delay": "policy_delay",
        "target_policy_noise": "target_policy_noise",
        "noise_clip": "target_noise_clip",
    },
    "ddpg": _OFF_POLICY_ACTOR_CRITIC,
}


class ExportError(HpsrlError, RuntimeError):
    """A campaign with nothing to export; the message says why and what to do."""


class UntrainableExportError(ConfigError):
    """A ``hyperparameters.yaml`` whose algorithm or hyperparameters hpsrl cannot train: edited by
    hand (a name misspelt, a value out of range) or written by another hpsrl version."""


def _plain(value: Any) -> Any:
    """Tuples to lists and numpy scalars to Python ones, for YAML."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def full_hyperparameters(algorithm: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of the algorithm's Hyperparameters: ``values`` over the defaults."""
    from hpsrl.agents import make_hyperparameters

    hp = make_hyperparameters(algorithm, values)
    return {f.name: _plain(getattr(hp, f.name)) for f in dataclasses.fields(hp)}


# -- RL Baselines3 Zoo ---------------------------------------------------------------------------


def zoo_hyperparameters(
    algorithm: str, hp: Mapping[str, Any], n_timesteps: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """RL Baselines3 Zoo's entry for the full hpsrl hyperparameters ``hp``, and the hpsrl fields
    that have no SB3 equivalent (by name, with their values)."""
    from hpsrl.agents.networks import ACTIVATIONS

    if algorithm not in SB3_NAMES:
        raise ExportError(
            f"no Stable-Baselines3 mapping for algorithm {algorithm!r}; known: {sorted(SB3_NAMES)}"
        )
    names = SB3_NAMES[algorithm]
    zoo: dict[str, Any] = {"n_timesteps": n_timesteps, "policy": "MlpPolicy"}
    zoo |= {sb3: hp[name] for name, sb3 in names.items()}
    converted = {"hidden_sizes", "activation"}
    if algorithm == "ppo":
        # The zoo's "lin_X" is a learning rate decayed linearly from X to 0, as anneal_lr does.
        zoo["learning_rate"] = (
            f"lin_{hp['learning_rate']}" if hp["anneal_lr"] else hp["learning_rate"]
        )
        # hpsrl's value loss is vf_coef * 0.5 * MSE, SB3's vf_coef * MSE: half gives the same
        # gradients.
        zoo["vf_coef"] = hp["vf_coef"] / 2
        converted |= {"learning_rate", "anneal_lr", "vf_coef"}
    if algorithm == "sac":
        # SB3's "auto_X": alpha learned from X on, as autotune_entropy does.
        zoo["ent_coef"] = f"auto_{hp['ent_coef']}" if hp["autotune_entropy"] else hp["ent_coef"]
        converted |= {"ent_coef", "autotune_entropy"}
    if algorithm in ("td3", "ddpg"):
        # The zoo's action noise: Gaussian, added to actions scaled to [-1, 1], as here.
        if hp["exploration_noise"] > 0:
            zoo["noise_type"], zoo["noise_std"] = "normal", hp["exploration_noise"]
        converted |= {"exploration_noise"}
    activation = ACTIVATIONS[hp["activation"]].__name__
    # The zoo evaluates this string with torch.nn imported as nn. For PPO, SAC, TD3 and DDPG a
    # list is the width of both the actor's and the critics' hidden layers (separate networks), as
    # in hpsrl.
    zoo["policy_kwargs"] = (
        f"dict(net_arch={list(hp['hidden_sizes'])}, activation_fn=nn.{activation})"
    )
    zoo = {"n_envs": zoo.pop("n_envs"), **zoo}
    unmapped = {name: value for name, value in hp.items() if name not in {*names, *converted}}
    return zoo, unmapped


def rl_zoo_yaml(config: Mapping[str, Any], hp: Mapping[str, Any]) -> str:
    """An RL Baselines3 Zoo hyperparameter file (``hyperparams/ALGO.yml`` format) for one env."""
    zoo, unmapped = zoo_hyperparameters(config["algorithm"], hp, config["training"]["steps"])
    env = config["env"]
    if env.get("kwargs"):
        zoo["env_kwargs"] = dict(env["kwargs"])
    notes = [f"{name}: {value}" for name, value in unmapped.items()]
    notes += [f"env.{key}: {env[key]}" for key in ("entry_point", "imports") if env.get(key)]
    lines = [
        f"# hpsrl campaign {config['campaign']}, best individual, for RL Baselines3 Zoo's "
        f"{config['algorithm']}: python -m rl_zoo3.train --algo {config['algorithm']} "
        f"--env {env['id']} --conf-file {ZOO_FILE}",
    ]
    if config["algorithm"] == "ppo":
        lines.append("# vf_coef is half of hpsrl's: hpsrl weights 0.5 * MSE, SB3 the MSE itself.")
    if notes:
        lines.append("# hpsrl settings with no SB3 equivalent (not applied by SB3):")
        lines += [f"#   {note}" for note in notes]
    return "\n".join(lines) + "\n" + yaml.safe_dump({env["id"]: zoo}, sort_keys=False)


# -- export ----------------------------------------------------------------------------------------


def best_of_campaign(campaign_dir: str | Path) -> tuple[Generation, int]:
    """The generation record holding the campaign's best individual, and its index there: the
    individual ``hpsrl best`` reports."""
    best = best_summary(campaign_dir)
    if best["individual"] is None:
        raise ExportError(
            f"every individual of {best['generation']} in {campaign_dir} failed, so no trained "
            f"individual can be exported; see why with: hpsrl status {campaign_dir}"
        )
    return read_generation(Path(campaign_dir) / f"{best['generation']}.h5"), best["individual"]


def exported_hyperparameters(source: Generation, best: int) -> dict[str, Any]:
    """What ``hyperparameters.yaml`` holds: enough for ``hpsrl retrain``."""
    config = source.config
    return {
        "campaign": config["campaign"],
        "generation": source.population.batch,
        "individual": best,
        "env": config["env"],
        "algorithm": config["algorithm"],
        "training": {
            "steps": config["training"]["steps"],
            "eval_episodes": config["training"]["eval_episodes"],
            "curve_points": config["training"]["curve_points"],
        },
        "hyperparameters": full_hyperparameters(
            config["algorithm"], source.population.hyperparameters(best)
        ),
    }


def export_best(campaign_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the best individual's hyperparameters, RL Zoo file and weights; the paths written."""
    import torch

    campaign_dir, out_dir = Path(campaign_dir), Path(out_dir)
    source, best = best_of_campaign(campaign_dir)
    result_file = campaign_dir / result_path(source.population.batch, best)
    if not result_file.exists():
        raise ExportError(
            f"{result_file} (the best individual's weights) is missing; rerun snakemake in the "
            "campaign's folder to train it again"
        )
    exported = exported_hyperparameters(source, best)
    weights = read_all_weights(result_file)  # all of it read before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / HYPERPARAMETERS_FILE, out_dir / ZOO_FILE]
    written[0].write_text(
        f"# Retrain on fresh seeds with: hpsrl retrain {HYPERPARAMETERS_FILE} --seeds 3\n"
        + yaml.safe_dump(exported, sort_keys=False)
    )
    written[1].write_text(rl_zoo_yaml(source.config, exported["hyperparameters"]))
    for k, seed_weights in enumerate(weights):
        state = {
            name: torch.from_numpy(np.ascontiguousarray(array))
            for name, array in seed_weights.items()
        }
        path = out_dir / f"weights_seed{k}.pt"
        torch.save(state, path)
        written.append(path)
    return written


# -- retrain ---------------------------------------------------------------------------------------


def load_exported(path: str | Path) -> dict[str, Any]:
    """Read a ``hyperparameters.yaml`` written by ``hpsrl export``, checking what retrain needs."""
    exported = load_yaml(path)
    missing = [
        key for key in ("env", "algorithm", "hyperparameters", "training") if key not in exported
    ]
    if missing or "steps" not in (exported.get("training") or {}):
        raise ConfigError(
            f"{path} lacks {missing or ['training.steps']}; use a {HYPERPARAMETERS_FILE} written "
            "by: hpsrl export RESULTS_DIR/CAMPAIGN"
        )
    try:
        full_hyperparameters(exported["algorithm"], exported["hyperparameters"])  # checks them
    except ValueError as e:  # it names what is wrong and what is valid
        raise UntrainableExportError(
            f"{path} cannot be retrained: {e}; correct the file, or write it again with: "
            "hpsrl export RESULTS_DIR/CAMPAIGN"
        ) from e
    return exported


@dataclass
class RetrainedSeed:
    train_seed: int
    eval_seed: int
    eval_returns: np.ndarray
    train_seconds: float


def retrain(
    exported: Mapping[str, Any], seeds: int, root_seed: int, steps: int | None = None
) -> Iterator[RetrainedSeed]:
    """Train the exported hyperparameters for ``steps`` env steps (the campaign's if None) on
    ``seeds`` seeds derived from ``root_seed``, one after the other, yielding each evaluation."""
    from hpsrl.agents import RunSettings, get_algorithm, make_hyperparameters
    from hpsrl.cluster.mpi import limit_threads
    from hpsrl.envs.spec import EnvSpec

    limit_threads()
    plan = SeedPlan(root_seed)
    train_seeds = plan.seeds(STREAM_RETEST_TRAIN, 0, 1, seeds)[0]
    eval_seeds = plan.seeds(STREAM_RETEST_EVAL, 0, 1, seeds)[0]
    algorithm = get_algorithm(exported["algorithm"])
    hp = make_hyperparameters(exported["algorithm"], exported["hyperparameters"])
    env = EnvSpec.from_config(exported["env"])
    training = exported["training"]
    for train_seed, eval_seed in zip(train_seeds, eval_seeds, strict=True):
        result = algorithm.train(
            env,
            hp,
            RunSettings(
                total_steps=steps or training["steps"],
                seed=int(train_seed),
                eval_seed=int(eval_seed),
                eval_episodes=training.get("eval_episodes", 10),
                curve_points=training.get("curve_points", 20),
            ),
        )
        yield RetrainedSeed(
            int(train_seed), int(eval_seed), result.eval_returns, result.train_seconds
        )
