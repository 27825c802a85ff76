"""``train(..., stop_at=S)``: a run that stops part-way and continues later (successive-halving
rungs) gives, at every stop, what one uninterrupted run gives when stopped there, and at the end
what the full run gives, bit for bit."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hpsrl.agents import TrainResult, get_algorithm, make_hyperparameters
from hpsrl.agents.checkpoints import Checkpointing
from hpsrl.agents.run import RunSettings
from hpsrl.envs.spec import EnvSpec
from tests.checkpoint_worker import HYPERPARAMETERS
from tests.test_checkpoint import SMALL_PPO
from tests.test_continuous_agents import TINY

ALGORITHMS = ["ppo", "dqn", "sac", "td3", "ddpg"]
CARTPOLE = EnvSpec("CartPole-v1")
#: Short episodes (50 steps), so that 10 of them end in a tiny run and steps_to_threshold is set.
PENDULUM = EnvSpec("Pendulum-v1", kwargs={"max_episode_steps": 50})

#: Tiny settings (those of test_checkpoint and test_continuous_agents; a smaller DQN network), the
#: env steps of one loop iteration (PPO: a rollout of 32 steps x 2 envs; the others: a vector step
#: of 2 envs), the full run's env steps and two stops that are not on an iteration boundary.
CASES = {
    "ppo": (CARTPOLE, SMALL_PPO, 64, 640, 100, 400),
    "dqn": (CARTPOLE, {**HYPERPARAMETERS["dqn"], "hidden_sizes": [32, 32]}, 2, 1_000, 151, 701),
    "sac": (PENDULUM, {**TINY, "num_envs": 2}, 2, 800, 201, 555),
    "td3": (PENDULUM, {**TINY, "num_envs": 2}, 2, 800, 201, 555),
    "ddpg": (PENDULUM, {**TINY, "num_envs": 2}, 2, 800, 201, 555),
}
#: Thresholds that every run reaches between its two stops (in env steps: PPO 248, DQN 234, the
#: others 508, when their 10th episode ends).
THRESHOLD = {"ppo": 20.0, "dqn": 20.0, "sac": -1_000.0, "td3": -1_000.0, "ddpg": -1_000.0}
_DEFAULT = object()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _train(
    algorithm: str, stop_at: object = _DEFAULT, checkpoint: Checkpointing | None = None
) -> TrainResult:
    env, hp, _, total_steps, _, _ = CASES[algorithm]
    stop = {} if stop_at is _DEFAULT else {"stop_at": stop_at}
    return get_algorithm(algorithm).train(
        env,
        make_hyperparameters(algorithm, hp),
        RunSettings(
            total_steps,
            0,
            eval_seed=7,
            eval_episodes=2,
            curve_points=4,
            return_threshold=THRESHOLD[algorithm],
            checkpoint=checkpoint,
            **stop,
        ),
    )


def _boundary(algorithm: str, stop_at: int) -> int:
    """The first iteration boundary at or past ``stop_at`` env steps."""
    unit = CASES[algorithm][2]
    return math.ceil(stop_at / unit) * unit


def _assert_identical(a: TrainResult, b: TrainResult) -> None:
    np.testing.assert_array_equal(a.eval_returns, b.eval_returns)
    np.testing.assert_array_equal(a.curve_steps, b.curve_steps)
    np.testing.assert_array_equal(a.curve_returns, b.curve_returns)  # NaNs compare equal here
    assert a.steps_to_threshold == b.steps_to_threshold
    assert a.env_steps == b.env_steps
    assert a.model_state.keys() == b.model_state.keys()
    for name, tensor in a.model_state.items():
        assert torch.equal(tensor, b.model_state[name]), name


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_stopped_and_continued_run_equals_the_uninterrupted_one_at_every_stop(
    algorithm: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, _, total_steps, first, second = CASES[algorithm]
    path = tmp_path / "seed0.pt"
    # no save is ever due: the file is written at the stops only
    checkpoint = Checkpointing(path, every_steps=None, every_seconds=None)

    at_first = _train(algorithm, first, checkpoint)
    assert at_first.env_steps == _boundary(algorithm, first)
    assert torch.load(path, weights_only=True)["global_step"] == at_first.env_steps
    _assert_identical(_train(algorithm, first), at_first)
    unreached = at_first.curve_steps > at_first.env_steps
    assert unreached.any() and np.isnan(at_first.curve_returns[unreached]).all()

    with caplog.at_level(logging.INFO, logger="hpsrl"):
        at_second = _train(algorithm, second, checkpoint)
    assert f"resuming from env step {at_first.env_steps} (env state restored)" in caplog.text
    assert "WARNING" not in caplog.text
    assert at_second.env_steps == _boundary(algorithm, second)
    assert torch.load(path, weights_only=True)["global_step"] == at_second.env_steps
    assert at_second.train_seconds >= at_first.train_seconds  # cumulative
    _assert_identical(_train(algorithm, second), at_second)
    assert np.isfinite(at_second.curve_returns[0]) and np.isnan(at_second.curve_returns[-1])
    assert at_first.steps_to_threshold == math.inf  # reached between the stops
    assert at_first.env_steps < at_second.steps_to_threshold <= at_second.env_steps

    # A stop the checkpoint is already past: no training, nothing saved, the state as restored
    saved_bytes = path.read_bytes()
    again = _train(algorithm, first, checkpoint)
    _assert_identical(at_second, again)
    assert path.read_bytes() == saved_bytes

    full = _train(algorithm, None, checkpoint)
    assert full.env_steps == total_steps and full.train_seconds >= at_second.train_seconds
    _assert_identical(_train(algorithm), full)
    assert torch.load(path, weights_only=True)["global_step"] == at_second.env_steps  # none due


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_no_stop_stop_at_the_end_and_the_default_call_are_the_same_run(
    algorithm: str, tmp_path: Path
) -> None:
    total_steps = CASES[algorithm][3]
    default = _train(algorithm)
    _assert_identical(default, _train(algorithm, None))
    _assert_identical(default, _train(algorithm, total_steps))
    # stopping at or after the end is no early stop: nothing is saved that is not due
    path = tmp_path / "seed0.pt"
    _train(algorithm, total_steps + 1, Checkpointing(path, every_steps=None, every_seconds=None))
    assert not path.exists()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_stop_is_the_first_iteration_boundary_at_or_past_stop_at(algorithm: str) -> None:
    unit = CASES[algorithm][2]
    for stop_at in (1, unit, unit + 1):
        assert _train(algorithm, stop_at).env_steps == _boundary(algorithm, stop_at)
    assert _boundary(algorithm, unit + 1) == 2 * unit


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("stop_at", [0, -5, 2.5, "10", True])
def test_a_bad_stop_at_is_a_value_error_naming_it(algorithm: str, stop_at: object) -> None:
    with pytest.raises(ValueError, match="stop_at must be"):
        _train(algorithm, stop_at)
