"""Soft Actor-Critic for continuous actions: twin Q-networks, a tanh-squashed Gaussian policy and
an entropy coefficient that is fixed or tuned automatically.

Reads top to bottom like CleanRL's ``sac_continuous_action.py``: the networks, then ``train``
(the hyperparameters are in :mod:`hpsrl.agents.hyperparameters.sac`).
The losses are Stable-Baselines3's: the critics regress (with 0.5 x MSE each) onto
``r + gamma * (1 - terminated) * (min of the target critics - alpha * log pi)`` at the next
observation; the actor minimises ``alpha * log pi - min Q`` at its own sampled actions; with
``autotune_entropy`` the log of alpha follows ``-log_alpha * (log pi + target entropy)``, the
target entropy being minus the number of action dimensions. All three update once per gradient
step, and the target critics move ``tau`` of the way towards the critics after it.

Actions live in ``[-1, 1]`` inside the agent (the tanh's range) and are mapped onto the env's
bounds when sent to it (see :mod:`hpsrl.agents.continuous`). The first ``learning_starts`` env
steps take uniformly random actions. Training runs the losses' gradients by hand, without autograd
(:func:`critic_gradients`, :func:`actor_gradients`; see :mod:`hpsrl.agents.continuous` for why);
:class:`Actor` and :class:`~hpsrl.agents.continuous.Critics` state the same maths in torch, and
are what the tests check those gradients against.

With ``checkpoint=Checkpointing(...)`` the run saves its state after a vector step (and the
training phase it triggers), including the replay buffer, and resumes from it when restarted; see
:mod:`hpsrl.agents.checkpoints` for what is kept and when the resumed result is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hpsrl.agents.checkpoints import (
    RunCheckpoint,
)
from hpsrl.agents.continuous import (
    ActionBounds,
    CriticMLPs,
    Critics,
    ReplayBuffer,
    spaces_of,
)
from hpsrl.agents.episodes import EpisodeTracker
from hpsrl.agents.hyperparameters.sac import ARCHITECTURE_FIELDS as ARCHITECTURE_FIELDS
from hpsrl.agents.hyperparameters.sac import GENES as GENES
from hpsrl.agents.hyperparameters.sac import Hyperparameters
from hpsrl.agents.networks import (
    MLP,
    FlatAdam,
    build_mlp,
    flatten_parameters,
    load_stored_weights,
    load_weights,
)
from hpsrl.agents.replay import gradient_steps_due
from hpsrl.agents.run import (
    RunSettings,
    TrainResult,
    check_finite,
    closing_on_error,
    evaluated_result,
    flushing_denormals,
    start_run,
)
from hpsrl.envs.spec import EnvSpec, observation_dim

log = logging.getLogger(__name__)

#: Bounds of the policy's log standard deviation (before the tanh), as in Stable-Baselines3.
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)


class Actor(nn.Module):
    """An MLP from observation to the mean and log standard deviation of a Gaussian per action
    dimension; an action is the tanh of a sample."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.net = build_mlp(
            obs_dim, 2 * act_dim, hidden_sizes, activation, 0.01, generator=generator
        )

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions for a batch from standard normal ``noise`` (reparametrised), and their log
        probabilities under the squashed Gaussian."""
        mean, log_std = self.net(obs).chunk(2, -1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        pre_tanh = mean + log_std.exp() * noise
        # log N(pre_tanh; mean, std) - log(1 - tanh(pre_tanh)^2), the latter written stably as
        # 2 (log 2 - u - softplus(-2u))
        log_probs = (
            -0.5 * noise.square()
            - log_std
            - _HALF_LOG_2PI
            - 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        ).sum(-1)
        return torch.tanh(pre_tanh), log_probs

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        """The tanh of the mean action for each observation of a batch, in ``[-1, 1]``."""
        with torch.inference_mode():
            out = self.net(torch.as_tensor(obs, dtype=torch.float32).reshape(len(obs), -1))
        return np.tanh(out.numpy()[:, : out.shape[1] // 2])


class EntropyCoefficient(nn.Module):
    """SAC's alpha, kept as its logarithm (what ``autotune_entropy`` learns)."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)))


