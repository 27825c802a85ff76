"""What one generation asks of a Slurm controller: sbatch, sacct, squeue, ... calls, counted.

Runs one generation of a tiny campaign (tests/conftest.py's TINY: CartPole PPO, 2 seeds, a few
hundred steps per individual, ``--population`` individuals, ``training.individuals_per_job`` as
given, default ``auto``) through a running Slurm cluster with the user-facing profile's settings
(profiles/slurm/config.yaml, with ``--account`` and ``--partition`` added as default resources),
and counts every Slurm command called on the way. A folder of wrapper scripts named sbatch, squeue,
sacct, scancel, scontrol, srun, sinfo, sacctmgr and sshare is put first on PATH; each appends
(time, Slurm job id of the caller if any, command, arguments) to a log and execs the real binary.

Calls made outside any Slurm job are the submitting snakemake's (the executor plugin's): that is
the load on the controller (and on slurmdbd, for sacct) that the workflow adds whatever the jobs do.
Calls made inside a job (``SLURM_JOB_ID`` set: the job's own snakemake and its MPI launcher,
``srun``) are counted separately: each job step is an RPC to slurmctld too.

Writes benchmarks/results/slurm_load.json (calls per command, per minute and per job, status polls
and their spacing, wall time, jobs submitted, machine and date; one entry per population, later runs
replace earlier ones of the same size) and prints a summary.

Needs a running cluster (as root: tests/slurm/start.sh; the defaults fit its account and partition).
    .venv/bin/python benchmarks/slurm_load.py --population 64     # ~7 min on 2 loaded cores
    .venv/bin/python benchmarks/slurm_load.py --population 128    # 64 jobs of 2 individuals, ~7 min
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from _bench import machine

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULT = REPO / "benchmarks" / "results" / "slurm_load.json"

#: The Slurm commands that get a logging wrapper.
COMMANDS = (
    "sbatch",
    "squeue",
    "sacct",
    "scancel",
    "scontrol",
    "srun",
    "sinfo",
    "sacctmgr",
    "sshare",
)

SHIM = """#!/bin/bash
printf '%s\\t%s\\t%s\\t%s\\n' "$(date +%s.%N)" "${{SLURM_JOB_ID:-}}" {name} "$*" >> {log}
exec {real} "$@"
"""


def tiny_config() -> dict[str, Any]:
    """tests/conftest.py's TINY (imported from the file: tests/ is no package)."""
    spec = importlib.util.spec_from_file_location("hpsrl_conftest", REPO / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return copy.deepcopy(module.TINY)


def cluster_answers() -> str | None:
    """Why no Slurm cluster can be used, or None if ``sinfo`` and ``sacct`` answer."""
    for command in (["sinfo", "-h", "-o", "%P %a %D %T"], ["sacct", "-n", "-X", "-S", "now"]):
        if shutil.which(command[0]) is None:
            return f"{command[0]} is not on PATH (no Slurm client installed)"
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} did not answer within 20 s"
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[:300]}"
    return None


def write_shims(folder: Path, log: Path) -> None:
    for name in COMMANDS:
        real = shutil.which(name)
        if real is None:
            continue
        shim = folder / name
        shim.write_text(SHIM.format(name=name, log=log, real=real))
        shim.chmod(0o755)


def read_log(log: Path) -> list[dict[str, Any]]:
    calls = []
    for line in log.read_text().splitlines():
        stamp, job, name, args = [*line.split("\t", 3), ""][:4]
        calls.append({"t": float(stamp), "job": job, "command": name, "args": args})
    return calls


def kind(call: dict[str, Any]) -> str:
    """The command, with sacct's status polls (by workflow name, all jobs at once) told apart."""
    if call["command"] == "sacct" and "--name" in call["args"]:
        return "sacct (status poll)"
    if call["command"] == "squeue" and "--name" in call["args"]:
        return "squeue (status poll)"
    return call["command"]


