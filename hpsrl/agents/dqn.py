"""Deep Q-Network (optionally Double DQN) with a replay buffer and a target network.

Reads top to bottom like CleanRL's ``dqn.py``: the Q-network, then ``train``; the hyperparameters
are in :mod:`hpsrl.agents.hyperparameters.dqn` (no torch there, for config checks).
With gymnasium 1.x ``NEXT_STEP`` autoreset, the step that resets a finished episode is not a
transition and is not stored; the done flag of a stored transition is ``terminated`` only, so
truncated episodes bootstrap from their final observation.
As in ``ppo``, gradients are written out by hand in numpy (:class:`hpsrl.agents.networks.MLP`) and
Adam runs over one flat buffer; without Double DQN the targets of a whole training phase come from
one forward pass of the target network, which does not change during the phase, over the distinct
transitions the phase samples.

With ``checkpoint=Checkpointing(...)`` the run saves its state after a vector step (and the training
phase and target update it triggers), including the filled part of the replay buffer, and resumes
from it when restarted; see :mod:`hpsrl.agents.checkpoints` for what is kept and when the resumed
result is bit-identical to an uninterrupted one."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from hpsrl.agents.checkpoints import (
    RunCheckpoint,
)
from hpsrl.agents.episodes import EpisodeTracker
from hpsrl.agents.hyperparameters.dqn import ARCHITECTURE_FIELDS as ARCHITECTURE_FIELDS
from hpsrl.agents.hyperparameters.dqn import GENES as GENES
from hpsrl.agents.hyperparameters.dqn import Hyperparameters
from hpsrl.agents.networks import (
    MLP,
    FlatAdam,
    build_mlp,
    flatten_parameters,
    greedy_actions,
    load_weights,
    rebuild_discrete,
)
from hpsrl.agents.replay import ReplayRing, gradient_steps_due
from hpsrl.agents.run import (
    RunSettings,
    TrainResult,
    check_finite,
    closing_on_error,
    discrete_action_count,
    evaluated_result,
    flushing_denormals,
    start_run,
)
from hpsrl.envs.spec import EnvSpec, observation_dim

log = logging.getLogger(__name__)


class QNetwork(nn.Module):
    """An MLP from observation to one Q-value per action."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        # nn.Linear's init, as SB3 and CleanRL's DQN: with the orthogonal one of CleanRL's PPO the
        # RL Zoo's CartPole-v1 settings solved 11 of 30 seeds, with this one 18 (SB3: 20)
        self.q = build_mlp(
            obs_dim, n_actions, hidden_sizes, activation, init="torch", generator=generator
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(obs)


class _ReplayArrays(ReplayRing):
    """The replay buffer: a preallocated ring of transitions, one array per field; the training
    loop stores into and gathers from :attr:`arrays` itself."""

    def __init__(self, capacity: int, obs_dim: int) -> None:
        super().__init__(
            capacity,
            {
                "obs": np.zeros((capacity, obs_dim), dtype=np.float32),
                "next_obs": np.zeros((capacity, obs_dim), dtype=np.float32),
                "actions": np.zeros(capacity, dtype=np.int64),
                "rewards": np.zeros(capacity, dtype=np.float32),
                "terminated": np.zeros(capacity, dtype=np.float32),
            },
        )


def td_gradients(
    q: MLP,
    obs: np.ndarray,
    taken: np.ndarray,
    targets: np.ndarray,
    td_errors: np.ndarray,
    grad_q: np.ndarray,
    grad_taken: np.ndarray,
) -> None:
    """*Write* the gradient of the TD loss ``smooth_l1_loss(Q(obs)[a], targets)`` (beta 1, mean
    over the batch, as SB3 and CleanRL) into ``q``'s ``.grad``; put the TD errors into
    ``td_errors`` (for :func:`huber`).

    ``taken`` indexes each row's Q-value of its action in the flattened ``(batch, n_actions)``
    output; ``grad_q`` ``(batch, n_actions)`` and ``grad_taken`` ``(batch,)`` are scratch arrays.
    Written out by hand: d smooth_l1 / d q_taken = clip(q_taken - target, -1, 1) / batch, and
    nothing flows to the Q-values of actions not taken (tests/test_discrete_gradients.py checks it
    against autograd).
    """
    q_values = q.forward(obs)
    td_error = np.subtract(q_values.take(taken), targets, out=td_errors)
    np.clip(td_error, -1.0, 1.0, out=grad_taken)
    np.divide(grad_taken, len(obs), out=grad_taken)
    grad_q.fill(0.0)
    grad_q.put(taken, grad_taken)
    q.backward(grad_q)


def huber(td_errors: np.ndarray) -> np.ndarray:
    """``smooth_l1_loss`` (beta 1) of each TD error, elementwise."""
    abs_errors = np.abs(td_errors)
    return np.where(abs_errors < 1.0, 0.5 * td_errors**2, abs_errors - 0.5)


def greedy_policy(
    env: EnvSpec, hp: Hyperparameters, weights: Mapping[str, np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """The trained Q-network of a stored result (``TrainResult.model_state``), acting greedily."""
    q_network = rebuild_discrete(QNetwork, env, hp.hidden_sizes, hp.activation, weights)
    return greedy_actions(q_network.q, hp.activation)


@flushing_denormals
def train(env: EnvSpec, hp: Hyperparameters, run: RunSettings) -> TrainResult:
    """Train DQN on ``env`` for ``run.total_steps`` env steps (rounded up to whole vector steps).

    With ``run.initial_weights`` the Q-network, and the target network as its copy, start from
    them; the optimizer and the replay buffer start empty. Deterministic for a given ``seed`` and
    ``eval_seed`` on CPU with a fixed thread count. With ``run.checkpoint``, saves its state between
    vector steps and resumes from ``checkpoint.path`` if that file holds a checkpoint of this same
    run. With ``run.stop_at`` the run, still a ``total_steps`` run in its epsilon schedule and curve
    points, stops after the first vector step (and its training phase and target update) at or
    past ``stop_at`` env steps; see :mod:`hpsrl.agents.checkpoints`.
    Raises :class:`~hpsrl.agents.run.TrainingDiverged` when the TD loss becomes NaN/inf, and
    ``ValueError`` when ``initial_weights`` do not fit the network.
    """
    started = time.perf_counter()
    seed = run.seed

    # -- Seeding (a private torch generator and numpy generator), environment and networks ------
    generator, rng, envs = start_run(env, hp.num_envs, seed)
    with closing_on_error(envs):
        n_actions = discrete_action_count(envs.single_action_space, "DQN", env.id)
        obs_dim = observation_dim(envs.single_observation_space)
        q_network = QNetwork(obs_dim, n_actions, hp.hidden_sizes, hp.activation, generator)
        if run.initial_weights is not None:  # replaces the fresh initialisation (its draws stay)
            load_weights(q_network, run.initial_weights)
    target_network = copy.deepcopy(q_network)
    # Gradients by hand (MLP.backward) and one Adam over a flat buffer: see networks.MLP. The target
    # network gets a flat buffer too, so that its update is one op.
    optimizer = FlatAdam(q_network, hp.learning_rate, max_grad_norm=hp.max_grad_norm)
    target_params, _ = flatten_parameters(target_network)
    q_mlp, target_mlp = MLP(q_network.q, hp.activation), MLP(target_network.q, hp.activation)

    # -- Replay buffer: preallocated ring of transitions ------------------------------------------
    capacity = hp.buffer_size
    replay = _ReplayArrays(capacity, obs_dim)
    buf_obs, buf_next_obs = replay.arrays["obs"], replay.arrays["next_obs"]
    buf_actions, buf_rewards = replay.arrays["actions"], replay.arrays["rewards"]
    buf_terminated = replay.arrays["terminated"]
    # where each row's Q-value of one action lies in a flattened (batch_size, n_actions) array
    row_offsets = np.arange(hp.batch_size) * n_actions

    N = hp.num_envs
    tracker = EpisodeTracker(N, run.total_steps, run.curve_points, run.return_threshold)
    exploration_steps = hp.exploration_fraction * run.total_steps
    obs = envs.reset(seed=seed)[0].astype(np.float32, copy=False)

    # -- Resume from this run's checkpoint, if there is one ----------------------------------------
    checkpoint = RunCheckpoint(
        "dqn",
        env,
        hp,
        run,
        steps_per_iteration=N,  # a vector step
        counter="vector_step",
        parts={
            "q_network": q_network,
            "target_network": target_network,
            "optimizer": optimizer,
            "replay": replay,
        },
        generator=generator,
        rng=rng,
        tracker=tracker,
        envs=envs,
        started=started,
    )
    start = checkpoint.resume_or_start(obs, np.zeros(N, dtype=bool))
    obs, prev_done, global_step = start.obs, start.prev_done, start.global_step
    obs = obs.astype(np.float32, copy=False)

    for vector_step in range(start.iteration, checkpoint.stop_iteration):
        # -- Act epsilon-greedily -----------------------------------------------------------------
        progress = min(1.0, global_step / exploration_steps) if exploration_steps > 0 else 1.0
        epsilon = hp.epsilon_start + progress * (hp.epsilon - hp.epsilon_start)
        if global_step < hp.learning_starts:  # a warm-up of uniformly random actions
            epsilon = 1.0
        # one draw for both: whether each env explores, and its random action (a uniform action
        # is the floor of n_actions times a uniform number in [0, 1))
        explore_draws, action_draws = rng.random((2, N))
        explore = explore_draws < epsilon
        random_actions = (action_draws * n_actions).astype(np.int64)
        if explore.all():  # the greedy actions would all be replaced: skip the forward pass
            actions = random_actions
        else:
            greedy = q_mlp.predict(obs).argmax(-1)
            actions = np.where(explore, random_actions, greedy)
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        next_obs = next_obs.astype(np.float32, copy=False)

        # -- Store real transitions (not the reset steps of NEXT_STEP autoreset) ------------------
        # Slices where possible: fancy indexing costs several times more on one or a few rows.
        k = N - int(np.count_nonzero(prev_done))
        real = slice(None) if k == N else ~prev_done
        slots = replay.slots(k)
        buf_obs[slots] = obs[real]
        buf_next_obs[slots] = next_obs[real]
        buf_actions[slots] = actions[real]
        buf_rewards[slots] = rewards[real]
        buf_terminated[slots] = terminated[real]
        replay.stored += k

        previous_step, global_step = global_step, global_step + N
        prev_done = terminated | truncated
        tracker.step(rewards, prev_done, global_step)
        obs = next_obs

        # -- Train: `gradient_steps` TD updates every `train_frequency` env steps -----------------
        n_updates = gradient_steps_due(hp, previous_step, global_step, replay.stored)
        if n_updates > 0:
            size = min(replay.stored, capacity)
            batches = rng.integers(size, size=(n_updates, hp.batch_size))
            # One gather per buffer array for the whole phase, as (n_updates, batch_size, ...).
            p_obs = buf_obs[batches]
            taken = buf_actions[batches] + row_offsets  # flat index of each Q(s, a) trained
            p_rewards = buf_rewards[batches]
            p_not_terminal = 1.0 - buf_terminated[batches]
            td_errors = np.empty((n_updates, hp.batch_size), dtype=np.float32)
            grad_q = np.empty((hp.batch_size, n_actions), dtype=np.float32)
            grad_taken = np.empty(hp.batch_size, dtype=np.float32)
            with np.errstate(all="ignore"):  # NaN/inf of a diverging run: see check_finite
                if hp.double_dqn:
                    p_next_obs = buf_next_obs[batches]
                else:
                    # The target network only changes after the phase: value the next_obs of
                    # the phase's transitions in one forward pass, each distinct one once (a
                    # phase samples 8192 of the first few thousand transitions, say).
                    sampled, where = np.unique(batches, return_inverse=True)
                    next_values = target_mlp.predict(buf_next_obs[sampled]).max(-1)
                    next_values = next_values[where.reshape(batches.shape)]
                    targets = p_rewards + hp.gamma * p_not_terminal * next_values
                for u in range(n_updates):
                    if hp.double_dqn:
                        next_q = target_mlp.predict(p_next_obs[u])
                        best = q_mlp.predict(p_next_obs[u]).argmax(-1) + row_offsets
                        target = p_rewards[u] + hp.gamma * p_not_terminal[u] * next_q.take(best)
                    else:
                        target = targets[u]
                    td_gradients(
                        q_mlp, p_obs[u], taken[u], target, td_errors[u], grad_q, grad_taken
                    )
                    optimizer.step()
                losses = huber(td_errors).mean(-1)  # of each gradient step
            check_finite(losses, "DQN TD loss", global_step)

        # -- Update the target network every `target_update_interval` env steps -----------------
        if global_step // hp.target_update_interval > previous_step // hp.target_update_interval:
            with torch.inference_mode():
                if hp.tau == 1.0:
                    target_params.copy_(optimizer.params)
                else:
                    target_params.lerp_(optimizer.params, hp.tau)

        checkpoint.maybe_save(vector_step, global_step, obs, prev_done)
    envs.close()
    train_seconds = checkpoint.train_seconds()

    # -- Evaluate the greedy policy on separate seeds --------------------------------------------
    policy = greedy_actions(q_network.q, hp.activation)
    return evaluated_result(policy, q_network, env, run, tracker, global_step, train_seconds)
