"""Twin Delayed DDPG (TD3) for continuous actions: twin critics, delayed policy updates and target
policy smoothing; :mod:`hpsrl.agents.ddpg` trains with this module's loop as TD3's special case.

Reads top to bottom like CleanRL's ``td3_continuous_action.py``: the actor, then ``train`` (the
hyperparameters are in :mod:`hpsrl.agents.hyperparameters.td3`).
As in Stable-Baselines3, each gradient step regresses every critic (MSE each, summed)
onto ``r + gamma * (1 - terminated) * min of the target critics`` at the target actor's next
action plus clipped Gaussian noise (``target_policy_noise``, ``noise_clip``); every
``policy_delay``-th gradient step the actor then maximises the first critic's value of its actions
and the target networks move ``tau`` of the way towards the networks.

Actions live in ``[-1, 1]`` inside the agent (the actor's tanh output) and are mapped onto the env's
bounds when sent to it (see :mod:`hpsrl.agents.continuous`). The first ``learning_starts`` env
steps take uniformly random actions; later ones add Gaussian noise of standard deviation
``exploration_noise`` to the actor's action, clipped to ``[-1, 1]``. Training runs the losses'
gradients by hand, without autograd (:func:`critic_gradients`, :func:`actor_gradients`; see
:mod:`hpsrl.agents.continuous` for why); :class:`Actor` and
:class:`~hpsrl.agents.continuous.Critics` state the same maths in torch, and are what the tests
check those gradients against.

With ``checkpoint=Checkpointing(...)`` the run saves its state after a vector step (and the
training phase it triggers), including the replay buffer, and resumes from it when restarted; see
:mod:`hpsrl.agents.checkpoints` for what is kept and when the resumed result is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

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
from hpsrl.agents.hyperparameters.td3 import ARCHITECTURE_FIELDS as ARCHITECTURE_FIELDS
from hpsrl.agents.hyperparameters.td3 import GENES as GENES
from hpsrl.agents.hyperparameters.td3 import Hyperparameters
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


class Actor(nn.Module):
    """A deterministic policy: an MLP from observation to action, squashed into [-1, 1] by tanh."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.net = build_mlp(obs_dim, act_dim, hidden_sizes, activation, 0.01, generator=generator)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        """The action for each observation of a batch, in ``[-1, 1]``."""
        with torch.inference_mode():
            return self(torch.as_tensor(obs, dtype=torch.float32).reshape(len(obs), -1)).numpy()


class Agent(nn.Module):
    """Everything TD3 (or DDPG) learns: the actor and ``n_critics`` critics."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_critics: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.actor = Actor(obs_dim, act_dim, hidden_sizes, activation, generator)
        self.critic = Critics(obs_dim, act_dim, n_critics, hidden_sizes, activation, generator)


# -- Hand-written gradients ------------------------------------------------------------------------
# The losses of the module docstring on numpy arrays, their gradients written out;
# tests/test_continuous_gradients.py checks them against autograd on Actor and Critics.


def critic_gradients(
    target_actor: MLP,
    critics: CriticMLPs,
    target_critics: CriticMLPs,
    batch: Mapping[str, np.ndarray],
    smoothing: np.ndarray | None,
    gamma: float,
) -> float:
    """The critics' loss of one batch (one entry of each of :meth:`ReplayBuffer.sample`'s
    arrays); *writes* its gradient into the critics' ``.grad``.

    The sum over the critics of the MSE to ``r + gamma * (1 - terminated) * min of the target
    critics`` at the next observation and the target actor's action there plus ``smoothing``
    (noise already clipped; ``None`` for none), clipped to ``[-1, 1]``.
    """
    next_obs = batch["next_obs"]
    next_actions = np.tanh(target_actor.predict(next_obs))
    if smoothing is not None:
        next_actions = np.clip(next_actions + smoothing, -1.0, 1.0)
    next_q = target_critics.values(np.concatenate([next_obs, next_actions], axis=1)).min(0)
    target_q = batch["rewards"] + gamma * batch["not_terminal"] * next_q
    return critics.regress(batch["obs_actions"], target_q, 1.0)