def analyse(calls: list[dict[str, Any]], started: float, ended: float) -> dict[str, Any]:
    outside = [c for c in calls if not c["job"]]
    inside = [c for c in calls if c["job"]]
    submits = [c["t"] for c in outside if c["command"] == "sbatch"]
    jobs = len(submits)
    # The Slurm phase: from the first submission to the last call the submitting snakemake made.
    first = min(submits) if submits else started
    last = max((c["t"] for c in outside), default=ended)
    minutes = max(last - first, 1e-9) / 60
    counts = Counter(kind(c) for c in outside)
    polls = sorted(c["t"] for c in outside if "status poll" in kind(c))
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    return {
        "wall_seconds": ended - started,
        "slurm_phase_seconds": last - first,
        "jobs_submitted": jobs,
        "submission_seconds": (max(submits) - min(submits)) if submits else 0.0,
        "submitting_snakemake": {
            "calls": dict(sorted(counts.items())),
            "calls_total": len(outside),
            "per_minute": {k: v / minutes for k, v in sorted(counts.items())},
            "per_minute_total": len(outside) / minutes,
            "per_job": {k: v / max(jobs, 1) for k, v in sorted(counts.items())},
            "example_args": {k: next(c["args"] for c in outside if kind(c) == k) for k in counts},
            "status_polls": len(polls),
            "seconds_between_status_polls": (
                {
                    "min": min(gaps),
                    "median": statistics.median(gaps),
                    "max": max(gaps),
                }
                if gaps
                else None
            ),
        },
        "inside_jobs": {
            "calls": dict(sorted(Counter(kind(c) for c in inside).items())),
            "per_job": {
                k: v / max(jobs, 1) for k, v in sorted(Counter(kind(c) for c in inside).items())
            },
            "per_minute_total": len(inside) / minutes,
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hpsrl-slurm-load-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        for name in ("Snakefile", "workflow", "config", "profiles"):
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, work / name)
        profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
        profile["default-resources"].update(
            slurm_account=args.account, slurm_partition=args.partition
        )
        (work / "load-profile").mkdir()
        (work / "load-profile" / "config.yaml").write_text(yaml.safe_dump(profile))
        config = tiny_config()
        config.update(campaign="load")
        config["training"].update(
            steps=args.steps, seeds=args.seeds, individuals_per_job=args.individuals_per_job
        )
        config["ga"].update(population=args.population, generations=1)
        config["report"] = {"retest_seeds": 0}
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))

        shims = Path(tmp) / "shims"
        shims.mkdir()
        log = Path(tmp) / "calls.tsv"
        log.touch()
        write_shims(shims, log)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PATH": f"{shims}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
        }
        command = [str(BIN / "snakemake"), "--profile", "load-profile", *args.snakemake_args]
        print(f"running: {' '.join(command)} (population {args.population})", flush=True)
        started = time.time()
        try:
            done = subprocess.run(
                command, cwd=work, env=env, capture_output=True, text=True, timeout=args.timeout
            )
        except subprocess.TimeoutExpired:
            # snakemake was killed: cancel whatever it left (its jobs carry the run's name).
            cancel_left_over(read_log(log))
            sys.exit(f"the campaign took over {args.timeout} s; its jobs were cancelled")
        ended = time.time()
        calls = read_log(log)
        if done.returncode != 0:
            cancel_left_over(calls)
            sys.exit(f"the campaign failed:\n{done.stderr[-3000:]}")
        result = analyse(calls, started, ended)
        result["population"] = args.population
        result["individuals_per_job"] = args.individuals_per_job
        result["steps"] = args.steps
        result["seeds"] = args.seeds
        result["snakemake_args"] = args.snakemake_args
        result["profile"] = {
            k: v for k, v in profile.items() if k not in ("default-resources", "set-resources")
        }
        return result


def cancel_left_over(calls: list[dict[str, Any]]) -> None:
    """scancel the workflow's jobs by the name its status polls used."""
    for call in calls:
        if "--name" in call["args"]:
            name = call["args"].split("--name", 1)[1].split()[0]
            subprocess.run(["scancel", "--name", name], check=False)
            return


def extrapolate(result: dict[str, Any], population: int) -> dict[str, Any]:
    """What a ``population``-individual generation asks, from the plugin's polling rules and the
    measured per-job counts (calls that come once per job scale with jobs; status polls do not)."""
    from hpsrl.campaign.paths import individuals_per_job

    per_job = individuals_per_job({"training": {"individuals_per_job": "auto"}}, population)
    jobs = math.ceil(population / per_job)
    init = result["profile"].get("slurm-init-seconds-before-status-checks", 40)
    return {
        "population": population,
        "individuals_per_job (auto)": per_job,
        "jobs_submitted": jobs,
        "sbatch_calls": jobs,
        "status_polls_per_minute_at_most": 60 / init,
        "status_polls_per_minute_when_no_job_ends": 60 / 180,
        "srun_calls_inside_jobs": jobs * result["inside_jobs"]["per_job"].get("srun", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--population", type=int, default=64, help="individuals (default 64)")
    parser.add_argument("--steps", type=int, default=256, help="env steps per individual")
    # Not 1: the plugin (2.8.0) refuses an MPI job of one task ("For MPI jobs, 'tasks' must be
    # greater than 1"), so a campaign with training.seeds 1 cannot run on Slurm with mpi set.
    parser.add_argument("--seeds", type=int, default=2, help="seeds (MPI ranks) per individual")
    parser.add_argument(
        "--individuals-per-job", default="auto", help="training.individuals_per_job (default auto)"
    )
    parser.add_argument("--account", default="hpsrl", help="slurm_account (test cluster: hpsrl)")
    parser.add_argument("--partition", default="debug", help="slurm_partition (default debug)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds before giving up")
    parser.add_argument(
        "snakemake_args", nargs="*", help="extra snakemake arguments (after --)", default=[]
    )
    args = parser.parse_args()
    if args.individuals_per_job != "auto":
        args.individuals_per_job = int(args.individuals_per_job)
    why = cluster_answers()
    if why:
        sys.exit(f"no Slurm cluster answers: {why}\n(start the test cluster: tests/slurm/start.sh)")

    result = run(args)
    result["extrapolated_1000"] = extrapolate(result, 1000)
    result["machine"] = machine()
    data = json.loads(RESULT.read_text()) if RESULT.exists() else {"runs": {}}
    data["benchmark"] = "slurm_load"
    data["runs"][str(args.population)] = result
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(data, indent=2) + "\n")

    outside = result["submitting_snakemake"]
    print(
        f"\npopulation {args.population}: {result['jobs_submitted']} jobs submitted in "
        f"{result['submission_seconds']:.1f} s, wall {result['wall_seconds']:.0f} s, "
        f"Slurm phase {result['slurm_phase_seconds']:.0f} s"
    )
    print("submitting snakemake (controller-facing):")
    for name, count in outside["calls"].items():
        print(
            f"  {name:22} {count:5d}   {outside['per_minute'][name]:6.2f}/min"
            f"   {outside['per_job'][name]:5.2f}/job"
        )
    print(f"  status polls apart (s): {outside['seconds_between_status_polls']}")
    print(f"inside jobs: {result['inside_jobs']['calls']}")
    print(f"1,000 individuals: {result['extrapolated_1000']}")
    print(f"wrote {RESULT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
