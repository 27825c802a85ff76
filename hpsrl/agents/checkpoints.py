"""Checkpoints of a training run: what is saved, when, and how a run resumes from one.

Checkpoints
-----------
With ``train(..., checkpoint=Checkpointing(path, every_steps, every_seconds))`` a run saves its
state at update boundaries (PPO: after a rollout and its update; DQN: after a vector step, its
training phase and target update) once ``every_steps`` env steps or ``every_seconds`` seconds have
passed since the last save. The file is written to a temporary name in the same folder and
``os.replace``d into place, so a killed job leaves the previous checkpoint or the new one, never
half a file. It holds only tensors, dicts, lists, tuples, strings, numbers and ``None``, so it
loads with ``torch.load(path, weights_only=True)``.

When ``train`` starts and the file exists, it resumes from it. The file carries a fingerprint of the
run (algorithm, hyperparameters, env config, ``total_steps``, ``seed``, ``eval_seed``,
``curve_points``, ``return_threshold``, file format, and a digest of the ``initial_weights`` of a
run that starts from given weights); a file that cannot be read or whose fingerprint differs is
ignored with a warning, training starts from scratch (or its initial weights) and overwrites it
later.

What is restored: the network weights (DQN: and the target network), the Adam state
(:class:`FlatAdam`'s moments and step count) and learning rate, the rollout/update counter (PPO; it
sets the learning-rate schedule) or the vector-step counter (DQN; it sets epsilon and the
train/target-update timing), the replay buffer's contents and position (DQN), the torch and numpy
generators, the env step count, the :class:`EpisodeTracker` (returns of running episodes, recent
returns, learning curve so far, ``steps_to_threshold``), the train time so far, the current
observations and done flags, and the vector env's state where
:func:`hpsrl.envs.vector.get_vector_state` supports the env (CartPole through its vector entry
point, and sync vector envs of gymnasium's classic-control envs).

Stopping part-way: ``train(..., stop_at=S)`` ends the loop at the first update boundary at or past
``S`` env steps (:func:`loop_lengths`), saves a checkpoint there when ``checkpoint`` is given
(whether or not one is due), evaluates the policy as it is and returns. A later call with the same
arguments and a larger ``stop_at`` (or ``None``) resumes from that file and goes on, so that the
pieces together equal one uninterrupted run: ``stop_at`` is not part of the fingerprint, and the
schedules are those of the ``total_steps`` run. A call whose checkpoint is already at or past its
``stop_at`` trains no further, saves nothing and evaluates the restored state.

When the resumed result equals the uninterrupted one: for the supported envs, on the same machine
type, thread count and library versions, a resumed run gives bit-identical ``eval_returns``,
``curve_returns``, ``steps_to_threshold``, ``env_steps`` and weights; saving itself draws no random
numbers and changes nothing. ``train_seconds`` is the train time up to the checkpoint plus the
time of the resumed part (work done after the last save and lost in the kill is not counted). For
other envs the vector env is reset on resume with a seed derived from ``(seed, env step)`` and the
episodes that were running are dropped (their partial returns are not recorded): the run goes on
correctly but not bit-identically, and a warning says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from hpsrl.agents.episodes import EpisodeTracker
from hpsrl.agents.hyperparameters import as_int, require
from hpsrl.agents.networks import weights_digest
from hpsrl.agents.run import RunSettings, loop_lengths
from hpsrl.envs.spec import EnvSpec
from hpsrl.envs.vector import get_vector_state, set_vector_state

log = logging.getLogger(__name__)


#: Version of the checkpoint layout; part of the fingerprint, so older files are ignored.
CHECKPOINT_FORMAT = 2  # 2: FlatAdam's optimizer state


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a training run saves its state, so that a killed run can resume.

    A save happens at the first update boundary after either threshold has passed; with both
    thresholds ``None`` the run never saves but still resumes from an existing file.
    """

    path: Path
    """This seed's checkpoint file, e.g. ``results/c/gen000/ind003.ckpt/seed0.pt``; its folder is
    created when needed. Nothing else may write to it (one file per seed)."""
    every_steps: int | None = None
    """Save when this many env steps have passed since the last save (or the start)."""
    every_seconds: float | None = 600.0
    """Save when this much wall time has passed since the last save (or the start)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.every_steps is not None:
            object.__setattr__(self, "every_steps", as_int("every_steps", self.every_steps))
            require(self.every_steps >= 1, "every_steps", ">= 1 or None", self.every_steps)
        if self.every_seconds is not None:
            seconds = self.every_seconds
            ok = isinstance(seconds, int | float | np.number) and seconds > 0
            require(ok, "every_seconds", "> 0 or None", seconds)
            object.__setattr__(self, "every_seconds", float(self.every_seconds))


def run_fingerprint(
    algorithm: str,
    env: EnvSpec,
    hp: Any,
    *,
    total_steps: int,
    seed: int,
    eval_seed: int,
    curve_points: int,
    return_threshold: float | None,
    initial_weights: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """What identifies a run: a checkpoint is used only by a run with an equal fingerprint.

    A run that starts from ``initial_weights`` is identified by their digest too; one that starts
    from scratch has no such entry (so checkpoints written before it existed still resume).
    """
    fingerprint = {
        "format": CHECKPOINT_FORMAT,
        "algorithm": algorithm,
        "hyperparameters": dataclasses.asdict(hp),
        "env": env.to_config(),
        "total_steps": int(total_steps),
        "seed": int(seed),
        "eval_seed": int(eval_seed),
        "curve_points": int(curve_points),
        "return_threshold": None if return_threshold is None else float(return_threshold),
    }
    if initial_weights is not None:
        fingerprint["initial_weights"] = weights_digest(initial_weights)
    return fingerprint


def numpy_to_torch(tree: Any) -> Any:
    """``tree`` with numpy arrays turned into tensors and numpy scalars into Python numbers."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.array(tree, copy=True))
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, Mapping):
        return {k: numpy_to_torch(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(numpy_to_torch(v) for v in tree)
    return tree


def torch_to_numpy(tree: Any) -> Any:
    """The inverse of :func:`numpy_to_torch`: tensors back to numpy arrays."""
    if isinstance(tree, torch.Tensor):
        return tree.numpy().copy()
    if isinstance(tree, Mapping):
        return {k: torch_to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(torch_to_numpy(v) for v in tree)
    return tree


class Checkpointer:
    """Reads one run's checkpoint and decides when to write the next one.

    Built with ``config=None`` it does nothing: :meth:`load` returns ``None`` and :meth:`due`
    ``False``.
    """

    def __init__(self, config: Checkpointing | None, fingerprint: dict[str, Any]) -> None:
        self.config = config
        self.fingerprint = fingerprint
        self._last_step = 0
        self._last_time = time.perf_counter()
        self._warned_no_env_state = False

    def load(self) -> dict[str, Any] | None:
        """The saved state, if the file exists, can be read and belongs to this run."""
        if self.config is None:
            return None
        path = self.config.path
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a job killed mid-write
            with contextlib.suppress(OSError):
                stale.unlink()
        if not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # whatever is wrong with the file, it must not be used
            log.warning(
                "ignoring checkpoint %s: it cannot be read (%s: %s); training starts from "
                "scratch and will overwrite it",
                path,
                type(err).__name__,
                err,
            )
            return None
        theirs = saved.get("fingerprint") if isinstance(saved, dict) else None
        if theirs != self.fingerprint:
            log.warning(
                "ignoring checkpoint %s: it belongs to another run (differs in %s); training "
                "starts from scratch and will overwrite it",
                path,
                _differences(theirs, self.fingerprint),
            )
            return None
        self._last_step = int(saved["global_step"])
        self._last_time = time.perf_counter()
        return saved

    def due(self, global_step: int, *, stopping: bool = False) -> bool:
        """Whether a threshold has passed since the last save, or the run stops early here
        (``stopping``, see :func:`loop_lengths`): then a later call continues from this point."""
        c = self.config
        if c is None:
            return False
        return (
            stopping
            or (c.every_steps is not None and global_step - self._last_step >= c.every_steps)
            or (
                c.every_seconds is not None
                and time.perf_counter() - self._last_time >= c.every_seconds
            )
        )

    def save(self, global_step: int, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors and plain data) with the fingerprint, atomically."""
        assert self.config is not None, "save() needs a Checkpointing"
        started = time.perf_counter()
        path = self.config.path
        if state.get("env") is None and not self._warned_no_env_state:
            log.warning(
                "checkpoint %s cannot hold the state of env %r (see "
                "hpsrl.envs.vector.get_vector_state): a run resumed from it goes on correctly but "
                "not bit-identically",
                path,
                self.fingerprint["env"]["id"],
            )
            self._warned_no_env_state = True
        payload = {"fingerprint": self.fingerprint, "global_step": int(global_step), **state}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._last_step = global_step
        self._last_time = time.perf_counter()
        log.debug(
            "saved checkpoint %s at env step %d (%.0f kB, %.3f s)",
            path,
            global_step,
            path.stat().st_size / 1e3,
            self._last_time - started,
        )


def _differences(theirs: Any, ours: dict[str, Any]) -> str:
    if not isinstance(theirs, dict):
        return "everything: the file has no fingerprint"
    keys = sorted(k for k in ours.keys() | theirs.keys() if theirs.get(k) != ours.get(k))
    return ", ".join(keys)


def run_state(
    *,
    global_step: int,
    train_seconds: float,
    generator: torch.Generator,
    rng: np.random.Generator,
    tracker: EpisodeTracker,
    envs: Any,
    obs: np.ndarray,
    prev_done: np.ndarray,
) -> dict[str, Any]:
    """The part of a checkpoint that PPO and DQN share; reads everything, changes nothing."""
    return {
        "train_seconds": float(train_seconds),
        "torch_generator": generator.get_state(),
        "numpy_rng": numpy_to_torch(rng.bit_generator.state),
        "tracker": tracker.state_dict(),
        "env": numpy_to_torch(get_vector_state(envs)),
        "obs": torch.from_numpy(np.array(obs, copy=True)),
        "prev_done": torch.from_numpy(np.array(prev_done, copy=True)),
    }


def restore_run(
    saved: Mapping[str, Any],
    *,
    generator: torch.Generator,
    rng: np.random.Generator,
    tracker: EpisodeTracker,
    envs: Any,
    seed: int,
    what: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Put back the part written by :func:`run_state`; return the observations and done flags.

    ``envs`` must have been reset. When the saved env state cannot be put back, ``envs`` is reset
    with a seed derived from ``(seed, env step)``, running episodes are dropped and a warning says
    that the run is not bit-identical to an uninterrupted one.
    """
    global_step = int(saved["global_step"])
    generator.set_state(saved["torch_generator"])
    rng.bit_generator.state = torch_to_numpy(saved["numpy_rng"])
    tracker.load_state_dict(saved["tracker"])
    env_state = saved["env"]
    if env_state is not None and set_vector_state(envs, torch_to_numpy(env_state)):
        log.info("%s: resuming from env step %d (env state restored)", what, global_step)
        return saved["obs"].numpy().copy(), saved["prev_done"].numpy().copy()
    env_seed = int(np.random.SeedSequence([seed, global_step]).generate_state(1)[0])
    log.warning(
        "%s: resuming from env step %d, but the environments' state %s; they are reset with "
        "seed %d and the running episodes are dropped: the run goes on correctly but is not "
        "bit-identical to an uninterrupted one",
        what,
        global_step,
        "was not saved" if env_state is None else "does not fit this env",
        env_seed,
    )
    obs, _ = envs.reset(seed=env_seed)
    tracker.running[:] = 0.0
    return obs, np.zeros(envs.num_envs, dtype=bool)


# -- Resuming or starting, and saving when due: what every trainer does ----------------------------


class Stateful(Protocol):
    """What a checkpoint saves and restores: a network, an optimiser, a replay buffer."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Progress:
    """Where a run's loop starts: at the beginning, or where its checkpoint left it."""

    iteration: int
    """Loop iterations done (PPO: rollouts and their updates; the others: vector steps)."""
    global_step: int
    """Env steps taken."""
    obs: np.ndarray
    """The envs' current observations."""
    prev_done: np.ndarray
    """Which envs' last step ended an episode (so their next step is a reset step)."""


class RunCheckpoint:
    """One run's checkpoint, as every trainer uses it: :meth:`resume_or_start` before the loop,
    :meth:`maybe_save` at the end of each iteration, :meth:`train_seconds` after it.

    ``parts`` names the run's own state (networks, optimisers, replay buffer) as it is saved in the
    file; the torch and numpy generators, the tracker and the envs are saved with it (see
    :func:`run_state`). ``counter`` names the iteration count in the file. The loop runs
    ``range(progress.iteration, self.stop_iteration)``; :attr:`num_iterations` is the whole
    run's (see :func:`loop_lengths`).
    """

    def __init__(
        self,
        algorithm: str,
        env: EnvSpec,
        hp: Any,
        run: RunSettings,
        *,
        steps_per_iteration: int,
        counter: str,
        parts: Mapping[str, Stateful],
        generator: torch.Generator,
        rng: np.random.Generator,
        tracker: EpisodeTracker,
        envs: Any,
        started: float,
    ) -> None:
        self.num_iterations, self.stop_iteration = loop_lengths(
            run.total_steps, steps_per_iteration, run.stop_at
        )
        fingerprint = run_fingerprint(
            algorithm,
            env,
            hp,
            total_steps=run.total_steps,
            seed=run.seed,
            eval_seed=run.eval_seed,
            curve_points=run.curve_points,
            return_threshold=run.return_threshold,
            initial_weights=run.initial_weights,
        )
        self._checkpointer = Checkpointer(run.checkpoint, fingerprint)
        self._what = f"{algorithm.upper()} seed {run.seed}"
        self._seed = run.seed
        self._counter = counter
        self._parts = parts
        self._generator, self._rng, self._tracker, self._envs = generator, rng, tracker, envs
        self._started = started
        self._earlier_seconds = 0.0  # train time of the run before it was resumed

    def resume_or_start(self, obs: np.ndarray, prev_done: np.ndarray) -> Progress:
        """Restore the run from its checkpoint when there is one of this run (``obs`` and
        ``prev_done`` are those of the freshly reset envs, what a run without one starts from)."""
        saved = self._checkpointer.load()
        if saved is None:
            return Progress(0, 0, obs, prev_done)
        for name, part in self._parts.items():
            part.load_state_dict(saved[name])
        self._earlier_seconds = float(saved["train_seconds"])
        obs, prev_done = restore_run(
            saved,
            generator=self._generator,
            rng=self._rng,
            tracker=self._tracker,
            envs=self._envs,
            seed=self._seed,
            what=self._what,
        )
        return Progress(int(saved[self._counter]), int(saved["global_step"]), obs, prev_done)

    def maybe_save(
        self, iteration: int, global_step: int, obs: np.ndarray, prev_done: np.ndarray
    ) -> None:
        """After loop iteration ``iteration`` (0-based): save when a save is due, or when the run
        stops early here, to be continued (saving reads state and draws no random numbers)."""
        stopping = (
            self.stop_iteration < self.num_iterations and iteration + 1 == self.stop_iteration
        )
        if not self._checkpointer.due(global_step, stopping=stopping):
            return
        state = run_state(
            global_step=global_step,
            train_seconds=self.train_seconds(),
            generator=self._generator,
            rng=self._rng,
            tracker=self._tracker,
            envs=self._envs,
            obs=obs,
            prev_done=prev_done,
        )
        state[self._counter] = iteration + 1
        for name, part in self._parts.items():
            state[name] = part.state_dict()
        self._checkpointer.save(global_step, state)

    def train_seconds(self) -> float:
        """Train time so far: that of the run before it was resumed, and of this call."""
        return self._earlier_seconds + time.perf_counter() - self._started
