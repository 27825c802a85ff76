"""Environments: the spec a config gives (``env``: a gymnasium id, kwargs, imports, entry point)
in :mod:`hpsrl.envs.spec`; the one-copy step and the vector-env state kept in checkpoints in
:mod:`hpsrl.envs.vector`; and hpsrl's own, laser beam combining (``hpsrl/BeamCombining-v0``)."""
