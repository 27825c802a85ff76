"""Search strategies compared on one budget: ``hpsrl compare`` (what ``snakemake compare`` runs).

Each campaign is one search (a strategy on a search seed); its trace is the best primary objective
found so far after each generation, against the individuals trained by then. Traces of one
strategy are summarised over search seeds (mean, and the range as a band in the plot), next to the
re-test of each search's best on fresh seeds, which says what was really found rather than what one
lucky draw showed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hpsrl.config import ConfigError, changed_keys
from hpsrl.storage import read_generation, write_text_atomic
from hpsrl.summary import best_summary, generation_files

# What must be equal for searches to be compared on the same problem and budget (keys that do not
# change what results mean, such as training.individuals_per_job, may differ).
SAME_PROBLEM = ("env", "algorithm", "genes", "fixed", "training", "objectives", "ga.population")


@dataclass
class SearchTrace:
    campaign: str
    strategy: str
    config: dict[str, Any]
    trained: np.ndarray  # individuals trained after each generation
    best: np.ndarray  # the best primary objective found by then (NaN while none is valid)
    core_seconds: float  # training time over all individuals and seeds
    retest_mean: float | None  # mean return of the best re-tested on fresh seeds


def search_trace(campaign_dir: str | Path) -> SearchTrace:
    generations = [read_generation(path) for path in generation_files(campaign_dir)]
    config = generations[-1].config
    maximize = config["objectives"][0]["direction"] == "maximize"
    per_generation = []
    for gen in generations:
        valid = gen.objectives[gen.ok, 0]
        if valid.size == 0:
            per_generation.append(np.nan)
        else:
            per_generation.append(valid.max() if maximize else valid.min())
    accumulate = np.fmax.accumulate if maximize else np.fmin.accumulate  # NaN-ignoring
    retest = best_summary(campaign_dir).get("retest")
    return SearchTrace(
        campaign=config["campaign"],
        strategy=config["search"]["strategy"],
        config=config,
        trained=np.cumsum([len(gen.population) for gen in generations]),
        best=accumulate(np.asarray(per_generation, dtype=float)),
        core_seconds=float(sum(np.nansum(g.results["train_seconds"]) for g in generations)),
        retest_mean=retest["mean_return"] if retest and retest["status"] == "ok" else None,
    )


def check_comparable(traces: Sequence[SearchTrace]) -> None:
    first = traces[0]
    for trace in traces[1:]:
        differing = [
            key
            for key in changed_keys(first.config, trace.config)
            if any(key == k or key.startswith(f"{k}.") for k in SAME_PROBLEM)
        ]
        if differing:
            raise ConfigError(
                f"{trace.campaign} and {first.campaign} differ in {', '.join(differing)}: only "
                "searches of the same problem and budget can be compared"
            )


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    numbers = np.array([np.nan if v is None else v for v in values], dtype=float)
    finite = numbers[np.isfinite(numbers)]
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "per_search_seed": [None if not np.isfinite(v) else float(v) for v in numbers],
    }


def summary(traces: Sequence[SearchTrace]) -> dict[str, Any]:
    config = traces[0].config
    objective = config["objectives"][0]
    out: dict[str, Any] = {
        "env": config["env"]["id"],
        "algorithm": config["algorithm"],
        "objective": objective["name"],
        "direction": objective["direction"],
        "budget": {
            "population": config["ga"]["population"],
            "seeds_per_individual": config["training"]["seeds"],
            "steps_per_seed": config["training"]["steps"],
        },
        "strategies": {},
    }
    for strategy in dict.fromkeys(t.strategy for t in traces):
        mine = [t for t in traces if t.strategy == strategy]
        out["strategies"][strategy] = {
            "campaigns": [t.campaign for t in mine],
            "individuals_trained": [int(t.trained[-1]) for t in mine],
            "best_found": _stats([float(t.best[-1]) for t in mine]),
            "best_retested_on_fresh_seeds": _stats([t.retest_mean for t in mine]),
            "train_core_seconds": _stats([t.core_seconds for t in mine]),
        }
    return out


def plot(traces: Sequence[SearchTrace], out: str | Path) -> None:
    from matplotlib.figure import Figure

    config = traces[0].config
    objective = config["objectives"][0]
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = figure.subplots()
    for strategy in dict.fromkeys(t.strategy for t in traces):
        mine = [t for t in traces if t.strategy == strategy]
        length = min(len(t.trained) for t in mine)  # searches still running may be shorter
        x = mine[0].trained[:length]
        best = np.array([t.best[:length] for t in mine])
        (line,) = ax.plot(x, np.nanmean(best, axis=0), marker="o",
                          label=f"{strategy} (mean of {len(mine)} search seeds)")  # fmt: skip
        ax.fill_between(x, np.nanmin(best, axis=0), np.nanmax(best, axis=0),
                        color=line.get_color(), alpha=0.2)  # fmt: skip
    better = "higher" if objective["direction"] == "maximize" else "lower"
    ax.set_title(
        f"{config['algorithm']} on {config['env']['id']}: best {objective['name']} found\n"
        f"(population {config['ga']['population']}, {config['training']['seeds']} seeds x "
        f"{config['training']['steps']} steps per individual; band: range over search seeds)"
    )
    ax.set_xlabel("individuals trained")
    ax.set_ylabel(f"best {objective['name']} so far ({better} is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def compare(campaign_dirs: Sequence[str | Path], plot_path: Path, summary_path: Path) -> None:
    traces = [search_trace(d) for d in campaign_dirs]
    check_comparable(traces)
    plot(traces, plot_path)
    write_text_atomic(summary_path, yaml.safe_dump(summary(traces), sort_keys=False))
