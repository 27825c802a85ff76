"""Vector environments beyond what gymnasium offers: a faster step for one copy, and the state of
a vector env captured and restored for checkpoints. Both read gymnasium's private attributes,
each checked once at import with a public fallback (:data:`private_gymnasium`).

Checkpoints (see :mod:`hpsrl.agents.checkpoints`) save the state of a vector env with
:func:`get_vector_state` and put it back with :func:`set_vector_state`. Only environments whose
whole state is known are supported, so that a resumed run continues exactly where it stopped:

* gymnasium's ``CartPoleVectorEnv`` (CartPole-v1 through its vector entry point): the physical
  ``state``, the per-copy step counters ``steps``, the ``prev_done`` autoreset flags, the reset
  bounds ``low``/``high`` and the vector env's ``np_random`` bit-generator state;
* a :class:`~gymnasium.vector.SyncVectorEnv` whose copies are gymnasium's classic-control envs
  (CartPole, Acrobot, MountainCar, MountainCarContinuous, Pendulum) wrapped only in ``TimeLimit``,
  ``OrderEnforcing`` and ``PassiveEnvChecker`` (what :func:`gymnasium.make` adds): per copy the
  unwrapped env's ``state`` (+ CartPole's ``steps_beyond_terminated``) and ``np_random``
  bit-generator state and the ``TimeLimit``'s ``_elapsed_steps``; for the vector env its
  ``NEXT_STEP`` autoreset bookkeeping (``_autoreset_envs``, ``_terminations``, ``_truncations``,
  ``_rewards``). Pendulum's ``last_u`` is used only for rendering and is not kept. These are
  gymnasium's private attributes: where this gymnasium changed them (:data:`private_gymnasium`),
  a SyncVectorEnv gives ``None`` like the envs below.

Any other environment (user envs, Box2D, MuJoCo, other wrappers) gives ``None``: its state cannot be
captured generically, and a resumed run must reset it instead (the agents then log that the run
goes on correctly but not bit-identically).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

log = logging.getLogger(__name__)


#: Spaces whose batch is an array with one row per copy, so that one copy's observation or
#: action is row 0 of it.
_ARRAY_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


class OneCopySyncVectorEnv(gymnasium.vector.SyncVectorEnv):
    """A :class:`~gymnasium.vector.SyncVectorEnv` of one copy that steps it without the generic
    batching.

    Off-policy agents usually step a single env. gymnasium's step iterates over the action
    batch, concatenates the observations, deep-copies them and merges infos for any number of
    copies: about 8 us per step, as much as CartPole's own step (one core, us per step, gymnasium's
    / this one: CartPole-v1 14.4 / 7.1, Acrobot-v1 41.5 / 33.2, Pendulum-v1 20.6 / 12.7). For one
    copy with array observation and action spaces and ``NEXT_STEP`` autoreset, :meth:`step` does
    the same bookkeeping on row 0 directly (:func:`_direct_one_copy_step`, on gymnasium's private
    attributes, where :data:`private_gymnasium` says they work): the same results and the same
    attributes (which :func:`get_vector_state` reads). Anything else goes through gymnasium's step.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gymnasium.Env]], **kwargs: Any) -> None:
        super().__init__(env_fns, **kwargs)
        self._direct = is_direct_one_copy(self) and private_gymnasium.one_copy_step

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._direct:
            return super().step(actions)
        return _direct_one_copy_step(self, actions)


def is_direct_one_copy(vec_env: gymnasium.vector.SyncVectorEnv) -> bool:
    """Whether :func:`_direct_one_copy_step` can step ``vec_env``: one copy, array observation and
    action spaces, ``NEXT_STEP`` autoreset."""
    return (
        vec_env.num_envs == 1
        and isinstance(vec_env.single_observation_space, _ARRAY_SPACES)
        and isinstance(vec_env.single_action_space, _ARRAY_SPACES)
        and vec_env.autoreset_mode == gymnasium.vector.AutoresetMode.NEXT_STEP
    )


# -- Saving and restoring the state of a vector env (for checkpoints) ---------------------------

#: Unwrapped classic-control envs whose dynamics depend only on ``state`` and ``np_random``,
#: mapped to the extra attributes that must be kept with them.
_CLASSIC_CONTROL_EXTRA: dict[str, tuple[str, ...]] = {
    "CartPoleEnv": ("steps_beyond_terminated",),
    "AcrobotEnv": (),
    "MountainCarEnv": (),
    "Continuous_MountainCarEnv": (),
    "PendulumEnv": (),
}

