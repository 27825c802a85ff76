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
    Checkpointer,
    Checkpointing,
    restore_run,
    run_fingerprint,
    run_state,
)
from hpsrl.agents.episodes import EpisodeTracker, evaluate
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
from hpsrl.agents.run import (
    TrainResult,
    check_finite,
    check_parameters,
    flushing_denormals,
    loop_lengths,
    state_dict_cpu,
)
from hpsrl.envs import EnvConfigError, EnvSpec, action_kind, observation_dim

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


def greedy_policy(
    env: EnvSpec, hp: Hyperparameters, weights: Mapping[str, np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """The trained Q-network of a stored result (``TrainResult.model_state``), acting greedily."""
    q_network = rebuild_discrete(QNetwork, env, hp.hidden_sizes, hp.activation, weights)
    return greedy_actions(q_network.q, hp.activation)


@flushing_denormals
def train(
    env: EnvSpec,
    hp: Hyperparameters,
    total_steps: int,
    seed: int,
    *,
    eval_seed: int,
    eval_episodes: int = 10,
    curve_points: int = 20,
    return_threshold: float | None = None,
    checkpoint: Checkpointing | None = None,
    initial_weights: Mapping[str, np.ndarray] | None = None,
    stop_at: int | None = None,
) -> TrainResult:
    """Train DQN on ``env`` for ``total_steps`` env steps (rounded up to whole vector steps).

    With ``initial_weights`` (a ``TrainResult.model_state`` of a run with the same
    ``ARCHITECTURE_FIELDS``, as arrays) the Q-network, and the target network as its copy, start
    from them instead of a fresh initialisation; the optimizer and the replay buffer start empty.
    Entries that do not fit raise ``ValueError``.
    Deterministic for a given ``seed`` and ``eval_seed`` on CPU with a fixed thread count.
    With ``checkpoint``, saves its state between vector steps and resumes from
    ``checkpoint.path`` if that file holds a checkpoint of this same run.
    With ``stop_at`` (>= 1) the run, still a ``total_steps`` run in its epsilon schedule and curve
    points, stops after the first vector step (and its training phase and target update) at or
    past ``stop_at`` env steps, saves a checkpoint there (with ``checkpoint``) and evaluates the
    policy as it is, so that a later call with a larger ``stop_at`` (or ``None``) goes on from that
    point; see :mod:`hpsrl.agents.checkpoints`.
    Raises :class:`~hpsrl.agents.run.TrainingDiverged` when the TD loss becomes NaN/inf.
    """
    started = time.perf_counter()
    # Vector steps of the whole run and of this call
    num_vector_steps, stop_vector_step = loop_lengths(total_steps, hp.num_envs, stop_at)

    # -- Seeding: a private torch generator and numpy generator, no global RNG state -------------
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    # -- Environment and networks ----------------------------------------------------------------
    envs = env.make_vector(hp.num_envs)
    if action_kind(envs.single_action_space) != "discrete":
        envs.close()
        raise EnvConfigError(f"DQN needs discrete actions; {env.id} has continuous ones")
    obs_dim = observation_dim(envs.single_observation_space)
    n_actions = int(envs.single_action_space.n)
    q_network = QNetwork(obs_dim, n_actions, hp.hidden_sizes, hp.activation, generator)
    if initial_weights is not None:  # replaces the fresh initialisation (which drew from generator)
        try:
            load_weights(q_network, initial_weights)
        except ValueError:
            envs.close()
            raise
    target_network = copy.deepcopy(q_network)
    # Gradients by hand (MLP.backward) and one Adam over a flat buffer: see common.MLP. The target
    # network gets a flat buffer too, so that its update is one op.
    optimizer = FlatAdam(q_network, hp.learning_rate, max_grad_norm=hp.max_grad_norm)
    target_params, _ = flatten_parameters(target_network)
    q_mlp, target_mlp = MLP(q_network.q, hp.activation), MLP(target_network.q, hp.activation)

    # -- Replay buffer: preallocated ring of transitions ------------------------------------------
    capacity = hp.buffer_size
    buf_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
    buf_next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
    buf_actions = np.zeros(capacity, dtype=np.int64)
    buf_rewards = np.zeros(capacity, dtype=np.float32)
    buf_terminated = np.zeros(capacity, dtype=np.float32)
    buffer = {
        "obs": buf_obs,
        "next_obs": buf_next_obs,
        "actions": buf_actions,
        "rewards": buf_rewards,
        "terminated": buf_terminated,
    }
    stored = 0  # transitions ever stored; the ring position is stored % capacity
    # where each row's Q-value of one action lies in a flattened (batch_size, n_actions) array
    row_offsets = np.arange(hp.batch_size) * n_actions

    N = hp.num_envs
    tracker = EpisodeTracker(N, total_steps, curve_points, return_threshold)
    exploration_steps = hp.exploration_fraction * total_steps
    obs = envs.reset(seed=seed)[0].astype(np.float32, copy=False)
    prev_done = np.zeros(N, dtype=bool)
    global_step = 0
    first_vector_step = 0
    earlier_seconds = 0.0  # train time of the run before it was resumed

    # -- Resume from this run's checkpoint, if there is one ----------------------------------------
    fingerprint = run_fingerprint(
        "dqn",
        env,
        hp,
        total_steps=total_steps,
        seed=seed,
        eval_seed=eval_seed,
        curve_points=curve_points,
        return_threshold=return_threshold,
        initial_weights=initial_weights,
    )
    checkpointer = Checkpointer(checkpoint, fingerprint)
    saved = checkpointer.load()
    if saved is not None:
        q_network.load_state_dict(saved["q_network"])
        target_network.load_state_dict(saved["target_network"])
        optimizer.load_state_dict(saved["optimizer"])
        stored = int(saved["replay"]["stored"])
        for name, array in buffer.items():
            array[: min(stored, capacity)] = saved["replay"][name].numpy()
        first_vector_step = int(saved["vector_step"])
        global_step = int(saved["global_step"])
        earlier_seconds = float(saved["train_seconds"])
        obs, prev_done = restore_run(
            saved,
            generator=generator,
            rng=rng,
            tracker=tracker,
            envs=envs,
            seed=seed,
            what=f"DQN seed {seed}",
        )
        obs = obs.astype(np.float32, copy=False)
        del saved

    for vector_step in range(first_vector_step, stop_vector_step):
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
        position = stored % capacity
        if position + k <= capacity:
            slots: slice | np.ndarray = slice(position, position + k)
        else:
            slots = (stored + np.arange(k)) % capacity
        buf_obs[slots] = obs[real]
        buf_next_obs[slots] = next_obs[real]
        buf_actions[slots] = actions[real]
        buf_rewards[slots] = rewards[real]
        buf_terminated[slots] = terminated[real]
        stored += k

        previous_step, global_step = global_step, global_step + N
        prev_done = terminated | truncated
        tracker.step(rewards, prev_done, global_step)
        obs = next_obs

        # -- Train: `gradient_steps` TD updates every `train_frequency` env steps -----------------
        phases = global_step // hp.train_frequency - previous_step // hp.train_frequency
        if global_step > hp.learning_starts and phases > 0 and stored > 0:
            n_updates = phases * hp.gradient_steps
            size = min(stored, capacity)
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
                    q_values = q_mlp.forward(p_obs[u])
                    td_error = np.subtract(q_values.take(taken[u]), target, out=td_errors[u])
                    # d smooth_l1 / d q_taken = clip(q_taken - target, -1, 1) / batch_size,
                    # and nothing flows to the Q-values of actions not taken.
                    np.clip(td_error, -1.0, 1.0, out=grad_taken)
                    np.divide(grad_taken, hp.batch_size, out=grad_taken)
                    grad_q.fill(0.0)
                    grad_q.put(taken[u], grad_taken)
                    q_mlp.backward(grad_q)
                    optimizer.step()
                # smooth_l1_loss (beta 1) of each gradient step, from its TD errors
                abs_errors = np.abs(td_errors)
                huber = np.where(abs_errors < 1.0, 0.5 * td_errors**2, abs_errors - 0.5)
            check_finite(huber.mean(-1), "DQN TD loss", global_step)

        # -- Update the target network every `target_update_interval` env steps -----------------
        if global_step // hp.target_update_interval > previous_step // hp.target_update_interval:
            with torch.inference_mode():
                if hp.tau == 1.0:
                    target_params.copy_(optimizer.params)
                else:
                    target_params.lerp_(optimizer.params, hp.tau)

        # -- Save a checkpoint when one is due or the run stops early here, to be continued ------
        # (saving reads state and draws no random numbers)
        stopping = stop_vector_step < num_vector_steps and vector_step + 1 == stop_vector_step
        if checkpointer.due(global_step, stopping=stopping):
            filled = min(stored, capacity)
            replay = {name: torch.from_numpy(a[:filled].copy()) for name, a in buffer.items()}
            checkpointer.save(
                global_step,
                {
                    **run_state(
                        global_step=global_step,
                        train_seconds=earlier_seconds + time.perf_counter() - started,
                        generator=generator,
                        rng=rng,
                        tracker=tracker,
                        envs=envs,
                        obs=obs,
                        prev_done=prev_done,
                    ),
                    "vector_step": vector_step + 1,
                    "q_network": q_network.state_dict(),
                    "target_network": target_network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "replay": {"stored": stored, **replay},
                },
            )
    envs.close()
    check_parameters(q_network, global_step)
    train_seconds = earlier_seconds + time.perf_counter() - started

    # -- Evaluate the greedy policy on separate seeds --------------------------------------------
    started = time.perf_counter()
    eval_returns = evaluate(
        greedy_actions(q_network.q, hp.activation), env, eval_episodes, eval_seed
    )
    return TrainResult(
        eval_returns=eval_returns,
        curve_steps=tracker.curve_steps,
        curve_returns=tracker.curve_returns,
        steps_to_threshold=tracker.steps_to_threshold,
        env_steps=global_step,
        train_seconds=train_seconds,
        eval_seconds=time.perf_counter() - started,
        model_state=state_dict_cpu(q_network),
    )
