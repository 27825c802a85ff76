"""Pieces shared by the agents: result record, MLP builder, episode bookkeeping and evaluation."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from hpsrl.envs import EnvSpec

#: Activation functions a network may use (the ``activation`` gene).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

#: Episodes averaged for the learning curve and for ``steps_to_threshold``.
CURVE_WINDOW = 20
THRESHOLD_WINDOW = 10


class TrainingDiverged(RuntimeError):
    """A loss or a network parameter became NaN or infinite during training."""


@dataclass
class TrainResult:
    """What one training run produced."""

    eval_returns: np.ndarray
    """(eval_episodes,) float64: undiscounted return of each evaluation episode, greedy policy."""
    curve_steps: np.ndarray
    """(curve_points,) int64: env steps at which the learning curve was sampled."""
    curve_returns: np.ndarray
    """(curve_points,) float64: mean return of the last <= 20 finished training episodes at that
    point; NaN before the first episode ends."""
    steps_to_threshold: float
    """Env steps at which the mean of the last 10 finished training episodes first reached the
    return threshold (needs 10 finished episodes); ``math.inf`` if never or without threshold."""
    env_steps: int
    """Env steps actually taken: ``total_steps`` rounded up to whole rollouts (PPO) or whole
    vector steps (DQN). Steps in which a vector env resets a finished episode count too."""
    train_seconds: float
    eval_seconds: float
    model_state: dict[str, torch.Tensor]
    """``state_dict`` of the agent's network (CPU tensors); loads with ``weights_only=True``."""


def require(ok: bool, name: str, allowed: str, value: Any) -> None:
    """Raise ``ValueError("<name> must be <allowed>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def coerce_fields(hp: Any) -> None:
    """Give each field of the frozen dataclass ``hp`` its declared type, in place.

    Values come from YAML, HDF5 or a GA (``numpy.int64``, ``64.0``, lists), so integral floats
    become ``int``, sequences become ``tuple[int, ...]`` and numpy scalars become Python ones.
    """
    for f in fields(hp):
        value = getattr(hp, f.name)
        kind = str(f.type)
        if kind == "tuple[int, ...]":
            require(
                not isinstance(value, str | bytes) and np.ndim(value) == 1,
                f.name,
                "a list of layer widths such as [64, 64]",
                value,
            )
            value = tuple(_as_int(f.name, v) for v in value)
        elif kind == "int":
            value = _as_int(f.name, value)
        elif kind == "float":
            require(isinstance(value, int | float | np.number), f.name, "a number", value)
            value = float(value)
        elif kind == "bool":
            require(value in (True, False), f.name, "true or false", value)
            value = bool(value)
        elif kind == "str":
            value = value.decode() if isinstance(value, bytes) else value
            require(isinstance(value, str), f.name, "a string", value)
        object.__setattr__(hp, f.name, value)


def _as_int(name: str, value: Any) -> int:
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    require(ok and float(value).is_integer(), name, "an integer", value)
    return int(value)


def build_mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int],
    activation: str,
    out_gain: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """A fully connected network with orthogonal weights (gain sqrt(2) hidden) and zero biases.

    As in CleanRL; ``out_gain`` scales the last layer (0.01 for a policy head, 1 for values).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    sizes = [in_dim, *hidden_sizes, out_dim]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        linear = nn.Linear(n_in, n_out)
        nn.init.orthogonal_(linear.weight, out_gain if last else math.sqrt(2), generator=generator)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def check_finite(losses: torch.Tensor, what: str, step: int) -> None:
    """Raise :class:`TrainingDiverged` unless every loss of an update (a 1-d tensor) is finite."""
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0, 0])
        raise TrainingDiverged(
            f"{what} became {losses[first].item()} in gradient step {first + 1} of the update "
            f"ending at env step {step}; the hyperparameters (often learning_rate) make "
            f"training unstable"
        )


def check_parameters(module: nn.Module, step: int) -> None:
    """Raise :class:`TrainingDiverged` if a parameter of ``module`` is NaN or infinite."""
    for name, param in module.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise TrainingDiverged(f"parameter {name!r} became NaN/inf by env step {step}")


def state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()``."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


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
