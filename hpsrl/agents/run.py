"""What a training run takes and gives: :class:`RunSettings` (what every algorithm's ``train`` is
asked to do besides its env and hyperparameters), :class:`TrainResult` (the result record), the
checks that end a diverging run (:class:`TrainingDiverged`), the loop lengths of a run stopped
part-way (:func:`loop_lengths`), the float mode training runs in (:func:`flushing_denormals`), and
how every ``train`` starts (:func:`start_run`, :func:`closing_on_error`) and ends
(:func:`evaluated_result`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hpsrl.agents.episodes import EpisodeTracker, evaluate
from hpsrl.agents.hyperparameters import as_int, require
from hpsrl.envs.spec import EnvConfigError, EnvSpec, action_kind

if TYPE_CHECKING:
    import gymnasium

    from hpsrl.agents.checkpoints import Checkpointing


@dataclass(frozen=True)
class RunSettings:
    """What one training run is asked to do, the same for every algorithm: every ``train`` is
    ``train(env, hp, run: RunSettings) -> TrainResult``."""

    total_steps: int
    """Env steps to train for (rounded up to whole rollouts or vector steps); every schedule
    (learning rate, epsilon, curve points) follows it, also when ``stop_at`` ends a call early."""
    seed: int
    """Seeds the networks' initialisation, the training envs and every random draw of training."""
    _: KW_ONLY
    eval_seed: int
    """Seeds the evaluation envs (copy i gets ``eval_seed + i``), a stream apart from ``seed``."""
    eval_episodes: int = 10
    """Evaluation episodes of the trained policy (acting greedily or deterministically)."""
    curve_points: int = 20
    """Points of the learning curve, evenly spaced over ``total_steps``."""
    return_threshold: float | None = None
    """Mean return whose first reaching sets ``TrainResult.steps_to_threshold``; ``None``: never."""
    checkpoint: Checkpointing | None = None
    """Where and how often to save the run's state, and where to resume it from (see
    :mod:`hpsrl.agents.checkpoints`); ``None``: no checkpoints."""
    initial_weights: Mapping[str, np.ndarray] | None = None
    """A ``TrainResult.model_state`` (as arrays) of a run with the same ``ARCHITECTURE_FIELDS``
    to start the networks from instead of a fresh initialisation; the optimisers (and a replay
    buffer) start afresh. Entries that do not fit raise ``ValueError``."""
    stop_at: int | None = None
    """End this call at the first update boundary at or past this many env steps (see
    :func:`loop_lengths`), save a checkpoint there (with ``checkpoint``) and evaluate; a later call
    with a larger ``stop_at`` (or ``None``) goes on from there. ``None``: train to the end."""

    def __post_init__(self) -> None:
        if self.stop_at is not None:  # before any env is made (loop_lengths checks it again)
            object.__setattr__(self, "stop_at", as_int("stop_at", self.stop_at))
            require(self.stop_at >= 1, "stop_at", ">= 1 or None", self.stop_at)


class TrainingDiverged(RuntimeError):
    """A loss or a network parameter became NaN or infinite during training."""


@dataclass
class TrainResult:
    """What one training run produced."""

    eval_returns: np.ndarray
    """(eval_episodes,) float64: undiscounted return of each evaluation episode, greedy policy."""
    curve_steps: np.ndarray
    """(curve_points,) int64: env steps at which the learning curve was sampled."""
    curve_returns: np.ndarray
    """(curve_points,) float64: mean return of the last <= 20 finished training episodes at that
    point; NaN before the first episode ends, and at points a run stopped by ``stop_at`` has not
    reached."""
    steps_to_threshold: float
    """Env steps at which the mean of the last 10 finished training episodes first reached the
    return threshold (needs 10 finished episodes); ``math.inf`` if never or without threshold."""
    env_steps: int
    """Env steps actually taken: ``total_steps`` rounded up to whole rollouts (PPO) or whole
    vector steps (off-policy agents); with ``stop_at``, the steps so far (resumed part included).
    Steps in which a vector env resets a finished episode count too."""
    train_seconds: float
    eval_seconds: float
    model_state: dict[str, torch.Tensor]
    """``state_dict`` of the agent's network (CPU tensors); loads with ``weights_only=True``."""


