"""From a population's training results to its generation record: objectives, fronts and ranks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpsrl.config import config_hash
from hpsrl.moo import non_dominated_sort, nsga2_rank_key, to_losses
from hpsrl.storage import (
    PER_SEED_DATASETS,
    CorruptResultError,
    Generation,
    Population,
    read_individual_arrays,
)

AGGREGATES = {"mean": np.mean, "median": np.median, "min": np.min}


def compute_objectives(results: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> np.ndarray:
    """(individuals, objectives) values; NaN rows for failed individuals.

    steps_to_threshold counts a seed that never reached the threshold as the whole budget.
    """
    aggregate = AGGREGATES[config["training"]["aggregate"]]
    per_seed = {
        "return": results["returns"],
        "steps_to_threshold": np.minimum(
            results["steps_to_threshold"], float(config["training"]["steps"])
        ),
        "train_seconds": results["train_seconds"],
    }
    columns = [aggregate(per_seed[o["name"]], axis=1) for o in config["objectives"]]
    values = np.stack(columns, axis=1).astype(float)
    values[results["status"] != "ok"] = np.nan
    return values


def collect(population: Population, individual_paths: Sequence[str | Path]) -> Generation:
    """Stack the individuals' result files (in population order) into a Generation."""
    if len(individual_paths) != len(population):
        raise ValueError(
            f"{population.batch}: {len(individual_paths)} result files for "
            f"{len(population)} individuals"
        )
    rows = [read_individual_arrays(path) for path in individual_paths]
    expected_hash = config_hash(population.config)
    for path, row in zip(individual_paths, rows, strict=True):
        if row["config_hash"] != expected_hash:
            raise CorruptResultError(
                f"{path} was trained for another config (hash {row['config_hash']}, this "
                f"campaign has {expected_hash}); delete it and rerun snakemake",
                path,
            )
    results: dict[str, Any] = {
        name: np.stack([r[name] for r in rows]) for name in PER_SEED_DATASETS
    }
    results["curve_steps"] = rows[0]["curve_steps"]
    results["lineage_env_steps"] = np.stack([r["lineage_env_steps"] for r in rows])
    results["status"] = np.array([r["status"] for r in rows])
    results["error"] = np.array([r["error"] for r in rows])
    return generation_record(population, results)


def generation_record(population: Population, results: dict[str, Any]) -> Generation:
    """A population with its stacked per-seed results, objectives, fronts and selection keys."""
    objectives = compute_objectives(results, population.config)
    directions = [o["direction"] for o in population.config["objectives"]]
    return Generation(
        population=population,
        results=results,
        objectives=objectives,
        front=non_dominated_sort(to_losses(objectives, directions)),
        rank_key=nsga2_rank_key(objectives, directions),
    )


def best_index(gen: Generation) -> int | None:
    """The valid individual with the best primary (first) objective; None if all failed.

    Ties are broken by the NSGA-II rank key, then by index.
    """
    ok = np.flatnonzero(gen.ok)
    if ok.size == 0:
        return None
    primary = gen.config["objectives"][0]
    sign = -1.0 if primary["direction"] == "maximize" else 1.0
    loss = sign * gen.objectives[ok, 0]
    order = np.lexsort((ok, gen.rank_key[ok], loss))
    return int(ok[order[0]])
