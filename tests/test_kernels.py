"""The private torch kernels' public fallbacks (``hpsrl.agents.kernels``): each gives the fast
kernel's numbers to rounding error, a failing feature test picks it, and training runs on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpsrl.agents import get_algorithm, kernels, make_hyperparameters
from hpsrl.agents.networks import ACTIVATIONS
from hpsrl.agents.run import RunSettings
from hpsrl.envs.spec import EnvSpec


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_this_torch_uses_the_fast_kernels() -> None:
    # if this fails, a torch upgrade removed a kernel: training still works, only slower
    assert kernels.adam_step is kernels.fused_adam_step
    assert kernels.activation_backward == kernels.ATEN_ACTIVATION_BACKWARD


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plain_activation_backward_equals_the_kernel_and_autograd(name: str, dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    z = torch.cat(
        [3 * torch.randn(200, generator=generator, dtype=dtype), torch.zeros(3, dtype=dtype)]
    )
    g = torch.randn(z.shape, generator=generator, dtype=dtype)
    leaf = z.clone().requires_grad_()
    h = ACTIVATIONS[name]()(leaf)
    (expected,) = torch.autograd.grad(h, leaf, g)
    h = h.detach()
    plain = kernels.PLAIN_ACTIVATION_BACKWARD[name](g, z, h)
    fast = kernels.ATEN_ACTIVATION_BACKWARD[name](g, z, h)
    tolerance = (
        {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    )
    torch.testing.assert_close(plain, fast, **tolerance)
    torch.testing.assert_close(plain, expected, **tolerance)


def test_plain_adam_step_equals_the_fused_kernel_and_torch_optim() -> None:
    generator = torch.Generator().manual_seed(1)
    start = torch.randn(50, generator=generator, dtype=torch.float64)
    settings = {"lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8}
    fused = [
        start.clone(),
        torch.zeros(50, dtype=torch.float64),
        torch.zeros(50, dtype=torch.float64),
        torch.zeros(50, dtype=torch.float64),
    ]
    plain = [b.clone() for b in fused]
    reference = start.clone().requires_grad_()
    optimizer = torch.optim.Adam([reference], lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    for n in range(1, 8):
        grad = torch.randn(50, generator=generator, dtype=torch.float64)
        for params, _, exp_avg, exp_avg_sq in (fused, plain):
            step = kernels.fused_adam_step if params is fused[0] else kernels.plain_adam_step
            step(params, grad, exp_avg, exp_avg_sq, torch.tensor(float(n)), **settings)
        reference.grad = grad.clone()
        optimizer.step()
    torch.testing.assert_close(plain[0], fused[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(plain[0], reference.detach(), rtol=1e-12, atol=1e-14)


def test_a_failing_feature_test_picks_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise AttributeError("no such kernel")

    monkeypatch.setattr(kernels, "fused_adam_step", missing)
    monkeypatch.setitem(kernels.ATEN_ACTIVATION_BACKWARD, "gelu", missing)
    adam, backward = kernels._choose()
    assert adam is kernels.plain_adam_step
    assert backward["gelu"] is kernels.PLAIN_ACTIVATION_BACKWARD["gelu"]
    assert backward["relu"] is kernels.ATEN_ACTIVATION_BACKWARD["relu"]


CASES = {
    "ppo": (
        "CartPole-v1",
        512,
        {
            "num_envs": 4,
            "num_steps": 64,
            "batch_size": 128,
            "update_epochs": 2,
            "activation": "gelu",
        },
    ),
    "dqn": (
        "CartPole-v1",
        400,
        {
            "learning_starts": 200,
            "train_frequency": 4,
            "gradient_steps": 2,
            "batch_size": 32,
            "hidden_sizes": (32, 32),
            "activation": "elu",
        },
    ),
    "sac": (
        "Pendulum-v1",
        300,
        {"learning_starts": 200, "batch_size": 32, "hidden_sizes": (32, 32), "activation": "silu"},
    ),
    "td3": (
        "Pendulum-v1",
        300,
        {"learning_starts": 200, "batch_size": 32, "hidden_sizes": (32, 32), "activation": "tanh"},
    ),
}


@pytest.mark.parametrize("algorithm", sorted(CASES))
def test_training_on_the_fallbacks_gives_the_fast_kernels_numbers(
    algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_id, steps, values = CASES[algorithm]
    module, hp = get_algorithm(algorithm), make_hyperparameters(algorithm, values)
    run = RunSettings(steps, 0, eval_seed=1, eval_episodes=1)
    fast = module.train(EnvSpec(env_id), hp, run)
    monkeypatch.setattr(kernels, "adam_step", kernels.plain_adam_step)
    monkeypatch.setattr(kernels, "activation_backward", kernels.PLAIN_ACTIVATION_BACKWARD)
    slow = module.train(EnvSpec(env_id), hp, run)
    # a few dozen updates: float32 rounding differences stay small
    for name, weights in fast.model_state.items():
        np.testing.assert_allclose(
            slow.model_state[name], weights, rtol=1e-3, atol=1e-4, err_msg=name
        )
    np.testing.assert_allclose(slow.curve_returns, fast.curve_returns, rtol=1e-6)
