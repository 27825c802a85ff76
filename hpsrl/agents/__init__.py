"""RL algorithms that individuals train: each module has ``Hyperparameters`` and ``train``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from hpsrl.agents import ddpg, dqn, ppo, sac, td3
from hpsrl.agents.common import Checkpointing, TrainingDiverged, TrainResult

__all__ = [
    "ACTION_KINDS",
    "ALGORITHMS",
    "Checkpointing",
    "TrainResult",
    "TrainingDiverged",
    "get_algorithm",
    "make_hyperparameters",
]

#: Algorithm name (the config's ``algorithm``) -> module with ``Hyperparameters`` and ``train``.
ALGORITHMS: dict[str, ModuleType] = {"ppo": ppo, "dqn": dqn, "sac": sac, "td3": td3, "ddpg": ddpg}

#: Action kinds (see ``hpsrl.envs.action_kind``) each algorithm can handle.
ACTION_KINDS: dict[str, set[str]] = {
    "ppo": {"discrete"},
    "dqn": {"discrete"},
    "sac": {"continuous"},
    "td3": {"continuous"},
    "ddpg": {"continuous"},
}


def get_algorithm(name: str) -> ModuleType:
    """The module implementing algorithm ``name``."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown algorithm {name!r}; known algorithms: {sorted(ALGORITHMS)}"
        ) from None


def make_hyperparameters(algorithm: str, values: Mapping[str, Any]) -> Any:
    """``Hyperparameters`` of ``algorithm`` from ``values``; unset fields keep their defaults.

    Raises ``ValueError`` for unknown keys (listing the valid ones) and for values out of range.
    """
    cls = get_algorithm(algorithm).Hyperparameters
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown {algorithm} hyperparameter(s) {unknown}; valid names: {', '.join(valid)}"
        )
    return cls(**values)
