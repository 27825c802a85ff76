"""How hpsrl's costs grow with the population and the number of generations.

Four curves, each from real hpsrl code on synthetic results (nothing is trained, so the numbers
are the bookkeeping alone):

- planning: ``snakemake -n`` of a campaign of POPULATION x GENERATIONS (wall seconds and peak
  memory of the snakemake process), with ``training.individuals_per_job: auto``;
- collect and evolve: building a generation record of N individuals (objectives, pooled evidence,
  estimates, fronts and rank keys) and proposing the next generation from it, in-process;
- readers: ``hpsrl status``, ``hpsrl best`` and ``hpsrl report`` on a campaign of G generations of
  64 individuals, each a fresh process (imports included);
- storage: HDF5 bytes per individual in a generation record.

    python benchmarks/scaling.py                 # the default grid, a few minutes
    python benchmarks/scaling.py --quick         # a smaller grid

Writes ``benchmarks/out/scaling.json`` and a plot ``benchmarks/plots/scaling.png``; commit the
small summary ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench
import numpy as np
import yaml

sys.path.insert(0, str(_bench.REPO))  # tests.conftest's tiny campaign

from hpsrl.campaign.config import load_config
from hpsrl.campaign.storage import write_generation
from hpsrl.search.evolve import initial_population, next_population
from hpsrl.search.generation import generation_record
from tests.conftest import TINY, copy_workflow

NAME = "scaling"


def tiny(population: int, generations: int) -> dict[str, Any]:
    config = copy.deepcopy(TINY)
    config["budget"].update(population=population, generations=generations)
    config["training"]["individuals_per_job"] = "auto"
    return config


def fake_results(population, rng: np.random.Generator) -> dict[str, Any]:
    """Per-seed results of a population, as training would write them (random returns)."""
    n, s = len(population), population.train_seeds.shape[1]
    returns = rng.uniform(0, 500, (n, s))
    return {
        "returns": returns,
        "episode_returns": returns[..., None].repeat(3, axis=2),
        "steps_to_threshold": rng.uniform(0, 1024, (n, s)),
        "env_steps": np.repeat(population.steps[:, None], s, axis=1),
        "train_seconds": rng.uniform(0.5, 2, (n, s)),
        "eval_seconds": np.full((n, s), 0.1),
        "curve_steps": np.arange(1, 5) * 256,
        "curve_returns": rng.uniform(0, 500, (n, s, 4)),
        "lineage_env_steps": np.repeat(population.steps[:, None], s, axis=1),
        "status": np.array(["ok"] * n),
        "error": np.array([""] * n),
    }


def plan(population: int, generations: int) -> dict[str, float]:
    """snakemake -n of a whole campaign: wall seconds and the peak RSS of the process."""
    with tempfile.TemporaryDirectory() as folder:
        workdir = copy_workflow(Path(folder))
        config = yaml.safe_dump(tiny(population, generations))
        (workdir / "config" / "config.yaml").write_text(config)
        started = time.perf_counter()
        done = subprocess.run(  # GNU time prints the peak RSS (KiB) as stderr's last line
            ["/usr/bin/time", "-f", "%M", str(_bench.BIN / "snakemake"), "-n", "--quiet"],
            cwd=workdir, env=_bench.child_env(), capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
    rss = int(done.stderr.strip().splitlines()[-1]) / 1024
    return {"population": population, "generations": generations, "seconds": wall,
            "peak_rss_mib": rss}  # fmt: skip


def collect_and_evolve(population: int) -> dict[str, float]:
    """A generation record of ``population`` individuals (after one that it pools with) and the
    next population from it, in this process."""
    config = load_config(tiny(population, 3))
    rng = np.random.default_rng(0)
    pop0 = initial_population(config)
    gen0 = generation_record(pop0, fake_results(pop0, rng))
    pop1 = next_population([gen0], config)
    results = fake_results(pop1, rng)
    started = time.perf_counter()
    gen1 = generation_record(pop1, results, gen0)
    recorded = time.perf_counter()
    next_population([gen1], config)
    evolved = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "gen001.h5"
        write_generation(path, gen1)
        size = path.stat().st_size
    return {
        "population": population,
        "record_seconds": recorded - started,
        "evolve_seconds": evolved - recorded,
        "hdf5_bytes_per_individual": size / population,
    }


def readers(generations: int, population: int = 64) -> dict[str, float]:
    """hpsrl status, best and report on a campaign of ``generations`` synthetic generations."""
    config = load_config(tiny(population, generations))
    rng = np.random.default_rng(1)
    out: dict[str, float] = {"generations": generations, "population": population}
    with tempfile.TemporaryDirectory() as folder:
        campaign = Path(folder) / "tiny"
        pop, previous = initial_population(config), None
        for g in range(generations):
            record = generation_record(pop, fake_results(pop, rng), previous)
            write_generation(campaign / f"gen{g:03d}.h5", record)
            previous, pop = record, next_population([record], config)
        for command in (["status"], ["best"], ["report", "--out", str(Path(folder) / "r.html")]):
            started = time.perf_counter()
            subprocess.run([str(_bench.BIN / "hpsrl"), command[0], str(campaign), *command[1:]],
                           env=_bench.child_env(), capture_output=True, check=True)  # fmt: skip
            out[f"{command[0]}_seconds"] = time.perf_counter() - started
    return out


def plot_curves(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 3.8), layout="constrained")
    axes = figure.subplots(1, 3)
    rows = result["planning"]
    for generations in sorted({r["generations"] for r in rows}):
        mine = [r for r in rows if r["generations"] == generations]
        axes[0].plot([r["population"] for r in mine], [r["seconds"] for r in mine], marker="o",
                     label=f"{generations} generations")  # fmt: skip
    axes[0].set(xscale="log", yscale="log", xlabel="population", ylabel="seconds",
                title="snakemake -n (individuals_per_job: auto)")  # fmt: skip
    axes[0].legend()
    rows = result["collect_evolve"]
    x = [r["population"] for r in rows]
    axes[1].plot(x, [r["record_seconds"] for r in rows], marker="o", label="collect (record)")
    axes[1].plot(x, [r["evolve_seconds"] for r in rows], marker="o", label="evolve")
    axes[1].set(xscale="log", yscale="log", xlabel="population", ylabel="seconds",
                title="one generation, in-process")  # fmt: skip
    axes[1].legend()
    rows = result["readers"]
    x = [r["generations"] for r in rows]
    for name in ("status", "best", "report"):
        axes[2].plot(x, [r[f"{name}_seconds"] for r in rows], marker="o", label=f"hpsrl {name}")
    axes[2].set(xlabel="generations (of 64)", ylabel="seconds", title="readers, fresh processes")
    axes[2].legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid")
    args = parser.parse_args(argv)
    os.environ.update(_bench.ONE_THREAD)
    if args.quick:
        grid = {"planning": [(64, 10), (256, 10)], "collect": [64, 256], "readers": [5, 20]}
    else:
        grid = {
            "planning": [(p, g) for g in (10, 100) for p in (64, 256, 1024)],
            "collect": [64, 256, 1024, 4096],
            "readers": [10, 50, 100],
        }
    result: dict[str, Any] = {"planning": [], "collect_evolve": [], "readers": []}
    for population, generations in grid["planning"]:
        result["planning"].append(plan(population, generations))
        print(result["planning"][-1], flush=True)
    for population in grid["collect"]:
        result["collect_evolve"].append(collect_and_evolve(population))
        print(result["collect_evolve"][-1], flush=True)
    for generations in grid["readers"]:
        result["readers"].append(readers(generations))
        print(result["readers"][-1], flush=True)
    result["load_average_at_end"] = os.getloadavg()
    path = _bench.write_json(NAME, result)
    summary = _bench.BENCH_DIR / "results" / f"{NAME}.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(json.loads(path.read_text()), indent=1) + "\n")
    plot_curves(result, _bench.BENCH_DIR / "plots" / f"{NAME}.png")
    print(f"written {path}, {summary}")


if __name__ == "__main__":
    main()