def actor_gradients(actor: MLP, critics: CriticMLPs, obs: np.ndarray) -> float:
    """The actor's loss, minus the first critic's mean value of the actor's actions for ``obs``;
    *writes* its gradient into the actor's ``.grad`` (the critics' stay as they are)."""
    actions = np.tanh(actor.forward(obs))
    q = critics.forward(np.concatenate([obs, actions], axis=1), count=1)
    grad_q = np.full_like(q, -1.0 / len(obs))
    grad_actions = critics.action_gradient(grad_q)
    actor.backward(grad_actions * (1.0 - actions * actions))  # through the tanh
    return -float(q.mean())


def greedy_policy(
    env: EnvSpec, hp: Hyperparameters, weights: Mapping[str, np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """The trained actor of a stored result (``TrainResult.model_state``), without exploration
    noise, scaled to the env's action bounds."""
    return rebuild_policy(env, hp, weights, "TD3", n_critics=2)


def rebuild_policy(
    env: EnvSpec, hp: Any, weights: Mapping[str, np.ndarray], algorithm: str, n_critics: int
) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`greedy_policy` of TD3 (``n_critics=2``) or DDPG (``n_critics=1``)."""
    obs_dim, bounds = spaces_of(env, algorithm)
    agent = Agent(obs_dim, bounds.dim, n_critics, hp.hidden_sizes, hp.activation)
    load_stored_weights(agent, weights)
    return bounds.acting(agent.actor.deterministic)


def train(env: EnvSpec, hp: Hyperparameters, run: RunSettings) -> TrainResult:
    """Train TD3 on ``env`` for ``run.total_steps`` env steps (rounded up to whole vector steps).

    With ``run.initial_weights`` the actor and the critics start from them, and the target networks
    as their copies; the optimizers and the replay buffer start empty. Deterministic for a given
    ``seed`` and ``eval_seed`` on CPU with a fixed thread count. With ``run.checkpoint``, saves its
    state between vector steps and resumes from ``checkpoint.path`` if that file holds a
    checkpoint of this same run. With ``run.stop_at`` the run, still a ``total_steps`` run in its
    curve points and buffer size, stops after the first vector step (and its training phase) at or
    past ``stop_at`` env steps; see :mod:`hpsrl.agents.checkpoints`.
    Raises :class:`~hpsrl.agents.run.TrainingDiverged` when a loss becomes NaN/inf, and
    ``ValueError`` when ``initial_weights`` do not fit the networks.
    """
    return train_td3_family(
        "td3",
        env,
        hp,
        run,
        n_critics=2,
        policy_delay=hp.policy_delay,
        target_policy_noise=hp.target_policy_noise,
        noise_clip=hp.noise_clip,
    )


@flushing_denormals
def train_td3_family(
    algorithm: str,
    env: EnvSpec,
    hp: Any,
    run: RunSettings,
    *,
    n_critics: int,
    policy_delay: int,
    target_policy_noise: float,
    noise_clip: float,
) -> TrainResult:
    """The training loop of TD3 and of DDPG (one critic, ``policy_delay`` 1, no target noise).

    ``hp`` supplies the fields the two share (``learning_rate`` ... ``num_envs``); ``algorithm``
    names the run in its checkpoint's fingerprint and in messages.
    """
    started = time.perf_counter()
    seed = run.seed
    name = algorithm.upper()

    # -- Seeding (a private torch generator and numpy generator), environment and networks ------
    generator, rng, envs = start_run(env, hp.num_envs, seed)
    with closing_on_error(envs):
        bounds = ActionBounds(envs.single_action_space, name, env.id)
        obs_dim = observation_dim(envs.single_observation_space)
        agent = Agent(obs_dim, bounds.dim, n_critics, hp.hidden_sizes, hp.activation, generator)
        if run.initial_weights is not None:  # replaces the fresh initialisation (its draws stay)
            load_weights(agent, run.initial_weights)
    target_actor, target_critic = copy.deepcopy(agent.actor), copy.deepcopy(agent.critic)
    # One Adam kernel per network over a flat parameter buffer, and one op per target update
    actor_optimizer = FlatAdam(agent.actor, hp.learning_rate)
    critic_optimizer = FlatAdam(agent.critic, hp.learning_rate)
    target_actor_params, _ = flatten_parameters(target_actor)
    target_critic_params, _ = flatten_parameters(target_critic)
    # Hand-written forward and backward passes over views of those buffers; also for acting
    actor_mlp = MLP(agent.actor.net, hp.activation)
    critic_mlps = CriticMLPs(agent.critic, hp.activation, obs_dim)
    target_actor_mlp = MLP(target_actor.net, hp.activation, trainable=False)
    target_mlps = CriticMLPs(target_critic, hp.activation, obs_dim, trainable=False)

    N, act_dim = hp.num_envs, bounds.dim
    buffer = ReplayBuffer.for_run(hp.buffer_size, run.total_steps, N, obs_dim, act_dim)
    tracker = EpisodeTracker(N, run.total_steps, run.curve_points, run.return_threshold)
    obs = envs.reset(seed=seed)[0].reshape(N, -1).astype(np.float32, copy=False)

    # -- Resume from this run's checkpoint, if there is one ----------------------------------------
    checkpoint = RunCheckpoint(
        algorithm,
        env,
        hp,
        run,
        steps_per_iteration=N,  # a vector step
        counter="vector_step",
        parts={
            "agent": agent,
            "target_actor": target_actor,
            "target_critic": target_critic,
            "actor_optimizer": actor_optimizer,
            "critic_optimizer": critic_optimizer,
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
        # -- Act: uniformly at first, then the actor's action plus Gaussian noise -----------------
        if global_step < hp.learning_starts:
            actions = rng.uniform(-1.0, 1.0, (N, act_dim)).astype(np.float32)
        else:
            actions = np.tanh(actor_mlp.predict(obs))
            if hp.exploration_noise > 0:
                noise = rng.standard_normal((N, act_dim), dtype=np.float32)
                actions = np.clip(actions + hp.exploration_noise * noise, -1.0, 1.0)
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
            smoothing = None
            if target_policy_noise > 0:
                noise = torch.randn((n_updates, hp.batch_size, act_dim), generator=generator)
                smoothing = noise.mul_(target_policy_noise).clamp_(-noise_clip, noise_clip).numpy()
            losses = np.zeros((2, n_updates))  # critic and actor (0 where not updated)
            with np.errstate(all="ignore"):  # NaN/inf of a diverging run: see check_finite
                for u in range(n_updates):
                    batch = {name: array[u] for name, array in batches.items()}

                    # Critics: regress onto the target critics' (smallest) value of the target
                    # actor's next action, smoothed by clipped noise
                    losses[0, u] = critic_gradients(
                        target_actor_mlp,
                        critic_mlps,
                        target_mlps,
                        batch,
                        None if smoothing is None else smoothing[u],
                        hp.gamma,
                    )
                    critic_optimizer.step()

                    # Actor and targets, every `policy_delay` gradient steps: maximise the first
                    # critic's value of the actor's actions (only the actor's parameters change),
                    # then move the targets towards the networks
                    if critic_optimizer.steps % policy_delay == 0:
                        losses[1, u] = actor_gradients(actor_mlp, critic_mlps, batch["obs"])
                        actor_optimizer.step()
                        target_actor_params.lerp_(actor_optimizer.params, hp.tau)
                        target_critic_params.lerp_(critic_optimizer.params, hp.tau)
            check_finite(losses[0], f"{name} critic loss", global_step)
            check_finite(losses[1], f"{name} actor loss", global_step)

        checkpoint.maybe_save(vector_step, global_step, obs, prev_done)
    envs.close()
    train_seconds = checkpoint.train_seconds()

    # -- Evaluate the actor without exploration noise on separate seeds -------------------------
    policy = bounds.acting(agent.actor.deterministic)
    return evaluated_result(policy, agent, env, run, tracker, global_step, train_seconds)
