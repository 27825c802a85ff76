"""How much of a campaign's wall time is not training: Snakemake, process starts, imports, HDF5.

Runs a PPO CartPole-v1 campaign (the default config's genes) through the real ``snakemake`` command
in a temporary copy of the workflow (as ``tests/conftest.py``'s ``workdir`` fixture does), 20k env
steps per seed, 2 seeds, no re-test, ``--cores 2``, once for each ``training.individuals_per_job``
asked for (default: 1, and the whole population in one job), and for each way of training a job
(``--launch``): ``warm``, the run's warm workers (hpsrl/training/workers.py, what a local run does),
whose log gives each job's time in the pool; ``own``, each job launching its own MPI ranks
(``HPSRL_WARM_WORKERS=0``, as on a cluster), through a timing wrapper around ``mpiexec`` (the
``mpi`` resource, ``--set-resources train_individuals:mpi=...``) that records each job's start
and end.

Reported:

- useful fraction = sum over seeds of ``train_seconds + eval_seconds`` (from ``genGGG.h5``)
  / (campaign wall time x cores in use); the rest is orchestration;
- per training job: its wall time (the launch's, or its time in the pool) minus its train+eval
  seconds divided by its ranks or workers (process start, imports, MPI start-up, reading the
  population, writing the results, and the ranks' wait for each other at the end);
- the gap between consecutive training jobs (Snakemake's scheduling and job start, collecting
  and evolving a generation);
- the bare cost of one ``mpiexec -n 2 python -m mpi4py -m hpsrl train`` launch with a tiny budget,
  next to ``mpiexec -n 2 python -c pass`` and the imports alone.

    python benchmarks/orchestration_overhead.py                # ~5 min on 2 cores
    python benchmarks/orchestration_overhead.py --launch warm own
    python benchmarks/orchestration_overhead.py --population 32 --individuals-per-job 32
    python benchmarks/orchestration_overhead.py --steps 5000 --launches 1   # quicker
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench
import h5py
import numpy as np
import yaml

NAME = "orchestration_overhead"
CORES = 2

LAUNCHER = """#!/usr/bin/env bash
# mpiexec, timed: one JSON line per launch in launches.jsonl next to this script.
start=$(date +%s.%N)
mpiexec "$@"
rc=$?
end=$(date +%s.%N)
echo "{\\"start\\": $start, \\"end\\": $end, \\"rc\\": $rc, \\"args\\": \\"$*\\"}" \\
    >> "$(dirname "$0")/launches.jsonl"
exit $rc
"""


def campaign_config(steps: int, population: int, generations: int, seeds: int) -> dict[str, Any]:
    """The default campaign (config/config.yaml), on a small budget."""
    config = yaml.safe_load((_bench.REPO / "config" / "config.yaml").read_text())
    config["campaign"] = "bench"
    config["training"].update(steps=steps, seeds=seeds, eval_episodes=10)
    config["budget"] = {"population": population, "generations": generations}
    config["ga"].update(tournament_size=2)
    config["retest"] = {"seeds": 0}
    return config


def make_workdir(root: Path) -> Path:
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = _bench.REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        else:
            shutil.copy(src, root / name)
    launcher = root / "timed-mpiexec"
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)
    return root


def pool_jobs(workers_log: Path) -> list[dict[str, Any]]:
    """Each job's window in the warm workers' log, as timed-mpiexec's lines: the pool logs a
    job's time in it when it answers."""
    jobs = []
    pattern = re.compile(
        r"^(\S+ \S+) INFO \S+: (\S+/gen(\d+)/ind(\d+)-(\d+)\.txt): exit status (\d+) after (\S+) s"
    )
    for line in workers_log.read_text().splitlines():
        if match := pattern.match(line):
            stamp, _, gen, first, last, rc, seconds = match.groups()
            end = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            individuals = " ".join(str(i) for i in range(int(first), int(last) + 1))
            jobs.append(
                {
                    "start": end - float(seconds),
                    "end": end,
                    "rc": int(rc),
                    "gen": int(gen),
                    "individuals": individuals,
                }
            )
    return jobs


