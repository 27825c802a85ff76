"""What a person reads about a campaign: a table per generation and the best individual."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hpsrl.campaign import RETEST_BATCH, generation_files
from hpsrl.evidence import pooled_objectives, pools_evidence
from hpsrl.evolve import best_candidates, best_individual, campaign_answer
from hpsrl.storage import Generation, read_generation, read_population


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{value:.4g}"


def status_table(campaign_dir: str | Path) -> str:
    """Per generation: individuals ok/failed, each objective's best and median over the
    individuals' own seeds, and (pooled evidence) the leader: the best estimate of the primary
    objective, with the seeds behind it."""
    gens = [read_generation(p) for p in generation_files(campaign_dir)]
    objectives = gens[0].config["objectives"]
    pooled = pools_evidence(gens[-1].config)
    header = ["gen", "ok", "failed"]
    if pooled:
        header.append(f"leader: estimated {objectives[0]['name']} (seeds)")
    for o in objectives:
        arrow = "max" if o["direction"] == "maximize" else "min"
        header += [f"best {o['name']} ({arrow})", f"median {o['name']}"]
    rows = [header]
    for gen in gens:
        ok = gen.ok
        row = [gen.population.batch, str(int(ok.sum())), str(int((~ok).sum()))]
        if pooled:
            found = best_individual([gen])
            row.append(
                "-"
                if found is None
                else f"{_fmt(gen.estimate[found[1], 0])} ({gen.evidence.seeds[found[1]]})"
            )
        for j, o in enumerate(objectives):
            values = gen.objectives[ok, j]
            if values.size:
                best = values.max() if o["direction"] == "maximize" else values.min()
                row += [_fmt(best), _fmt(float(np.median(values)))]
            else:
                row += ["-", "-"]
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    failures = [
        f"{gen.population.batch} individual {i}: {gen.results['error'][i]}"
        for gen in gens
        for i in np.flatnonzero(~gen.ok)
    ]
    if failures:
        lines += ["", "failures:", *failures]
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """numpy scalars and arrays to plain YAML-able values."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


def best_summary(campaign_dir: str | Path) -> dict[str, Any]:
    """The campaign's answer (hpsrl.evolve.campaign_answer):
    first its held-out re-test on fresh seeds when the campaign has one, then its
    hyperparameters, objectives over all the seeds it was trained on (their number), the
    estimate selection ranked it by (pooled evidence), and its own per-seed returns."""
    campaign_dir = Path(campaign_dir)
    files = generation_files(campaign_dir)
    config = read_population(files[-1]).config
    candidates = [read_generation(path) for path in best_candidates(config, files)]
    found = campaign_answer(config, candidates)
    summary: dict[str, Any] = {
        "campaign": config["campaign"],
        "env": config["env"]["id"],
        "algorithm": config["algorithm"],
    }
    if found is None:
        batches = ", ".join(g.population.batch for g in candidates)
        summary |= {
            "generation": batches,
            "individual": None,
            "note": f"every individual of {batches} failed; see: hpsrl status",
        }
        return summary
    source, best = found
    retest = _retest_of(campaign_dir, source, best, config)
    if retest is not None:  # what people quote first: seeds that nothing selected on
        summary["retest"] = retest
    names = [o["name"] for o in config["objectives"]]
    evidence = source.evidence
    pooled = pooled_objectives(evidence, config["training"]["aggregate"])[best]
    summary |= {
        "generation": source.population.batch,
        "individual": best,
        "hyperparameters": source.population.hyperparameters(best),
        "objectives": dict(zip(names, _plain(pooled), strict=True)),
        "evidence_seeds": int(evidence.seeds[best]),
    }
    if pools_evidence(config):
        summary["estimate"] = dict(zip(names, _plain(source.estimate[best]), strict=True))
    summary |= {
        "returns_per_seed": _plain(source.results["returns"][best]),
        "train_seeds": _plain(source.population.train_seeds[best]),
    }
    if config.get("ga", {}).get("inherit_weights", False):
        # its weights trained on through its ancestors, not for training.steps alone
        summary["lineage_env_steps"] = _plain(source.results["lineage_env_steps"][best])
    return summary


def _retest_of(
    campaign_dir: Path, source: Generation, best: int, config: dict[str, Any]
) -> dict[str, Any] | None:
    """The held-out re-test of individual ``best`` of ``source``, if the campaign has one."""
    retest_file = campaign_dir / f"{RETEST_BATCH}.h5"
    if not retest_file.exists():
        return None
    retest = read_generation(retest_file)
    # A re-test planned before the campaign was extended may be of an earlier best.
    if (
        int(retest.population.parents[0, 0]) != best
        or retest.population.individuals[0] != source.population.individuals[best]
    ):
        return None
    out = {
        "status": str(retest.results["status"][0]),
        "mean_return": _plain(float(np.mean(retest.results["returns"][0]))),
        "returns_per_seed": _plain(retest.results["returns"][0]),
        "train_seeds": _plain(retest.population.train_seeds[0]),
    }
    if config.get("ga", {}).get("inherit_weights", False):
        out["note"] = "trained from scratch for training.steps, without the inherited weights"
    return out


def best_yaml(campaign_dir: str | Path) -> str:
    return yaml.safe_dump(best_summary(campaign_dir), sort_keys=False)
