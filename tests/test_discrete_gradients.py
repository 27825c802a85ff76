"""PPO's and DQN's hand-written loss gradients equal autograd's.

``ppo.loss_gradients`` (clipped surrogate, value loss, entropy bonus) and ``dqn.td_gradients``
(smooth L1 TD loss) are checked against torch autograd on the same losses written as CleanRL
writes them, in float64 on small random networks, for every activation a network may use, one and
two hidden layers, with ratios inside and beyond the clip range and TD errors on both sides of the
Huber loss's kink.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hpsrl.agents import dqn, ppo
from hpsrl.agents.networks import ACTIVATIONS, MLP, flatten_parameters

OBS_DIM, N_ACTIONS, BATCH = 3, 4, 29
LAYOUTS = [(6,), (7, 5)]
TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _generator(*case: object) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))


def _perturb(module: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def _autograd(module: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(module.parameters())))


def _assert_grads(module: torch.nn.Module, expected: list[torch.Tensor]) -> None:
    for (name, p), want in zip(module.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, want, **TOLERANCE, msg=name)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("hidden", LAYOUTS)
@pytest.mark.parametrize("ent_coef", [0.0, 0.05])
def test_ppo_loss_gradients_equal_autograd(
    activation: str, hidden: tuple[int, ...], ent_coef: float
) -> None:
    generator = _generator("ppo", activation, hidden, ent_coef)
    hp = ppo.Hyperparameters(
        hidden_sizes=hidden, activation=activation, ent_coef=ent_coef, clip_coef=0.2, vf_coef=0.7
    )
    agent = ppo.Agent(OBS_DIM, N_ACTIONS, hidden, activation, generator).double()
    _perturb(agent, generator)
    obs = torch.randn(BATCH, OBS_DIM, generator=generator, dtype=torch.float64)
    actions = torch.randint(N_ACTIONS, (BATCH,), generator=generator)
    advantages = torch.randn(BATCH, generator=generator, dtype=torch.float64)
    returns = torch.randn(BATCH, generator=generator, dtype=torch.float64)
    with torch.no_grad():  # old log probabilities: ratios from about 0.4 to 2.5, clipped or not
        now = torch.log_softmax(agent.actor(obs), -1).gather(1, actions[:, None])[:, 0]
        old = now + 0.5 * torch.randn(BATCH, generator=generator, dtype=torch.float64)

    # CleanRL's loss, through autograd
    logprobs_all = torch.log_softmax(agent.actor(obs), -1)
    ratio = (logprobs_all.gather(1, actions[:, None])[:, 0] - old).exp()
    clipped = ratio.clamp(1 - hp.clip_coef, 1 + hp.clip_coef)
    assert ((ratio - clipped).abs() > 1e-3).any() and ((ratio - clipped).abs() < 1e-12).any()
    pg_loss = torch.max(-advantages * ratio, -advantages * clipped).mean()
    v_loss = 0.5 * ((agent.critic(obs)[:, 0] - returns) ** 2).mean()
    entropy = -(logprobs_all.exp() * logprobs_all).sum(-1).mean()
    loss = pg_loss - ent_coef * entropy + hp.vf_coef * v_loss
    expected = _autograd(agent, loss)

    flatten_parameters(agent)
    actor, critic = MLP(agent.actor, activation), MLP(agent.critic, activation)
    ours = ppo.loss_gradients(
        actor,
        critic,
        obs.numpy(),
        actions.numpy(),
        old.numpy(),
        advantages.numpy(),
        returns.numpy(),
        hp,
    )
    assert float(ours) == pytest.approx(loss.item(), rel=1e-12)
    _assert_grads(agent, expected)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("hidden", LAYOUTS)
def test_dqn_td_gradients_equal_autograd(activation: str, hidden: tuple[int, ...]) -> None:
    generator = _generator("dqn", activation, hidden)
    network = dqn.QNetwork(OBS_DIM, N_ACTIONS, hidden, activation, generator).double()
    _perturb(network, generator)
    obs = torch.randn(BATCH, OBS_DIM, generator=generator, dtype=torch.float64)
    actions = torch.randint(N_ACTIONS, (BATCH,), generator=generator)
    with torch.no_grad():  # TD errors from about -3 to 3: both sides of the Huber loss's kink
        taken_q = network(obs).gather(1, actions[:, None])[:, 0]
        targets = taken_q + 1.5 * torch.randn(BATCH, generator=generator, dtype=torch.float64)

    loss = F.smooth_l1_loss(network(obs).gather(1, actions[:, None])[:, 0], targets)
    expected = _autograd(network, loss)

    flatten_parameters(network)
    td_errors = np.empty(BATCH)
    dqn.td_gradients(
        MLP(network.q, activation),
        obs.numpy(),
        actions.numpy() + np.arange(BATCH) * N_ACTIONS,
        targets.numpy(),
        td_errors,
        np.empty((BATCH, N_ACTIONS)),
        np.empty(BATCH),
    )
    assert (np.abs(td_errors) > 1).any() and (np.abs(td_errors) < 1).any()
    assert dqn.huber(td_errors).mean() == pytest.approx(loss.item(), rel=1e-12)
    _assert_grads(network, expected)
