"""The continuous-action agents' hand-written gradients equal autograd's.

SAC, TD3 and DDPG train without autograd (``sac.critic_gradients``, ``sac.actor_gradients``,
``sac.log_alpha_gradient``, ``td3.critic_gradients``, ``td3.actor_gradients``, over
``common.MLP`` and ``continuous.CriticMLPs``). Each is checked here against torch autograd on
the same losses written with the torch modules (``sac.Actor.forward``, ``td3.Actor``,
``continuous.Critics``, as Stable-Baselines3 writes them), in float64 on small random networks
and batches, for every activation a network may use, one and two hidden layers, one and two
action dimensions, both critics (and DDPG's single one), actions deep in the tanh's tails and log
standard deviations beyond their clamp.
"""

from __future__ import annotations

import copy
import math
import zlib

import numpy as np
import pytest
import torch

from hpsrl.agents import sac, td3
from hpsrl.agents.continuous import CriticMLPs, Critics
from hpsrl.agents.hyperparameters.sac import Hyperparameters as SACHyperparameters
from hpsrl.agents.networks import ACTIVATIONS, MLP, flatten_parameters

OBS_DIM, BATCH = 3, 23
GAMMA, ALPHA = 0.97, 0.3
LAYOUTS = [(6,), (7, 5)]
#: Float64 against float64: the two differ by rounding, and where the log probability's tanh
#: correction is far in its tails, by torch's softplus turning linear beyond 20 (an error of
#: e^-20 there, which the hand-written derivative 2 tanh(u) does not make).
TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _seed(*case: object) -> int:
    """A seed per test case, the same in every process (unlike ``hash`` of a string)."""
    return zlib.crc32(repr(case).encode())


def _perturb(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.3) -> None:
    """Move every parameter by a random amount (targets unlike their networks, non-zero
    biases)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def _batch(act_dim: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    obs, actions = randn(BATCH, OBS_DIM), torch.tanh(randn(BATCH, act_dim))
    not_terminal = (torch.rand(BATCH, generator=generator, dtype=torch.float64) > 0.3).double()
    return {
        "obs": obs,
        "actions": actions,
        "rewards": randn(BATCH),
        "next_obs": randn(BATCH, OBS_DIM),
        "not_terminal": not_terminal,
    }


def _numpy_batch(batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The layout of ``ReplayBuffer.sample`` (one batch of it)."""
    obs_actions = torch.cat([batch["obs"], batch["actions"]], -1).numpy()
    return {
        "obs_actions": obs_actions,
        "obs": obs_actions[:, :OBS_DIM],
        "rewards": batch["rewards"].numpy(),
        "next_obs": batch["next_obs"].numpy(),
        "not_terminal": batch["not_terminal"].numpy(),
    }


def _assert_grads(module: torch.nn.Module, expected: tuple[torch.Tensor, ...]) -> None:
    for (name, p), want in zip(module.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, want, **TOLERANCE, msg=name)


def _sac(activation: str, hidden: tuple[int, ...], act_dim: int, *, wide: bool):
    generator = torch.Generator().manual_seed(_seed(activation, hidden, act_dim, wide))
    hp = SACHyperparameters(hidden_sizes=hidden, activation=activation)
    agent = sac.Agent(OBS_DIM, act_dim, hp, generator).double()
    _perturb(agent, generator)
    batch = _batch(act_dim, generator)
    if wide:  # means deep in the tanh's tails, log stds beyond both ends of the clamp
        with torch.no_grad():
            head = agent.actor.net[-1]
            head.weight[:act_dim].mul_(60.0)
            # each log std: 0 at the batch's median row, below -25 at the first quartile and above
            # 25 at the third
            raw = agent.actor.net(batch["obs"])[:, act_dim:]
            low, median, high = raw.quantile(torch.tensor([0.25, 0.5, 0.75]).double(), dim=0)
            scale = 25.0 / torch.minimum(median - low, high - median)
            head.weight[act_dim:].mul_(scale[:, None])
            head.bias[act_dim:].sub_(median).mul_(scale)
    target = copy.deepcopy(agent.critic)
    _perturb(target, generator)
    for module in (agent.actor, agent.critic, target):
        flatten_parameters(module)  # float64 buffers, .grad views
    mlps = (
        MLP(agent.actor.net, activation),
        CriticMLPs(agent.critic, activation, OBS_DIM),
        CriticMLPs(target, activation, OBS_DIM, trainable=False),
    )
    noise = torch.randn(2, BATCH, act_dim, generator=generator, dtype=torch.float64)
    return agent, target, mlps, batch, noise


