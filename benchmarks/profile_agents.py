"""Where an hpsrl agent's training time goes: a py-spy sampling profile grouped by source line.

Trains one agent with its default ``Hyperparameters`` (or, with ``--zoo``, the RL Zoo ones that
``speed_vs_sb3.py`` compares with SB3) on CartPole-v1 (one torch thread) under
``py-spy record`` and attributes every sample taken inside ``train`` to the line of the agent's
module it was executing (the innermost frame in ``hpsrl/agents/<algo>.py``), grouped into phases:
env step, acting (forward + sampling), storage, GAE, update forward + loss, backward, gradient
clipping + optimizer step, and so on. ``torch._dynamo`` (which the first ``torch.optim`` optimizer
imports, ~2 s) is imported before training, so the profile is the steady state; the start-up cost
is reported by ``orchestration_overhead.py``.

With ``--native`` py-spy also unwinds C/C++ frames, and the innermost frame of each sample tells
whether the CPU was in the Python interpreter, torch's C++ (dispatcher, autograd, TensorIterator,
allocator), a math kernel (MKL/BLAS, vectorised tanh), numpy or libc. Native unwinding slows the
program down a lot, so that run uses a smaller budget.

Needs ``py-spy`` (``pip install py-spy``); without it falls back to cProfile (by function).

    python benchmarks/profile_agents.py                     # PPO, 60k steps
    python benchmarks/profile_agents.py --algo dqn --steps 10000
    python benchmarks/profile_agents.py --zoo --steps 100000     # speed_vs_sb3.py's PPO
    python benchmarks/profile_agents.py --native --steps 8000
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench

NAME = "profile_agents"

#: (phase, substrings of a source line that put it in the phase); first match wins.
COMMON_PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("env step", ("envs.step(",)),
    ("episode bookkeeping (EpisodeTracker.step)", ("tracker.step(",)),
    ("update: backward", (".backward(",)),
    ("update: gradient clipping + optimizer step", ("optimizer.step(",)),
    ("lr annealing", ("optimizer.lr =",)),
    ("divergence checks", ("check_finite(", "check_parameters(", "losses.append(")),
    ("evaluation", ("evaluate(", "evaluated_result(", "torch.as_tensor(obs")),
]
PPO_PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("rollout: actor forward + sampling", ("actor.predict(obs[t])", "gumbel", "uniform =")),
    (
        "rollout: storage",
        (
            "obs[t] =",
            "valid[t] =",
            "actions[t], rewards[t]",
            "prev_done =",
            "global_step +=",
            "obs[T] =",
            "for t in range(T)",
        ),
    ),
    (
        "value + old log-prob pass",
        ("critic.predict(flat_obs)", "values =", "old_logprobs", "flat_obs ="),
    ),
    (
        "GAE (numpy loop)",
        (
            "delta =",
            "last =",
            "advantages[t] =",
            "not_terminal =",
            "continues =",
            "returns = advantages",
            "for t in reversed",
        ),
    ),
    (
        "flatten rollout into a batch",
        (
            "keep =",
            "b_obs =",
            "b_actions =",
            "b_logprobs =",
            "b_advantages =",
            "b_returns =",
            "num_minibatches =",
            "size, longer =",
            "bounds =",
        ),
    ),
    ("update: minibatch indices", ("order =", "itertools.pairwise(", "mb = ", "B = stop")),
    (
        "update: loss gradient",
        ("unclipped =", "grad_logprob =", "grad_logits", "entropy_grad", "entropies ="),
    ),
    (
        "update: forward + loss",
        (
            "actor.forward(mb_obs)",
            "rows, mb_obs",
            "probs =",
            "ratio =",
            "adv =",
            "_standardized(",
            "normalize_per_minibatch",
            "surrogate",
            "pg_loss =",
            "critic.forward(mb_obs)",
            "v_loss =",
            "loss =",
        ),
    ),
]
DQN_PHASES: list[tuple[str, tuple[str, ...]]] = [
    (
        "acting (Q forward, epsilon-greedy)",
        (
            "q_mlp.predict(obs)",
            "explore",
            "action_draws",
            "random_actions",
            "epsilon =",
            "progress =",
            "actions = np.where",
        ),
    ),
    (
        "replay: store transitions",
        (
            "buf_obs[slots]",
            "buf_next_obs[slots]",
            "buf_actions[slots]",
            "buf_rewards[slots]",
            "buf_terminated[slots]",
            "slots",
            "real =",
            "k = N -",
            "position",
            "stored +=",
            "next_obs = next_obs",
        ),
    ),
    (
        "replay: sample a phase's batches",
        ("rng.integers(size", "= buf_", "p_not_terminal =", "td_errors = np.empty"),
    ),
    (
        "target values (target-network forward)",
        ("sampled, where", "target_mlp.predict", "next_values", "targets =", "target =", "best ="),
    ),
    (
        "update: forward + loss",
        ("q_mlp.forward(", "td_error", "grad_q", "abs_errors", "huber"),
    ),
    ("target network update", ("target_param",)),
]
PHASES = {"ppo": COMMON_PHASES + PPO_PHASES, "dqn": COMMON_PHASES + DQN_PHASES}

#: (kind, substrings of the innermost native frame); first match wins. Only with --native.
NATIVE_KINDS: list[tuple[str, tuple[str, ...]]] = [
    (
        "math kernels (MKL/BLAS/vectorised)",
        (
            "mkl_",
            "sgemm",
            "gemm",
            "vml",
            "AVX",
            "Vectorized",
            "vectorized_loop",
            "cpu_kernel",
            "blas",
        ),
    ),
    ("numpy", ("numpy", "_multiarray_umath", "ufunc")),
    (
        "torch C++ (dispatcher, autograd, allocator)",
        ("libtorch", "libc10", "at::", "c10::", "torch::", "pybind11"),
    ),
    ("Python interpreter", ("libpython", "_PyEval", "Py", ".py:")),
    ("libc (malloc, memcpy, ...)", ("libc.so", "ld-linux", "malloc", "free", "memcpy", "memset")),
]


def child(algo: str, steps: int, zoo: bool) -> None:
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    import torch._dynamo

    from hpsrl.agents import RunSettings, get_algorithm
    from hpsrl.envs.spec import EnvSpec

    module = get_algorithm(algo)
    values = {}
    if zoo:
        import speed_vs_sb3

        values = speed_vs_sb3.HPSRL_PPO if algo == "ppo" else speed_vs_sb3.HPSRL_DQN
    result = module.train(
        EnvSpec("CartPole-v1"),
        module.Hyperparameters(**values),
        RunSettings(steps, 0, eval_seed=1, eval_episodes=10),
    )
    print(
        json.dumps(
            {
                "env_steps": result.env_steps,
                "train_seconds": result.train_seconds,
                "steps_per_second": result.env_steps / result.train_seconds,
                "mean_return": float(result.eval_returns.mean()),
                "process_seconds": time.perf_counter() - started,
            }
        )
    )


def phase_of(text: str, algo: str) -> str:
    for phase, needles in PHASES[algo]:
        if any(n in text for n in needles):
            return phase
    return f"other: {text[:60]}"


def native_kind(frame: str) -> str:
    for kind, needles in NATIVE_KINDS:
        if any(n in frame for n in needles):
            return kind
    return "other native"


def aggregate(raw: Path, algo: str) -> dict[str, Any]:
    """Group py-spy's collapsed stacks by the line of the agent's ``train`` being executed."""
    agent_file = f"hpsrl/agents/{algo}.py"
    source = (_bench.REPO / agent_file).read_text().splitlines()
    line_re = re.compile(rf"^train \({re.escape(agent_file)}:(\d+)\)")
    total = in_train = 0
    by_line: collections.Counter[int] = collections.Counter()
    by_native: collections.Counter[str] = collections.Counter()
    by_phase_native: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for row in raw.read_text().splitlines():
        stack, _, count = row.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        if not any(f.startswith("train (") and agent_file in f for f in frames):
            continue
        in_train += n
        lines = [int(m.group(1)) for f in frames for m in [line_re.search(f)] if m]
        line = lines[-1]
        by_line[line] += n
        kind = native_kind(frames[-1])
        by_native[kind] += n
        by_phase_native[phase_of(source[line - 1].strip(), algo)][kind] += n
    phases: collections.Counter[str] = collections.Counter()
    for line, n in by_line.items():
        phases[phase_of(source[line - 1].strip(), algo)] += n
    return {
        "samples_total": total,
        "samples_in_train": in_train,
        "phases": {p: n / in_train for p, n in phases.most_common()},
        "lines": [
            {"line": line, "source": source[line - 1].strip(), "share": n / in_train}
            for line, n in by_line.most_common(25)
        ],
        "native_kinds": {k: n / in_train for k, n in by_native.most_common()},
        "phase_native_kinds": {
            p: {k: n / sum(c.values()) for k, n in c.most_common()}
            for p, c in by_phase_native.items()
        },
    }


def with_cprofile(algo: str, steps: int, zoo: bool) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    child(algo, steps, zoo)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return {"cprofile_top25_by_tottime": out.getvalue()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", choices=["ppo", "dqn"], default="ppo")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="env steps (default 60000 for PPO, 10000 for DQN; 8000 if --native)",
    )
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="unwind C/C++ frames too")
    parser.add_argument(
        "--zoo", action="store_true", help="speed_vs_sb3.py's hyperparameters, not the defaults"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("ALGO", "STEPS", "ZOO"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2] == "zoo")
        return
    steps = args.steps or (8000 if args.native else 60_000 if args.algo == "ppo" else 10_000)
    name = f"{NAME}_{args.algo}{'_zoo' if args.zoo else ''}{'_native' if args.native else ''}"

    pyspy = shutil.which("py-spy") or (
        str(_bench.BIN / "py-spy") if (_bench.BIN / "py-spy").exists() else None
    )
    if pyspy is None:
        print("py-spy not found (pip install py-spy); using cProfile", file=sys.stderr)
        report = with_cprofile(args.algo, steps, args.zoo)
        print(report["cprofile_top25_by_tottime"])
        print(f"written {_bench.write_json(name, {'algo': args.algo, 'steps': steps, **report})}")
        return

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.raw"
        cmd = [
            pyspy,
            "record",
            "-r",
            str(args.rate),
            "-f",
            "raw",
            "-o",
            str(raw),
            *(["--native"] if args.native else []),
            "--",
            sys.executable,
            __file__,
            "--child",
            args.algo,
            str(steps),
            "zoo" if args.zoo else "defaults",
        ]
        done = subprocess.run(
            cmd,
            cwd=_bench.REPO,
            env=_bench.child_env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy failed:\n{done.stderr[-3000:]}")
        run = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
        report = aggregate(raw, args.algo)

    print(
        f"{args.algo}, {'RL Zoo' if args.zoo else 'default'} hyperparameters, CartPole-v1, "
        f"{run['env_steps']} env steps: "
        f"{run['steps_per_second']:.0f} steps/s under py-spy{' --native' if args.native else ''}"
        f" ({report['samples_in_train']} samples in train)"
    )
    print(
        _bench.table(
            ["phase", "share of train"], [[p, f"{s:.1%}"] for p, s in report["phases"].items()]
        )
    )
    print(
        _bench.table(
            ["line", "share", "source"],
            [[r["line"], f"{r['share']:.1%}", r["source"][:70]] for r in report["lines"][:15]],
        )
    )
    if args.native:
        print(
            _bench.table(
                ["innermost native frame", "share of train"],
                [[k, f"{s:.1%}"] for k, s in report["native_kinds"].items()],
            )
        )
    path = _bench.write_json(
        name,
        {
            "algo": args.algo,
            "steps": steps,
            "zoo": args.zoo,
            "native": args.native,
            "run": run,
            **report,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