#: Wrappers that :func:`gymnasium.make` adds and that hold no state affecting the dynamics
#: other than ``TimeLimit._elapsed_steps``.
_KNOWN_WRAPPERS = ("TimeLimit", "OrderEnforcing", "PassiveEnvChecker")


def get_vector_state(vec_env: gymnasium.vector.VectorEnv) -> dict[str, Any] | None:
    """Everything that determines the future of ``vec_env``, as plain data, or ``None``.

    Call it after :meth:`reset`. The dict holds numpy arrays (copies), ints, floats, strings,
    ``None`` and the plain-dict bit-generator states; reading it changes nothing in the env.
    ``None`` means that the env is not one of the supported kinds listed in the module docstring.
    """
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    if type(vec_env) is CartPoleVectorEnv:
        if vec_env.state is None:  # not reset yet
            return None
        return {
            "kind": "CartPoleVectorEnv",
            "num_envs": int(vec_env.num_envs),
            "state": np.array(vec_env.state, copy=True),
            "steps": np.array(vec_env.steps, copy=True),
            "prev_done": np.array(vec_env.prev_done, copy=True),
            "low": float(vec_env.low),
            "high": float(vec_env.high),
            "np_random": vec_env.np_random.bit_generator.state,
        }
    if isinstance(vec_env, gymnasium.vector.SyncVectorEnv) and _sync_state_supported():
        copies = [_get_classic_control_state(sub) for sub in vec_env.envs]
        if any(c is None for c in copies):
            return None
        return {
            "kind": "SyncVectorEnv",
            "num_envs": int(vec_env.num_envs),
            "envs": copies,
            **_get_sync_autoreset_state(vec_env),
        }
    return None


def set_vector_state(vec_env: gymnasium.vector.VectorEnv, state: Mapping[str, Any]) -> bool:
    """Put ``state`` from :func:`get_vector_state` back into ``vec_env``; ``True`` on success.

    ``vec_env`` must be built the same way as the one the state came from and must have been reset
    (any seed). Returns ``False`` without changing anything when the state does not fit the env
    (another kind of env, another number of copies, another environment class).
    """
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    kind = state.get("kind")
    if int(state.get("num_envs", -1)) != vec_env.num_envs:
        return False
    if kind == "CartPoleVectorEnv" and type(vec_env) is CartPoleVectorEnv:
        vec_env.state = np.array(state["state"], copy=True)
        vec_env.steps = np.array(state["steps"], copy=True)
        vec_env.prev_done = np.array(state["prev_done"], copy=True)
        vec_env.low, vec_env.high = float(state["low"]), float(state["high"])
        vec_env.np_random.bit_generator.state = state["np_random"]
        return True
    if (
        kind == "SyncVectorEnv"
        and isinstance(vec_env, gymnasium.vector.SyncVectorEnv)
        and _sync_state_supported()
    ):
        copies = state["envs"]
        if len(copies) != vec_env.num_envs:
            return False
        current = [_get_classic_control_state(sub) for sub in vec_env.envs]
        fits = all(
            now is not None
            and now["class"] == saved["class"]
            and len(now["elapsed_steps"]) == len(saved["elapsed_steps"])
            for now, saved in zip(current, copies, strict=True)
        )
        if not fits:
            return False
        for sub, saved in zip(vec_env.envs, copies, strict=True):
            _set_classic_control_state(sub, saved)
        _set_sync_autoreset_state(vec_env, state)
        return True
    return False


def _sync_state_supported() -> bool:
    """Whether a SyncVectorEnv's state can be read and written through gymnasium's private API."""
    return private_gymnasium.sync_autoreset_state and private_gymnasium.time_limit_steps


def _wrapper_chain(env: gymnasium.Env) -> tuple[list[gymnasium.Wrapper], gymnasium.Env]:
    wrappers = []
    while isinstance(env, gymnasium.Wrapper):
        wrappers.append(env)
        env = env.env
    return wrappers, env


def _get_classic_control_state(env: gymnasium.Env) -> dict[str, Any] | None:
    wrappers, inner = _wrapper_chain(env)
    name = type(inner).__name__
    if (
        name not in _CLASSIC_CONTROL_EXTRA
        or not type(inner).__module__.startswith("gymnasium.envs.classic_control")
        or any(type(w).__name__ not in _KNOWN_WRAPPERS for w in wrappers)
        or getattr(inner, "state", None) is None
    ):
        return None
    time_limits = [w for w in wrappers if isinstance(w, gymnasium.wrappers.TimeLimit)]
    return {
        "class": name,
        "state": np.array(inner.state, copy=True),
        "extra": {attr: getattr(inner, attr) for attr in _CLASSIC_CONTROL_EXTRA[name]},
        "np_random": inner.np_random.bit_generator.state,
        "elapsed_steps": [_get_elapsed_steps(w) for w in time_limits],
    }


