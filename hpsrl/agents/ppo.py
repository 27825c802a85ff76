"""Proximal Policy Optimization (clipped objective, GAE) for discrete actions.

Reads top to bottom like CleanRL's ``ppo.py``: the network, then ``train``; the hyperparameters
are in :mod:`hpsrl.agents.hyperparameters.ppo` (no torch there, for config checks).
Differences from CleanRL: gymnasium 1.x ``NEXT_STEP`` autoreset is handled by masking the reset step
that follows each episode out of the loss; truncated episodes bootstrap from the value of their
final observation; minibatches are near-equal splits of the valid samples of a rollout.
Gradients are written out by hand in numpy (no autograd, see :class:`hpsrl.agents.networks.MLP`)
and Adam runs over one flat parameter buffer (:class:`~hpsrl.agents.networks.FlatAdam`): the
networks are so small that torch's per-op overhead, not arithmetic, would otherwise dominate.

With ``checkpoint=Checkpointing(...)`` the run saves its state after a rollout and its update and
resumes from it when restarted; see :mod:`hpsrl.agents.checkpoints` for what is kept and when the
resumed result is bit-identical to an uninterrupted one."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from hpsrl.agents.checkpoints import RunCheckpoint
from hpsrl.agents.episodes import EpisodeTracker
from hpsrl.agents.hyperparameters.ppo import ARCHITECTURE_FIELDS as ARCHITECTURE_FIELDS
from hpsrl.agents.hyperparameters.ppo import GENES as GENES
from hpsrl.agents.hyperparameters.ppo import Hyperparameters
from hpsrl.agents.networks import (
    MLP,
    FlatAdam,
    build_mlp,
    greedy_actions,
    load_weights,
    rebuild_discrete,
)
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


class Agent(nn.Module):
    """Separate actor (action logits) and critic (state value) MLPs."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.actor = build_mlp(
            obs_dim, n_actions, hidden_sizes, activation, 0.01, generator=generator
        )
        self.critic = build_mlp(obs_dim, 1, hidden_sizes, activation, 1.0, generator=generator)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    # torch's kernel: numpy's reductions over a short last axis are slow
    return torch.log_softmax(torch.from_numpy(logits), -1).numpy()


