"""Pieces the continuous-action agents (SAC, TD3, DDPG) share: the environment's action bounds,
the critics and the replay buffer.

The agents act in ``[-1, 1]`` per action dimension (a tanh output) and store those actions in the
replay buffer; :class:`ActionBounds` maps them onto the env's ``Box`` bounds when they are sent to
the env, as Stable-Baselines3 does. Observations are flattened to vectors.

Like ``ppo`` and ``dqn``, these agents train without autograd. With the RL Zoo's networks (two
256-wide layers, batches of 256) a SAC gradient step needs fifteen 256 x 256 x 256 matrix products,
which are its floor; through autograd it also ran a few hundred small torch ops, each with its
dispatch and a fresh output buffer, and up to three products more. So the losses' gradients are
written out (in each agent's module) on numpy arrays, through :class:`~hpsrl.agents.networks.MLP`'s
forward and backward passes (:class:`CriticMLPs` here for the critics), and leave out what autograd
computes and throws away: the critics' parameter gradients of the actor's loss, and the backward
pass of the critic that does not attain the minimum of a row. Adam runs as one kernel over each
network's flat parameter buffer (:class:`~hpsrl.agents.networks.FlatAdam`), target networks move
with one op on flat buffers, the agents act in numpy, and a training phase's samples are drawn and
gathered at once. The torch modules (:class:`Critics`, the agents' actors) hold the weights and
state the same maths with autograd: the tests (``tests/test_continuous_gradients.py``) check every
hand-written gradient against them."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium
import numpy as np
import torch
from torch import nn

from hpsrl.agents.networks import MLP, build_mlp
from hpsrl.agents.replay import ReplayRing
from hpsrl.agents.run import loop_lengths
from hpsrl.envs.spec import EnvConfigError, EnvSpec, action_kind, observation_dim

# -- The environment's spaces ----------------------------------------------------------------------


class ActionBounds:
    """The affine map from the agents' actions in ``[-1, 1]`` onto a ``Box``'s ``[low, high]``."""

    def __init__(self, space: gymnasium.spaces.Space, algorithm: str, env_id: str) -> None:
        if action_kind(space) != "continuous":
            raise EnvConfigError(
                f"{algorithm} needs continuous (Box) actions; {env_id} has discrete ones "
                f"(use ppo or dqn)"
            )
        low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise EnvConfigError(
                f"{algorithm} needs bounded actions, but {env_id}'s action space {space} has "
                f"infinite bounds; wrap the environment to rescale its actions to finite bounds"
            )
        self.shape = space.shape
        self.dim = int(np.prod(space.shape))
        self.dtype = space.dtype
        self._scale = ((high - low) / 2).reshape(-1)
        self._offset = ((high + low) / 2).reshape(-1)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Actions in ``[-1, 1]``, shape ``(n, dim)``, as the env's actions, ``(n, *shape)``."""
        scaled = actions * self._scale + self._offset
        return scaled.astype(self.dtype, copy=False).reshape(len(actions), *self.shape)

    def acting(
        self, policy: Callable[[np.ndarray], np.ndarray]
    ) -> Callable[[np.ndarray], np.ndarray]:
        """``policy`` (a batch of observations to actions in ``[-1, 1]``) acting on the env: its
        actions through :meth:`to_env`."""
        return lambda obs: self.to_env(policy(obs))


def spaces_of(env: EnvSpec, algorithm: str) -> tuple[int, ActionBounds]:
    """Observation length and action bounds of ``env`` (made once, then closed)."""
    single = env.make()
    try:
        return observation_dim(single.observation_space), ActionBounds(
            single.action_space, algorithm, env.id
        )
    finally:
        single.close()


# -- Networks ------------------------------------------------------------------------------------


class Critics(nn.Module):
    """``n`` independent Q-networks, each an MLP from (observation, action) to a value."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.qs = nn.ModuleList(
            build_mlp(obs_dim + act_dim, 1, hidden_sizes, activation, 1.0, generator=generator)
            for _ in range(n)
        )

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Each network's values of a batch, shape ``(n, batch)``."""
        x = torch.cat([obs, actions], -1)
        return torch.stack([q(x)[:, 0] for q in self.qs])


