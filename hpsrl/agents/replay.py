"""The replay ring the off-policy agents store their transitions in: DQN's (:mod:`hpsrl.agents.dqn`,
whose training loop writes and gathers the arrays itself) and SAC's, TD3's and DDPG's
(:class:`hpsrl.agents.continuous.ReplayBuffer`). Where a vector step's transitions go, what a
checkpoint keeps of the ring and when the agents train from it (:func:`gradient_steps_due`) are
written here once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


class ReplayRing:
    """A preallocated ring of transitions, one array per field of a transition (:attr:`arrays`,
    each ``capacity`` rows long), written round and round from its oldest row."""

    def __init__(self, capacity: int, arrays: dict[str, np.ndarray]) -> None:
        self.capacity = capacity
        self.arrays = arrays
        self.stored = 0
        """Transitions ever stored; the ring position is ``stored % capacity``."""

    def slots(self, n: int) -> slice | np.ndarray:
        """The rows the next ``n`` transitions go to (count them in :attr:`stored` once
        written): a slice unless they wrap around, as fancy indexing costs several times more on
        a few rows."""
        position = self.stored % self.capacity
        if position + n <= self.capacity:
            return slice(position, position + n)
        return (self.stored + np.arange(n)) % self.capacity

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions (the filled part of the ring, copied) and their count."""
        filled = min(self.stored, self.capacity)
        return {
            "stored": self.stored,
            **{name: torch.from_numpy(a[:filled].copy()) for name, a in self.arrays.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a ring of the same capacity and shapes."""
        self.stored = int(state["stored"])
        filled = min(self.stored, self.capacity)
        for name, array in self.arrays.items():
            array[:filled] = state[name].numpy()


def gradient_steps_due(hp: Any, previous_step: int, global_step: int, stored: int) -> int:
    """The gradient steps an off-policy agent takes after its vector step from ``previous_step`` to
    ``global_step`` env steps: ``hp.gradient_steps`` for each multiple of ``hp.train_frequency``
    passed, none until ``global_step`` is past ``hp.learning_starts`` or while no transition is
    ``stored``."""
    phases = global_step // hp.train_frequency - previous_step // hp.train_frequency
    if global_step > hp.learning_starts and phases > 0 and stored > 0:
        return phases * hp.gradient_steps
    return 0
