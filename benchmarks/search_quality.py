"""Search quality after ARLBench's protocol: GA, random search and BO on the same budget.

Protocol (Becktepe et al. 2024, "ARLBench"): each search strategy gets the budget of 32 full
training runs (here population 8 x 4 generations), each configuration trained on 3 seeds, and the
whole search is repeated over 5 search seeds. The score of one search is the final return of the
best configuration it found; hpsrl re-tests that configuration on fresh seeds (``report.
retest_seeds``), and that re-test is the score reported here, next to the return the search saw.
ARLBench's best optimiser (SMAC BO) reached, as mean over search seeds, 500.0 on CartPole-v1 DQN
(5e4 steps) and -74.6 on Acrobot-v1 DQN (1e5 steps).

It runs the real workflow, ``snakemake compare``, on the task's example config
(config/examples/<task>.yaml) with the protocol's budget, in a working folder that survives
interruptions: rerunning the same command continues where it stopped and retrains nothing.

    python benchmarks/search_quality.py                          # both tasks, full protocol
    python benchmarks/search_quality.py --tasks cartpole-dqn --search-seeds 1 --cores 2

The full protocol is 3 strategies x 5 search seeds x 96 trainings per task (generation 0 is
trained once per search seed and shared): on this project's 2-core machine about 9 min per search
seed for CartPole-v1 and 42-53 min for Acrobot-v1 (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _bench
import yaml

NAME = "search_quality"

#: task -> (example config, env steps per training, ARLBench's SMAC-BO mean score)
TASKS: dict[str, tuple[str, int, float]] = {
    "cartpole-dqn": ("cartpole-dqn.yaml", 50_000, 500.0),
    "acrobot-dqn": ("acrobot-dqn.yaml", 100_000, -74.6),
}
STRATEGIES = ("ga", "random", "bo")


def task_config(task: str, search_seeds: int, retest_seeds: int) -> dict[str, Any]:
    """The task's example config with the protocol's budget."""
    file, steps, _ = TASKS[task]
    config = yaml.safe_load((_bench.REPO / "config" / "examples" / file).read_text())
    config["campaign"] = f"sq-{task}"
    config["results_dir"] = "results"
    # A whole generation per training job: one import of torch per generation instead of per
    # individual, and the job's 2 ranks stay busy on its 24 seeds (1 individual per job left a
    # rank idle for a third of each job). Not part of the results' config hash.
    config["training"].update(steps=steps, seeds=3, individuals_per_job=8)
    config["ga"].update(population=8, generations=4)  # 32 configurations per search
    config["report"] = {"retest_seeds": retest_seeds}
    config["compare"] = {"strategies": list(STRATEGIES), "search_seeds": search_seeds}
    return config


def copy_workflow(workdir: Path) -> None:
    """Put today's workflow (never the results) into ``workdir``, which keeps the task's results
    between runs so that they resume."""
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src, dest = _bench.REPO / name, workdir / name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)


@contextlib.contextmanager
def sole_run(workdir: Path) -> Iterator[None]:
    """Hold ``workdir`` for this process alone, or exit saying which folder is busy."""
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / ".search_quality.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.exit(f"another search_quality run is using {workdir}; wait for it or stop it")
        yield


def run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    config = task_config(task, args.search_seeds, args.retest_seeds)
    workdir = args.workdir / task
    with sole_run(workdir):
        copy_workflow(workdir)
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        snakemake = [str(_bench.BIN / "snakemake"), "--cores", str(args.cores),
                     "--configfile", str(config_path)]  # fmt: skip
        started = time.perf_counter()
        log_path = workdir / "snakemake.log"
        with log_path.open("a") as log:
            # A run that was killed leaves snakemake's lock behind; no other run can hold this
            # folder now (sole_run), so any lock in it is stale.
            subprocess.run(
                [*snakemake, "--unlock"], cwd=workdir, env=_bench.child_env(),
                stdout=log, stderr=subprocess.STDOUT, check=True,
            )  # fmt: skip
            done = subprocess.run(
                [*snakemake, "--rerun-incomplete", "compare"],
                cwd=workdir, env=_bench.child_env(), stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"snakemake failed for {task}; see {log_path}")
    summary_path = workdir / "results" / f"{config['campaign']}-compare" / "comparison.yaml"
    return {
        "task": task,
        "config": config,
        "wall_seconds_this_run": wall,
        "comparison": yaml.safe_load(summary_path.read_text()),
        "plot": str(summary_path.with_name("comparison.png")),
    }


def _fmt(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.1f} +- {stats['std']:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--search-seeds", type=int, default=5)
    parser.add_argument("--retest-seeds", type=int, default=10,
                        help="fresh seeds the best of each search is re-tested on")  # fmt: skip
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=_bench.OUT_DIR / "search_quality")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for task in tasks:
        if task not in TASKS:
            parser.error(f"unknown task {task!r}; known: {', '.join(TASKS)}")

    records, rows = [], []
    for task in tasks:
        record = run_task(task, args)
        records.append(record)
        for strategy, result in record["comparison"]["strategies"].items():
            rows.append([
                task, strategy, len(result["campaigns"]),
                _fmt(result["best_retested_on_fresh_seeds"]), _fmt(result["best_found"]),
                f"{(result['train_core_seconds']['mean'] or 0) / 60:.0f}",
                TASKS[task][2],
            ])  # fmt: skip
        print(f"{task}: plot {record['plot']}", flush=True)
    print(
        _bench.table(
            ["task", "strategy", "search seeds", "best re-tested (mean +- std)",
             "best seen in search", "train core-min per search", "ARLBench SMAC BO"],
            rows,
        ),
    )  # fmt: skip
    name = NAME if args.search_seeds == 5 and len(tasks) == len(TASKS) else f"{NAME}_custom"
    path = _bench.write_json(name, {"config": vars(args) | {"workdir": str(args.workdir)},
                                    "results": records})  # fmt: skip
    print(f"written {path}")


if __name__ == "__main__":
    main()