@pytest.mark.parametrize("act_dim", [1, 2])
@pytest.mark.parametrize("hidden", LAYOUTS)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_sac_critic_gradients_match_autograd(
    activation: str, hidden: tuple[int, ...], act_dim: int
) -> None:
    agent, target, (actor, critics, targets), batch, noise = _sac(
        activation, hidden, act_dim, wide=False
    )
    with torch.no_grad():
        next_actions, next_log_probs = agent.actor(batch["next_obs"], noise[0])
        next_q = target(batch["next_obs"], next_actions).min(0).values
        soft_q = next_q - ALPHA * next_log_probs
        target_q = batch["rewards"] + GAMMA * batch["not_terminal"] * soft_q
    q = agent.critic(batch["obs"], batch["actions"])
    loss = 0.5 * (q - target_q).square().mean(1).sum()
    expected = torch.autograd.grad(loss, list(agent.critic.parameters()))

    got = sac.critic_gradients(
        actor, critics, targets, _numpy_batch(batch), noise[0].numpy(), ALPHA, GAMMA
    )
    assert got == pytest.approx(loss.item(), rel=TOLERANCE["rtol"])
    _assert_grads(agent.critic, expected)


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("act_dim", [1, 2])
@pytest.mark.parametrize("hidden", LAYOUTS)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_sac_actor_and_alpha_gradients_match_autograd(
    activation: str, hidden: tuple[int, ...], act_dim: int, wide: bool
) -> None:
    agent, _, (actor, critics, _), batch, noise = _sac(activation, hidden, act_dim, wide=wide)
    actions, log_probs = agent.actor(batch["obs"], noise[1])
    with torch.no_grad():  # shift critic 1 so that each critic is the lower one on some rows
        q = agent.critic(batch["obs"], actions)
        gaps = (q[0] - q[1]).sort().values
        middle = len(gaps) // 2
        agent.critic.qs[1][-1].bias.add_((gaps[middle - 1] + gaps[middle]) / 2)  # no row ties
    q = agent.critic(batch["obs"], actions)
    loss = (ALPHA * log_probs - q.min(0).values).mean()
    expected = torch.autograd.grad(loss, list(agent.actor.parameters()))
    # both critics attain the minimum on some rows: each one's backward pass is checked
    assert set(q.argmin(0).tolist()) == {0, 1}
    if wide:
        assert actions.abs().max() > 1 - 1e-9  # the tanh correction far into its tails
        with torch.no_grad():
            raw_log_std = agent.actor.net(batch["obs"])[:, act_dim:]
        assert (raw_log_std < sac.LOG_STD_MIN).any() and (raw_log_std > sac.LOG_STD_MAX).any()
        inside = (raw_log_std > sac.LOG_STD_MIN) & (raw_log_std < sac.LOG_STD_MAX)
        assert inside.any()

    critic_grads = agent.critic.parameters().__next__().grad
    critic_grads.fill_(7.0)  # the actor's loss leaves the critics' gradients alone
    got_loss, got_mean_log_prob = sac.actor_gradients(
        actor, critics, _numpy_batch(batch)["obs"], noise[1].numpy(), ALPHA
    )
    assert got_loss == pytest.approx(loss.item(), rel=TOLERANCE["rtol"])
    assert got_mean_log_prob == pytest.approx(log_probs.mean().item(), rel=TOLERANCE["rtol"])
    _assert_grads(agent.actor, expected)
    assert (critic_grads == 7.0).all()

    # alpha's loss, with the log probabilities as constants (SB3: detached)
    target_entropy = -float(act_dim)
    log_alpha = torch.tensor(math.log(ALPHA), dtype=torch.float64, requires_grad=True)
    alpha_loss = -(log_alpha * (log_probs + target_entropy).detach()).mean()
    (expected_alpha,) = torch.autograd.grad(alpha_loss, [log_alpha])
    got_alpha = sac.log_alpha_gradient(got_mean_log_prob, target_entropy)
    assert got_alpha == pytest.approx(expected_alpha.item(), rel=TOLERANCE["rtol"])


def test_sac_squash_gives_the_actors_actions_and_log_probs() -> None:
    agent, _, (actor, _, _), batch, noise = _sac("tanh", (6,), 2, wide=True)
    with torch.no_grad():
        want_actions, want_log_probs = agent.actor(batch["obs"], noise[1])
    actions, log_probs, _ = sac.squash(actor.predict(batch["obs"].numpy()), noise[1].numpy())
    np.testing.assert_allclose(actions, want_actions.numpy(), **TOLERANCE)
    np.testing.assert_allclose(log_probs, want_log_probs.numpy(), **TOLERANCE)


