"""Environments: the spec a config gives (``env``: a gymnasium id, kwargs, imports, entry point)
in :mod:`hpsrl.envs.spec`, and hpsrl's own, laser beam combining (``hpsrl/BeamCombining-v0``)."""
