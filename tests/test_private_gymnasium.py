"""gymnasium's private attributes (``hpsrl.envs.vector``): each use has a public fallback that a
failing feature test picks, and with the fallbacks the envs and the training give the same
numbers."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest
import torch

from hpsrl.agents import get_algorithm, make_hyperparameters
from hpsrl.agents.run import RunSettings
from hpsrl.envs import vector as hpsrl_envs
from hpsrl.envs.spec import EnvSpec
from hpsrl.envs.vector import (
    PUBLIC_GYMNASIUM_ONLY,
    OneCopySyncVectorEnv,
    PrivateGymnasium,
    get_vector_state,
    set_vector_state,
)

MATCH = "hpsrl-test/Match-v0"


@pytest.fixture
def public_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hpsrl_envs, "private_gymnasium", PUBLIC_GYMNASIUM_ONLY)


def test_this_gymnasium_uses_the_fast_paths() -> None:
    # if this fails, a gymnasium upgrade changed a private attribute: hpsrl still works, only
    # slower, and checkpoints of SyncVectorEnvs no longer give bit-identical resumed runs
    assert hpsrl_envs.private_gymnasium == PrivateGymnasium(
        one_copy_step=True, sync_autoreset_state=True, time_limit_steps=True
    )


def _spec(env_id: str) -> EnvSpec:
    # short episodes, so that a run crosses many autoresets; MatchEnv returns infos
    entry_point = "tests.fixtures_envs:MatchEnv" if env_id == MATCH else None
    return EnvSpec(env_id, entry_point=entry_point, kwargs={"max_episode_steps": 12})


def _stream(spec: EnvSpec, num_envs: int) -> Iterator[object]:
    """Everything the env returns over three seeded resets of 50 random steps each."""
    envs = spec.make_vector(num_envs)
    envs.action_space.seed(7)
    try:
        for seed in (0, 1, 2):
            yield from envs.reset(seed=seed)
            for _ in range(50):
                yield from envs.step(envs.action_space.sample())
    finally:
        envs.close()


@pytest.mark.parametrize(
    ("env_id", "num_envs"),
    [
        ("CartPole-v1", 1),
        ("CartPole-v1", 2),
        ("CartPole-v1", 5),  # CartPoleVectorEnv
        ("Acrobot-v1", 1),
        ("Pendulum-v1", 1),
        ("MountainCar-v0", 2),
        (MATCH, 1),
    ],
)
def test_public_fallbacks_give_the_same_streams(
    env_id: str, num_envs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = list(_stream(_spec(env_id), num_envs))
    monkeypatch.setattr(hpsrl_envs, "private_gymnasium", PUBLIC_GYMNASIUM_ONLY)
    public = list(_stream(_spec(env_id), num_envs))
    assert len(fast) == len(public)
    ends = 0
    for got, want in zip(public, fast, strict=True):
        np.testing.assert_equal(got, want)
        assert getattr(got, "dtype", None) == getattr(want, "dtype", None)
        if getattr(got, "dtype", None) == np.bool_:
            ends += int(got.sum())
    assert ends >= 8  # the streams cross autoresets


def test_one_copy_env_takes_gymnasiums_step_with_public_only(public_only: None) -> None:
    envs = EnvSpec("CartPole-v1").make_vector(1)
    assert type(envs) is OneCopySyncVectorEnv and not envs._direct
    envs.close()


def test_with_public_only_sync_envs_have_no_state_and_cartpole_vector_env_has(
    public_only: None,
) -> None:
    sync = EnvSpec("Acrobot-v1").make_vector(2)
    sync.reset(seed=0)
    assert get_vector_state(sync) is None
    vectorised = EnvSpec("CartPole-v1").make_vector(5)
    vectorised.reset(seed=0)
    state = get_vector_state(vectorised)  # only public attributes: kept
    assert state is not None and set_vector_state(vectorised, state)
    vectorised.close()
    with (
        pytest.MonkeyPatch.context() as m
    ):  # a state saved with the fast path is refused, not misused
        m.setattr(hpsrl_envs, "private_gymnasium", PrivateGymnasium(True, True, True))
        saved = get_vector_state(sync)
    assert saved is not None and not set_vector_state(sync, saved)
    sync.close()


@pytest.mark.parametrize("algorithm", ["dqn", "ppo"])
def test_training_with_public_only_is_bit_identical(
    algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    hp = make_hyperparameters(
        algorithm,
        {"learning_starts": 200, "train_frequency": 16, "gradient_steps": 1, "buffer_size": 500}
        if algorithm == "dqn"
        else {"num_envs": 1, "num_steps": 32, "batch_size": 32, "update_epochs": 1},
    )
    run = RunSettings(1_000, 3, eval_seed=4, eval_episodes=3, curve_points=4)
    fast = get_algorithm(algorithm).train(EnvSpec("CartPole-v1"), hp, run)
    monkeypatch.setattr(hpsrl_envs, "private_gymnasium", PUBLIC_GYMNASIUM_ONLY)
    public = get_algorithm(algorithm).train(EnvSpec("CartPole-v1"), hp, run)
    np.testing.assert_array_equal(public.eval_returns, fast.eval_returns)
    np.testing.assert_array_equal(public.curve_returns, fast.curve_returns)
    for name, tensor in fast.model_state.items():
        assert torch.equal(tensor, public.model_state[name]), name


def _change_add_info(m: pytest.MonkeyPatch) -> None:
    # infos merged without the "_key" masks
    m.setattr(gymnasium.vector.SyncVectorEnv, "_add_info", lambda self, infos, info, i: info)


def _rename_autoreset_envs(m: pytest.MonkeyPatch) -> None:
    names = ("autoreset_envs_renamed", "terminations", "truncations", "rewards")
    m.setattr(hpsrl_envs, "_SYNC_AUTORESET_ATTRIBUTES", names)


def _rename_elapsed_steps(m: pytest.MonkeyPatch) -> None:
    m.setattr(hpsrl_envs, "_get_elapsed_steps", lambda wrapper: wrapper._elapsed_steps_renamed)


def _stop_resetting_on_pending_autoreset(m: pytest.MonkeyPatch) -> None:
    # a gymnasium that keeps the attribute but no longer reads it: the check sees the difference
    step = gymnasium.vector.SyncVectorEnv.step

    def step_ignoring_the_flags(self, actions):  # type: ignore[no-untyped-def]
        self._autoreset_envs = np.zeros(self.num_envs, dtype=bool)
        return step(self, actions)

    m.setattr(gymnasium.vector.SyncVectorEnv, "step", step_ignoring_the_flags)


@pytest.mark.parametrize(
    ("break_it", "broken"),
    [
        (_change_add_info, "one_copy_step"),
        (_rename_autoreset_envs, "sync_autoreset_state"),
        (_rename_elapsed_steps, "time_limit_steps"),
        (_stop_resetting_on_pending_autoreset, "one_copy_step sync_autoreset_state"),
    ],
)
def test_a_changed_private_attribute_picks_the_fallback_with_a_warning(
    break_it: object, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.MonkeyPatch.context() as m, caplog.at_level(logging.WARNING, "hpsrl.envs.vector"):
        break_it(m)  # type: ignore[operator]
        found = hpsrl_envs._check_private_gymnasium()
    assert {name for name, ok in dataclasses.asdict(found).items() if not ok} == set(broken.split())
    for name in broken.split():
        assert any(
            name in r.getMessage() and "private API" in r.getMessage() for r in caplog.records
        )
