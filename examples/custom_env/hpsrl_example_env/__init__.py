"""An example of a user's own environment package for hpsrl.

Importing the package registers ``hpsrl_example/GoToTarget-v0`` with gymnasium, which is what a
campaign's ``env.imports: [hpsrl_example_env]`` relies on.
"""

from __future__ import annotations

import gymnasium

from hpsrl_example_env.go_to_target import GoToTargetEnv

__all__ = ["ENV_ID", "GoToTargetEnv"]

ENV_ID = "hpsrl_example/GoToTarget-v0"

if ENV_ID not in gymnasium.registry:  # importing twice must not register twice
    gymnasium.register(
        id=ENV_ID,
        entry_point="hpsrl_example_env.go_to_target:GoToTargetEnv",
        max_episode_steps=50,
    )
