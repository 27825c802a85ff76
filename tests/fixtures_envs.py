"""Tiny gymnasium environments for tests, loaded through ``EnvSpec.entry_point``."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


class MatchEnv(gymnasium.Env):
    """Observe a one-hot target; reward 1 for choosing it. Ten steps per episode (terminated).

    A random policy scores about 5, the optimal one exactly 10.
    """

    def __init__(self, length: int = 10) -> None:
        self.length = length
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._target = 0
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.eye(2, dtype=np.float32)[self._target]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._target = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = float(int(action) == self._target)
        self._t += 1
        self._target = int(self.np_random.integers(2))
        return self._obs(), reward, self._t >= self.length, False, {}


class HeldEnv(MatchEnv):
    """MatchEnv that a test holds still: from its ``after``-th step on, each step waits as long as
    the file ``hold`` exists, and says so first with an empty file named after its host and process
    in the folder ``waiting``. A training on it is surely still running until the test deletes
    ``hold`` (or it is killed), however slow or fast the machine; without ``hold`` it is MatchEnv.
    """

    def __init__(self, hold: str, waiting: str, after: int = 0, length: int = 10) -> None:
        super().__init__(length)
        self.hold = Path(hold)
        self.waiting = Path(waiting)
        self.after = after
        self._steps = 0

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._steps += 1
        if self._steps > self.after and self.hold.exists():
            self.waiting.mkdir(parents=True, exist_ok=True)
            (self.waiting / f"{socket.gethostname()}-{os.getpid()}").touch()
            while self.hold.exists():
                time.sleep(0.1)
        return super().step(action)


class NeedsMissingPackageEnv(gymnasium.Env):
    """Fails like a gymnasium env whose optional dependency is not installed."""

    def __init__(self) -> None:
        raise gymnasium.error.DependencyNotInstalled(
            "Box2D is not installed, you can install it by run `pip install swig` followed by "
            '`pip install "gymnasium[box2d]"`'
        )


class ReachEnv(gymnasium.Env):
    """Observe a target in [-1, 1]; reward minus the distance of a continuous action in [0, 4] from
    ``2 + 2 * target``. Ten steps per episode (terminated).

    A uniformly random policy scores about -13, the optimal one 0.
    """

    def __init__(self, length: int = 10) -> None:
        self.length = length
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(0.0, 4.0, shape=(1,), dtype=np.float32)
        self._target = 0.0
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._target], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._target = float(self.np_random.uniform(-1.0, 1.0))
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = -abs(float(np.asarray(action).reshape(-1)[0]) - (2.0 + 2.0 * self._target))
        self._t += 1
        self._target = float(self.np_random.uniform(-1.0, 1.0))
        return self._obs(), reward, self._t >= self.length, False, {}