def _standardized(advantages: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (unbiased, as torch's ``std``); a single value is kept."""
    n = len(advantages)
    if n < 2:
        return advantages
    centered = advantages - advantages.sum() / n
    centered /= math.sqrt(np.dot(centered, centered) / (n - 1)) + 1e-8
    return centered


def loss_gradients(
    actor: MLP,
    critic: MLP,
    obs: np.ndarray,
    actions: np.ndarray,
    old_logprobs: np.ndarray,
    advantages: np.ndarray,
    returns: np.ndarray,
    hp: Hyperparameters,
) -> float:
    """PPO's loss on a minibatch, ``pg_loss - ent_coef * entropy + vf_coef * v_loss`` as CleanRL
    writes it; *writes* its gradient into the actor's and the critic's ``.grad``.

    Written out by hand (no autograd; tests/test_discrete_gradients.py checks it against autograd).
    With B samples, per sample i:

    - pg_loss = mean_i max(-A_i r_i, -A_i clip(r_i)), r_i = exp(logp_i(a_i) - old_logp_i):
      d / d r_i = -A_i / B where the unclipped term is the larger one (always inside the clip
      range), else 0; and d r_i / d logits_i = r_i (onehot(a_i) - p_i).
    - entropy = mean_i H_i, H_i = -sum_j p_ij logp_ij: d H_i / d logits_ij = -p_ij (logp_ij + H_i).
    - v_loss = 0.5 mean_i (v_i - R_i)^2: d / d v_i = (v_i - R_i) / B.

    max(-x, -y) = -min(x, y) exactly, so the code uses the surrogates x = A r, y = A clip(r).
    """
    B = len(obs)
    rows = np.arange(B)
    logprobs_all = _log_softmax(actor.forward(obs))
    probs = np.exp(logprobs_all)
    ratio = np.exp(logprobs_all[rows, actions] - old_logprobs)
    surrogate = advantages * ratio
    surrogate_clipped = advantages * np.clip(ratio, 1 - hp.clip_coef, 1 + hp.clip_coef)
    pg_loss = -np.minimum(surrogate, surrogate_clipped).sum() / B
    v_error = critic.forward(obs)[:, 0] - returns
    v_loss = 0.5 * np.dot(v_error, v_error) / B
    loss = pg_loss + hp.vf_coef * v_loss

    unclipped = surrogate <= surrogate_clipped
    grad_logprob = np.where(unclipped, surrogate, 0.0) * (-1.0 / B)
    grad_logits = -probs
    grad_logits[rows, actions] += 1.0
    grad_logits *= grad_logprob[:, None]
    if hp.ent_coef != 0.0:
        entropies = -(probs * logprobs_all).sum(-1)
        loss -= hp.ent_coef * entropies.sum() / B
        entropy_grad = probs * (logprobs_all + entropies[:, None])
        grad_logits += entropy_grad * (hp.ent_coef / B)
    actor.backward(grad_logits)
    critic.backward((v_error * (hp.vf_coef / B))[:, None])
    return loss


def greedy_policy(
    env: EnvSpec, hp: Hyperparameters, weights: Mapping[str, np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """The trained actor of a stored result (``TrainResult.model_state``), acting greedily."""
    agent = rebuild_discrete(Agent, env, hp.hidden_sizes, hp.activation, weights)
    return greedy_actions(agent.actor, hp.activation)


@flushing_denormals
def train(env: EnvSpec, hp: Hyperparameters, run: RunSettings) -> TrainResult:
    """Train PPO on ``env`` for ``run.total_steps`` env steps (rounded up to whole rollouts),
    evaluate.

    With ``run.initial_weights`` the actor and critic start from them; the optimizer starts
    afresh. Deterministic for a given ``seed`` and ``eval_seed`` on CPU with a fixed thread count.
    With ``run.checkpoint``, saves its state after a rollout and its update and resumes from
    ``checkpoint.path`` if that file holds a checkpoint of this same run. With ``run.stop_at`` the
    run, still a ``total_steps`` run in its learning-rate schedule and curve points, stops after
    ceil(stop_at / (num_steps * num_envs)) rollouts and their updates; see
    :mod:`hpsrl.agents.checkpoints`.
    Raises :class:`~hpsrl.agents.run.TrainingDiverged` when a loss becomes NaN/inf, and
    ``ValueError`` when ``initial_weights`` do not fit the networks.
    """
    started = time.perf_counter()
    seed = run.seed

    # -- Seeding (a private torch generator and numpy generator), environment and network -------
    generator, rng, envs = start_run(env, hp.num_envs, seed)
    with closing_on_error(envs):
        n_actions = discrete_action_count(envs.single_action_space, "PPO here", env.id)
        obs_dim = observation_dim(envs.single_observation_space)
        agent = Agent(obs_dim, n_actions, hp.hidden_sizes, hp.activation, generator)
        if run.initial_weights is not None:  # replaces the fresh initialisation (its draws stay)
            load_weights(agent, run.initial_weights)
    # Gradients by hand (MLP.backward) and one Adam over a flat buffer: see networks.MLP
    optimizer = FlatAdam(agent, hp.learning_rate, eps=1e-5, max_grad_norm=hp.max_grad_norm)
    actor, critic = MLP(agent.actor, hp.activation), MLP(agent.critic, hp.activation)

    # -- Rollout storage (slot num_steps of `obs` holds the observation after the rollout) --------
    T, N = hp.num_steps, hp.num_envs
    obs = np.zeros((T + 1, N, obs_dim), dtype=np.float32)
    actions = np.zeros((T, N), dtype=np.int64)
    rewards = np.zeros((T, N), dtype=np.float32)
    terminated = np.zeros((T, N), dtype=bool)
    truncated = np.zeros((T, N), dtype=bool)
    valid = np.zeros((T, N), dtype=bool)  # False on the reset step that follows an episode's end
    advantages = np.zeros((T, N), dtype=np.float32)

    tracker = EpisodeTracker(N, run.total_steps, run.curve_points, run.return_threshold)
    next_obs, _ = envs.reset(seed=seed)

    # -- Resume from this run's checkpoint, if there is one ----------------------------------------
    checkpoint = RunCheckpoint(
        "ppo",
        env,
        hp,
        run,
        steps_per_iteration=T * N,  # a rollout; the rollouts of the whole run set the lr schedule
        counter="iteration",
        parts={"agent": agent, "optimizer": optimizer},
        generator=generator,
        rng=rng,
        tracker=tracker,
        envs=envs,
        started=started,
    )
    start = checkpoint.resume_or_start(next_obs, np.zeros(N, dtype=bool))
    next_obs, prev_done, global_step = start.obs, start.prev_done, start.global_step

    for iteration in range(start.iteration, checkpoint.stop_iteration):
        if hp.anneal_lr:
            optimizer.lr = hp.learning_rate * (1 - iteration / checkpoint.num_iterations)

        # -- Collect a rollout: one batched actor forward per vector step -------------------------
        # argmax(logits + Gumbel noise) is a sample of softmax(logits); the rollout's noise is
        # drawn at once, and acting runs in numpy (see networks.MLP)
        uniform = torch.rand((T, N, n_actions), generator=generator)
        gumbel = (-torch.log(-torch.log(uniform))).numpy()
        for t in range(T):
            obs[t] = next_obs
            valid[t] = ~prev_done
            action = (actor.predict(obs[t]) + gumbel[t]).argmax(-1)
            next_obs, reward, term, trunc, _ = envs.step(action)
            actions[t], rewards[t], terminated[t], truncated[t] = action, reward, term, trunc
            prev_done = term | trunc
            global_step += N
            tracker.step(reward, prev_done, global_step)
        obs[T] = next_obs

        # -- Advantages (GAE) -------------------------------------------------------------------
        # Done steps cut the recursion; only termination zeroes the bootstrap: a truncated step
        # bootstraps from the value of its final observation, which NEXT_STEP autoreset leaves in
        # the next slot (that slot's own reset step is masked out below).
        flat_obs = obs.reshape(-1, obs_dim)
        values = critic.predict(flat_obs).reshape(T + 1, N)
        old_logprobs = _log_softmax(actor.predict(flat_obs[: T * N]))
        old_logprobs = old_logprobs[np.arange(T * N), actions.reshape(-1)].reshape(T, N)
        not_terminal = 1.0 - terminated
        continues = ~(terminated | truncated)
        last = np.zeros(N, dtype=np.float32)
        for t in reversed(range(T)):
            delta = rewards[t] + hp.gamma * values[t + 1] * not_terminal[t] - values[t]
            last = delta + hp.gamma * hp.gae_lambda * continues[t] * last
            advantages[t] = last
        returns = advantages + values[:T]

        # -- Keep the valid samples (drop reset steps) as flat arrays ----------------------------
        keep = np.flatnonzero(valid)
        b_obs = flat_obs[keep]
        b_actions = actions.reshape(-1)[keep]
        b_logprobs = old_logprobs.reshape(-1)[keep]
        b_advantages = advantages.reshape(-1)[keep]
        b_returns = returns.reshape(-1)[keep]
        num_minibatches = max(1, round(len(keep) / hp.batch_size))
        # np.array_split's near-equal chunks (the first ones one longer), computed once
        size, longer = divmod(len(keep), num_minibatches)
        bounds = [i * size + min(i, longer) for i in range(num_minibatches + 1)]
        # Advantages are standardised per minibatch; when one minibatch holds them all, once here.
        normalize_per_minibatch = hp.normalize_advantages and num_minibatches > 1
        if hp.normalize_advantages and num_minibatches == 1:
            b_advantages = _standardized(b_advantages)

        # -- Optimise the clipped surrogate, value loss and entropy bonus (loss_gradients) --------
        losses = []
        with np.errstate(all="ignore"):  # NaN/inf of a diverging run are caught by check_finite
            for _ in range(hp.update_epochs):
                # One minibatch holds every sample, whose order does not change the means: then
                # skip the shuffle and the copies (the minibatch arrays are views of the batch).
                order = rng.permutation(len(keep)) if num_minibatches > 1 else None
                for start, stop in itertools.pairwise(bounds):
                    mb = slice(None) if order is None else order[start:stop]
                    adv = b_advantages[mb]
                    if normalize_per_minibatch:
                        adv = _standardized(adv)
                    loss = loss_gradients(
                        actor,
                        critic,
                        b_obs[mb],
                        b_actions[mb],
                        b_logprobs[mb],
                        adv,
                        b_returns[mb],
                        hp,
                    )
                    optimizer.step()
                    losses.append(loss)
        check_finite(np.array(losses), "PPO loss", global_step)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "step %d: recent return %.1f, loss %.3f",
                global_step,
                tracker.recent_mean(),
                losses[-1],
            )

        checkpoint.maybe_save(iteration, global_step, next_obs, prev_done)
    envs.close()
    train_seconds = checkpoint.train_seconds()

    # -- Evaluate the greedy policy on separate seeds --------------------------------------------
    policy = greedy_actions(agent.actor, hp.activation)
    return evaluated_result(policy, agent, env, run, tracker, global_step, train_seconds)
