"""Walk to a target on a line: a tiny task that PPO learns in a few thousand steps."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


class GoToTargetEnv(gymnasium.Env):
    """An agent and a target on ``size`` cells of a line; reach the target.

    Observation: the agent's and the target's cell, each divided by ``size - 1`` (so in [0, 1]).
    Actions: 0 steps left, 1 steps right (the ends of the line are walls). Reward: +1 on reaching
    the target (the episode terminates), -0.05 for every other step. The two start on different
    random cells; the shortest walk scores 1 - 0.05 x (distance - 1): 0.87 on average on 10 cells
    (at least 0.6), random steps about -0.3 (registered with a limit of 50 steps).
    """

    def __init__(self, size: int = 10) -> None:
        if not isinstance(size, int) or size < 2:
            raise ValueError(f"GoToTargetEnv: size must be an integer >= 2, got {size!r}")
        self.size = size
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._agent = 0
        self._target = 1

    def _obs(self) -> np.ndarray:
        return np.array([self._agent, self._target], dtype=np.float32) / (self.size - 1)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._agent, self._target = (int(c) for c in self.np_random.choice(self.size, 2, False))
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        move = 1 if int(action) == 1 else -1
        self._agent = min(max(self._agent + move, 0), self.size - 1)
        reached = self._agent == self._target
        return self._obs(), 1.0 if reached else -0.05, reached, False, {"is_success": reached}
