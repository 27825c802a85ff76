"""Deep Deterministic Policy Gradient for continuous actions, as Stable-Baselines3 defines it: TD3
(:mod:`hpsrl.agents.td3`, whose training loop this module uses) with one critic, the actor and the
target networks updated at every gradient step, and no target policy smoothing.

Exploration adds Gaussian noise to the actor's actions (no Ornstein-Uhlenbeck process, no batch
normalisation), as in Stable-Baselines3 and CleanRL rather than the original paper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsrl.agents.common import Checkpointing, TrainResult, coerce_fields, require
from hpsrl.agents.continuous import check_off_policy_fields
from hpsrl.agents.td3 import rebuild_policy, train_td3_family
from hpsrl.envs import EnvSpec


@dataclass(frozen=True)
class Hyperparameters:
    """DDPG hyperparameters; the field names are the gene names. Defaults suit Pendulum-v1."""

    learning_rate: float = 1e-3
    """Adam step size of the actor and the critic."""
    gamma: float = 0.98
    """Discount factor, in (0, 1]."""
    tau: float = 0.005
    """Target update rate, in (0, 1]: after each gradient step the target networks move this
    fraction of the way to the networks (Polyak averaging)."""
    buffer_size: int = 100_000
    """Replay buffer capacity in transitions."""
    batch_size: int = 128
    """Transitions per gradient step."""
    learning_starts: int = 1_000
    """Env steps of uniformly random actions before learning starts."""
    train_frequency: int = 1
    """Env steps between training phases."""
    gradient_steps: int = 1
    """Gradient steps per training phase."""
    exploration_noise: float = 0.1
    """Standard deviation of the Gaussian noise added to the actor's actions (in [-1, 1]) when
    collecting experience, >= 0."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the actor and of the critic (separate networks)."""
    activation: str = "relu"
    """Hidden-layer activation, one of ``common.ACTIVATIONS``."""
    num_envs: int = 1
    """Environments stepped in parallel (one vector env)."""

    def __post_init__(self) -> None:
        coerce_fields(self)
        check_off_policy_fields(self)
        require(self.exploration_noise >= 0, "exploration_noise", ">= 0", self.exploration_noise)


#: The hyperparameters that change the networks' shapes or function: a run may start from another
#: run's weights (``initial_weights``) only where they are equal (see ``ga.inherit_weights``).
ARCHITECTURE_FIELDS = ("hidden_sizes", "activation")

#: The genes a campaign searches unless its config says otherwise (config key ``genes``), in the
#: config's format; ranges that suit Pendulum-v1-sized control tasks.
GENES: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1.0e-4, "high": 3.0e-3, "log": True},
    "gamma": {"type": "float", "low": 0.95, "high": 0.995},
    "tau": {"type": "float", "low": 0.002, "high": 0.05, "log": True},
    "batch_size": {"type": "categorical", "choices": [64, 128, 256]},
    "exploration_noise": {"type": "float", "low": 0.05, "high": 0.3},
    "hidden_sizes": {
        "type": "list",
        "min_length": 1,
        "max_length": 2,
        "element": {"type": "int", "low": 32, "high": 128, "log": True},
    },
}


def greedy_policy(
    env: EnvSpec, hp: Hyperparameters, weights: Mapping[str, np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """The trained actor of a stored result (``TrainResult.model_state``), without exploration
    noise, scaled to the env's action bounds."""
    return rebuild_policy(env, hp, weights, "DDPG", n_critics=1)


def train(
    env: EnvSpec,
    hp: Hyperparameters,
    total_steps: int,
    seed: int,
    *,
    eval_seed: int,
    eval_episodes: int = 10,
    curve_points: int = 20,
    return_threshold: float | None = None,
    checkpoint: Checkpointing | None = None,
    initial_weights: Mapping[str, np.ndarray] | None = None,
) -> TrainResult:
    """Train DDPG on ``env`` for ``total_steps`` env steps (rounded up to whole vector steps).

    Same contract as :func:`hpsrl.agents.td3.train`: ``initial_weights``, determinism,
    checkpoints and errors work the same way.
    """
    return train_td3_family(
        "ddpg",
        env,
        hp,
        total_steps,
        seed,
        n_critics=1,
        policy_delay=1,
        target_policy_noise=0.0,
        noise_clip=0.0,
        eval_seed=eval_seed,
        eval_episodes=eval_episodes,
        curve_points=curve_points,
        return_threshold=return_threshold,
        checkpoint=checkpoint,
        initial_weights=initial_weights,
    )
