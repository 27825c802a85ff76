"""Pieces shared by the agents: result record, MLP builder, episode bookkeeping, evaluation and
checkpoints.

Checkpoints
-----------
With ``train(..., checkpoint=Checkpointing(path, every_steps, every_seconds))`` a run saves its
state at update boundaries (PPO: after a rollout and its update; DQN: after a vector step, its
training phase and target update) once ``every_steps`` env steps or ``every_seconds`` seconds have
passed since the last save. The file is written to a temporary name in the same folder and
``os.replace``d into place, so a killed job leaves the previous checkpoint or the new one, never
half a file. It holds only tensors, dicts, lists, tuples, strings, numbers and ``None``, so it
loads with ``torch.load(path, weights_only=True)``.

When ``train`` starts and the file exists, it resumes from it. The file carries a fingerprint of the
run (algorithm, hyperparameters, env config, ``total_steps``, ``seed``, ``eval_seed``,
``curve_points``, ``return_threshold``, file format, and a digest of the ``initial_weights`` of a
run that starts from given weights); a file that cannot be read or whose fingerprint differs is
ignored with a warning, training starts from scratch (or its initial weights) and overwrites it
later.

What is restored: the network weights (DQN: and the target network), the Adam state
(:class:`FlatAdam`'s moments and step count) and learning rate, the rollout/update counter (PPO; it
sets the learning-rate schedule) or the vector-step counter (DQN; it sets epsilon and the
train/target-update timing), the replay buffer's contents and position (DQN), the torch and numpy
generators, the env step count, the :class:`EpisodeTracker` (returns of running episodes, recent
returns, learning curve so far, ``steps_to_threshold``), the train time so far, the current
observations and done flags, and the vector env's state where :func:`hpsrl.envs.get_vector_state`
supports the env (CartPole through its vector entry point, and sync vector envs of gymnasium's
classic-control envs).

Stopping part-way: ``train(..., stop_at=S)`` ends the loop at the first update boundary at or past
``S`` env steps (:func:`loop_lengths`), saves a checkpoint there when ``checkpoint`` is given
(whether or not one is due), evaluates the policy as it is and returns. A later call with the same
arguments and a larger ``stop_at`` (or ``None``) resumes from that file and goes on, so that the
pieces together equal one uninterrupted run: ``stop_at`` is not part of the fingerprint, and the
schedules are those of the ``total_steps`` run. A call whose checkpoint is already at or past its
``stop_at`` trains no further, saves nothing and evaluates the restored state.

When the resumed result equals the uninterrupted one: for the supported envs, on the same machine
type, thread count and library versions, a resumed run gives bit-identical ``eval_returns``,
``curve_returns``, ``steps_to_threshold``, ``env_steps`` and weights; saving itself draws no random
numbers and changes nothing. ``train_seconds`` is the train time up to the checkpoint plus the
time of the resumed part (work done after the last save and lost in the kill is not counted). For
other envs the vector env is reset on resume with a seed derived from ``(seed, env step)`` and the
episodes that were running are dropped (their partial returns are not recorded): the run goes on
correctly but not bit-identically, and a warning says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpsrl.agents.hyperparameters import as_int, require
from hpsrl.envs import EnvSpec, get_vector_state, observation_dim, set_vector_state

log = logging.getLogger(__name__)

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

#: Episodes averaged for the learning curve and for ``steps_to_threshold``.
CURVE_WINDOW = 20
THRESHOLD_WINDOW = 10


class TrainingDiverged(RuntimeError):
    """A loss or a network parameter became NaN or infinite during training."""


@dataclass
class TrainResult:
    """What one training run produced."""

    eval_returns: np.ndarray
    """(eval_episodes,) float64: undiscounted return of each evaluation episode, greedy policy."""
    curve_steps: np.ndarray
    """(curve_points,) int64: env steps at which the learning curve was sampled."""
    curve_returns: np.ndarray
    """(curve_points,) float64: mean return of the last <= 20 finished training episodes at that
    point; NaN before the first episode ends, and at points a run stopped by ``stop_at`` has not
    reached."""
    steps_to_threshold: float
    """Env steps at which the mean of the last 10 finished training episodes first reached the
    return threshold (needs 10 finished episodes); ``math.inf`` if never or without threshold."""
    env_steps: int
    """Env steps actually taken: ``total_steps`` rounded up to whole rollouts (PPO) or whole
    vector steps (off-policy agents); with ``stop_at``, the steps so far (resumed part included).
    Steps in which a vector env resets a finished episode count too."""
    train_seconds: float
    eval_seconds: float
    model_state: dict[str, torch.Tensor]
    """``state_dict`` of the agent's network (CPU tensors); loads with ``weights_only=True``."""


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
# per-op overhead than in arithmetic: torch spends 5-10 us dispatching each op (plus autograd's
# graph and one Adam kernel per tensor), numpy about 1 us. The agents therefore run their MLPs'
# backward pass by hand in numpy (:class:`MLP`) and update all parameters as one flat buffer with
# torch's fused Adam kernel (:class:`FlatAdam`): a gradient step is a few dozen cheap ops.