def run_campaign(workdir: Path, config: dict[str, Any], warm: bool) -> dict[str, Any]:
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    launcher = workdir / "timed-mpiexec"
    (workdir / "launches.jsonl").unlink(missing_ok=True)
    shutil.rmtree(workdir / "results", ignore_errors=True)
    started = time.perf_counter()
    wall_started = time.time()
    done = subprocess.run(
        [
            str(_bench.BIN / "snakemake"),
            "--cores",
            str(CORES),
            "--set-resources",
            f"train_individuals:mpi={launcher}",
        ],
        cwd=workdir,
        env=_bench.child_env(HPSRL_WARM_WORKERS="1" if warm else "0"),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"snakemake failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    results = workdir / "results" / config["campaign"]
    if warm:
        launches = pool_jobs(results / "logs" / "workers.log")
        workers = int(
            re.search(r"(\d+) warm workers", (results / "logs" / "workers.log").read_text())[1]
        )
    else:
        lines = (workdir / "launches.jsonl").read_text().splitlines()
        launches = [json.loads(line) for line in lines]
        for launch in launches:
            args = launch["args"].split()
            population = args[args.index("--population") + 1]
            launch["gen"] = int(population.split("/")[-2].removeprefix("gen"))
            launch["individuals"] = " ".join(
                args[args.index("--individual") + 1 : args.index("--out")]
            )
            launch["ranks"] = int(args[args.index("-n") + 1])
    launches.sort(key=lambda r: r["start"])
    per_seed = {}  # generation -> train seconds, eval seconds, env steps: (individuals, seeds) each
    for gen in range(config["budget"]["generations"]):
        with h5py.File(results / f"gen{gen:03d}.h5", "r") as f:
            per_seed[gen] = tuple(
                np.asarray(f[f"results/{name}"])
                for name in ("train_seconds", "eval_seconds", "env_steps")
            )
    jobs = []
    for launch in launches:
        gen, individuals = launch["gen"], [int(i) for i in launch["individuals"].split()]
        train, evals, steps = (a[individuals] for a in per_seed[gen])
        job_wall = launch["end"] - launch["start"]
        ranks = workers if warm else launch["ranks"]
        jobs.append(
            {
                "gen": gen,
                "individuals": individuals,
                "launcher_wall_seconds": job_wall,
                "train_seconds": train.ravel().tolist(),
                "eval_seconds": evals.ravel().tolist(),
                "env_steps": steps.ravel().tolist(),
                # the ranks take the job's trainings in turn and wait for each other only at
                # its end: the training of its average rank is what the job could not avoid
                "fixed_cost_seconds": job_wall - float((train + evals).sum()) / ranks,
            }
        )
    gaps = [b["start"] - a["end"] for a, b in itertools.pairwise(launches)]
    generations = []  # how the cost of a job, and of the step between generations, grows
    for gen, in_gen in itertools.groupby(launches, key=lambda launch: launch["gen"]):
        in_gen = list(in_gen)
        window = max(r["end"] for r in in_gen) - in_gen[0]["start"]
        gen_jobs = [j for j in jobs if j["gen"] == gen]
        gen_useful = sum(sum(j["train_seconds"]) + sum(j["eval_seconds"]) for j in gen_jobs)
        generations.append(
            {
                "gen": gen,
                "jobs": len(in_gen),
                "first_start": in_gen[0]["start"] - wall_started,
                "last_end": max(r["end"] for r in in_gen) - wall_started,
                "useful_core_seconds": gen_useful,
                # from the generation's first job's start to its last's end
                "not_training_core_seconds_per_job": (window * CORES - gen_useful) / len(in_gen),
            }
        )
    for before, after in itertools.pairwise(generations):
        # collect, evolve and snakemake's re-planning of the next generation
        before["to_next_generation_seconds"] = after["first_start"] - before["last_end"]
    useful = sum(sum(j["train_seconds"]) + sum(j["eval_seconds"]) for j in jobs)
    launcher_total = sum(j["launcher_wall_seconds"] for j in jobs)
    return {
        "launch": "warm" if warm else "own",
        "wall_seconds": wall,
        "cores": CORES,
        "first_launch_after_seconds": launches[0]["start"] - wall_started,
        "after_last_launch_seconds": wall_started + wall - launches[-1]["end"],
        "useful_core_seconds": useful,
        "useful_fraction": useful / (wall * CORES),
        # what each job cost beyond its training, however many ran at once: the whole run's
        # core-seconds not spent training, spread over its jobs
        "not_training_core_seconds_per_job": (wall * CORES - useful) / len(jobs),
        "training_jobs_wall_seconds": launcher_total,
        "outside_training_jobs_seconds": wall - launcher_total,
        "jobs": jobs,
        "gaps_between_launches_seconds": gaps,
        "generations": generations,
        "snakemake_log_tail": done.stderr[-1500:],
    }


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=cwd, env=_bench.child_env(), capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started


def bare_launches(workdir: Path, repeats: int) -> dict[str, Any]:
    """One tiny training job (1 PPO rollout, 1 eval episode) vs empty MPI processes."""
    from hpsrl.campaign.config import load_config

    config = campaign_config(steps=1, population=2, generations=1, seeds=2)
    config["training"]["eval_episodes"] = 1
    config["genes"] = {"learning_rate": config["genes"]["learning_rate"]}
    config["fixed"] = {"num_envs": 4, "num_steps": 8, "batch_size": 32, "update_epochs": 1}
    pop = workdir / "tiny-pop.h5"
    subprocess.run(
        [
            str(_bench.BIN / "hpsrl"),
            "populate",
            "--config-json",
            json.dumps(load_config(config)),
            "--out",
            str(pop),
        ],
        cwd=workdir,
        env=_bench.child_env(),
        check=True,
        capture_output=True,
    )
    mpi2 = ["mpiexec", "-n", "2", str(_bench.BIN / "python")]
    commands = {
        "mpiexec -n 2 python -c pass": [*mpi2, "-c", "pass"],
        "mpiexec -n 2 python -m mpi4py -c 'import torch, gymnasium, hpsrl.agents'": [
            *mpi2, "-m", "mpi4py", "-c", "import torch, gymnasium, hpsrl.agents",
        ],
        "mpiexec -n 2 python -m mpi4py -m hpsrl train (1 rollout)": [
            *mpi2, "-m", "mpi4py", "-m", "hpsrl", "train", "--population", "population.h5",
            "--individual", "0", "--out", "ind000.h5",
        ],
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in commands}
    inside = []
    for rep in range(repeats):  # interleaved; each launch in a fresh folder (nothing to reuse)
        for i, (name, cmd) in enumerate(commands.items()):
            cwd = workdir / f"launch{rep}-{i}"
            cwd.mkdir()
            shutil.copy(pop, cwd / "population.h5")
            times[name].append(timed(cmd, cwd))
            if (cwd / "ind000.h5").exists():
                with h5py.File(cwd / "ind000.h5", "r") as f:
                    seconds = np.asarray(f["train_seconds"]) + np.asarray(f["eval_seconds"])
                inside.append(float(np.max(seconds)))
    return {
        "seconds": {k: _bench.summary(v) for k, v in times.items()},
        "tiny_job_train_plus_eval_seconds": _bench.summary(inside),
    }


def report(campaign: dict[str, Any], individuals_per_job: int) -> None:
    jobs = campaign["jobs"]
    fixed = [j["fixed_cost_seconds"] for j in jobs]
    walls = [j["launcher_wall_seconds"] for j in jobs]
    train = [t for j in jobs for t in j["train_seconds"]]
    gaps = campaign["gaps_between_launches_seconds"] or [float("nan")]
    how = {"warm": "warm workers", "own": "each job launching its own ranks"}[campaign["launch"]]
    print(f"\n-- {individuals_per_job} individual(s) per training job, {len(jobs)} jobs, {how}")
    print(
        _bench.table(
            ["quantity", "seconds"],
            [
                ["campaign wall", campaign["wall_seconds"]],
                ["x cores = core-seconds", campaign["wall_seconds"] * CORES],
                ["sum train+eval over seeds", campaign["useful_core_seconds"]],
                ["training jobs, sum of walls", campaign["training_jobs_wall_seconds"]],
                ["outside training jobs", campaign["outside_training_jobs_seconds"]],
                ["snakemake start -> first launch", campaign["first_launch_after_seconds"]],
                ["last launch end -> snakemake exit", campaign["after_last_launch_seconds"]],
            ],
        )
    )
    print(
        f"useful fraction: {campaign['useful_fraction']:.1%} "
        f"(not training: {1 - campaign['useful_fraction']:.1%}, "
        f"{campaign['not_training_core_seconds_per_job']:.2f} core-s per job)"
    )
    print(
        _bench.table(
            ["per training job", "min", "median", "max"],
            [
                ["job wall s", min(walls), statistics.median(walls), max(walls)],
                ["train s per seed", min(train), statistics.median(train), max(train)],
                ["fixed cost s (see above)", min(fixed), statistics.median(fixed), max(fixed)],
                ["gap between jobs s", min(gaps), statistics.median(gaps), max(gaps)],
            ],
        )
    )
    print(
        _bench.table(
            ["generation", "jobs", "not training, core-s per job", "to the next generation, s"],
            [
                [g["gen"], g["jobs"], g["not_training_core_seconds_per_job"],
                 g.get("to_next_generation_seconds", float("nan"))]
                for g in campaign["generations"]
            ],
        )
    )  # fmt: skip


def plot_generations(campaigns: dict[str, dict[str, Any]], path: Path) -> None:
    """Per generation of each campaign: the core-seconds a job cost beyond its training, and the
    seconds from a generation's last job to the next one's first (collect, evolve, re-planning)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.6), layout="constrained")
    per_job, between = figure.subplots(1, 2)
    for name, campaign in campaigns.items():
        rows = campaign["generations"]
        jobs_so_far = np.cumsum([g["jobs"] for g in rows])
        per_job.plot(jobs_so_far, [g["not_training_core_seconds_per_job"] for g in rows],
                     marker="o", label=name)  # fmt: skip
        between.plot(jobs_so_far[:-1], [g["to_next_generation_seconds"] for g in rows[:-1]],
                     marker="o", label=name)  # fmt: skip
    per_job.set(xlabel="training jobs so far", ylabel="core-seconds per job, not training",
                ylim=(0, None), title="cost of a job, by generation")  # fmt: skip
    between.set(xlabel="training jobs so far", ylabel="seconds", ylim=(0, None),
                title="last job of a generation -> first of the next")  # fmt: skip
    per_job.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per seed")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2, help="seeds = MPI ranks per job")
    parser.add_argument(
        "--individuals-per-job",
        type=int,
        nargs="+",
        help="training.individuals_per_job values to run the campaign with (default: 1 and the "
        "population)",
    )
    parser.add_argument(
        "--launch",
        nargs="+",
        choices=["warm", "own"],
        default=["warm"],
        help="how jobs train: warm workers (a local run's default) or their own MPI ranks",
    )
    parser.add_argument("--launches", type=int, default=3, help="repeats of the bare launches")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="also plot each campaign's cost per job by generation (e.g. plots/orchestration.png)",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only plot (to --plot) the campaigns of JSONs this script wrote",
    )
    args = parser.parse_args(argv)
    if args.replot:
        if not args.plot:
            parser.error("--replot needs --plot PNG")
        campaigns = {}
        for path in args.replot:
            run = json.loads(path.read_text())
            size = f"population {run['config']['population']} x {run['config']['generations']}"
            campaigns.update({f"{size}, {k}": v for k, v in run["campaigns"].items()})
        plot_generations(campaigns, args.plot)
        return
    job_sizes = args.individuals_per_job or sorted({1, args.population})

    root = Path(tempfile.mkdtemp(prefix="hpsrl-bench-"))
    campaigns = {}
    try:
        workdir = make_workdir(root)
        for launch, k in itertools.product(args.launch, job_sizes):
            config = campaign_config(args.steps, args.population, args.generations, args.seeds)
            config["training"]["individuals_per_job"] = k
            campaigns[f"{launch}-{k}"] = run_campaign(workdir, config, warm=launch == "warm")
        bare = bare_launches(workdir, args.launches)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(
        f"campaign: population {args.population} x {args.generations} generations x "
        f"{args.seeds} seeds x {args.steps} steps, snakemake --cores {CORES}"
    )
    for name, campaign in campaigns.items():
        report(campaign, int(name.split("-")[1]))
    print(
        _bench.table(
            ["bare launch", "min s", "median s"],
            [[k, v["min"], v["median"]] for k, v in bare["seconds"].items()],
        )
    )
    inside = bare["tiny_job_train_plus_eval_seconds"]
    print(f"(the tiny job's own train+eval, slowest rank: median {inside['median']:.2f} s)")
    for campaign in campaigns.values():
        campaign.pop("snakemake_log_tail")
    path = _bench.write_json(
        NAME,
        {
            "config": {
                "steps": args.steps,
                "population": args.population,
                "generations": args.generations,
                "seeds": args.seeds,
                "cores": CORES,
            },
            "campaigns": {
                k: {
                    **campaign,
                    "per_job": {
                        "fixed_cost_seconds": _bench.summary(
                            [j["fixed_cost_seconds"] for j in campaign["jobs"]]
                        ),
                        "launcher_wall_seconds": _bench.summary(
                            [j["launcher_wall_seconds"] for j in campaign["jobs"]]
                        ),
                    },
                }
                for k, campaign in campaigns.items()
            },
            "bare_launch": bare,
        },
    )
    print(f"written {path}")
    if args.plot:
        plot_generations(campaigns, args.plot)


if __name__ == "__main__":
    main()
