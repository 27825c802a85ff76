"""Per-job Slurm cost for short trainings: one Slurm job per individual vs several per job.

Runs one generation of a small campaign (8 individuals x 2 seeds, 20k steps each) through a Slurm
cluster in several ways, one Slurm job at a time (``--jobs 1``: the test cluster advertises 8 CPUs,
2 nodes x 4, on 2 real cores, so concurrent jobs would share cores and hide the per-job cost), and
reports the wall time of each and the seconds per training job that are not training:

- ``1 per job``: the default, one Slurm job per individual;
- ``4 per job``, ``8 per job``: ``training.individuals_per_job`` 4 and 8 (2 jobs, 1 job);
- ``array``: one job per individual, submitted as one job array per generation
  (``--slurm-array-jobs train_individuals``); recorded as failed if it fails.

Snakemake's job groups (``--groups``) are not measured: with the slurm executor plugin 2.8.0 a group
of these MPI jobs asked Slurm for one node per member and stayed pending on a one-node cluster.

Needs a running cluster (as root: tests/slurm/start.sh) and uses tests/slurm/profile.
Usage: python benchmarks/slurm_grouping.py [--repeats N] [--modes MODE ...]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import yaml
from _bench import write_json

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# mode: (individuals per job, extra snakemake arguments)
MODES = {
    "1 per job": (1, []),
    "4 per job": (4, []),
    "8 per job": (8, []),
    "array": (1, ["--slurm-array-jobs", "train_individuals"]),
}


def campaign_config(individuals_per_job: int = 1) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(campaign="grouping")
    config["training"].update(steps=20_000, seeds=2, individuals_per_job=individuals_per_job)
    config["budget"] = {"population": 8, "generations": 1}
    config["retest"] = {"seeds": 0}
    return config


def run(mode: str) -> dict[str, float] | None:
    """Wall seconds of the campaign in this mode, and of its training; None if it failed."""
    individuals_per_job, extra = MODES[mode]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("Snakefile", "workflow", "config", "profiles"):
            copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
            copy(REPO / name, work / name)
        shutil.copytree(REPO / "tests" / "slurm" / "profile", work / "slurm-profile")
        config = campaign_config(individuals_per_job)
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        command = [str(BIN / "snakemake"), "--profile", "slurm-profile", "--jobs", "1", *extra]
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=1800
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(f"{mode} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
        with h5py.File(work / "results" / "grouping" / "gen000.h5", "r") as f:
            seconds = np.asarray(f["results/train_seconds"]) + np.asarray(f["results/eval_seconds"])
        training = float(seconds.max(axis=1).sum())  # the ranks wait for each other
        jobs = math.ceil(len(seconds) / individuals_per_job)
        return {"wall": wall, "training": training, "overhead_per_job": (wall - training) / jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float] | None]] = {mode: [] for mode in args.modes}
    for _ in range(args.repeats):
        for mode in args.modes:  # interleaved, so load changes hit every mode alike
            runs[mode].append(run(mode))
            print(f"{mode:>10}: {runs[mode][-1]}", flush=True)
    print("\nmode        wall s   training s   not training, per job s   (medians)")
    for mode, values in runs.items():
        ok = [v for v in values if v is not None]
        if not ok:
            print(f"{mode:>10}  failed")
            continue
        median = {key: statistics.median(v[key] for v in ok) for key in ok[0]}
        print(
            f"{mode:>10}  {median['wall']:6.1f}   {median['training']:10.1f}   "
            f"{median['overhead_per_job']:23.1f}"
        )
    write_json(
        "slurm_grouping", {"runs": runs, "config": campaign_config(), "load": os.getloadavg()}
    )


if __name__ == "__main__":
    main()
