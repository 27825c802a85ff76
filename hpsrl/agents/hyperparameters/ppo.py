"""PPO's hyperparameters, default genes and network-shaping fields (see
:mod:`hpsrl.agents.hyperparameters`; trained by :mod:`hpsrl.agents.ppo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpsrl.agents.hyperparameters import ACTIVATION_NAMES, coerce_fields, require


@dataclass(frozen=True)
class Hyperparameters:
    """PPO hyperparameters; the field names are the gene names. Defaults suit CartPole-v1."""

    learning_rate: float = 1e-3
    """Adam step size (at the start, see ``anneal_lr``)."""
    gamma: float = 0.98
    """Discount factor, in (0, 1]."""
    gae_lambda: float = 0.8
    """GAE bias/variance trade-off, in [0, 1]."""
    clip_coef: float = 0.2
    """PPO's epsilon: how far the probability ratio may move from 1 before it is clipped."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Gradients are rescaled to at most this global L2 norm."""
    num_envs: int = 8
    """Environments stepped in parallel (one vector env)."""
    num_steps: int = 64
    """Rollout length per environment (>= 2); a rollout has ``num_envs * num_steps`` env steps."""
    batch_size: int = 256
    """Minibatch size (>= 1). Each epoch splits the valid samples of a rollout (at most
    ``num_envs * num_steps``) into ``round(samples / batch_size)`` near-equal minibatches; a
    ``batch_size`` larger than the rollout gives one minibatch of the whole rollout per epoch."""
    update_epochs: int = 10
    """Passes over each rollout."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the actor and of the critic (separate networks)."""
    activation: str = "tanh"
    """Hidden-layer activation, one of ``ACTIVATION_NAMES``."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over training."""
    normalize_advantages: bool = True
    """Standardise advantages within each minibatch."""

    def __post_init__(self) -> None:
        coerce_fields(self)
        require(self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate)
        require(0 < self.gamma <= 1, "gamma", "in (0, 1]", self.gamma)
        require(0 <= self.gae_lambda <= 1, "gae_lambda", "in [0, 1]", self.gae_lambda)
        require(self.clip_coef > 0, "clip_coef", "> 0", self.clip_coef)
        require(self.ent_coef >= 0, "ent_coef", ">= 0", self.ent_coef)
        require(self.vf_coef > 0, "vf_coef", "> 0", self.vf_coef)
        require(self.max_grad_norm > 0, "max_grad_norm", "> 0", self.max_grad_norm)
        require(self.num_envs >= 1, "num_envs", ">= 1", self.num_envs)
        # >= 2 so that every env has a real step in each rollout (a reset step never ends one)
        require(self.num_steps >= 2, "num_steps", ">= 2", self.num_steps)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.update_epochs >= 1, "update_epochs", ">= 1", self.update_epochs)
        require(
            all(width >= 1 for width in self.hidden_sizes),
            "hidden_sizes",
            "a list of layer widths >= 1",
            self.hidden_sizes,
        )
        require(
            self.activation in ACTIVATION_NAMES,
            "activation",
            f"one of {sorted(ACTIVATION_NAMES)}",
            self.activation,
        )


#: The hyperparameters that change the network's shapes or function: a run may start from another
#: run's weights (``initial_weights``) only where they are equal (see ``ga.inherit_weights``).
ARCHITECTURE_FIELDS = ("hidden_sizes", "activation")

#: The genes a campaign searches unless its config says otherwise (config key ``genes``), in the
#: config's format; the ranges that suit classic-control tasks such as CartPole-v1.
GENES: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1.0e-4, "high": 3.0e-3, "log": True},
    "gamma": {"type": "float", "low": 0.95, "high": 0.999},
    "gae_lambda": {"type": "float", "low": 0.8, "high": 0.99},
    "clip_coef": {"type": "float", "low": 0.1, "high": 0.3},
    "ent_coef": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True},
    "update_epochs": {"type": "int", "low": 2, "high": 10},
    "batch_size": {"type": "categorical", "choices": [64, 128, 256]},
    "activation": {"type": "categorical", "choices": ["tanh", "relu"]},
    "hidden_sizes": {
        "type": "list",
        "min_length": 1,
        "max_length": 3,
        "element": {"type": "int", "low": 16, "high": 128, "log": True},
    },
}
