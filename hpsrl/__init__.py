"""hpsrl: genetic-algorithm hyperparameter search for deep reinforcement learning."""

from __future__ import annotations

__version__ = "0.1.0"

# The log lines of hpsrl's commands and of the warm workers that train for them.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class HpsrlError(Exception):
    """A failure hpsrl expects and can explain in one line (a bad config, a missing or damaged
    file, a campaign with nothing to show yet), not a bug: the ``hpsrl`` command prints it as
    ``hpsrl: error: MESSAGE`` and exits with status 1. Each stage's errors derive from it, so
    that what reports them (hpsrl.training.recovery) need not import every stage."""