def _set_classic_control_state(env: gymnasium.Env, saved: Mapping[str, Any]) -> None:
    wrappers, inner = _wrapper_chain(env)
    inner.state = np.array(saved["state"], copy=True)
    for attr, value in saved["extra"].items():
        setattr(inner, attr, value)
    inner.np_random.bit_generator.state = saved["np_random"]
    time_limits = [w for w in wrappers if isinstance(w, gymnasium.wrappers.TimeLimit)]
    for wrapper, elapsed in zip(time_limits, saved["elapsed_steps"], strict=True):
        _set_elapsed_steps(wrapper, elapsed)


# -- gymnasium's private attributes, each behind one small function with a public fallback -------
#
# Three things here read or write attributes that gymnasium does not promise to keep: the direct
# one-copy step (SyncVectorEnv's ``_autoreset_envs``, ``_env_obs``, ``_observations``,
# ``_rewards``, ``_terminations``, ``_truncations`` and ``_add_info``), the autoreset bookkeeping of
# a SyncVectorEnv kept in checkpoints (``_autoreset_envs``, ``_terminations``, ``_truncations``,
# ``_rewards``) and ``TimeLimit._elapsed_steps``. Each is tried once, at import, on a tiny CartPole
# (:func:`_check_private_gymnasium`). Where one is missing or behaves otherwise, hpsrl uses
# gymnasium's public API instead and logs a warning: one-copy envs take gymnasium's own ``step``
# (slower, the same results), and checkpoints of SyncVectorEnvs hold no env state (a resumed run
# resets its envs: correct, but not bit-identical to an uninterrupted one).


@dataclass(frozen=True)
class PrivateGymnasium:
    """Which of gymnasium's private attributes hpsrl uses (:func:`_check_private_gymnasium`)."""

    one_copy_step: bool
    """:class:`OneCopySyncVectorEnv` steps its copy directly (else gymnasium's ``step``)."""
    sync_autoreset_state: bool
    """A SyncVectorEnv's ``NEXT_STEP`` bookkeeping can be read and written (for checkpoints)."""
    time_limit_steps: bool
    """``TimeLimit._elapsed_steps`` can be read and written (for checkpoints)."""


#: Nothing private: what hpsrl falls back to (tests use it to run the fallbacks).
PUBLIC_GYMNASIUM_ONLY = PrivateGymnasium(
    one_copy_step=False, sync_autoreset_state=False, time_limit_steps=False
)


def _direct_one_copy_step(
    vec_env: gymnasium.vector.SyncVectorEnv, actions: Any
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """SyncVectorEnv's ``NEXT_STEP`` step for one copy of array spaces (:func:`is_direct_one_copy`),
    on row 0 of its private buffers."""
    env = vec_env.envs[0]
    if vec_env._autoreset_envs[0]:
        obs, info = env.reset()
        reward, terminated, truncated = 0.0, False, False
    else:
        obs, reward, terminated, truncated, info = env.step(actions[0])
    vec_env._env_obs[0] = obs
    vec_env._observations[0] = obs
    vec_env._rewards[0] = reward
    vec_env._terminations[0] = terminated
    vec_env._truncations[0] = truncated
    vec_env._autoreset_envs[0] = terminated or truncated
    return (
        vec_env._observations.copy(),
        vec_env._rewards.copy(),
        vec_env._terminations.copy(),
        vec_env._truncations.copy(),
        vec_env._add_info({}, info, 0) if info else {},
    )


#: The SyncVectorEnv attributes that hold its ``NEXT_STEP`` bookkeeping between steps.
_SYNC_AUTORESET_ATTRIBUTES = ("autoreset_envs", "terminations", "truncations", "rewards")


def _get_sync_autoreset_state(vec_env: gymnasium.vector.SyncVectorEnv) -> dict[str, np.ndarray]:
    """Copies of a SyncVectorEnv's autoreset bookkeeping, keyed without the leading ``_``."""
    return {
        name: np.array(getattr(vec_env, f"_{name}"), copy=True)
        for name in _SYNC_AUTORESET_ATTRIBUTES
    }


def _set_sync_autoreset_state(
    vec_env: gymnasium.vector.SyncVectorEnv, saved: Mapping[str, Any]
) -> None:
    """Put back what :func:`_get_sync_autoreset_state` read."""
    for name in _SYNC_AUTORESET_ATTRIBUTES:
        setattr(vec_env, f"_{name}", np.array(saved[name], copy=True))


def _get_elapsed_steps(wrapper: gymnasium.wrappers.TimeLimit) -> int | None:
    """Steps a ``TimeLimit`` has counted in its episode (``None`` before its first reset)."""
    return wrapper._elapsed_steps


def _set_elapsed_steps(wrapper: gymnasium.wrappers.TimeLimit, elapsed: int | None) -> None:
    wrapper._elapsed_steps = elapsed


def _tiny_cartpole(num_envs: int, max_episode_steps: int) -> gymnasium.vector.SyncVectorEnv:
    return gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make("CartPole-v1", max_episode_steps=max_episode_steps)] * num_envs
    )


