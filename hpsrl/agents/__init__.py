"""RL algorithms that individuals train: each module has ``Hyperparameters`` and ``train``.

Importing this package does not import torch: the training modules (``hpsrl.agents.ppo``, ...) are
imported by :func:`get_algorithm` when something trains, while checking a config needs only their
hyperparameters (:func:`hyperparameters_of`, :func:`make_hyperparameters`), which live in
:mod:`hpsrl.agents.hyperparameters`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpsrl.agents.checkpoints import Checkpointing
    from hpsrl.agents.run import RunSettings, TrainingDiverged, TrainResult

__all__ = [
    "ACTION_KINDS",
    "ALGORITHMS",
    "Checkpointing",
    "RunSettings",
    "TrainResult",
    "TrainingDiverged",
    "get_algorithm",
    "hyperparameters_of",
    "make_hyperparameters",
]

#: Algorithm names (the config's ``algorithm``); each is a module of this package.
ALGORITHMS = ("ppo", "dqn", "sac", "td3", "ddpg")

#: Action kinds (see ``hpsrl.envs.spec.action_kind``) each algorithm can handle.
ACTION_KINDS: dict[str, set[str]] = {
    "ppo": {"discrete"},
    "dqn": {"discrete"},
    "sac": {"continuous"},
    "td3": {"continuous"},
    "ddpg": {"continuous"},
}


def _known(name: str) -> str:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known algorithms: {sorted(ALGORITHMS)}")
    return name


def get_algorithm(name: str) -> ModuleType:
    """The module implementing algorithm ``name`` (``train``, ``greedy_policy``; imports torch)."""
    return importlib.import_module(f"hpsrl.agents.{_known(name)}")


def hyperparameters_of(name: str) -> ModuleType:
    """The torch-free module of algorithm ``name``'s ``Hyperparameters``, ``GENES`` and
    ``ARCHITECTURE_FIELDS``."""
    return importlib.import_module(f"hpsrl.agents.hyperparameters.{_known(name)}")


def make_hyperparameters(algorithm: str, values: Mapping[str, Any]) -> Any:
    """``Hyperparameters`` of ``algorithm`` from ``values``; unset fields keep their defaults.

    Raises ``ValueError`` for unknown keys (listing the valid ones) and for values out of range.
    """
    cls = hyperparameters_of(algorithm).Hyperparameters
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown {algorithm} hyperparameter(s) {unknown}; valid names: {', '.join(valid)}"
        )
    return cls(**values)


#: Where each training record lives (its module imports torch).
_LAZY = {
    "Checkpointing": "checkpoints",
    "RunSettings": "run",
    "TrainResult": "run",
    "TrainingDiverged": "run",
}


def __getattr__(name: str) -> Any:
    """The training records (:data:`_LAZY`), imported (with torch) on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"hpsrl.agents.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
