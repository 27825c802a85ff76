"""One checkpointed training run, shared by ``test_checkpoint.py`` and the subprocess it kills.

Run as ``python -m tests.checkpoint_worker ALGORITHM ENV_NAME CHECKPOINT_PATH`` from the repository
root: it trains with frequent checkpoints until it ends (or is killed).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from hpsrl.agents import TrainResult, get_algorithm, make_hyperparameters
from hpsrl.agents.checkpoints import Checkpointing
from hpsrl.agents.run import RunSettings
from hpsrl.envs.spec import EnvSpec

#: Small settings; DQN's buffer is smaller than the run, so the ring wraps around.
HYPERPARAMETERS = {
    "ppo": {"num_envs": 4, "num_steps": 32, "batch_size": 64, "update_epochs": 2},
    "dqn": {
        "learning_starts": 200,
        "train_frequency": 16,
        "gradient_steps": 4,
        "buffer_size": 500,
        "num_envs": 2,
        "target_update_interval": 50,
    },
}
#: Env steps per run: long enough that a kill right after the first save lands mid-run.
TOTAL_STEPS = {"ppo": 3_000, "dqn": 1_500}
#: Env steps between saves.
EVERY_STEPS = {"ppo": 128, "dqn": 100}
SEED, EVAL_SEED = 3, 4
#: Environments by short name: two whose state checkpoints keep, and one whose state they cannot.
ENVS = {
    "CartPole-v1": EnvSpec("CartPole-v1"),  # CartPoleVectorEnv
    "Acrobot-v1": EnvSpec("Acrobot-v1"),  # SyncVectorEnv
    "Match": EnvSpec("hpsrl-test/Match-v0", entry_point="tests.fixtures_envs:MatchEnv"),
}


def run(
    algorithm: str, env_name: str, checkpoint_path: Path | None, *, seed: int = SEED
) -> TrainResult:
    """Train ``algorithm`` on ``ENVS[env_name]``, saving every few env steps if a path is given."""
    checkpoint = None
    if checkpoint_path is not None:
        checkpoint = Checkpointing(
            checkpoint_path, every_steps=EVERY_STEPS[algorithm], every_seconds=None
        )
    return get_algorithm(algorithm).train(
        ENVS[env_name],
        make_hyperparameters(algorithm, HYPERPARAMETERS[algorithm]),
        RunSettings(
            TOTAL_STEPS[algorithm],
            seed,
            eval_seed=EVAL_SEED,
            eval_episodes=3,
            curve_points=6,
            return_threshold={"CartPole-v1": 30.0, "Acrobot-v1": -400.0}.get(env_name, 5.0),
            checkpoint=checkpoint,
        ),
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    algorithm_, env_name_, path_ = sys.argv[1:]
    run(algorithm_, env_name_, Path(path_))
