"""hpsrl: genetic-algorithm hyperparameter search for deep reinforcement learning."""

from __future__ import annotations

__version__ = "0.1.0"

# The log lines of hpsrl's commands and of the warm workers that train for them.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
