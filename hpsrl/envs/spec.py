"""Which environment a campaign trains on, and how to build it.

An :class:`EnvSpec` is plain data (it comes from the ``env:`` block of the config) that every worker
process turns into environments the same way: import the modules that register ids, register a
user's ``entry_point`` under ``id`` if needed, then call :func:`gymnasium.make_vec`. hpsrl's own
ids (``hpsrl/BeamCombining-v0``, :mod:`hpsrl.envs.beam_combining`) need no ``imports``.

Vector environments follow gymnasium 1.x's default ``NEXT_STEP`` autoreset: after a sub-environment
reports ``terminated`` or ``truncated``, its next ``step`` resets it, ignores the action and returns
reward 0. The agents in :mod:`hpsrl.agents` account for that. One copy steps through
:class:`~hpsrl.envs.vector.OneCopySyncVectorEnv`, and checkpoints capture a vector env's state
with :mod:`hpsrl.envs.vector`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from hpsrl import HpsrlError
from hpsrl.envs.vector import OneCopySyncVectorEnv

log = logging.getLogger(__name__)

#: Hints for gymnasium's ``DependencyNotInstalled`` errors, keyed by a word in its message.
_DEPENDENCY_HINTS = {
    "box2d": "pip install 'hpsrl[box2d]' (or pip install swig 'gymnasium[box2d]')",
    "mujoco": "pip install 'gymnasium[mujoco]'",
    "pygame": "pip install 'gymnasium[classic-control]'",
    "ale": "pip install 'gymnasium[atari]' and add 'ale_py' to env.imports",
}

#: Modules that register hpsrl's own ``hpsrl/...`` ids, imported only when such an id is used.
_HPSRL_ENV_MODULES = ("hpsrl.envs.beam_combining",)


class EnvConfigError(HpsrlError, ValueError):
    """The ``env`` configuration cannot be turned into a working environment (an expected error:
    ``hpsrl retrain`` or ``evaluate`` where this Python cannot import the env's module says so in
    one line)."""


#: From how many copies an env's own vectorised implementation beats a SyncVectorEnv. Measured
#: for CartPole-v1 (one core, idle, best of 3, us per vector step, vectorised / sync): 1 copy
#: 44 / 16, 2 copies 39 / 22, 3 copies 38 / 29, 4 copies 38 / 36, 8 copies 39 / 70. The numpy
#: version pays ~40 us per call whatever the count, the sync one ~7 us per copy plus ~9.
VECTOR_ENTRY_POINT_MIN_ENVS = 4


@dataclass(frozen=True)
class EnvSpec:
    """A gymnasium environment, described as plain data so that every worker can rebuild it."""

    id: str
    """Gymnasium id, e.g. ``"CartPole-v1"``."""
    entry_point: str | None = None
    """``"package.module:ClassName"`` of a user's :class:`gymnasium.Env`; registered under ``id``
    unless that id is already registered."""
    imports: tuple[str, ...] = ()
    """Modules imported before the environment is made (importing them may register ids)."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for :func:`gymnasium.make` / :func:`gymnasium.make_vec`
    (``max_episode_steps`` is accepted here too)."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise EnvConfigError(f"env.id must be a non-empty string, got {self.id!r}")
        if isinstance(self.imports, str):
            raise EnvConfigError(
                f"env.imports must be a list of module names, got the string {self.imports!r}"
            )
        object.__setattr__(self, "imports", tuple(self.imports))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        if self.entry_point is not None and ":" not in self.entry_point:
            raise EnvConfigError(
                f"env.entry_point must look like 'package.module:ClassName', "
                f"got {self.entry_point!r}"
            )

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> EnvSpec:
        """Build from the ``env:`` block of a config, e.g. ``{"id": "CartPole-v1"}``."""
        known = {"id", "entry_point", "imports", "kwargs"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EnvConfigError(f"unknown key(s) {unknown} in env config; valid: {sorted(known)}")
        if "id" not in d:
            raise EnvConfigError("env config needs an 'id', e.g. {'id': 'CartPole-v1'}")
        return cls(
            id=d["id"],
            entry_point=d.get("entry_point"),
            imports=d.get("imports") or (),
            kwargs=dict(d.get("kwargs") or {}),
        )

    def to_config(self) -> dict[str, Any]:
        """The inverse of :meth:`from_config` (plain lists and dicts, for YAML/JSON)."""
        return {
            "id": self.id,
            "entry_point": self.entry_point,
            "imports": list(self.imports),
            "kwargs": dict(self.kwargs),
        }

    # -- building ---------------------------------------------------------------------------------

    def register(self) -> None:
        """Import ``imports`` and register ``entry_point`` under ``id``; safe to call repeatedly."""
        if self.id.startswith("hpsrl/"):  # hpsrl's own environments register themselves on import
            for module in _HPSRL_ENV_MODULES:
                importlib.import_module(module)
        for module in self.imports:
            _import(module, what=f"module {module!r} listed in env.imports")
        if self.entry_point is not None:
            module_name, _, attr = self.entry_point.partition(":")
            module = _import(module_name, what=f"env.entry_point {self.entry_point!r}")
            if not hasattr(module, attr):
                raise EnvConfigError(
                    f"env.entry_point {self.entry_point!r}: module {module_name!r} has no "
                    f"attribute {attr!r}; check the class name after the ':'"
                )
            if self.id not in gymnasium.registry:
                gymnasium.register(id=self.id, entry_point=self.entry_point)
            elif gymnasium.spec(self.id).entry_point != self.entry_point:
                log.warning(
                    "env id %r is already registered with entry point %r; ignoring %r",
                    self.id,
                    gymnasium.spec(self.id).entry_point,
                    self.entry_point,
                )
        if self.id not in gymnasium.registry:
            raise EnvConfigError(self._unknown_id_message())

    def check(self) -> None:
        """Make one environment, reset it and close it; raise :class:`EnvConfigError` on failure."""
        env = self.make()
        try:
            env.reset(seed=0)
            action_kind(env.action_space)
            observation_dim(env.observation_space)
        finally:
            env.close()

    def make(self, render_mode: str | None = None) -> gymnasium.Env:
        """One environment, e.g. for rendering a trained agent."""
        self.register()
        kwargs = dict(self.kwargs)
        if render_mode is not None:  # not passed otherwise: many user envs take no render_mode
            kwargs["render_mode"] = render_mode
        with _friendly_errors(self.id):
            return gymnasium.make(self.id, **kwargs)

    def make_vector(self, num_envs: int) -> gymnasium.vector.VectorEnv:
        """``num_envs`` copies in one vector env (autoreset mode ``NEXT_STEP``).

        From ``VECTOR_ENTRY_POINT_MIN_ENVS`` copies on, uses the environment's own vectorised
        implementation when it has one (CartPole: numpy over all copies at once), otherwise
        :class:`gymnasium.vector.SyncVectorEnv` (:class:`OneCopySyncVectorEnv` for one copy).
        """
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.register()
        with _friendly_errors(self.id):
            vectorised = gymnasium.spec(self.id).vector_entry_point is not None
            if vectorised and num_envs >= VECTOR_ENTRY_POINT_MIN_ENVS:
                try:
                    return gymnasium.make_vec(
                        self.id, num_envs, vectorization_mode="vector_entry_point", **self.kwargs
                    )
                except TypeError as err:  # the vector class does not take one of our kwargs
                    log.info("%s: no vector entry point use (%s); using sync", self.id, err)
            if num_envs == 1:
                return OneCopySyncVectorEnv([lambda: gymnasium.make(self.id, **self.kwargs)])
            return gymnasium.make_vec(self.id, num_envs, vectorization_mode="sync", **self.kwargs)

    def _unknown_id_message(self) -> str:
        close = difflib.get_close_matches(self.id, list(gymnasium.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"unknown environment id {self.id!r}.{hint} If the environment comes from a package "
            f"that registers it on import, list that package under env.imports; for your own "
            f"gymnasium.Env class, set env.entry_point to 'package.module:ClassName'."
        )


@contextlib.contextmanager
def _friendly_errors(env_id: str) -> Iterator[None]:
    """Turn gymnasium's errors about missing dependencies into :class:`EnvConfigError`."""
    try:
        yield
    except (gymnasium.error.DependencyNotInstalled, ModuleNotFoundError) as err:
        text = str(err)
        fix = next(
            (hint for key, hint in _DEPENDENCY_HINTS.items() if key in text.lower()),
            "install the missing package into this Python environment",
        )
        raise EnvConfigError(
            f"environment {env_id!r} needs a package that is not installed ({text}). Fix: {fix}"
        ) from err


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise EnvConfigError(
            f"could not import {what}: {err}. Make sure the module is installed in this Python "
            f"environment or on PYTHONPATH of every worker."
        ) from err


def action_kind(space: spaces.Space) -> str:
    """``"discrete"`` or ``"continuous"``; other action spaces raise :class:`EnvConfigError`."""
    if isinstance(space, spaces.Discrete):
        return "discrete"
    if isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return "continuous"
    raise EnvConfigError(
        f"unsupported action space {space}; hpsrl agents handle Discrete and float Box actions"
        f" (wrap the environment to flatten other spaces)"
    )


def observation_dim(space: spaces.Space) -> int:
    """Length of the flattened observation; only ``Box`` observations are supported."""
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    raise EnvConfigError(
        f"unsupported observation space {space}; hpsrl agents need Box observations "
        f"(one-hot encode Discrete observations with an ObservationWrapper)"
    )
