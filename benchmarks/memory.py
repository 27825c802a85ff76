"""Peak resident memory of one training rank, and a leak check over a long training.

Each case runs in a fresh one-torch-thread process that imports what a rank imports (torch,
gymnasium, mpi4py, hpsrl), trains with the algorithm's default hyperparameters, and reports
``ru_maxrss`` (peak RSS). For the leak check the same process trains for 4x the case's budget and
samples its current RSS (``/proc/self/statm``) when training passes 1x, 2x, 3x and 4x of the budget;
it does so by handing the agent module a subclass of its ``EpisodeTracker`` (the per-step
bookkeeping hook), so the agents themselves are untouched. Flat RSS from 1x to 4x means no leak.
(DQN's replay buffer is a preallocated ``np.zeros`` ring whose pages become resident as it fills:
at most ``buffer_size x (2 x obs_dim x 4 + 16)`` bytes, 4.8 MB for CartPole's 100k buffer.)

    python benchmarks/memory.py                 # ~3 min on 2 cores
    python benchmarks/memory.py --scale 0.25    # quicker: a quarter of each budget
    python benchmarks/memory.py --cases "LunarLander-v3 PPO" --factor 10   # longer leak check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import _bench

NAME = "memory"

#: case -> (env id, algorithm, env steps of the 1x budget, hyperparameter overrides)
CASES: dict[str, tuple[str, str, int, dict[str, Any]]] = {
    "CartPole-v1 PPO": ("CartPole-v1", "ppo", 25_000, {}),
    "CartPole-v1 DQN": ("CartPole-v1", "dqn", 10_000, {}),
    # config/examples/lunarlander-ppo.yaml's fixed values: 16 envs x 1024 steps per rollout
    "LunarLander-v3 PPO": (
        "LunarLander-v3",
        "ppo",
        16_384,
        {"num_envs": 16, "num_steps": 1024, "activation": "tanh"},
    ),
}


def worker(case: str, scale: float, factor: int) -> None:
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    import gymnasium  # noqa: F401
    import mpi4py.MPI  # noqa: F401  - a rank has the MPI library loaded too
    import torch._dynamo

    from hpsrl.agents import RunSettings, get_algorithm, make_hyperparameters
    from hpsrl.envs.spec import EnvSpec

    env_id, algo, budget, overrides = CASES[case]
    budget = max(1, round(budget * scale))
    module = get_algorithm(algo)
    marks = [budget * k for k in range(1, factor + 1)]
    samples: list[dict[str, float]] = []
    base = module.EpisodeTracker

    class RssTracker(base):  # type: ignore[misc, valid-type]
        def step(self, rewards, dones, global_step):
            super().step(rewards, dones, global_step)
            while len(samples) < len(marks) and global_step >= marks[len(samples)]:
                samples.append({"env_steps": global_step, "rss_mib": _bench.current_rss_mib()})

    after_imports = _bench.current_rss_mib()
    module.EpisodeTracker = RssTracker
    try:
        result = module.train(
            EnvSpec(env_id),
            make_hyperparameters(algo, overrides),
            RunSettings(budget * factor, 0, eval_seed=1, eval_episodes=2),
        )
    finally:
        module.EpisodeTracker = base
    print(
        json.dumps(
            {
                "case": case,
                "budget": budget,
                "factor": factor,
                "env_steps": result.env_steps,
                "rss_after_imports_mib": after_imports,
                "rss_samples": samples,
                "peak_rss_mib": _bench.peak_rss_mib(),
                "seconds": time.perf_counter() - started,
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument(
        "--factor", type=int, default=4, help="leak check: train this many times the budget"
    )
    parser.add_argument(
        "--worker", nargs=3, metavar=("CASE", "SCALE", "FACTOR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], float(args.worker[1]), int(args.worker[2]))
        return

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for case in cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r}; known: {', '.join(CASES)}")
    records = []
    for case in cases:
        peak, _ = _bench.run_json_child([__file__, "--worker", case, str(args.scale), "1"])
        leak, _ = _bench.run_json_child(
            [__file__, "--worker", case, str(args.scale), str(args.factor)]
        )
        rss = [s["rss_mib"] for s in leak["rss_samples"]]
        records.append(
            {
                "case": case,
                "peak": peak,
                "leak_check": leak,
                "growth_1x_to_last_mib": rss[-1] - rss[0],
            }
        )
        print(
            f"{case}: peak {peak['peak_rss_mib']:.0f} MiB; RSS at 1x..{args.factor}x: "
            f"{', '.join(f'{v:.1f}' for v in rss)} MiB",
            file=sys.stderr,
            flush=True,
        )

    rows = []
    for r in records:
        rss = [s["rss_mib"] for s in r["leak_check"]["rss_samples"]]
        rows.append(
            [
                r["case"],
                r["peak"]["env_steps"],
                r["peak"]["rss_after_imports_mib"],
                r["peak"]["peak_rss_mib"],
                rss[0],
                rss[-1],
                r["growth_1x_to_last_mib"],
            ]
        )
    print(
        _bench.table(
            [
                "case",
                "env steps",
                "RSS after imports MiB",
                "peak RSS MiB",
                "RSS at 1x MiB",
                f"RSS at {args.factor}x MiB",
                "growth MiB",
            ],
            rows,
        )
    )
    name = NAME if args.factor == 4 and len(cases) == len(CASES) else f"{NAME}_custom"
    config = {"scale": args.scale, "factor": args.factor, "cases": cases}
    path = _bench.write_json(name, {"config": config, "results": records})
    print(f"written {path}")


if __name__ == "__main__":
    main()
