"""DDPG's hyperparameters, default genes and network-shaping fields (see
:mod:`hpsrl.agents.hyperparameters`; trained by :mod:`hpsrl.agents.ddpg`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpsrl.agents.hyperparameters import (
    check_off_policy_fields,
    coerce_fields,
    require,
)


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
    """Hidden-layer activation, one of ``ACTIVATION_NAMES``."""
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