def loop_lengths(
    total_steps: int, steps_per_iteration: int, stop_at: int | None
) -> tuple[int, int]:
    """``(num_iterations, stop_iteration)``: how many loop iterations (PPO: rollouts and their
    updates; the off-policy agents: vector steps) a ``total_steps`` run has, and after how many of
    them a call with ``stop_at`` ends its loop.

    ``stop_iteration`` is the first iteration boundary at or past ``stop_at`` env steps, or
    ``num_iterations`` when ``stop_at`` is ``None`` or not before the run's end. Every schedule
    (learning rate, epsilon, curve points, the fingerprint) keeps following ``num_iterations``:
    a stopped run is the first part of the full run, so that a successive-halving rung can continue
    it from its checkpoint instead of training it again from scratch. Raises ``ValueError`` unless
    ``stop_at`` is ``None`` or an integer >= 1.
    """
    num_iterations = max(1, math.ceil(total_steps / steps_per_iteration))
    if stop_at is None:
        return num_iterations, num_iterations
    stop_at = as_int("stop_at", stop_at)
    require(stop_at >= 1, "stop_at", ">= 1 or None", stop_at)
    return num_iterations, min(num_iterations, math.ceil(stop_at / steps_per_iteration))


def flushing_denormals(train: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """Run a training function with float denormals flushed to zero, then restore the default.

    Numbers below float32's smallest normal (1.2e-38) count as zero meanwhile (the CPU's FTZ/DAZ
    flags, set by ``torch.set_flush_denormal`` for the calling thread, the one thread a rank
    computes on). Adam's moments of dead ReLU units decay into that range, where arithmetic is
    several times slower (so flushing them speeds up the RL Zoo's CartPole DQN, to the same
    returns). What is lost is below any precision the training has. A process that set the
    flags itself finds them cleared after. Decorate the outermost training function only (TD3 and
    DDPG share one): a nested one would clear the flags when it returns.
    """

    @functools.wraps(train)
    def wrapped(*args: Any, **kwargs: Any) -> TrainResult:
        torch.set_flush_denormal(True)  # False (and nothing set) where unsupported
        try:
            return train(*args, **kwargs)
        finally:
            torch.set_flush_denormal(False)

    return wrapped


def check_finite(losses: np.ndarray, what: str, step: int) -> None:
    """Raise :class:`TrainingDiverged` unless every loss of an update (a 1-d array) is finite."""
    finite = np.isfinite(losses)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise TrainingDiverged(
            f"{what} became {losses[first]} in gradient step {first + 1} of the update "
            f"ending at env step {step}; the hyperparameters (often learning_rate) make "
            f"training unstable"
        )


def check_parameters(module: nn.Module, step: int) -> None:
    """Raise :class:`TrainingDiverged` if a parameter of ``module`` is NaN or infinite."""
    for name, param in module.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise TrainingDiverged(f"parameter {name!r} became NaN/inf by env step {step}")


def state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()``."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def start_run(
    env: EnvSpec, num_envs: int, seed: int
) -> tuple[torch.Generator, np.random.Generator, gymnasium.vector.VectorEnv]:
    """The start of every ``train``: the run's own torch and numpy random generators, both seeded
    with ``seed`` (no global RNG state, so runs sharing a process do not disturb each other), and
    its vector env of ``num_envs`` copies of ``env``, not reset yet."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    return generator, rng, env.make_vector(num_envs)


def discrete_action_count(space: gymnasium.spaces.Space, algorithm: str, env_id: str) -> int:
    """The number of actions of a ``Discrete`` action space; :class:`EnvConfigError` naming
    ``algorithm`` and ``env_id`` for any other (what :class:`hpsrl.agents.continuous.ActionBounds`
    is for the continuous agents)."""
    if action_kind(space) != "discrete":
        raise EnvConfigError(f"{algorithm} needs discrete actions; {env_id} has continuous ones")
    return int(space.n)


@contextlib.contextmanager
def closing_on_error(envs: gymnasium.vector.VectorEnv) -> Iterator[None]:
    """Close ``envs`` if the block raises (say, the env's action space does not suit the
    algorithm, or ``initial_weights`` do not fit the network): a run that cannot start leaves no
    env open. They stay open when the block ends normally."""
    try:
        yield
    except Exception:
        envs.close()
        raise


def evaluated_result(
    policy: Callable[[np.ndarray], np.ndarray],
    model: nn.Module,
    env: EnvSpec,
    run: RunSettings,
    tracker: EpisodeTracker,
    env_steps: int,
    train_seconds: float,
) -> TrainResult:
    """The end of every ``train``: check that the trained ``model`` is finite, evaluate its
    ``policy`` (greedy or deterministic) on ``run``'s evaluation seeds, timed, and gather the
    result, keeping ``model``'s weights.

    Raises :class:`TrainingDiverged` if a parameter of ``model`` is NaN or infinite.
    """
    check_parameters(model, env_steps)
    started = time.perf_counter()
    eval_returns = evaluate(policy, env, run.eval_episodes, run.eval_seed)
    return TrainResult(
        eval_returns=eval_returns,
        curve_steps=tracker.curve_steps,
        curve_returns=tracker.curve_returns,
        steps_to_threshold=tracker.steps_to_threshold,
        env_steps=env_steps,
        train_seconds=train_seconds,
        eval_seconds=time.perf_counter() - started,
        model_state=state_dict_cpu(model),
    )