#: d activation(z) / dz times an upstream gradient ``g``, from the pre-activation ``z`` and the
#: output ``h``: the kernels autograd itself uses, so gradients equal autograd's. (On these small
#: arrays they also beat numpy's: 6 vs 19 us for ReLU's on 64 x 256.)
_ACTIVATION_BACKWARD: dict[str, Callable[..., torch.Tensor]] = {
    "tanh": lambda g, z, h: torch.ops.aten.tanh_backward(g, h),
    "relu": lambda g, z, h: torch.ops.aten.threshold_backward(g, h, 0),
    "elu": lambda g, z, h: torch.ops.aten.elu_backward(g, 1.0, 1, 1, False, z),
    "leaky_relu": lambda g, z, h: torch.ops.aten.leaky_relu_backward(g, z, 0.01, False),
    "gelu": lambda g, z, h: torch.ops.aten.gelu_backward(g, z),
    "silu": lambda g, z, h: torch.ops.aten.silu_backward(g, z),
}
#: The activations whose backward reads only the output ``h`` (the others read only ``z``): what
#: :meth:`MLP.input_gradient` gathers when it runs on some of the rows.
_BACKWARD_READS_OUTPUT = frozenset({"tanh", "relu"})


#: Largest batch (rows x widest layer) that :meth:`MLP.predict` computes in numpy: below it numpy's
#: lower per-call overhead wins (acting on one vector step), above it torch's faster kernels do.
_NUMPY_MAX_OUTPUTS = 1024
#: :meth:`MLP.predict` runs larger batches in blocks of this many rows: 20% faster than at once for
#: the DQN's target values of a training phase (thousands of rows, 256-wide layers).
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
        # Products with W^T go through torch (MKL): numpy's BLAS is 25% slower on them for
        # 256-wide layers, and as fast as MKL on the backward's products.
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
        self._act_backward_kernel = _ACTIVATION_BACKWARD[activation]
        self._backward_reads_output = activation in _BACKWARD_READS_OUTPUT

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
        # One observation (an agent acting in one env): W @ h, a BLAS matrix-vector product, costs
        # 3.3 us for a 256 x 256 layer where h[None] @ W.T costs 4.1 (DQN's 4-256-256-2 network:
        # 7.8 instead of 11 us).
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
        # column sums as products with ones: BLAS is 5x faster than numpy's sum(axis=0) here
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
    greedy action, computed as when it acts in training (:meth:`MLP.predict`; for a few
    observations numpy costs a quarter of the ``nn.Module``'s forward: 10 vs 39 us for 10
    CartPole observations and a 64-64 actor). In-place changes to ``net``'s weights show through.
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
    math as the default implementation, in one pass over the buffers instead of about ten), after
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
        torch._fused_adam_(
            [self.params],
            [self.grads],
            [self.exp_avg],
            [self.exp_avg_sq],
            [],
            [self._step_count],
            lr=self.lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=self.eps,
            amsgrad=False,
            maximize=False,
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


def flushing_denormals(train: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """Run a training function with float denormals flushed to zero, then restore the default.

    Numbers below float32's smallest normal (1.2e-38) count as zero meanwhile (the CPU's FTZ/DAZ
    flags, set by ``torch.set_flush_denormal`` for the calling thread, the one thread a rank
    computes on). Adam's moments of dead ReLU units decay into that range, where arithmetic is
    several times slower: Adam's step took 48 instead of 88 us in the RL Zoo's CartPole DQN, which
    trained about 6% faster (median of 8 interleaved runs, development machine) and reached the
    same returns. What is lost is below any precision the training has. A process that set the
    flags itself finds them cleared after. Decorate the outermost training function only (TD3 and
    DDPG share one): a nested one would clear the flags when it returns.
    """

    @functools.wraps(train)
    def wrapped(*args: Any, **kwargs: Any) -> TrainResult:
        torch.set_flush_denormal(True)  # False (and nothing set) where unsupported
        try:
            return train(*args, **kwargs)
        finally:
            torch.set_flush_denormal(False)

    return wrapped


def check_finite(losses: np.ndarray, what: str, step: int) -> None:
    """Raise :class:`TrainingDiverged` unless every loss of an update (a 1-d array) is finite."""
    finite = np.isfinite(losses)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise TrainingDiverged(
            f"{what} became {losses[first]} in gradient step {first + 1} of the update "
            f"ending at env step {step}; the hyperparameters (often learning_rate) make "
            f"training unstable"
        )


def check_parameters(module: nn.Module, step: int) -> None:
    """Raise :class:`TrainingDiverged` if a parameter of ``module`` is NaN or infinite."""
    for name, param in module.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise TrainingDiverged(f"parameter {name!r} became NaN/inf by env step {step}")


def state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()``."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class EpisodeTracker:
    """Accumulates the undiscounted return of every training episode across a vector env.

    Call :meth:`step` after each vector step with the step's rewards and done flags. With
    ``NEXT_STEP`` autoreset the reset step after an episode returns reward 0 and no done flag, so it
    leaves the accumulators untouched.
    """

    def __init__(
        self,
        num_envs: int,
        total_steps: int,
        curve_points: int,
        return_threshold: float | None,
    ) -> None:
        self.running = np.zeros(num_envs, dtype=np.float64)
        self.recent: deque[float] = deque(maxlen=max(CURVE_WINDOW, THRESHOLD_WINDOW))
        self.episodes = 0
        points = np.linspace(0, total_steps, curve_points + 1)[1:]
        self.curve_steps = points.round().astype(np.int64)
        self.curve_returns = np.full(curve_points, np.nan)
        self._next_point = 0
        self.return_threshold = return_threshold
        self.steps_to_threshold = math.inf

    def step(self, rewards: np.ndarray, dones: np.ndarray, global_step: int) -> None:
        """Record one vector step; ``global_step`` counts env steps including this one."""
        self.running += rewards
        if dones.any():
            for ret in self.running[dones]:
                self.recent.append(float(ret))
            self.episodes += int(dones.sum())
            self.running[dones] = 0.0
            if (
                self.return_threshold is not None
                and self.steps_to_threshold == math.inf
                and len(self.recent) >= THRESHOLD_WINDOW
                and np.mean(list(self.recent)[-THRESHOLD_WINDOW:]) >= self.return_threshold
            ):
                self.steps_to_threshold = float(global_step)
        while (
            self._next_point < len(self.curve_steps)
            and global_step >= self.curve_steps[self._next_point]
        ):
            self.curve_returns[self._next_point] = self.recent_mean()
            self._next_point += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`step` has accumulated, as tensors and plain data (for checkpoints)."""
        return {
            "running": torch.from_numpy(self.running.copy()),
            "recent": list(self.recent),
            "episodes": self.episodes,
            "curve_returns": torch.from_numpy(self.curve_returns.copy()),
            "next_point": self._next_point,
            "steps_to_threshold": self.steps_to_threshold,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a tracker built with the same arguments."""
        self.running = state["running"].numpy().astype(np.float64, copy=True)
        self.recent = deque((float(r) for r in state["recent"]), maxlen=self.recent.maxlen)
        self.episodes = int(state["episodes"])
        self.curve_returns = state["curve_returns"].numpy().astype(np.float64, copy=True)
        self._next_point = int(state["next_point"])
        self.steps_to_threshold = float(state["steps_to_threshold"])

    def recent_mean(self) -> float:
        """Mean return of the last <= 20 finished episodes (NaN before the first one)."""
        if not self.recent:
            return math.nan
        return float(np.mean(list(self.recent)[-CURVE_WINDOW:]))


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
    try:
        network.load_state_dict({name: torch.as_tensor(a) for name, a in weights.items()})
    except RuntimeError as e:  # missing, unexpected or misshapen parameters
        raise ValueError(f"the stored weights do not fit this network: {e}") from e
    return network


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    env: EnvSpec,
    episodes: int,
    seed: int,
    *,
    max_steps: int = 100_000,
) -> np.ndarray:
    """Return of the first episode of each of ``episodes`` copies of ``env`` run side by side.

    ``policy`` maps a batch of observations to a batch of actions (greedy/deterministic). The
    vector env is reset with ``seed`` (sync vector envs seed copy i with ``seed + i``).
    ``max_steps`` guards against environments without a time limit.
    """
    if episodes < 1:
        raise ValueError(f"eval episodes must be >= 1, got {episodes}")
    envs = env.make_vector(episodes)
    try:
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(episodes, dtype=np.float64)
        running = np.ones(episodes, dtype=bool)
        for _ in range(max_steps):
            obs, rewards, terminated, truncated, _ = envs.step(policy(obs))
            returns += np.where(running, rewards, 0.0)
            running &= ~(terminated | truncated)
            if not running.any():
                return returns
    finally:
        envs.close()
    raise RuntimeError(
        f"evaluation episodes on {env.id!r} did not end within {max_steps} steps; give the "
        f"environment a time limit (env.kwargs.max_episode_steps)"
    )


# -- Checkpoints (see the module docstring) ------------------------------------------------------

#: Version of the checkpoint layout; part of the fingerprint, so older files are ignored.
CHECKPOINT_FORMAT = 2  # 2: FlatAdam's optimizer state


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a training run saves its state, so that a killed run can resume.

    A save happens at the first update boundary after either threshold has passed; with both
    thresholds ``None`` the run never saves but still resumes from an existing file.
    """

    path: Path
    """This seed's checkpoint file, e.g. ``results/c/gen000/ind003.ckpt/seed0.pt``; its folder is
    created when needed. Nothing else may write to it (one file per seed)."""
    every_steps: int | None = None
    """Save when this many env steps have passed since the last save (or the start)."""
    every_seconds: float | None = 600.0
    """Save when this much wall time has passed since the last save (or the start)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.every_steps is not None:
            object.__setattr__(self, "every_steps", as_int("every_steps", self.every_steps))
            require(self.every_steps >= 1, "every_steps", ">= 1 or None", self.every_steps)
        if self.every_seconds is not None:
            seconds = self.every_seconds
            ok = isinstance(seconds, int | float | np.number) and seconds > 0
            require(ok, "every_seconds", "> 0 or None", seconds)
            object.__setattr__(self, "every_seconds", float(self.every_seconds))


def loop_lengths(
    total_steps: int, steps_per_iteration: int, stop_at: int | None
) -> tuple[int, int]:
    """``(num_iterations, stop_iteration)``: how many loop iterations (PPO: rollouts and their
    updates; the off-policy agents: vector steps) a ``total_steps`` run has, and after how many of
    them a call with ``stop_at`` ends its loop.

    ``stop_iteration`` is the first iteration boundary at or past ``stop_at`` env steps, or
    ``num_iterations`` when ``stop_at`` is ``None`` or not before the run's end. Every schedule
    (learning rate, epsilon, curve points, the fingerprint) keeps following ``num_iterations``:
    a stopped run is the first part of the full run, so that a successive-halving rung can continue
    it from its checkpoint instead of training it again from scratch. Raises ``ValueError`` unless
    ``stop_at`` is ``None`` or an integer >= 1.
    """
    num_iterations = max(1, math.ceil(total_steps / steps_per_iteration))
    if stop_at is None:
        return num_iterations, num_iterations
    stop_at = as_int("stop_at", stop_at)
    require(stop_at >= 1, "stop_at", ">= 1 or None", stop_at)
    return num_iterations, min(num_iterations, math.ceil(stop_at / steps_per_iteration))


def run_fingerprint(
    algorithm: str,
    env: EnvSpec,
    hp: Any,
    *,
    total_steps: int,
    seed: int,
    eval_seed: int,
    curve_points: int,
    return_threshold: float | None,
    initial_weights: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """What identifies a run: a checkpoint is used only by a run with an equal fingerprint.

    A run that starts from ``initial_weights`` is identified by their digest too; one that starts
    from scratch has no such entry (so checkpoints written before it existed still resume).
    """
    fingerprint = {
        "format": CHECKPOINT_FORMAT,
        "algorithm": algorithm,
        "hyperparameters": dataclasses.asdict(hp),
        "env": env.to_config(),
        "total_steps": int(total_steps),
        "seed": int(seed),
        "eval_seed": int(eval_seed),
        "curve_points": int(curve_points),
        "return_threshold": None if return_threshold is None else float(return_threshold),
    }
    if initial_weights is not None:
        fingerprint["initial_weights"] = weights_digest(initial_weights)
    return fingerprint


def numpy_to_torch(tree: Any) -> Any:
    """``tree`` with numpy arrays turned into tensors and numpy scalars into Python numbers."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.array(tree, copy=True))
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, Mapping):
        return {k: numpy_to_torch(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(numpy_to_torch(v) for v in tree)
    return tree


def torch_to_numpy(tree: Any) -> Any:
    """The inverse of :func:`numpy_to_torch`: tensors back to numpy arrays."""
    if isinstance(tree, torch.Tensor):
        return tree.numpy().copy()
    if isinstance(tree, Mapping):
        return {k: torch_to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(torch_to_numpy(v) for v in tree)
    return tree


class Checkpointer:
    """Reads one run's checkpoint and decides when to write the next one.

    Built with ``config=None`` it does nothing: :meth:`load` returns ``None`` and :meth:`due`
    ``False``.
    """

    def __init__(self, config: Checkpointing | None, fingerprint: dict[str, Any]) -> None:
        self.config = config
        self.fingerprint = fingerprint
        self._last_step = 0
        self._last_time = time.perf_counter()
        self._warned_no_env_state = False

    def load(self) -> dict[str, Any] | None:
        """The saved state, if the file exists, can be read and belongs to this run."""
        if self.config is None:
            return None
        path = self.config.path
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a job killed mid-write
            with contextlib.suppress(OSError):
                stale.unlink()
        if not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # whatever is wrong with the file, it must not be used
            log.warning(
                "ignoring checkpoint %s: it cannot be read (%s: %s); training starts from "
                "scratch and will overwrite it",
                path,
                type(err).__name__,
                err,
            )
            return None
        theirs = saved.get("fingerprint") if isinstance(saved, dict) else None
        if theirs != self.fingerprint:
            log.warning(
                "ignoring checkpoint %s: it belongs to another run (differs in %s); training "
                "starts from scratch and will overwrite it",
                path,
                _differences(theirs, self.fingerprint),
            )
            return None
        self._last_step = int(saved["global_step"])
        self._last_time = time.perf_counter()
        return saved

    def due(self, global_step: int, *, stopping: bool = False) -> bool:
        """Whether a threshold has passed since the last save, or the run stops early here
        (``stopping``, see :func:`loop_lengths`): then a later call continues from this point."""
        c = self.config
        if c is None:
            return False
        return (
            stopping
            or (c.every_steps is not None and global_step - self._last_step >= c.every_steps)
            or (
                c.every_seconds is not None
                and time.perf_counter() - self._last_time >= c.every_seconds
            )
        )

    def save(self, global_step: int, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors and plain data) with the fingerprint, atomically."""
        assert self.config is not None, "save() needs a Checkpointing"
        started = time.perf_counter()
        path = self.config.path
        if state.get("env") is None and not self._warned_no_env_state:
            log.warning(
                "checkpoint %s cannot hold the state of env %r (see hpsrl.envs.get_vector_state): "
                "a run resumed from it goes on correctly but not bit-identically",
                path,
                self.fingerprint["env"]["id"],
            )
            self._warned_no_env_state = True
        payload = {"fingerprint": self.fingerprint, "global_step": int(global_step), **state}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._last_step = global_step
        self._last_time = time.perf_counter()
        log.debug(
            "saved checkpoint %s at env step %d (%.0f kB, %.3f s)",
            path,
            global_step,
            path.stat().st_size / 1e3,
            self._last_time - started,
        )


def _differences(theirs: Any, ours: dict[str, Any]) -> str:
    if not isinstance(theirs, dict):
        return "everything: the file has no fingerprint"
    keys = sorted(k for k in ours.keys() | theirs.keys() if theirs.get(k) != ours.get(k))
    return ", ".join(keys)


def run_state(
    *,
    global_step: int,
    train_seconds: float,
    generator: torch.Generator,
    rng: np.random.Generator,
    tracker: EpisodeTracker,
    envs: Any,
    obs: np.ndarray,
    prev_done: np.ndarray,
) -> dict[str, Any]:
    """The part of a checkpoint that PPO and DQN share; reads everything, changes nothing."""
    return {
        "train_seconds": float(train_seconds),
        "torch_generator": generator.get_state(),
        "numpy_rng": numpy_to_torch(rng.bit_generator.state),
        "tracker": tracker.state_dict(),
        "env": numpy_to_torch(get_vector_state(envs)),
        "obs": torch.from_numpy(np.array(obs, copy=True)),
        "prev_done": torch.from_numpy(np.array(prev_done, copy=True)),
    }


def restore_run(
    saved: Mapping[str, Any],
    *,
    generator: torch.Generator,
    rng: np.random.Generator,
    tracker: EpisodeTracker,
    envs: Any,
    seed: int,
    what: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Put back the part written by :func:`run_state`; return the observations and done flags.

    ``envs`` must have been reset. When the saved env state cannot be put back, ``envs`` is reset
    with a seed derived from ``(seed, env step)``, running episodes are dropped and a warning says
    that the run is not bit-identical to an uninterrupted one.
    """
    global_step = int(saved["global_step"])
    generator.set_state(saved["torch_generator"])
    rng.bit_generator.state = torch_to_numpy(saved["numpy_rng"])
    tracker.load_state_dict(saved["tracker"])
    env_state = saved["env"]
    if env_state is not None and set_vector_state(envs, torch_to_numpy(env_state)):
        log.info("%s: resuming from env step %d (env state restored)", what, global_step)
        return saved["obs"].numpy().copy(), saved["prev_done"].numpy().copy()
    env_seed = int(np.random.SeedSequence([seed, global_step]).generate_state(1)[0])
    log.warning(
        "%s: resuming from env step %d, but the environments' state %s; they are reset with "
        "seed %d and the running episodes are dropped: the run goes on correctly but is not "
        "bit-identical to an uninterrupted one",
        what,
        global_step,
        "was not saved" if env_state is None else "does not fit this env",
        env_seed,
    )
    obs, _ = envs.reset(seed=env_seed)
    tracker.running[:] = 0.0
    return obs, np.zeros(envs.num_envs, dtype=bool)


# -- Starting from given weights (``train(..., initial_weights=...)``) ----------------------------


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
