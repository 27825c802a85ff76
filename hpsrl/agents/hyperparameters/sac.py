"""SAC's hyperparameters, default genes and network-shaping fields (see
:mod:`hpsrl.agents.hyperparameters`; trained by :mod:`hpsrl.agents.sac`)."""

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
    """SAC hyperparameters; the field names are the gene names. Defaults suit Pendulum-v1."""

    learning_rate: float = 1e-3
    """Adam step size of the actor, the critics and the entropy coefficient."""
    gamma: float = 0.99
    """Discount factor, in (0, 1]."""
    tau: float = 0.01
    """Target update rate, in (0, 1]: after each gradient step the target critics move this
    fraction of the way to the critics (Polyak averaging)."""
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
    ent_coef: float = 1.0
    """Entropy coefficient alpha, > 0: its starting value with ``autotune_entropy``, else fixed."""
    autotune_entropy: bool = True
    """Learn alpha so that the policy's entropy tracks minus the number of action dimensions."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the actor and of each critic (separate networks)."""
    activation: str = "relu"
    """Hidden-layer activation, one of ``ACTIVATION_NAMES``."""
    num_envs: int = 1
    """Environments stepped in parallel (one vector env)."""

    def __post_init__(self) -> None:
        coerce_fields(self)
        check_off_policy_fields(self)
        require(self.ent_coef > 0, "ent_coef", "> 0", self.ent_coef)


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
    "autotune_entropy": {"type": "categorical", "choices": [True, False]},
    "ent_coef": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
    "hidden_sizes": {
        "type": "list",
        "min_length": 1,
        "max_length": 2,
        "element": {"type": "int", "low": 32, "high": 128, "log": True},
    },
}