def _one_copy_step_works() -> None:
    """Raise unless :func:`_direct_one_copy_step` steps exactly like gymnasium's ``step``, across
    autoresets, and ``_add_info`` batches one copy's info as gymnasium documents it."""
    direct, public = _tiny_cartpole(1, 3), _tiny_cartpole(1, 3)
    try:
        for got, want in zip(direct.reset(seed=0), public.reset(seed=0), strict=True):
            np.testing.assert_equal(got, want)
        for action in (0, 1, 1, 0, 1, 0, 0, 1):
            got = _direct_one_copy_step(direct, np.array([action]))
            want = public.step(np.array([action]))
            for mine, theirs in zip(got, want, strict=True):
                np.testing.assert_equal(mine, theirs)
                assert getattr(mine, "dtype", None) == getattr(theirs, "dtype", None)
        info = direct._add_info({}, {"x": 1.5, "done": True}, 0)
        expected = {"x": np.array([1.5]), "_x": np.array([True])}
        expected |= {"done": np.array([True]), "_done": np.array([True])}
        np.testing.assert_equal(info, expected)
    finally:
        direct.close()
        public.close()


def _sync_autoreset_state_works() -> None:
    """Raise unless the bookkeeping reads as the last step's results and a pending reset written
    into a fresh env makes its next step a reset."""
    envs = _tiny_cartpole(2, 1)
    try:
        envs.reset(seed=0)
        _, rewards, terminations, truncations, _ = envs.step(np.array([0, 1]))
        state = _get_sync_autoreset_state(envs)
        np.testing.assert_equal(state["rewards"], rewards)
        np.testing.assert_equal(state["terminations"], terminations)
        np.testing.assert_equal(state["truncations"], truncations)
        np.testing.assert_equal(state["autoreset_envs"], terminations | truncations)
        assert state["autoreset_envs"].all()  # the time limit of 1 ends both episodes
        envs.reset(seed=0)
        _set_sync_autoreset_state(envs, {**state, "autoreset_envs": np.array([False, True])})
        _, rewards, *_ = envs.step(np.array([0, 1]))
        np.testing.assert_equal(rewards, [1.0, 0.0])  # CartPole's step gives 1, a reset 0
    finally:
        envs.close()


def _time_limit_steps_work() -> None:
    """Raise unless ``TimeLimit``'s count reads as the steps taken and writing it moves the end."""
    env = gymnasium.make("CartPole-v1", max_episode_steps=5)
    try:
        time_limit = next(
            w for w in _wrapper_chain(env)[0] if isinstance(w, gymnasium.wrappers.TimeLimit)
        )
        env.reset(seed=0)
        env.step(0)
        assert _get_elapsed_steps(time_limit) == 1
        _set_elapsed_steps(time_limit, 4)
        *_, truncated, _ = env.step(1)
        assert truncated and _get_elapsed_steps(time_limit) == 5
    finally:
        env.close()


def _check_private_gymnasium() -> PrivateGymnasium:
    """Try each use of gymnasium's private attributes on a tiny CartPole; warn for each failure."""
    results = {}
    for name, check, fallback in (
        ("one_copy_step", _one_copy_step_works, "one-copy envs take gymnasium's step (slower)"),
        (
            "sync_autoreset_state",
            _sync_autoreset_state_works,
            "checkpoints hold no SyncVectorEnv state (resumed runs are not bit-identical)",
        ),
        (
            "time_limit_steps",
            _time_limit_steps_work,
            "checkpoints hold no SyncVectorEnv state (resumed runs are not bit-identical)",
        ),
    ):
        try:
            check()
            results[name] = True
        # whatever a changed private attribute does, the answer is the same: do not use it
        except Exception as err:
            log.warning(
                "gymnasium %s: its private API for %s does not work as hpsrl expects (%s: %s); %s",
                gymnasium.__version__,
                name,
                type(err).__name__,
                err,
                fallback,
            )
            results[name] = False
    return PrivateGymnasium(**results)


#: What this gymnasium allows, read where it is used (tests replace it to run the fallbacks).
private_gymnasium = _check_private_gymnasium()