class Agent(nn.Module):
    """Everything SAC learns: the actor, two critics and the entropy coefficient."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hp: Hyperparameters,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.actor = Actor(obs_dim, act_dim, hp.hidden_sizes, hp.activation, generator)
        self.critic = Critics(obs_dim, act_dim, 2, hp.hidden_sizes, hp.activation, generator)
        self.entropy = EntropyCoefficient(hp.ent_coef)


# -- Hand-written gradients ------------------------------------------------------------------------
# The losses above, computed on numpy arrays with their gradients written out (see
# hpsrl.agents.continuous for why); tests/test_continuous_gradients.py checks every gradient against
# autograd on Actor.forward and Critics.forward, which state the same maths in torch.


def squash(out: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """:meth:`Actor.forward` on the actor network's output ``out`` (means, then unclamped log
    standard deviations): actions from standard normal ``noise`` and their log probabilities,
    and what :func:`squash_backward` needs."""
    act_dim = noise.shape[1]
    mean, raw_log_std = out[:, :act_dim], out[:, act_dim:]
    log_std = np.clip(raw_log_std, LOG_STD_MIN, LOG_STD_MAX)
    std = np.exp(log_std)
    pre_tanh = mean + std * noise
    actions = np.tanh(pre_tanh)
    # log N(pre_tanh; mean, std) - log(1 - tanh(pre_tanh)^2), as in Actor.forward
    log_probs = (
        -0.5 * noise * noise
        - log_std
        - _HALF_LOG_2PI
        - 2.0 * (_LOG_2 - pre_tanh - np.logaddexp(0.0, -2.0 * pre_tanh))
    ).sum(1)
    return actions, log_probs, (actions, std, noise, raw_log_std)


def squash_backward(grad_actions: np.ndarray, grad_log_probs: float, saved: tuple) -> np.ndarray:
    """d loss / d actor output, given d loss / d actions (``(batch, act_dim)``) and the same
    d loss / d log probability for every row (the losses read the log probabilities through
    their mean), for the values :func:`squash` returned.

    With u = mean + std * noise and a = tanh(u): d a / d u = 1 - a^2, and the log probability's
    u-dependent part, -log(1 - tanh(u)^2), has d / d u = 2 a. d u / d log std = std * noise and the
    Gaussian's log density has d / d log std = -1 besides; the clamp passes gradients inside its
    bounds only (bounds included, as torch's ``clamp``).
    """
    actions, std, noise, raw_log_std = saved
    grad_pre_tanh = (2.0 * grad_log_probs) * actions + grad_actions * (1.0 - actions * actions)
    grad_log_std = grad_pre_tanh * std * noise - grad_log_probs
    grad_log_std *= (raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX)
    return np.concatenate([grad_pre_tanh, grad_log_std], axis=1)


def critic_gradients(
    actor: MLP,
    critics: CriticMLPs,
    target_critics: CriticMLPs,
    batch: Mapping[str, np.ndarray],
    next_noise: np.ndarray,
    alpha: float,
    gamma: float,
) -> float:
    """The critics' loss of one batch (one entry of each of :meth:`ReplayBuffer.sample`'s
    arrays); *writes* its gradient into the critics' ``.grad``.

    0.5 x the sum over both critics of the MSE to ``r + gamma * (1 - terminated) * (min of the
    target critics - alpha * log pi)`` at the next observation and an action the actor samples
    there with ``next_noise``.
    """
    next_obs = batch["next_obs"]
    next_actions, next_log_probs, _ = squash(actor.predict(next_obs), next_noise)
    next_q = target_critics.values(np.concatenate([next_obs, next_actions], axis=1)).min(0)
    soft_q = next_q - alpha * next_log_probs
    target_q = batch["rewards"] + gamma * batch["not_terminal"] * soft_q
    return critics.regress(batch["obs_actions"], target_q, 0.5)


def actor_gradients(
    actor: MLP, critics: CriticMLPs, obs: np.ndarray, noise: np.ndarray, alpha: float
) -> tuple[float, float]:
    """The actor's loss ``mean(alpha * log pi - min Q)`` at actions it samples for ``obs`` with
    ``noise``, and the mean log probability of those actions (alpha's loss reads it); *writes*
    the loss's gradient into the actor's ``.grad`` (the critics' stay as they are).

    The gradient of the minimum goes, row by row, to the critic that attains it (the first on a
    tie, as torch's ``min``), so each row goes backwards through one critic.
    """
    actions, log_probs, saved = squash(actor.forward(obs), noise)
    q = critics.forward(np.concatenate([obs, actions], axis=1))
    lowest = q.argmin(0)
    min_q = q[lowest, np.arange(len(obs))]
    batch_size = len(obs)
    grad_q = np.zeros_like(q)
    grad_q[lowest, np.arange(batch_size)] = -1.0 / batch_size
    grad_actions = critics.action_gradient(grad_q)
    actor.backward(squash_backward(grad_actions, alpha / batch_size, saved))
    loss = float(np.mean(alpha * log_probs - min_q))
    return loss, float(log_probs.mean())


def log_alpha_gradient(mean_log_prob: float, target_entropy: float) -> float:
    """d loss / d log alpha of alpha's loss ``-log_alpha * mean(log pi + target entropy)``, the
    log probabilities (of the actor's loss's actions) taken as constants."""
    return -(mean_log_prob + target_entropy)


def greedy_policy(
    env: EnvSpec, hp: Hyperparameters, weights: Mapping[str, np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """The trained actor of a stored result (``TrainResult.model_state``), acting with the tanh of
    its mean action, scaled to the env's action bounds."""
    obs_dim, bounds = spaces_of(env, "SAC")
    agent = Agent(obs_dim, bounds.dim, hp)
    load_stored_weights(agent, weights)
    return bounds.acting(agent.actor.deterministic)


@flushing_denormals
def train(env: EnvSpec, hp: Hyperparameters, run: RunSettings) -> TrainResult:
    """Train SAC on ``env`` for ``run.total_steps`` env steps (rounded up to whole vector steps).

    With ``run.initial_weights`` the actor, the critics and alpha start from them, and the target
    critics as copies of those critics; without ``autotune_entropy`` alpha stays ``hp.ent_coef``
    whatever they hold. The optimizers and the replay buffer start empty. Deterministic for a given
    ``seed`` and ``eval_seed`` on CPU with a fixed thread count. With ``run.checkpoint``, saves its
    state between vector steps and resumes from ``checkpoint.path`` if that file holds a
    checkpoint of this same run. With ``run.stop_at`` the run, still a ``total_steps`` run in its
    curve points and buffer size, stops after the first vector step (and its training phase) at or
    past ``stop_at`` env steps; see :mod:`hpsrl.agents.checkpoints`.
    Raises :class:`~hpsrl.agents.run.TrainingDiverged` when a loss becomes NaN/inf, and
    ``ValueError`` when ``initial_weights`` do not fit the networks.
    """
    started = time.perf_counter()
    seed = run.seed

    # -- Seeding (a private torch generator and numpy generator), environment and networks ------
    generator, rng, envs = start_run(env, hp.num_envs, seed)
    with closing_on_error(envs):
        bounds = ActionBounds(envs.single_action_space, "SAC", env.id)
        obs_dim = observation_dim(envs.single_observation_space)
        agent = Agent(obs_dim, bounds.dim, hp, generator)
        if run.initial_weights is not None:  # replaces the fresh initialisation (its draws stay)
            load_weights(agent, run.initial_weights)
    log_alpha = agent.entropy.log_alpha
    if not hp.autotune_entropy:
        with torch.no_grad():
            log_alpha.fill_(math.log(hp.ent_coef))
    target_critic = copy.deepcopy(agent.critic)
    # One Adam kernel per network over a flat parameter buffer, and one op per target update
    actor_optimizer = FlatAdam(agent.actor, hp.learning_rate)
    critic_optimizer = FlatAdam(agent.critic, hp.learning_rate)
    entropy_optimizer = FlatAdam(agent.entropy, hp.learning_rate)
    target_params, _ = flatten_parameters(target_critic)
    # Hand-written forward and backward passes over views of those buffers; also for acting
    actor_mlp = MLP(agent.actor.net, hp.activation)
    critic_mlps = CriticMLPs(agent.critic, hp.activation, obs_dim)
    target_mlps = CriticMLPs(target_critic, hp.activation, obs_dim, trainable=False)
    target_entropy = -float(bounds.dim)

    N, act_dim = hp.num_envs, bounds.dim
    buffer = ReplayBuffer.for_run(hp.buffer_size, run.total_steps, N, obs_dim, act_dim)
    tracker = EpisodeTracker(N, run.total_steps, run.curve_points, run.return_threshold)
    obs = envs.reset(seed=seed)[0].reshape(N, -1).astype(np.float32, copy=False)

    # -- Resume from this run's checkpoint, if there is one ----------------------------------------
    checkpoint = RunCheckpoint(
        "sac",
        env,
        hp,
        run,
        steps_per_iteration=N,  # a vector step
        counter="vector_step",
        parts={
            "agent": agent,
            "target_critic": target_critic,
            "actor_optimizer": actor_optimizer,
            "critic_optimizer": critic_optimizer,
            "entropy_optimizer": entropy_optimizer,
            "replay": buffer,
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
        # -- Act: uniformly at first, then by sampling the policy ---------------------------------
        if global_step < hp.learning_starts:
            actions = rng.uniform(-1.0, 1.0, (N, act_dim)).astype(np.float32)
        else:
            mean, log_std = np.split(actor_mlp.predict(obs), 2, axis=1)
            std = np.exp(np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))
            actions = np.tanh(mean + std * rng.standard_normal((N, act_dim), dtype=np.float32))
        next_obs, rewards, terminated, truncated, _ = envs.step(bounds.to_env(actions))
        next_obs = next_obs.reshape(N, -1).astype(np.float32, copy=False)
        buffer.add(obs, actions, rewards, next_obs, terminated, reset_step=prev_done)

        previous_step, global_step = global_step, global_step + N
        prev_done = terminated | truncated
        tracker.step(rewards, prev_done, global_step)
        obs = next_obs

        # -- Train: `gradient_steps` updates every `train_frequency` env steps -------------------
        n_updates = gradient_steps_due(hp, previous_step, global_step, buffer.stored)
        if n_updates > 0:
            batches = buffer.sample(rng, n_updates, hp.batch_size)
            # standard normal noise of the next actions (0) and of the policy's actions (1)
            noise = torch.randn((n_updates, 2, hp.batch_size, act_dim), generator=generator).numpy()
            losses = np.empty((2, n_updates))
            with np.errstate(all="ignore"):  # NaN/inf of a diverging run: see check_finite
                for u in range(n_updates):
                    batch = {name: array[u] for name, array in batches.items()}
                    alpha = math.exp(log_alpha.item())

                    # Critics: regress onto the soft Bellman target of the target critics
                    losses[0, u] = critic_gradients(
                        actor_mlp, critic_mlps, target_mlps, batch, noise[u, 0], alpha, hp.gamma
                    )
                    critic_optimizer.step()

                    # Actor: maximise min Q + alpha * entropy at its own actions, through the
                    # critics just updated (only the actor's parameters change)
                    losses[1, u], mean_log_prob = actor_gradients(
                        actor_mlp, critic_mlps, batch["obs"], noise[u, 1], alpha
                    )
                    actor_optimizer.step()

                    # Entropy coefficient: towards a mean log pi of minus the target entropy
                    if hp.autotune_entropy:
                        entropy_optimizer.grads.fill_(
                            log_alpha_gradient(mean_log_prob, target_entropy)
                        )
                        entropy_optimizer.step()

                    target_params.lerp_(critic_optimizer.params, hp.tau)
            check_finite(losses[0], "SAC critic loss", global_step)
            check_finite(losses[1], "SAC actor loss", global_step)

        checkpoint.maybe_save(vector_step, global_step, obs, prev_done)
    envs.close()
    train_seconds = checkpoint.train_seconds()

    # -- Evaluate the deterministic policy (tanh of the mean) on separate seeds -----------------
    policy = bounds.acting(agent.actor.deterministic)
    return evaluated_result(policy, agent, env, run, tracker, global_step, train_seconds)
