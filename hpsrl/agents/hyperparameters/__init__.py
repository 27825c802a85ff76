"""Each algorithm's hyperparameters, default genes and network-shaping fields, without torch.

A module per algorithm (``hpsrl.agents.hyperparameters.ppo``, ...) holds its ``Hyperparameters``,
``GENES`` and ``ARCHITECTURE_FIELDS``; the training module of the same name re-exports them. They
live apart from the training code so that checking a config (``hpsrl check``, every snakemake
start, ``hpsrl populate``) does not import torch, which takes seconds per process.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

#: Activation functions a network may use (the ``activation`` gene); hpsrl.agents.networks maps each
#: to its torch module.
ACTIVATION_NAMES = ("tanh", "relu", "elu", "leaky_relu", "gelu", "silu")


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
            value = tuple(as_int(f.name, v) for v in value)
        elif kind == "int":
            value = as_int(f.name, value)
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


def as_int(name: str, value: Any) -> int:
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    require(ok and float(value).is_integer(), name, "an integer", value)
    return int(value)


def check_off_policy_fields(hp: Any) -> None:
    """Check the fields every off-policy agent (DQN, SAC, TD3, DDPG) has (after coerce_fields)."""
    require(hp.learning_rate > 0, "learning_rate", "> 0", hp.learning_rate)
    require(0 < hp.gamma <= 1, "gamma", "in (0, 1]", hp.gamma)
    require(0 < hp.tau <= 1, "tau", "in (0, 1]", hp.tau)
    require(hp.buffer_size >= 1, "buffer_size", ">= 1", hp.buffer_size)
    require(hp.batch_size >= 1, "batch_size", ">= 1", hp.batch_size)
    require(hp.learning_starts >= 0, "learning_starts", ">= 0", hp.learning_starts)
    require(hp.train_frequency >= 1, "train_frequency", ">= 1", hp.train_frequency)
    require(hp.gradient_steps >= 1, "gradient_steps", ">= 1", hp.gradient_steps)
    require(
        all(width >= 1 for width in hp.hidden_sizes),
        "hidden_sizes",
        "a list of layer widths >= 1",
        hp.hidden_sizes,
    )
    require(
        hp.activation in ACTIVATION_NAMES,
        "activation",
        f"one of {sorted(ACTIVATION_NAMES)}",
        hp.activation,
    )
    require(hp.num_envs >= 1, "num_envs", ">= 1", hp.num_envs)