class CriticMLPs:
    """The hand-written forward and backward passes of a :class:`Critics` module (one
    :class:`~hpsrl.agents.networks.MLP` per Q-network, views of its weights).

    The losses' own gradients are a few lines of numpy in the agents; what they need from the
    critics is here: values, the gradient of a regression onto a target with respect to the
    critics' parameters (:meth:`regress`), and the gradient of some function of the values with
    respect to the actions that went in (:meth:`action_gradient`), computed only for the rows and
    critics where it is not zero. ``trainable=False`` for target critics (values only).
    """

    def __init__(
        self, critics: Critics, activation: str, obs_dim: int, *, trainable: bool = True
    ) -> None:
        self.mlps = [MLP(q, activation, trainable=trainable) for q in critics.qs]
        self._actions = slice(obs_dim, None)  # the action columns of a critic's input
        self._act_dim = critics.qs[0][0].in_features - obs_dim

    def values(self, inputs: np.ndarray) -> np.ndarray:
        """Each critic's values of ``inputs`` (observations and actions side by side),
        shape ``(n, batch)``; nothing is kept for a backward pass."""
        return np.stack([mlp.predict(inputs)[:, 0] for mlp in self.mlps])

    def forward(self, inputs: np.ndarray, count: int | None = None) -> np.ndarray:
        """:meth:`values` of the first ``count`` critics (all with ``None``: TD3's actor reads
        only the first), keeping what :meth:`regress`'s or :meth:`action_gradient`'s backward
        needs."""
        return np.stack([mlp.forward(inputs)[:, 0] for mlp in self.mlps[:count]])

    def regress(self, inputs: np.ndarray, targets: np.ndarray, weight: float) -> float:
        """``weight`` x the sum over critics of the mean squared error of their values of
        ``inputs`` against ``targets``; *writes* its gradient into the critics' ``.grad``."""
        residuals = self.forward(inputs) - targets
        scale = 2.0 * weight / residuals.shape[1]
        for mlp, residual in zip(self.mlps, residuals, strict=True):
            mlp.backward((scale * residual)[:, None])
        return weight * float((residuals * residuals).mean(axis=1).sum())

    def action_gradient(self, grad_values: np.ndarray) -> np.ndarray:
        """d loss / d actions, shape ``(batch, act_dim)``, through the last :meth:`forward`, given
        d loss / d values of the first ``n`` critics, shape ``(n, batch)`` (those of the last
        forward). A critic's rows whose gradient is 0 (a minimum over critics that another critic
        attains) are left out of its backward pass, which gives the same sum."""
        total: np.ndarray | None = None
        for mlp, grad in zip(self.mlps, grad_values, strict=False):
            rows = np.flatnonzero(grad)
            if len(rows) == 0:
                continue
            if len(rows) == len(grad):
                part = mlp.input_gradient(grad[:, None], self._actions)
                total = part if total is None else total + part
            else:
                part = mlp.input_gradient(grad[rows, None], self._actions, rows)
                if total is None:
                    total = np.zeros((len(grad), part.shape[1]), dtype=part.dtype)
                total[rows] += part
        if total is None:
            return np.zeros((grad_values.shape[1], self._act_dim), dtype=grad_values.dtype)
        return total


# -- Replay buffer ---------------------------------------------------------------------------------


class ReplayBuffer(ReplayRing):
    """A preallocated ring of transitions ``(obs, action, reward, next_obs, terminated)``.

    With gymnasium 1.x ``NEXT_STEP`` autoreset, the step that resets a finished episode is not a
    transition: :meth:`add` leaves it out. A stored transition's done flag is ``terminated`` only,
    so truncated episodes bootstrap from their final observation.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        super().__init__(
            capacity,
            {
                "obs": np.zeros((capacity, obs_dim), dtype=np.float32),
                "actions": np.zeros((capacity, act_dim), dtype=np.float32),
                "rewards": np.zeros(capacity, dtype=np.float32),
                "next_obs": np.zeros((capacity, obs_dim), dtype=np.float32),
                "terminated": np.zeros(capacity, dtype=np.float32),
            },
        )

    @classmethod
    def for_run(
        cls, buffer_size: int, total_steps: int, num_envs: int, obs_dim: int, act_dim: int
    ) -> ReplayBuffer:
        """A buffer of ``buffer_size`` transitions, or fewer where a run of ``total_steps`` env
        steps (whole vector steps of ``num_envs``) stores fewer: no larger one is needed."""
        num_vector_steps, _ = loop_lengths(total_steps, num_envs, None)
        return cls(min(buffer_size, num_vector_steps * num_envs), obs_dim, act_dim)

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        reset_step: np.ndarray,
    ) -> None:
        """Store one vector step's transitions, except those of envs on a reset step."""
        n = len(obs) - int(np.count_nonzero(reset_step))
        real = slice(None) if n == len(obs) else ~reset_step
        slots = self.slots(n)
        values = (obs, actions, rewards, next_obs, terminated)
        for array, value in zip(self.arrays.values(), values, strict=True):
            array[slots] = value[real]
        self.stored += n

    def sample(
        self, rng: np.random.Generator, n_batches: int, batch_size: int
    ) -> dict[str, np.ndarray]:
        """``n_batches`` batches of uniformly drawn transitions, each array shaped
        ``(n_batches, batch_size, ...)``, gathered at once; ``not_terminal`` is
        ``1 - terminated``. ``obs_actions`` holds the observations and actions side by side
        (a critic's input), ``obs`` is a view of its observations."""
        rows = rng.integers(min(self.stored, self.capacity), size=(n_batches, batch_size))
        a = self.arrays
        obs_actions = np.concatenate([a["obs"][rows], a["actions"][rows]], axis=-1)
        return {
            "obs_actions": obs_actions,
            "obs": obs_actions[..., : a["obs"].shape[1]],
            "rewards": a["rewards"][rows],
            "next_obs": a["next_obs"][rows],
            "not_terminal": 1.0 - a["terminated"][rows],
        }
