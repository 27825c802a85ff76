"""The private torch kernels the hand-written training uses, each behind one small function with a
public fallback, chosen once at import by a feature test.

Adam's step is torch's fused kernel ``torch._fused_adam_`` (what ``torch.optim.Adam(fused=True)``
runs), and an activation's backward is the ``torch.ops.aten.*_backward`` kernel autograd itself
runs: both are private, so a torch release may rename or change them. Where one is missing or fails
its feature test, the same maths runs in public torch ops (:func:`plain_adam_step`,
:data:`PLAIN_ACTIVATION_BACKWARD`): slower, equal to rounding error, never wrong. Only the fast
kernels give results bit-identical to runs made with them; a warning says when a fallback is in use.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

#: ``(grad, z, h) -> grad * d activation(z) / dz``, from the pre-activation ``z`` and the output
#: ``h = activation(z)``; each reads only ``h`` (tanh, relu) or only ``z`` (the others), see
#: :data:`BACKWARD_READS_OUTPUT`.
ActivationBackward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: The activations whose backward reads only the output ``h`` (the others read only ``z``).
BACKWARD_READS_OUTPUT = frozenset({"tanh", "relu"})

#: The kernels autograd runs for each activation's backward (private ``aten`` ops).
ATEN_ACTIVATION_BACKWARD: dict[str, ActivationBackward] = {
    "tanh": lambda g, z, h: torch.ops.aten.tanh_backward(g, h),
    "relu": lambda g, z, h: torch.ops.aten.threshold_backward(g, h, 0),
    "elu": lambda g, z, h: torch.ops.aten.elu_backward(g, 1.0, 1, 1, False, z),
    "leaky_relu": lambda g, z, h: torch.ops.aten.leaky_relu_backward(g, z, 0.01, False),
    "gelu": lambda g, z, h: torch.ops.aten.gelu_backward(g, z),
    "silu": lambda g, z, h: torch.ops.aten.silu_backward(g, z),
}

_INV_SQRT_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _gelu_backward(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # exact (erf) GELU, z * Phi(z): Phi(z) + z * phi(z)
    cdf = 0.5 * (1 + torch.erf(z * _INV_SQRT_2))
    return g * (cdf + z * torch.exp(-0.5 * z * z) * _INV_SQRT_2PI)


def _silu_backward(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return g * (s * (1 + z * (1 - s)))


#: The same derivatives in public torch ops.
PLAIN_ACTIVATION_BACKWARD: dict[str, ActivationBackward] = {
    "tanh": lambda g, z, h: g * (1 - h * h),
    "relu": lambda g, z, h: torch.where(h > 0, g, torch.zeros_like(g)),
    "elu": lambda g, z, h: torch.where(z > 0, g, g * torch.exp(z)),
    "leaky_relu": lambda g, z, h: torch.where(z > 0, g, g * 0.01),
    "gelu": lambda g, z, h: _gelu_backward(g, z),
    "silu": lambda g, z, h: _silu_backward(g, z),
}


def fused_adam_step(
    params: torch.Tensor,
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One Adam step (no weight decay, no AMSGrad) on flat buffers, in place, through torch's fused
    kernel; ``step`` (a 0-d float32 tensor) holds the step number, counting this one."""
    torch._fused_adam_(
        [params],
        [grads],
        [exp_avg],
        [exp_avg_sq],
        [],
        [step],
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=0.0,
        eps=eps,
        amsgrad=False,
        maximize=False,
    )


def plain_adam_step(
    params: torch.Tensor,
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """:func:`fused_adam_step` in public torch ops (``torch.optim.Adam``'s single-tensor maths)."""
    n = float(step)
    exp_avg.lerp_(grads, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**n)).add_(eps)
    params.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**n))


AdamStep = Callable[..., None]


def _fused_adam_works() -> bool:
    """Whether the fused kernel exists and agrees with :func:`plain_adam_step` on a tiny case."""
    try:
        buffers = [torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.1, -0.2, 0.3])]
        fused = [b.clone() for b in buffers] + [torch.zeros(3), torch.zeros(3)]
        plain = [b.clone() for b in buffers] + [torch.zeros(3), torch.zeros(3)]
        settings = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
        for n in (1, 2):
            fused_adam_step(*fused, torch.tensor(float(n)), **settings)
            plain_adam_step(*plain, torch.tensor(float(n)), **settings)
        pairs = zip(fused, plain, strict=True)
        return all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in pairs)
    except (AttributeError, RuntimeError, TypeError):
        return False


def _aten_backward_works(name: str) -> bool:
    """Whether ``name``'s ``aten`` backward exists and agrees with the plain one on a few values."""
    try:
        z = torch.linspace(-3.0, 3.0, 13)
        activation = {
            "tanh": torch.tanh,
            "relu": torch.relu,
            "elu": torch.nn.functional.elu,
            "leaky_relu": torch.nn.functional.leaky_relu,
            "gelu": torch.nn.functional.gelu,
            "silu": torch.nn.functional.silu,
        }[name]
        h, g = activation(z), torch.linspace(0.5, 1.5, 13)
        fast = ATEN_ACTIVATION_BACKWARD[name](g, z, h)
        return torch.allclose(fast, PLAIN_ACTIVATION_BACKWARD[name](g, z, h), rtol=1e-5, atol=1e-6)
    except (AttributeError, RuntimeError, TypeError):
        return False


def _choose() -> tuple[AdamStep, dict[str, ActivationBackward]]:
    adam: AdamStep = fused_adam_step
    if not _fused_adam_works():
        log.warning(
            "torch %s has no working torch._fused_adam_: Adam runs in plain torch ops (slower; "
            "results equal to rounding error, not bit-identical to runs with the fused kernel)",
            torch.__version__,
        )
        adam = plain_adam_step
    backward = {}
    for name in ATEN_ACTIVATION_BACKWARD:
        if _aten_backward_works(name):
            backward[name] = ATEN_ACTIVATION_BACKWARD[name]
        else:
            log.warning(
                "torch %s has no working aten backward kernel for %s: it runs in plain torch ops "
                "(results equal to rounding error, not bit-identical to runs with the kernel)",
                torch.__version__,
                name,
            )
            backward[name] = PLAIN_ACTIVATION_BACKWARD[name]
    return adam, backward


#: What :class:`~hpsrl.agents.networks.FlatAdam` and :class:`~hpsrl.agents.networks.MLP` use,
#: read when they are built (tests replace them to run the fallbacks).
adam_step, activation_backward = _choose()
