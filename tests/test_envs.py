"""EnvSpec: building registered and user environments, and the errors for bad configs."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from hpsrl.envs.spec import (
    VECTOR_ENTRY_POINT_MIN_ENVS,
    EnvConfigError,
    EnvSpec,
    action_kind,
    observation_dim,
)
from hpsrl.envs.vector import OneCopySyncVectorEnv, get_vector_state, set_vector_state


def test_registered_id_makes_vector_and_single_envs() -> None:
    spec = EnvSpec("CartPole-v1")
    spec.check()
    envs = spec.make_vector(VECTOR_ENTRY_POINT_MIN_ENVS)
    try:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (VECTOR_ENTRY_POINT_MIN_ENVS, 4)
        assert envs.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP
        # CartPole has a numpy-vectorised implementation, which make_vector prefers from a few
        # copies on; for fewer, a SyncVectorEnv is faster.
        assert type(envs).__name__ == "CartPoleVectorEnv"
    finally:
        envs.close()
    few = spec.make_vector(VECTOR_ENTRY_POINT_MIN_ENVS - 1)
    assert isinstance(few, gymnasium.vector.SyncVectorEnv)
    assert few.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP
    few.close()
    env = spec.make()
    assert env.action_space == spaces.Discrete(2)
    env.close()


def test_env_without_vector_entry_point_uses_sync_vector_env() -> None:
    envs = EnvSpec("Acrobot-v1").make_vector(2)
    assert isinstance(envs, gymnasium.vector.SyncVectorEnv)
    envs.close()


@pytest.mark.parametrize(
    "env_id", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1", "hpsrl-test/Match-v0"]
)
def test_one_copy_steps_exactly_like_gymnasiums_sync_vector_env(env_id: str) -> None:
    # Short episodes, so that the 200 steps cross many autoresets; MatchEnv returns infos.
    spec = EnvSpec(
        env_id,
        entry_point="tests.fixtures_envs:MatchEnv" if env_id.startswith("hpsrl-test") else None,
        kwargs={"max_episode_steps": 15},
    )
    one = spec.make_vector(1)
    assert type(one) is OneCopySyncVectorEnv and one._direct
    spec.register()
    theirs = gymnasium.make_vec(env_id, 1, vectorization_mode="sync", max_episode_steps=15)
    one.action_space.seed(0)
    actions = [one.action_space.sample() for _ in range(200)]
    for got, want in zip(one.reset(seed=3), theirs.reset(seed=3), strict=True):
        np.testing.assert_equal(got, want)
    ended = 0
    previous, kept = None, None
    for a in actions:
        got, want = one.step(a), theirs.step(a)
        for mine, reference in zip(got, want, strict=True):
            np.testing.assert_equal(mine, reference)
            assert getattr(mine, "dtype", None) == getattr(reference, "dtype", None)
        ended += int(got[2][0] or got[3][0])
        if previous is not None:  # returned arrays are copies: later steps leave them alone
            np.testing.assert_equal(previous, kept)
        previous, kept = got[0], got[0].copy()
    assert ended >= 10
    state = get_vector_state(one)
    if env_id.startswith("hpsrl-test"):
        assert state is None  # a user env: no state, as for gymnasium's sync env
        one.close()
        theirs.close()
        return
    # the checkpoint state is the one gymnasium's sync env has, and moves between the two
    assert state is not None and state["kind"] == "SyncVectorEnv"
    assert set_vector_state(theirs, state)
    for a in actions[:30]:
        for mine, reference in zip(one.step(a)[:4], theirs.step(a)[:4], strict=True):
            np.testing.assert_equal(mine, reference)
    one.close()
    theirs.close()


def test_one_copy_of_other_spaces_takes_gymnasiums_step() -> None:
    envs = OneCopySyncVectorEnv(
        [lambda: gymnasium.wrappers.TransformObservation(
            gymnasium.make("CartPole-v1"),
            lambda obs: {"x": obs},
            spaces.Dict({"x": spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)}),
        )]
    )  # fmt: skip
    assert not envs._direct
    obs, _ = envs.reset(seed=0)
    obs, *_ = envs.step(np.array([1]))
    assert obs["x"].shape == (1, 4)
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


# -- Saving and restoring a vector env's state (for checkpoints) ---------------------------------


def _make_sync(env_id: str, n: int, **kwargs: object) -> gymnasium.vector.VectorEnv:
    return gymnasium.make_vec(env_id, n, vectorization_mode="sync", **kwargs)


def _make_vectorised(env_id: str, n: int, **kwargs: object) -> gymnasium.vector.VectorEnv:
    return gymnasium.make_vec(env_id, n, vectorization_mode="vector_entry_point", **kwargs)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: _make_vectorised("CartPole-v1", 3, max_episode_steps=15), "vec"),
        (lambda: EnvSpec("Acrobot-v1", kwargs={"max_episode_steps": 15}).make_vector(3), "sync"),
        (lambda: _make_sync("CartPole-v1", 3, max_episode_steps=15), "sync"),
        (lambda: _make_sync("MountainCar-v0", 3, max_episode_steps=15), "sync"),
    ],
    ids=["CartPoleVectorEnv", "Acrobot-sync", "CartPole-sync", "MountainCar-sync"],
)
def test_restored_vector_env_continues_exactly(make: object, kind: str) -> None:
    # The copy is taken right as the time limit (15) ends episodes, so that a reset is pending.
    actions = np.random.default_rng(0).integers(2, size=(60, 3))
    original, copy = make(), make()  # type: ignore[operator]
    original.reset(seed=1)
    for a in actions[:15]:
        *_, truncated, _ = original.step(a)
    assert truncated.any()
    state = get_vector_state(original)
    assert state is not None
    assert state["kind"] == ("CartPoleVectorEnv" if kind == "vec" else "SyncVectorEnv")
    want = [original.step(a)[:4] for a in actions[15:]]
    # `state` is a copy: stepping the original did not change it, and it can be used twice.
    for _ in range(2):
        copy.reset(seed=99)
        assert set_vector_state(copy, state)
        for a, w in zip(actions[15:], want, strict=True):
            for expected, got in zip(w, copy.step(a)[:4], strict=True):
                np.testing.assert_array_equal(expected, got)
    copy.reset(seed=99)  # without the state, the copy goes elsewhere
    assert not np.array_equal(copy.step(actions[15])[0], want[0][0])
    original.close()
    copy.close()


def test_vector_state_is_plain_data_and_reading_it_changes_nothing() -> None:
    envs = EnvSpec("Acrobot-v1").make_vector(2)
    envs.reset(seed=0)
    first = get_vector_state(envs)
    second = get_vector_state(envs)
    assert first is not None and second is not None
    assert first["envs"][0]["np_random"] == second["envs"][0]["np_random"]
    assert isinstance(first["envs"][0]["np_random"]["state"]["state"], int)
    envs.close()


def test_unsupported_envs_have_no_vector_state() -> None:
    match = EnvSpec("hpsrl-test/Match-v0", entry_point="tests.fixtures_envs:MatchEnv")
    envs = match.make_vector(2)
    envs.reset(seed=0)
    assert get_vector_state(envs) is None
    envs.close()
    wrapped = gymnasium.make_vec(
        "Acrobot-v1",
        2,
        vectorization_mode="sync",
        wrappers=[gymnasium.wrappers.RecordEpisodeStatistics],
    )
    wrapped.reset(seed=0)
    assert get_vector_state(wrapped) is None  # an unknown wrapper may hold state
    wrapped.close()


def test_state_that_does_not_fit_is_refused() -> None:
    cartpole = EnvSpec("CartPole-v1").make_vector(2)
    acrobot = EnvSpec("Acrobot-v1").make_vector(2)
    cartpole.reset(seed=0)
    acrobot.reset(seed=0)
    acrobot3 = EnvSpec("Acrobot-v1").make_vector(3)
    acrobot3.reset(seed=0)
    mountain = _make_sync("MountainCar-v0", 2)
    mountain.reset(seed=0)
    assert not set_vector_state(acrobot, get_vector_state(cartpole))
    assert not set_vector_state(cartpole, get_vector_state(acrobot))
    assert not set_vector_state(acrobot3, get_vector_state(acrobot))
    assert not set_vector_state(mountain, get_vector_state(acrobot))
    for envs in (cartpole, acrobot, acrobot3, mountain):
        envs.close()