def _td3(activation: str, hidden: tuple[int, ...], act_dim: int, n_critics: int):
    generator = torch.Generator().manual_seed(_seed(activation, hidden, act_dim, n_critics))
    agent = td3.Agent(OBS_DIM, act_dim, n_critics, hidden, activation, generator).double()
    _perturb(agent, generator)
    with torch.no_grad():  # actions near and at the bounds, where the clip of the smoothing acts
        agent.actor.net[-1].weight.mul_(10.0)
    target_actor, target_critic = copy.deepcopy(agent.actor), copy.deepcopy(agent.critic)
    _perturb(target_actor, generator)
    _perturb(target_critic, generator)
    for module in (agent.actor, agent.critic, target_actor, target_critic):
        flatten_parameters(module)
    mlps = (
        MLP(agent.actor.net, activation),
        CriticMLPs(agent.critic, activation, OBS_DIM),
        MLP(target_actor.net, activation, trainable=False),
        CriticMLPs(target_critic, activation, OBS_DIM, trainable=False),
    )
    smoothing = (0.4 * torch.randn(BATCH, act_dim, generator=generator, dtype=torch.float64)).clamp(
        -0.5, 0.5
    )
    return agent, target_actor, target_critic, mlps, _batch(act_dim, generator), smoothing


@pytest.mark.parametrize(("n_critics", "smoothed"), [(2, True), (1, False)])  # TD3, DDPG
@pytest.mark.parametrize("act_dim", [1, 2])
@pytest.mark.parametrize("hidden", LAYOUTS)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_td3_and_ddpg_critic_gradients_match_autograd(
    activation: str, hidden: tuple[int, ...], act_dim: int, n_critics: int, smoothed: bool
) -> None:
    agent, target_actor, target_critic, mlps, batch, smoothing = _td3(
        activation, hidden, act_dim, n_critics
    )
    _, critics, target_actor_mlp, targets = mlps
    with torch.no_grad():
        next_actions = target_actor(batch["next_obs"])
        if smoothed:
            next_actions = (next_actions + smoothing).clamp(-1.0, 1.0)
            assert (next_actions.abs() == 1.0).any()
        next_q = target_critic(batch["next_obs"], next_actions).min(0).values
        target_q = batch["rewards"] + GAMMA * batch["not_terminal"] * next_q
    q = agent.critic(batch["obs"], batch["actions"])
    loss = (q - target_q).square().mean(1).sum()
    expected = torch.autograd.grad(loss, list(agent.critic.parameters()))

    got = td3.critic_gradients(
        target_actor_mlp,
        critics,
        targets,
        _numpy_batch(batch),
        smoothing.numpy() if smoothed else None,
        GAMMA,
    )
    assert got == pytest.approx(loss.item(), rel=TOLERANCE["rtol"])
    _assert_grads(agent.critic, expected)


@pytest.mark.parametrize("n_critics", [2, 1])
@pytest.mark.parametrize("act_dim", [1, 2])
@pytest.mark.parametrize("hidden", LAYOUTS)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_td3_and_ddpg_actor_gradients_match_autograd(
    activation: str, hidden: tuple[int, ...], act_dim: int, n_critics: int
) -> None:
    agent, _, _, (actor, critics, _, _), batch, _ = _td3(activation, hidden, act_dim, n_critics)
    x = torch.cat([batch["obs"], agent.actor(batch["obs"])], -1)
    loss = -agent.critic.qs[0](x).mean()
    expected = torch.autograd.grad(loss, list(agent.actor.parameters()))

    critic_grads = agent.critic.parameters().__next__().grad
    critic_grads.fill_(7.0)
    got = td3.actor_gradients(actor, critics, _numpy_batch(batch)["obs"])
    assert got == pytest.approx(loss.item(), rel=TOLERANCE["rtol"])
    _assert_grads(agent.actor, expected)
    assert (critic_grads == 7.0).all()


@pytest.mark.parametrize("activation", ["relu", "gelu"])  # reads the output; the input
def test_action_gradient_of_some_rows_equals_the_full_pass(activation: str) -> None:
    generator = torch.Generator().manual_seed(3)
    critics = Critics(OBS_DIM, 2, 2, (8, 8), activation, generator).double()
    flatten_parameters(critics)
    mlps = CriticMLPs(critics, activation, OBS_DIM)
    inputs = torch.randn(BATCH, OBS_DIM + 2, generator=generator, dtype=torch.float64)
    mlps.forward(inputs.numpy())
    grad = torch.randn(2, BATCH, generator=generator, dtype=torch.float64).numpy()
    grad[0, ::3] = 0.0  # critic 0 on two rows of three, critic 1 on all
    grad[1, 5] = 0.0
    x = inputs.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(
        (critics(x[:, :OBS_DIM], x[:, OBS_DIM:]) * torch.from_numpy(grad)).sum(), [x]
    )
    np.testing.assert_allclose(mlps.action_gradient(grad), expected[:, OBS_DIM:], **TOLERANCE)
    np.testing.assert_array_equal(mlps.action_gradient(np.zeros_like(grad)), 0.0)
