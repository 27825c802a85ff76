"""Aggregate env steps/s of hpsrl training with 1 MPI rank vs 2 ranks on this machine's 2 cores.

Each rank trains its own seed for the same per-rank budget (weak scaling: this is how a training
job runs an individual's seeds), with one torch thread. Imports, including ``torch._dynamo`` that
the first optimizer pulls in, happen before a barrier; the clock runs from that barrier to the
barrier after every rank has finished training (evaluation excluded).
Aggregate steps/s = env steps of all ranks / that wall time; ideal 2-rank scaling is 2.0x.
The 1-rank and 2-rank launches alternate, ``--repeats`` times (the machine may be shared).

    python benchmarks/mpi_scaling.py                       # PPO and DQN, 3 repeats (~4 min)
    python benchmarks/mpi_scaling.py --algos ppo --repeats 5 --ppo-steps 50000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import _bench

NAME = "mpi_scaling"


def worker(algo: str, steps: int) -> None:
    import torch

    torch.set_num_threads(1)
    import torch._dynamo

    from hpsrl.agents import RunSettings, get_algorithm
    from hpsrl.cluster.mpi import world
    from hpsrl.envs.spec import EnvSpec

    comm = world()
    module = get_algorithm(algo)
    comm.Barrier()
    started = time.perf_counter()
    result = module.train(
        EnvSpec("CartPole-v1"),
        module.Hyperparameters(),
        RunSettings(steps, 100 + comm.rank, eval_seed=1000 + comm.rank, eval_episodes=1),
    )
    finished = time.perf_counter()
    comm.Barrier()
    wall = time.perf_counter() - started
    mine = {
        "env_steps": result.env_steps,
        "train_seconds": result.train_seconds,
        "finished_after": finished - started,
    }
    gathered = comm.gather(mine, root=0)
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "wall_seconds": wall, "per_rank": gathered}))


def launch(ranks: int, algo: str, steps: int) -> dict[str, Any]:
    import subprocess

    done = subprocess.run(
        [
            "mpiexec",
            "-n",
            str(ranks),
            sys.executable,
            "-m",
            "mpi4py",
            __file__,
            "--worker",
            algo,
            str(steps),
        ],
        cwd=_bench.REPO,
        env=_bench.child_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{ranks}-rank launch failed:\n{done.stderr[-3000:]}")
    record = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
    total = sum(r["env_steps"] for r in record["per_rank"])
    record["aggregate_steps_per_second"] = total / record["wall_seconds"]
    record["per_rank_steps_per_second"] = [
        r["env_steps"] / r["train_seconds"] for r in record["per_rank"]
    ]
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="ppo,dqn")
    parser.add_argument("--ppo-steps", type=int, default=30_000, help="PPO env steps per rank")
    parser.add_argument("--dqn-steps", type=int, default=10_000, help="DQN env steps per rank")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("ALGO", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return

    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    steps = {"ppo": args.ppo_steps, "dqn": args.dqn_steps}
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for algo in algos:
            order = (1, 2) if rep % 2 == 0 else (2, 1)
            for ranks in order:
                record = launch(ranks, algo, steps[algo])
                record.update(algo=algo, repeat=rep)
                runs.append(record)
                print(
                    f"{algo} {ranks} rank(s): {record['aggregate_steps_per_second']:.0f} "
                    f"steps/s aggregate",
                    file=sys.stderr,
                    flush=True,
                )

    rows, results = [], {}
    for algo in algos:
        agg = {
            n: [
                r["aggregate_steps_per_second"]
                for r in runs
                if r["algo"] == algo and r["ranks"] == n
            ]
            for n in (1, 2)
        }
        per_rank = {
            n: [
                s
                for r in runs
                if r["algo"] == algo and r["ranks"] == n
                for s in r["per_rank_steps_per_second"]
            ]
            for n in (1, 2)
        }
        paired = [b / a for a, b in zip(agg[1], agg[2], strict=True)]
        results[algo] = {
            "steps_per_rank": steps[algo],
            "aggregate_steps_per_second": {str(n): _bench.summary(agg[n]) for n in (1, 2)},
            "per_rank_steps_per_second": {str(n): _bench.summary(per_rank[n]) for n in (1, 2)},
            "ratio_2_over_1_paired": _bench.summary(paired),
        }
        for n in (1, 2):
            rows.append(
                [
                    algo,
                    n,
                    steps[algo],
                    min(agg[n]),
                    _bench.summary(agg[n])["median"],
                    _bench.summary(per_rank[n])["median"],
                ]
            )
        rows.append([algo, "2/1", "", min(paired), _bench.summary(paired)["median"], ""])
    print(
        _bench.table(
            [
                "algo",
                "ranks",
                "steps/rank",
                "agg steps/s min",
                "agg steps/s med",
                "per-rank steps/s med",
            ],
            rows,
        )
    )
    path = _bench.write_json(
        NAME,
        {"config": {"repeats": args.repeats, "steps": steps}, "results": results, "runs": runs},
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
