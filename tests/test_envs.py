"""EnvSpec: building registered and user environments, and the errors for bad configs."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from hpsrl.envs import EnvConfigError, EnvSpec, action_kind, observation_dim


def test_registered_id_makes_vector_and_single_envs() -> None:
    spec = EnvSpec("CartPole-v1")
    spec.check()
    envs = spec.make_vector(3)
    try:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (3, 4)
        assert envs.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP
        # CartPole has a numpy-vectorised implementation, which make_vector prefers.
        assert type(envs).__name__ == "CartPoleVectorEnv"
    finally:
        envs.close()
    env = spec.make()
    assert env.action_space == spaces.Discrete(2)
    env.close()


def test_env_without_vector_entry_point_uses_sync_vector_env() -> None:
    envs = EnvSpec("Acrobot-v1").make_vector(2)
    assert isinstance(envs, gymnasium.vector.SyncVectorEnv)
    envs.close()


def test_kwargs_reach_the_environment() -> None:
    envs = EnvSpec("CartPole-v1", kwargs={"max_episode_steps": 7}).make_vector(2)
    envs.reset(seed=0)
    ended = np.zeros(2, dtype=bool)
    for _ in range(7):  # alternate actions so that the pole stays up for 7 steps
        _, _, terminated, truncated, _ = envs.step(np.array([0, 1]))
        _, _, terminated2, truncated2, _ = envs.step(np.array([1, 0]))
        ended |= terminated | truncated | terminated2 | truncated2
    envs.close()
    assert ended.all()


def test_from_config_round_trip() -> None:
    d = {
        "id": "Match-v0",
        "entry_point": "tests.fixtures_envs:MatchEnv",
        "imports": ["tests.fixtures_envs"],
        "kwargs": {"length": 4},
    }
    spec = EnvSpec.from_config(d)
    assert spec.imports == ("tests.fixtures_envs",)
    assert spec.to_config() == d
    assert EnvSpec.from_config({"id": "CartPole-v1"}) == EnvSpec("CartPole-v1")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"id": "CartPole-v1", "entrypoint": "x:Y"}, "unknown key"),
        ({"entry_point": "x:Y"}, "needs an 'id'"),
        ({"id": "X-v0", "entry_point": "no_colon_here"}, "package.module:ClassName"),
        ({"id": "X-v0", "imports": "tests.fixtures_envs"}, "list of module names"),
    ],
)
def test_from_config_rejects_bad_configs(config: dict, message: str) -> None:
    with pytest.raises(EnvConfigError, match=message):
        EnvSpec.from_config(config)


def test_entry_point_registers_a_user_env() -> None:
    spec = EnvSpec(
        "hpsrl-test/Match-v0", entry_point="tests.fixtures_envs:MatchEnv", kwargs={"length": 3}
    )
    spec.check()
    assert "hpsrl-test/Match-v0" in gymnasium.registry
    envs = spec.make_vector(2)
    envs.reset(seed=0)
    for _ in range(2):
        _, _, terminated, _, _ = envs.step(np.zeros(2, dtype=np.int64))
        assert not terminated.any()
    _, _, terminated, _, _ = envs.step(np.zeros(2, dtype=np.int64))
    assert terminated.all()
    envs.close()


def test_unknown_id_suggests_close_ids() -> None:
    with pytest.raises(EnvConfigError, match=r"unknown environment id 'CartPol-v1'.*'CartPole-v1'"):
        EnvSpec("CartPol-v1").check()


def test_unknown_id_without_close_match_explains_imports() -> None:
    with pytest.raises(EnvConfigError, match=r"env\.imports"):
        EnvSpec("CompletelyDifferentThing-v0").check()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entry_point": "no_such_module_hpsrl:Env"}, "could not import env.entry_point"),
        ({"entry_point": "tests.fixtures_envs:NoSuchClass"}, "no attribute 'NoSuchClass'"),
        ({"imports": ("no_such_module_hpsrl",)}, "could not import module 'no_such_module_hpsrl'"),
    ],
)
def test_import_failures_name_the_module(kwargs: dict, message: str) -> None:
    with pytest.raises(EnvConfigError, match=message):
        EnvSpec("hpsrl-test/Broken-v0", **kwargs).check()


def test_missing_optional_dependency_says_what_to_install() -> None:
    spec = EnvSpec(
        "hpsrl-test/NeedsBox2d-v0", entry_point="tests.fixtures_envs:NeedsMissingPackageEnv"
    )
    with pytest.raises(EnvConfigError, match=r"hpsrl\[box2d\]"):
        spec.check()


def test_env_config_error_is_a_value_error() -> None:
    assert issubclass(EnvConfigError, ValueError)


@pytest.mark.parametrize(
    ("space", "kind"),
    [
        (spaces.Discrete(3), "discrete"),
        (spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32), "continuous"),
    ],
)
def test_action_kind(space: spaces.Space, kind: str) -> None:
    assert action_kind(space) == kind


@pytest.mark.parametrize(
    "space",
    [spaces.MultiBinary(3), spaces.MultiDiscrete([2, 3]), spaces.Box(0, 5, shape=(2,), dtype=int)],
)
def test_action_kind_rejects_other_spaces(space: spaces.Space) -> None:
    with pytest.raises(EnvConfigError, match="unsupported action space"):
        action_kind(space)


def test_observation_dim() -> None:
    assert observation_dim(spaces.Box(0.0, 1.0, shape=(2, 3))) == 6
    with pytest.raises(EnvConfigError, match="unsupported observation space"):
        observation_dim(spaces.Discrete(4))
