"""DQN's hyperparameters, default genes and network-shaping fields (see
:mod:`hpsrl.agents.hyperparameters`; trained by :mod:`hpsrl.agents.dqn`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpsrl.agents.hyperparameters import check_off_policy_fields, coerce_fields, require


@dataclass(frozen=True)
class Hyperparameters:
    """DQN hyperparameters; the field names are the gene names. Defaults suit CartPole-v1."""

    learning_rate: float = 2.3e-3
    """Adam step size."""
    gamma: float = 0.99
    """Discount factor, in (0, 1]."""
    buffer_size: int = 100_000
    """Replay buffer capacity in transitions."""
    batch_size: int = 64
    """Transitions per gradient step."""
    learning_starts: int = 1_000
    """Env steps of random actions before learning starts."""
    train_frequency: int = 256
    """Env steps between training phases."""
    gradient_steps: int = 64
    """Gradient steps per training phase."""
    target_update_interval: int = 10
    """Env steps between target-network updates."""
    tau: float = 1.0
    """Target update rate, in (0, 1]: 1 copies the Q-network, smaller values average (Polyak)."""
    exploration_fraction: float = 0.16
    """Fraction of ``total_steps`` over which epsilon decays linearly, in [0, 1]."""
    epsilon_start: float = 1.0
    """Epsilon of the epsilon-greedy policy at the start, in [0, 1]."""
    epsilon: float = 0.04
    """Final epsilon (after the decay), in [0, 1]."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Widths of the hidden layers of the Q-network."""
    activation: str = "relu"
    """Hidden-layer activation, one of ``ACTIVATION_NAMES``."""
    num_envs: int = 1
    """Environments stepped in parallel (one vector env)."""
    max_grad_norm: float = 10.0
    """Gradients are rescaled to at most this global L2 norm."""
    double_dqn: bool = False
    """Choose the next action with the Q-network and value it with the target network."""

    def __post_init__(self) -> None:
        coerce_fields(self)
        check_off_policy_fields(self)
        require(
            self.target_update_interval >= 1,
            "target_update_interval",
            ">= 1",
            self.target_update_interval,
        )
        for name in ("exploration_fraction", "epsilon_start", "epsilon"):
            value = getattr(self, name)
            require(0 <= value <= 1, name, "in [0, 1]", value)
        require(self.max_grad_norm > 0, "max_grad_norm", "> 0", self.max_grad_norm)


#: The hyperparameters that change the network's shapes or function: a run may start from another
#: run's weights (``initial_weights``) only where they are equal (see ``ga.inherit_weights``).
ARCHITECTURE_FIELDS = ("hidden_sizes", "activation")

#: The genes a campaign searches unless its config says otherwise (config key ``genes``), in the
#: config's format; the ranges that suit classic-control tasks such as CartPole-v1.
GENES: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1.0e-4, "high": 5.0e-3, "log": True},
    "gamma": {"type": "float", "low": 0.95, "high": 0.999},
    "epsilon": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
    "exploration_fraction": {"type": "float", "low": 0.05, "high": 0.5},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "target_update_interval": {"type": "int", "low": 10, "high": 1000, "log": True},
    "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
    "hidden_sizes": {
        "type": "list",
        "min_length": 1,
        "max_length": 3,
        "element": {"type": "int", "low": 32, "high": 256, "log": True},
    },
}
