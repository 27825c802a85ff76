"""Checkpoints: a run killed with SIGKILL and resumed gives the uninterrupted result, bit for bit.

Foreign, corrupt or unsafe checkpoint files are ignored with a warning, never used.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hpsrl.agents import TrainResult, make_hyperparameters, ppo
from hpsrl.agents.checkpoints import CHECKPOINT_FORMAT, Checkpointing
from hpsrl.agents.run import RunSettings
from hpsrl.envs.spec import EnvSpec
from tests.checkpoint_worker import EVERY_STEPS, TOTAL_STEPS, run

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = EnvSpec("CartPole-v1")
SMALL_PPO = {"num_envs": 2, "num_steps": 32, "batch_size": 32, "update_epochs": 1}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _assert_identical(a: TrainResult, b: TrainResult) -> None:
    np.testing.assert_array_equal(a.eval_returns, b.eval_returns)
    np.testing.assert_array_equal(a.curve_steps, b.curve_steps)
    np.testing.assert_array_equal(a.curve_returns, b.curve_returns)  # NaNs compare equal here
    assert a.steps_to_threshold == b.steps_to_threshold
    assert a.env_steps == b.env_steps
    assert a.model_state.keys() == b.model_state.keys()
    for name, tensor in a.model_state.items():
        assert torch.equal(tensor, b.model_state[name]), name


def _kill_after_first_checkpoint(algorithm: str, env_name: str, path: Path) -> int:
    """Start a checkpointed run in a subprocess, SIGKILL it once the checkpoint file appears.

    Returns the env step of the checkpoint that survived the kill.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.checkpoint_worker", algorithm, env_name, str(path)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not path.exists():
            if proc.poll() is not None:
                pytest.fail(f"worker ended before saving:\n{proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("worker saved no checkpoint within 120 s")
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the worker finished before it was killed"
    saved = torch.load(path, weights_only=True)
    step = int(saved["global_step"])
    assert EVERY_STEPS[algorithm] <= step < TOTAL_STEPS[algorithm], "the kill did not land mid-run"
    return step


# -- Killed and resumed == uninterrupted -----------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "env_name"),
    [
        ("ppo", "CartPole-v1"),
        ("dqn", "CartPole-v1"),
        pytest.param("ppo", "Acrobot-v1", marks=pytest.mark.slow),
        pytest.param("dqn", "Acrobot-v1", marks=pytest.mark.slow),
    ],
)
def test_killed_and_resumed_run_equals_uninterrupted_run(
    algorithm: str, env_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ind000.ckpt" / "seed0.pt"
    step = _kill_after_first_checkpoint(algorithm, env_name, path)
    with caplog.at_level(logging.INFO, logger="hpsrl"):
        resumed = run(algorithm, env_name, path)
    assert f"resuming from env step {step} (env state restored)" in caplog.text
    assert "WARNING" not in caplog.text
    uninterrupted = run(algorithm, env_name, None)
    _assert_identical(uninterrupted, resumed)
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_resumed_run_of_an_env_without_saved_state_goes_on(
    algorithm: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "seed0.pt"
    step = _kill_after_first_checkpoint(algorithm, "Match", path)
    assert torch.load(path, weights_only=True)["env"] is None
    with caplog.at_level(logging.INFO, logger="hpsrl"):
        resumed = run(algorithm, "Match", path)
    assert re.search(
        f"resuming from env step {step}, but .* not saved.* not bit-identical", caplog.text
    )
    uninterrupted = run(algorithm, "Match", None)
    assert resumed.env_steps == uninterrupted.env_steps
    assert resumed.curve_returns.shape == uninterrupted.curve_returns.shape
    assert np.isfinite(resumed.eval_returns).all() and np.isfinite(resumed.curve_returns[1:]).all()


def test_saving_changes_nothing_and_a_finished_checkpoint_resumes_to_the_same_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "seed0.pt"
    plain = _train_small(None)
    saving = _train_small(Checkpointing(path, every_steps=64, every_seconds=None))
    _assert_identical(plain, saving)
    assert torch.load(path, weights_only=True)["global_step"] == saving.env_steps
    with caplog.at_level(logging.INFO, logger="hpsrl"):
        again = _train_small(Checkpointing(path, every_steps=64))
    assert f"resuming from env step {saving.env_steps}" in caplog.text
    _assert_identical(plain, again)
    assert again.train_seconds >= saving.train_seconds * 0.5  # carries the earlier train time


def _train_small(checkpoint: Checkpointing | None, seed: int = 0, **hp: object) -> TrainResult:
    return ppo.train(
        CARTPOLE,
        make_hyperparameters("ppo", {**SMALL_PPO, **hp}),
        RunSettings(256, seed, eval_seed=9, eval_episodes=2, curve_points=4, checkpoint=checkpoint),
    )


# -- Foreign, corrupt and unsafe files are ignored -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "differs_in"),
    [
        ({"seed": 1}, "seed"),
        ({"learning_rate": 3e-4}, "hyperparameters"),
    ],
)
def test_checkpoint_of_another_run_is_ignored(
    change: dict, differs_in: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "seed0.pt"
    _train_small(Checkpointing(path, every_steps=64))
    seed = change.pop("seed", 0)
    with caplog.at_level(logging.WARNING, logger="hpsrl"):
        result = _train_small(Checkpointing(path, every_steps=64), seed, **change)
    assert f"belongs to another run (differs in {differs_in})" in caplog.text
    _assert_identical(_train_small(None, seed, **change), result)
    assert torch.load(path, weights_only=True)["fingerprint"]["seed"] == seed  # overwritten


class Unsafe:
    """An arbitrary class: ``weights_only`` loading must refuse to build it."""


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "unsafe pickle"])
def test_unreadable_checkpoint_is_ignored_with_a_warning(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "seed0.pt"
    _train_small(Checkpointing(path, every_steps=64))
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        saved = torch.load(path, weights_only=True)
        torch.save({**saved, "extra": Unsafe()}, path)
    with caplog.at_level(logging.WARNING, logger="hpsrl"):
        result = _train_small(Checkpointing(path, every_steps=64))
    assert "cannot be read" in caplog.text and "starts from scratch" in caplog.text
    _assert_identical(_train_small(None), result)
    torch.load(path, weights_only=True)  # overwritten with a good one


# -- What the file holds ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_checkpoint_loads_with_weights_only(algorithm: str, tmp_path: Path) -> None:
    path = tmp_path / "seed0.pt"
    run(algorithm, "Acrobot-v1" if algorithm == "dqn" else "CartPole-v1", path)
    saved = torch.load(path, weights_only=True)
    fingerprint = saved["fingerprint"]
    assert fingerprint["algorithm"] == algorithm and fingerprint["format"] == CHECKPOINT_FORMAT
    assert fingerprint["seed"] == 3 and fingerprint["eval_seed"] == 4
    assert saved["numpy_rng"]["state"]["state"] >= 0  # a 128-bit int survives
    assert saved["torch_generator"].dtype == torch.uint8
    assert saved["env"] is not None and saved["tracker"]["episodes"] > 0
    if algorithm == "dqn":
        assert saved["replay"]["stored"] > 500  # the ring buffer wrapped around
        assert saved["replay"]["obs"].shape == (500, 6)
        assert saved["env"]["kind"] == "SyncVectorEnv"
    else:
        assert saved["env"]["kind"] == "CartPoleVectorEnv"
        assert saved["optimizer"]["state"][0]["step"] > 0


def test_checkpointing_validates_its_fields() -> None:
    assert Checkpointing("a/b.pt").path == Path("a/b.pt")
    assert Checkpointing("a.pt", every_steps=5.0).every_steps == 5
    with pytest.raises(ValueError, match="every_steps must be >= 1"):
        Checkpointing("a.pt", every_steps=0)
    with pytest.raises(ValueError, match="every_seconds must be > 0"):
        Checkpointing("a.pt", every_seconds=-1)
    assert math.isclose(Checkpointing("a.pt").every_seconds, 600.0)
