"""Search strategies compared on one budget: ``hpsrl compare`` (what ``snakemake compare`` runs).

Each campaign is one search (a strategy, or a variant of one, on a search seed). What counts is its
held-out test: the configuration it returns, trained again on fresh seeds that nothing selected on.
Its trace is the primary objective of the configuration it would return after each generation, as
the search saw it (over all the seeds behind it), against the environment steps trained by then, so
that strategies are compared at equal env steps. Traces of one strategy are summarised over search
seeds (mean, and the range as a band in the plot), next to the held-out test of each search's
answer (the plot's second panel): the gap between the two is the winner's curse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hpsrl.campaign.config import ConfigError
from hpsrl.campaign.evidence import pooled_objectives
from hpsrl.campaign.identity import problem_differences
from hpsrl.campaign.paths import generation_files
from hpsrl.campaign.storage import check_replaceable, read_generations, write_text_atomic
from hpsrl.readers.summary import best_summary
from hpsrl.search.evolve import best_of
from hpsrl.search.moo import better_words


@dataclass
class SearchTrace:
    campaign: str
    strategy: str  # the variant's name (compare.variant), else search.strategy
    config: dict[str, Any]
    env_steps: np.ndarray  # env steps trained after each generation (the re-test not counted)
    best: np.ndarray  # the answer's primary objective as the search saw it (NaN: none valid)
    core_seconds: float  # training time over all individuals and seeds
    retest_mean: float | None  # mean return of the answer re-tested on fresh seeds (held out)


def search_trace(campaign_dir: str | Path) -> SearchTrace:
    """One search: after each generation, the configuration it would return (see
    hpsrl.search.evolve.best_of) and its primary objective over all the seeds behind it."""
    generations = read_generations(generation_files(campaign_dir))
    config = generations[-1].config
    answers = []
    for g in range(len(generations)):
        found = best_of(generations[: g + 1])
        if found is None:
            answers.append(np.nan)
        else:
            gen, i = found
            aggregate = config["training"]["aggregate"]
            answers.append(pooled_objectives(gen.evidence, aggregate)[i, 0])
    retest = best_summary(campaign_dir).get("retest")
    return SearchTrace(
        campaign=config["campaign"],
        strategy=config.get("compare", {}).get("variant") or config["search"]["strategy"],
        config=config,
        env_steps=np.cumsum([np.sum(gen.results["env_steps"]) for gen in generations]),
        best=np.asarray(answers, dtype=float),
        core_seconds=float(sum(np.nansum(g.results["train_seconds"]) for g in generations)),
        retest_mean=retest["mean_return"] if retest and retest["status"] == "ok" else None,
    )


def check_comparable(traces: Sequence[SearchTrace]) -> None:
    first = traces[0]
    for trace in traces[1:]:
        differing = problem_differences(first.config, trace.config)
        if differing:
            raise ConfigError(
                f"{trace.campaign} and {first.campaign} differ in {', '.join(differing)}: only "
                "searches of the same problem and budget can be compared"
            )


def by_strategy(traces: Sequence[SearchTrace]) -> dict[str, list[SearchTrace]]:
    """The traces of each strategy (its searches over search seeds), strategies in first-seen
    order."""
    grouped: dict[str, list[SearchTrace]] = {}
    for trace in traces:
        grouped.setdefault(trace.strategy, []).append(trace)
    return grouped


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
            "population": config["budget"]["population"],
            "generations": config["budget"]["generations"],
            "seeds_per_individual": config["training"]["seeds"],
            "steps_per_seed": config["training"]["steps"],
        },
        "strategies": {},
    }
    for strategy, mine in by_strategy(traces).items():
        out["strategies"][strategy] = {
            "campaigns": [t.campaign for t in mine],
            # the answer trained again on fresh seeds that nothing selected on
            "heldout": _stats([t.retest_mean for t in mine]),
            # the answer's score as the search saw it, over all the seeds behind it
            "in_search": _stats([float(t.best[-1]) for t in mine]),
            "env_steps": _stats([float(t.env_steps[-1]) for t in mine]),
            "train_core_seconds": _stats([t.core_seconds for t in mine]),
        }
    return out


def plot(traces: Sequence[SearchTrace], out: str | Path) -> None:
    """Two panels: each strategy's answer as the search saw it against env steps trained (mean
    over search seeds, band: their range), and each search's answer as the search saw it next to
    its held-out test on fresh seeds (what was really found)."""
    from matplotlib.figure import Figure

    config = traces[0].config
    objective = config["objectives"][0]
    better = better_words(objective["direction"])
    grouped = by_strategy(traces)
    figure = Figure(figsize=(12, 4.8), layout="constrained")
    search_ax, retest_ax = figure.subplots(1, 2, width_ratios=(3, 2))
    colors = {}
    for strategy, mine in grouped.items():
        length = min(len(t.env_steps) for t in mine)  # searches still running may be shorter
        x = np.mean([t.env_steps[:length] for t in mine], axis=0)
        best = np.array([t.best[:length] for t in mine])
        seeds = "one search seed" if len(mine) == 1 else f"mean of {len(mine)} search seeds"
        label = f"{strategy} ({seeds})"
        (line,) = search_ax.plot(x, np.nanmean(best, axis=0), marker="o", label=label)
        colors[strategy] = line.get_color()
        low, high = np.nanmin(best, axis=0), np.nanmax(best, axis=0)
        search_ax.fill_between(x, low, high, color=line.get_color(), alpha=0.1)
        for edge in (low, high):  # band edges drawn, so that overlapping bands stay readable
            search_ax.plot(x, edge, color=line.get_color(), linewidth=0.8, alpha=0.6, ls="--")
    search_ax.set_title(
        f"{config['algorithm']} on {config['env']['id']}: the search's answer as it saw it\n"
        f"(population {config['budget']['population']}, {config['training']['seeds']} seeds x "
        f"{config['training']['steps']} steps per individual; dashed: range over search seeds)"
    )
    search_ax.set_xlabel("environment steps trained")
    search_ax.set_ylabel(f"{objective['name']} of the answer so far ({better})")
    search_ax.grid(alpha=0.3)
    search_ax.legend()

    for i, (strategy, mine) in enumerate(grouped.items()):
        seen = np.array([t.best[-1] for t in mine], dtype=float)
        fresh = np.array([np.nan if t.retest_mean is None else t.retest_mean for t in mine])
        offsets = np.linspace(-0.08, 0.08, len(mine)) if len(mine) > 1 else np.zeros(1)
        color = colors[strategy]
        for k in range(len(mine)):  # one search: its best as seen, then re-tested
            retest_ax.plot([i - 0.2 + offsets[k], i + 0.2 + offsets[k]], [seen[k], fresh[k]],
                           color=color, alpha=0.35, linewidth=1)  # fmt: skip
        retest_ax.scatter(i - 0.2 + offsets, seen, facecolors="none", edgecolors=color, zorder=3)
        retest_ax.scatter(i + 0.2 + offsets, fresh, color=color, zorder=3)
        for where, values in ((i - 0.2, seen), (i + 0.2, fresh)):
            if np.isfinite(values).any():
                retest_ax.hlines(np.nanmean(values), where - 0.14, where + 0.14, color="black")
    retest_ax.scatter([], [], facecolors="none", edgecolors="grey", label="seen in the search")
    retest_ax.scatter([], [], color="grey", label="held-out test: fresh seeds")
    retest_ax.plot([], [], color="black", label="mean over search seeds")
    retest_ax.set_xticks(range(len(grouped)), list(grouped))
    retest_ax.set_xlim(-0.6, len(grouped) - 0.4)
    retest_ax.set_title("each search's answer:\nin the search vs trained again on fresh seeds")
    retest_ax.set_xlabel("strategy (one pair of points per search seed)")
    retest_ax.set_ylabel(f"{objective['name']} ({better})")
    retest_ax.grid(alpha=0.3, axis="y")
    retest_ax.legend(fontsize="small")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def compare(campaign_dirs: Sequence[str | Path], plot_path: Path, summary_path: Path) -> None:
    check_replaceable(plot_path)  # before any reading: neither a folder nor a device
    check_replaceable(summary_path)
    traces = [search_trace(d) for d in campaign_dirs]
    check_comparable(traces)
    plot(traces, plot_path)
    write_text_atomic(summary_path, yaml.safe_dump(summary(traces), sort_keys=False))
