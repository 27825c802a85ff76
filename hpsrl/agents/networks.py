"""The agents' networks and optimiser: :func:`build_mlp`, the hand-written forward and backward
passes of :class:`MLP`, the flat parameter buffers (:func:`flatten_parameters`) that
:class:`FlatAdam` updates, and loading stored weights into a network.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hpsrl.agents import kernels
from hpsrl.envs.spec import EnvSpec, observation_dim

#: The torch module of each activation a network may use (``ACTIVATION_NAMES``, the ``activation``
#: gene).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def build_mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int],
    activation: str,
    out_gain: float = 1.0,
    *,
    init: str = "orthogonal",
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """A fully connected network, its weights drawn from ``generator`` only.

    ``init="orthogonal"``: orthogonal weights (gain sqrt(2) hidden, ``out_gain`` on the last layer:
    0.01 for a policy head, 1 for values) and zero biases, as CleanRL's PPO. ``init="torch"``:
    ``nn.Linear``'s own initialisation (uniform, bound 1 / sqrt(fan_in) for weights and biases), as
    SB3 and CleanRL's DQN; ``out_gain`` is not used.
    """
    if init not in ("orthogonal", "torch"):
        raise ValueError(f"init must be 'orthogonal' or 'torch', got {init!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    sizes = [in_dim, *hidden_sizes, out_dim]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        # skip_init: nn.Linear's own random init would draw from torch's global generator
        linear = nn.utils.skip_init(nn.Linear, n_in, n_out)
        if init == "orthogonal":
            gain = out_gain if last else math.sqrt(2)
            nn.init.orthogonal_(linear.weight, gain, generator=generator)
            nn.init.zeros_(linear.bias)
        else:  # nn.Linear.reset_parameters, with the generator
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(n_in)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
        layers.append(linear)
        if not last:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


# -- Training without autograd -------------------------------------------------------------------
# The networks here are tiny (a few 64- or 256-wide layers), so a gradient step costs far more in
# per-op overhead than in arithmetic: torch's dispatch of each op (plus autograd's graph and one
# Adam kernel per tensor) costs several times numpy's. The agents therefore run their MLPs'
# backward pass by hand in numpy (:class:`MLP`) and update all parameters as one flat buffer with
# torch's fused Adam kernel (:class:`FlatAdam`): a gradient step is a few dozen cheap ops.

#: Largest batch (rows x widest layer) that :meth:`MLP.predict` computes in numpy: below it numpy's
#: lower per-call overhead wins (acting on one vector step), above it torch's faster kernels do.
_NUMPY_MAX_OUTPUTS = 1024
#: :meth:`MLP.predict` runs larger batches in blocks of this many rows, whose activations stay in
#: the CPU's cache (the DQN's target values of a training phase: thousands of rows, 256-wide).
_PREDICT_BLOCK_ROWS = 256


class MLP:
    """Forward pass and hand-written backward pass of a :func:`build_mlp` network, on float32
    numpy arrays.

    ``forward(x)`` computes the network's output and remembers each layer's input and
    pre-activation; ``backward(grad_out)`` takes d loss / d output for that same ``x`` and
    *writes* (not adds) d loss / d parameter into each parameter's ``.grad``, which must exist
    (see :func:`flatten_parameters`). ``predict(x)`` is the forward pass alone. The arrays here
    are views of ``net``'s weights, so in-place updates show through and ``net``'s
    ``state_dict`` and ``net(x)`` keep working; build the ``MLP`` after
    :func:`flatten_parameters`. With ``trainable=False`` (acting only) the parameters need no
    ``.grad`` and :meth:`backward` is not available.
    """

    def __init__(self, net: nn.Sequential, activation: str, *, trainable: bool = True) -> None:
        linears = [m for m in net if isinstance(m, nn.Linear)]
        self._last = len(linears) - 1
        self._widest = max(linear.out_features for linear in linears)
        self._weights = [linear.weight.detach().numpy() for linear in linears]
        self._biases = [linear.bias.detach().numpy() for linear in linears]
        # Products with W^T go through torch (MKL), which is faster than numpy's BLAS on them for
        # wide layers; numpy's is as fast on the backward's products.
        self._torch_weights_t = [linear.weight.detach().t() for linear in linears]
        self._torch_biases = [linear.bias.detach() for linear in linears]
        self._trainable = trainable
        self._weight_grads = [_grad_array(linear.weight) for linear in linears] if trainable else []
        self._bias_grads = [_grad_array(linear.bias) for linear in linears] if trainable else []
        self._saved: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        # numpy's float32 tanh is several times faster than torch's; torch's ReLU (and every
        # backward) is faster than numpy's except on a few rows, where _small_act works in place
        torch_act = ACTIVATIONS[activation]().forward  # .forward skips nn.Module's call hooks
        self._act: Callable[[np.ndarray], np.ndarray] = (
            np.tanh if activation == "tanh" else lambda z: torch_act(torch.from_numpy(z)).numpy()
        )
        self._small_act: Callable[[np.ndarray], np.ndarray] = {
            "tanh": lambda z: np.tanh(z, out=z),
            "relu": lambda z: np.maximum(z, 0.0, out=z),
        }.get(activation, self._act)
        # d activation / d z: autograd's own kernel where it works (see hpsrl.agents.kernels)
        self._act_backward_kernel = kernels.activation_backward[activation]
        self._backward_reads_output = activation in kernels.BACKWARD_READS_OUTPUT

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The network's output for the float32 batch ``x`` (keeps what :meth:`backward` needs)."""
        self._saved = []
        return self._run(x, self._saved)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The network's output for the float32 batch ``x`` (nothing kept for a backward)."""
        if len(x) > _PREDICT_BLOCK_ROWS:  # in blocks whose activations stay in the CPU's cache
            blocks = range(0, len(x), _PREDICT_BLOCK_ROWS)
            return np.concatenate([self._run(x[i : i + _PREDICT_BLOCK_ROWS], None) for i in blocks])
        if len(x) * self._widest > _NUMPY_MAX_OUTPUTS:
            return self._run(x, None)
        # One observation (an agent acting in one env): W @ h, a BLAS matrix-vector product, is
        # cheaper than the matrix product h[None] @ W.T.
        one = len(x) == 1
        h = x[0] if one else x
        for i, (weight, bias) in enumerate(zip(self._weights, self._biases, strict=True)):
            h = np.dot(weight, h) if one else h @ weight.T
            h += bias
            if i != self._last:
                h = self._small_act(h)
        return h[None] if one else h

    def _run(
        self, x: np.ndarray, saved: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None
    ) -> np.ndarray:
        for i, (weight_t, bias) in enumerate(
            zip(self._torch_weights_t, self._torch_biases, strict=True)
        ):
            z = torch.addmm(bias, torch.from_numpy(x), weight_t).numpy()
            h = z if i == self._last else self._act(z)
            if saved is not None:
                saved.append((x, z, h))
            x = h
        return x

    def backward(self, grad_out: np.ndarray) -> None:
        """Set each parameter's ``.grad`` to d loss / d parameter, given d loss / d output."""
        if not self._trainable:
            raise RuntimeError("this MLP was built with trainable=False, for acting only")
        grad = grad_out
        # column sums as products with ones: BLAS beats numpy's sum(axis=0) here
        ones = np.ones(len(grad), dtype=grad.dtype)
        for i in range(self._last, -1, -1):
            x, z, h = self._saved[i]
            if i != self._last:
                grad = self._act_backward_kernel(  # now d loss / d pre-activation
                    torch.from_numpy(grad), torch.from_numpy(z), torch.from_numpy(h)
                ).numpy()
            np.matmul(grad.T, x, out=self._weight_grads[i])
            np.dot(ones, grad, out=self._bias_grads[i])
            if i > 0:  # the network's input needs no gradient
                grad = _backward_product(grad, self._weights[i])
        self._saved = []

    def input_gradient(
        self, grad_out: np.ndarray, columns: slice, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """d loss / d input[rows, columns] through the last :meth:`forward`, given d loss / d
        output of those rows; the parameters' ``.grad`` are not touched.

        What an actor's loss needs from a critic: the gradient with respect to the action
        columns of the critic's input, not the critic's own gradients (autograd would compute
        those too, one more product per layer). ``rows`` (indices into the forward's batch,
        ``None`` for all) restricts the pass to the rows whose gradient is not zero: the rows of
        a minimum over critics that each critic attains, so that each row goes through one
        critic instead of all (:meth:`hpsrl.agents.continuous.CriticMLPs.action_gradient`).
        The forward's saved values stay, so that another call can follow.
        """
        grad = grad_out
        for i in range(self._last, -1, -1):
            if i != self._last:
                _, z, h = self._saved[i]
                if self._backward_reads_output:  # gather only what the kernel reads
                    h = h if rows is None else h[rows]
                else:
                    z = z if rows is None else z[rows]
                grad = self._act_backward_kernel(
                    torch.from_numpy(grad), torch.from_numpy(z), torch.from_numpy(h)
                ).numpy()
            weight = self._weights[i] if i > 0 else self._weights[0][:, columns]
            grad = _backward_product(grad, weight)
        return grad


def _backward_product(grad: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``grad @ weight``: d loss / d a layer's input from d loss / d its pre-activation.

    Through torch (MKL) when ``grad`` has one column (a value network's output layer): numpy's
    OpenBLAS takes several times longer on that outer product than on the same one with two
    columns; numpy otherwise.
    """
    if grad.shape[1] == 1:
        return torch.mm(torch.from_numpy(grad), torch.from_numpy(weight)).numpy()
    return grad @ weight


def greedy_actions(net: nn.Sequential, activation: str) -> Callable[[np.ndarray], np.ndarray]:
    """The index of ``net``'s largest output for each observation of a batch: a discrete agent's
    greedy action, computed as when it acts in training (:meth:`MLP.predict`, in numpy for a few
    observations, where it costs far less than the ``nn.Module``'s forward). In-place changes to
    ``net``'s weights show through.
    """
    mlp = MLP(net, activation, trainable=False)
    return lambda obs: mlp.predict(np.asarray(obs, dtype=np.float32)).argmax(-1)


def _grad_array(param: nn.Parameter) -> np.ndarray:
    if param.grad is None:
        raise ValueError("build the MLP after flatten_parameters (or FlatAdam) gave .grad views")
    return param.grad.numpy()


def flatten_parameters(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Move ``module``'s parameters into one contiguous buffer and give them gradients in another.

    Returns ``(params, grads)``, 1-d; afterwards every parameter is a view of ``params`` and its
    ``.grad`` the matching view of ``grads``, so a whole-network operation (an Adam step, a
    gradient norm, a target-network copy) is one op on the flat buffers.
    """
    parameters = list(module.parameters())
    total = sum(p.numel() for p in parameters)
    dtype = parameters[0].dtype  # float32 in training; float64 where tests check gradients
    params, grads = torch.empty(total, dtype=dtype), torch.zeros(total, dtype=dtype)
    offset = 0
    for p in parameters:
        n = p.numel()
        params[offset : offset + n].copy_(p.detach().reshape(-1))
        p.data = params[offset : offset + n].view_as(p)
        p.grad = grads[offset : offset + n].view_as(p)
        offset += n
    return params, grads


class FlatAdam:
    """``torch.optim.Adam`` (no weight decay, no AMSGrad) with gradient-norm clipping, over the
    flat parameter buffer of one module (see :func:`flatten_parameters`).

    The step is torch's fused Adam kernel (what ``torch.optim.Adam(fused=True)`` runs: the same
    math as the default implementation, in one pass over the buffers instead of about ten; plain
    torch ops where a torch release lacks it, see :mod:`hpsrl.agents.kernels`), after
    ``nn.utils.clip_grad_norm_``'s clipping (scale ``max_norm / (norm + 1e-6)`` when below 1).
    Avoiding ``torch.optim`` also avoids its import of ``torch._dynamo`` (seconds per process).
    """

    def __init__(
        self,
        module: nn.Module,
        lr: float,
        *,
        eps: float = 1e-8,
        betas: tuple[float, float] = (0.9, 0.999),
        max_grad_norm: float | None = None,
    ) -> None:
        self.params, self.grads = flatten_parameters(module)
        self.lr, self.eps, self.betas, self.max_grad_norm = lr, eps, betas, max_grad_norm
        self.exp_avg = torch.zeros_like(self.params)
        self.exp_avg_sq = torch.zeros_like(self.params)
        self.steps = 0
        self._grads_array = self.grads.numpy()  # the norm is cheaper in numpy (BLAS dot)
        self._step_count = torch.zeros((), dtype=torch.float32)  # the kernel reads the step here
        self._adam_step = kernels.adam_step  # fused where it works (see hpsrl.agents.kernels)

    def step(self) -> None:
        """Clip the gradients (if ``max_grad_norm``) and update the parameters in place."""
        if self.max_grad_norm is not None:
            grads = self._grads_array
            scale = self.max_grad_norm / (math.sqrt(float(np.dot(grads, grads))) + 1e-6)
            if scale < 1.0:  # clip_grad_norm_ multiplies by min(scale, 1); by 1 changes nothing
                grads *= scale
        self.steps += 1
        self._step_count.fill_(self.steps)
        beta1, beta2 = self.betas
        self._adam_step(
            self.params,
            self.grads,
            self.exp_avg,
            self.exp_avg_sq,
            self._step_count,
            lr=self.lr,
            beta1=beta1,
            beta2=beta2,
            eps=self.eps,
        )

    def state_dict(self) -> dict[str, Any]:
        """Moments, step count and learning rate (laid out like ``torch.optim``'s, one group)."""
        return {
            "state": {
                0: {
                    "step": torch.tensor(float(self.steps)),
                    "exp_avg": self.exp_avg.clone(),
                    "exp_avg_sq": self.exp_avg_sq.clone(),
                }
            },
            "lr": self.lr,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of an optimizer of the same network."""
        moments = state["state"][0]
        self.steps = int(moments["step"])
        self.exp_avg.copy_(moments["exp_avg"])
        self.exp_avg_sq.copy_(moments["exp_avg_sq"])
        self.lr = float(state["lr"])


# -- Loading stored weights ----------------------------------------------------------------------


def rebuild_discrete(
    network_class: Callable[..., nn.Module],
    env: EnvSpec,
    hidden_sizes: Sequence[int],
    activation: str,
    weights: Mapping[str, np.ndarray],
) -> nn.Module:
    """A discrete-action agent's network, ``network_class(obs_dim, n_actions, hidden_sizes,
    activation)``, with the weights of a stored result (numpy arrays, as result files hold them)."""
    single = env.make()
    try:
        obs_dim, n_actions = observation_dim(single.observation_space), single.action_space.n
    finally:
        single.close()
    network = network_class(obs_dim, int(n_actions), tuple(hidden_sizes), activation)
    load_stored_weights(network, weights)
    return network


def load_stored_weights(module: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Load the weights of a stored result (numpy arrays, as result files hold them) into
    ``module``, for an agent's ``greedy_policy``; ``ValueError`` if they do not fit it."""
    try:
        module.load_state_dict({name: torch.as_tensor(a) for name, a in weights.items()})
    except RuntimeError as e:  # missing, unexpected or misshapen parameters
        raise ValueError(f"the stored weights do not fit this network: {e}") from e


def load_weights(module: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Copy ``weights`` (a state dict of numpy arrays, as ``TrainResult.model_state`` holds and
    result files store) into ``module``'s parameters, in place.

    Raises ``ValueError`` naming every missing, unexpected or misshapen entry, before changing
    anything.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    misshapen = [
        f"{name} {tuple(np.shape(weights[name]))} (the network's: {tuple(tensor.shape)})"
        for name, tensor in expected.items()
        if name in weights and tuple(np.shape(weights[name])) != tuple(tensor.shape)
    ]
    if missing or unexpected or misshapen:
        problems = [
            f"{what}: {', '.join(names)}"
            for what, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", misshapen),
            )
            if names
        ]
        raise ValueError(f"the initial weights do not fit the network ({'; '.join(problems)})")
    module.load_state_dict({name: torch.as_tensor(np.asarray(a)) for name, a in weights.items()})


def weights_digest(weights: Mapping[str, np.ndarray]) -> str:
    """A short hash of a state dict's names, shapes, dtypes and values (for run fingerprints)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]
