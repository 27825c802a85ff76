"""Per-job Slurm cost for short training jobs: one Slurm job per individual vs job arrays.

(With snakemake-executor-plugin-slurm 2.8.0 the array mode fails: every array task trains the
first individual. It is kept here to check future plugin versions.)

Runs one generation of a small campaign (8 individuals x 2 seeds, 20k steps each) through a Slurm
cluster two ways and reports the wall time of each:

- ``per-individual``: the default, one Slurm job per training job;
- ``array``: ``--slurm-array-jobs train_individual``, one job array per generation.

Snakemake's job groups (``--groups train_individual=generation --group-components generation=4``)
are not measured: with the slurm executor plugin 2.8.0 a group of these MPI jobs asked Slurm for
one node per member and stayed pending on a one-node cluster.

Needs a running cluster (as root: tests/slurm/start.sh) and uses tests/slurm/profile.
Usage: python benchmarks/slurm_grouping.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _bench import write_json

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

MODES = {
    "per-individual": [],
    "array": ["--slurm-array-jobs", "train_individual"],
}


def campaign_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(campaign="grouping")
    config["training"].update(steps=20_000, seeds=2)
    config["ga"].update(population=8, generations=1)
    config["report"] = {"retest_seeds": 0}
    return config


def run(mode: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("Snakefile", "workflow", "config", "profiles"):
            copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
            copy(REPO / name, work / name)
        shutil.copytree(REPO / "tests" / "slurm" / "profile", work / "slurm-profile")
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(campaign_config()))
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        command = [str(BIN / "snakemake"), "--profile", "slurm-profile", *MODES[mode]]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
        return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in MODES:  # interleaved, so load changes hit every mode alike
            walls[mode].append(run(mode))
            print(f"{mode:>15}: {walls[mode][-1]:6.1f} s", flush=True)
    print("\nmode             median wall (s)")
    for mode, values in walls.items():
        print(f"{mode:>15}  {sorted(values)[len(values) // 2]:8.1f}")
    write_json("slurm_grouping", {"walls_s": walls, "config": campaign_config()})


if __name__ == "__main__":
    main()
