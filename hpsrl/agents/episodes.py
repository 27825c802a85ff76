"""Episode bookkeeping during training (:class:`EpisodeTracker`: returns, learning curve,
``steps_to_threshold``) and evaluation of a trained policy (:func:`evaluate`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from hpsrl.envs.spec import EnvSpec

#: Episodes averaged for the learning curve and for ``steps_to_threshold``.
CURVE_WINDOW = 20
THRESHOLD_WINDOW = 10


class EpisodeTracker:
    """Accumulates the undiscounted return of every training episode across a vector env.

    Call :meth:`step` after each vector step with the step's rewards and done flags. With
    ``NEXT_STEP`` autoreset the reset step after an episode returns reward 0 and no done flag, so it
    leaves the accumulators untouched.
    """

    def __init__(
        self,
        num_envs: int,
        total_steps: int,
        curve_points: int,
        return_threshold: float | None,
    ) -> None:
        self.running = np.zeros(num_envs, dtype=np.float64)
        self.recent: deque[float] = deque(maxlen=max(CURVE_WINDOW, THRESHOLD_WINDOW))
        self.episodes = 0
        points = np.linspace(0, total_steps, curve_points + 1)[1:]
        self.curve_steps = points.round().astype(np.int64)
        self.curve_returns = np.full(curve_points, np.nan)
        self._next_point = 0
        self.return_threshold = return_threshold
        self.steps_to_threshold = math.inf

    def step(self, rewards: np.ndarray, dones: np.ndarray, global_step: int) -> None:
        """Record one vector step; ``global_step`` counts env steps including this one."""
        self.running += rewards
        if dones.any():
            for ret in self.running[dones]:
                self.recent.append(float(ret))
            self.episodes += int(dones.sum())
            self.running[dones] = 0.0
            if (
                self.return_threshold is not None
                and self.steps_to_threshold == math.inf
                and len(self.recent) >= THRESHOLD_WINDOW
                and np.mean(list(self.recent)[-THRESHOLD_WINDOW:]) >= self.return_threshold
            ):
                self.steps_to_threshold = float(global_step)
        while (
            self._next_point < len(self.curve_steps)
            and global_step >= self.curve_steps[self._next_point]
        ):
            self.curve_returns[self._next_point] = self.recent_mean()
            self._next_point += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`step` has accumulated, as tensors and plain data (for checkpoints)."""
        return {
            "running": torch.from_numpy(self.running.copy()),
            "recent": list(self.recent),
            "episodes": self.episodes,
            "curve_returns": torch.from_numpy(self.curve_returns.copy()),
            "next_point": self._next_point,
            "steps_to_threshold": self.steps_to_threshold,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a tracker built with the same arguments."""
        self.running = state["running"].numpy().astype(np.float64, copy=True)
        self.recent = deque((float(r) for r in state["recent"]), maxlen=self.recent.maxlen)
        self.episodes = int(state["episodes"])
        self.curve_returns = state["curve_returns"].numpy().astype(np.float64, copy=True)
        self._next_point = int(state["next_point"])
        self.steps_to_threshold = float(state["steps_to_threshold"])

    def recent_mean(self) -> float:
        """Mean return of the last <= 20 finished episodes (NaN before the first one)."""
        if not self.recent:
            return math.nan
        return float(np.mean(list(self.recent)[-CURVE_WINDOW:]))


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    env: EnvSpec,
    episodes: int,
    seed: int,
    *,
    max_steps: int = 100_000,
) -> np.ndarray:
    """Return of the first episode of each of ``episodes`` copies of ``env`` run side by side.

    ``policy`` maps a batch of observations to a batch of actions (greedy/deterministic). The
    vector env is reset with ``seed`` (sync vector envs seed copy i with ``seed + i``).
    ``max_steps`` guards against environments without a time limit.
    """
    if episodes < 1:
        raise ValueError(f"eval episodes must be >= 1, got {episodes}")
    envs = env.make_vector(episodes)
    try:
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(episodes, dtype=np.float64)
        running = np.ones(episodes, dtype=bool)
        for _ in range(max_steps):
            obs, rewards, terminated, truncated, _ = envs.step(policy(obs))
            returns += np.where(running, rewards, 0.0)
            running &= ~(terminated | truncated)
            if not running.any():
                return returns
    finally:
        envs.close()
    raise RuntimeError(
        f"evaluation episodes on {env.id!r} did not end within {max_steps} steps; give the "
        f"environment a time limit (env.kwargs.max_episode_steps)"
    )
