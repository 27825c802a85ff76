"""Deep Deterministic Policy Gradient for continuous actions, as Stable-Baselines3 defines it: TD3
(:mod:`hpsrl.agents.td3`, whose training loop this module uses) with one critic, the actor and the
target networks updated at every gradient step, and no target policy smoothing.

Exploration adds Gaussian noise to the actor's actions (no Ornstein-Uhlenbeck process, no batch
normalisation), as in Stable-Baselines3 and CleanRL rather than the original paper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from hpsrl.agents.hyperparameters.ddpg import ARCHITECTURE_FIELDS as ARCHITECTURE_FIELDS
from hpsrl.agents.hyperparameters.ddpg import GENES as GENES
from hpsrl.agents.hyperparameters.ddpg import Hyperparameters
from hpsrl.agents.run import RunSettings, TrainResult
from hpsrl.agents.td3 import rebuild_policy, train_td3_family
from hpsrl.envs.spec import EnvSpec


def greedy_policy(
    env: EnvSpec, hp: Hyperparameters, weights: Mapping[str, np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """The trained actor of a stored result (``TrainResult.model_state``), without exploration
    noise, scaled to the env's action bounds."""
    return rebuild_policy(env, hp, weights, "DDPG", n_critics=1)


def train(env: EnvSpec, hp: Hyperparameters, run: RunSettings) -> TrainResult:
    """Train DDPG on ``env`` for ``run.total_steps`` env steps (rounded up to whole vector steps).

    Same contract as :func:`hpsrl.agents.td3.train`: ``initial_weights``, determinism,
    checkpoints, ``stop_at`` and errors work the same way.
    """
    return train_td3_family(
        "ddpg",
        env,
        hp,
        run,
        n_critics=1,
        policy_delay=1,
        target_policy_noise=0.0,
        noise_clip=0.0,
    )
