"""What a person reads about a campaign: a table per generation and the best individual."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hpsrl.evidence import pooled_objectives, pools_evidence
from hpsrl.evolve import RETEST_BATCH, best_candidates, best_individual, campaign_answer
from hpsrl.storage import Generation, batch_generation, read_generation, read_population

GENERATION_FILE = re.compile(r"^gen(\d{3})\.h5$")


def generation_files(campaign_dir: str | Path) -> list[Path]:
    campaign_dir = Path(campaign_dir)
    if not campaign_dir.is_dir():
        raise FileNotFoundError(
            f"{campaign_dir} is not a campaign folder (expected RESULTS_DIR/CAMPAIGN, e.g. "
            "results/cartpole-ppo)"
        )
    files = sorted(p for p in campaign_dir.iterdir() if GENERATION_FILE.match(p.name))
    if not files:
        raise FileNotFoundError(
            f"{campaign_dir} holds no finished generation (gen000.h5, ...) yet; run snakemake first"
        )
    return files


def _fmt(value: float) -> str:
    """A number for a person: 4 significant digits, never an exponent for what counts steps or
    returns (31284, not 3.128e+04), integers as integers."""
    if not np.isfinite(value):
        return "-"
    if float(value).is_integer() or abs(value) >= 1e4:
        return f"{value:.0f}"
    return f"{value:.4g}"


def plain_number(value: Any) -> Any:
    """A number for JSON or CSV: integers (and floats that are whole numbers) as int, other
    floats as float, NaN and infinities as None; anything else as it is."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not np.isfinite(value):
            return None
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    return value


def _plain_all(value: Any) -> Any:
    """:func:`plain_number` through lists, tuples, dicts and numpy arrays."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain_all(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_all(v) for k, v in value.items()}
    return plain_number(value)


def generation_summary(gen: Generation) -> dict[str, Any]:
    """One generation as ``hpsrl status`` shows it: individuals ok and failed; the leader (the
    best estimate of the primary objective, among those trained in full), with the seeds behind
    it; each objective's best and median over the valid individuals' own seeds; the failures."""
    objectives = gen.config["objectives"]
    ok = gen.ok
    found = best_individual([gen])
    leader = None
    if found is not None:
        i = found[1]
        leader = {
            "individual": int(i),
            "estimate": {
                o["name"]: plain_number(gen.estimate[i, j]) for j, o in enumerate(objectives)
            },
            "evidence_seeds": int(gen.evidence.seeds[i]),
        }
    summary: dict[str, Any] = {
        "generation": batch_generation(gen.population.batch),
        "ok": int(ok.sum()),
        "failed": int((~ok).sum()),
        "leader": leader,
        "objectives": {},
    }
    for j, o in enumerate(objectives):
        values = gen.objectives[ok, j]
        best = median = None
        if values.size:
            best = values.max() if o["direction"] == "maximize" else values.min()
            median = float(np.median(values))
        summary["objectives"][o["name"]] = {
            "direction": o["direction"],
            "best": plain_number(best) if best is not None else None,
            "median": plain_number(median) if median is not None else None,
        }
    summary["failures"] = [
        {"individual": int(i), "error": str(gen.results["error"][i])} for i in np.flatnonzero(~ok)
    ]
    return summary


def status_table(campaign_dir: str | Path) -> str:
    """Per generation: individuals ok/failed, each objective's best and median over the
    individuals' own seeds, and (pooled evidence) the leader: the best estimate of the primary
    objective, with the seeds behind it."""
    gens = [read_generation(p) for p in generation_files(campaign_dir)]
    return _status_text(gens[-1].config, [generation_summary(gen) for gen in gens])


def _status_text(config: dict[str, Any], summaries: list[dict[str, Any]]) -> str:
    objectives = config["objectives"]
    pooled = pools_evidence(config)
    header = ["gen", "ok", "failed"]
    if pooled:
        header.append(f"leader: estimated {objectives[0]['name']} (seeds)")
    for o in objectives:
        arrow = "max" if o["direction"] == "maximize" else "min"
        header += [f"best {o['name']} ({arrow})", f"median {o['name']}"]
    rows = [header]
    for gen in summaries:
        row = [f"gen{gen['generation']:03d}", str(gen["ok"]), str(gen["failed"])]
        if pooled:
            leader = gen["leader"]
            row.append(
                "-"
                if leader is None
                else f"{_cell(leader['estimate'][objectives[0]['name']])} "
                f"({leader['evidence_seeds']})"
            )
        for o in objectives:
            values = gen["objectives"][o["name"]]
            row += [_cell(values["best"]), _cell(values["median"])]
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    failures = [
        f"gen{gen['generation']:03d} individual {f['individual']}: {f['error']}"
        for gen in summaries
        for f in gen["failures"]
    ]
    if failures:
        lines += ["", "failures:", *failures]
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "-" if value is None else _fmt(value)


def status_data(campaign_dir: str | Path) -> dict[str, Any]:
    """``hpsrl status --json``: the campaign, its table per generation, and its answer (with
    its held-out test where there is one: see :func:`best_summary`)."""
    files = generation_files(campaign_dir)
    gens = [read_generation(p) for p in files]
    config = gens[-1].config
    return {
        "campaign": config["campaign"],
        "env": config["env"]["id"],
        "algorithm": config["algorithm"],
        "strategy": config.get("search", {}).get("strategy", "ga"),
        "generations_planned": config["ga"]["generations"],
        "objectives": [
            {"name": o["name"], "direction": o["direction"]} for o in config["objectives"]
        ],
        "generations": [generation_summary(gen) for gen in gens],
        "answer": _plain_all(best_summary(campaign_dir)),
    }


# -- one row per individual ---------------------------------------------------------------------


def individual_rows(campaign_dir: str | Path) -> list[dict[str, Any]]:
    """Every individual of every finished generation, in order: how it was made, its genes,
    its objectives over its own seeds, the estimate selection ranked it by and the seeds of
    evidence behind that, its front, status, and per training seed its return, training seed,
    env steps and training seconds (``hpsrl table``). Failed values are None."""
    rows = []
    for path in generation_files(campaign_dir):
        gen = read_generation(path)
        pop, results = gen.population, gen.results
        names = [o["name"] for o in gen.config["objectives"]]
        for i, individual in enumerate(pop.individuals):
            rows.append(
                {
                    "generation": batch_generation(pop.batch),
                    "individual": i,
                    "operator": pop.operators[i],
                    "parents": [int(p) for p in pop.parents[i] if p >= 0],
                    "steps": int(pop.steps[i]),
                    "genes": _plain_all(dict(individual)),
                    "objectives": dict(zip(names, _plain_all(gen.objectives[i]), strict=True)),
                    "estimate": dict(zip(names, _plain_all(gen.estimate[i]), strict=True)),
                    "evidence_seeds": int(gen.evidence.seeds[i]),
                    "front": int(gen.front[i]),
                    "status": str(results["status"][i]),
                    "error": str(results["error"][i]),
                    "returns": _plain_all(results["returns"][i]),
                    "train_seeds": _plain_all(pop.train_seeds[i]),
                    "env_steps": _plain_all(results["env_steps"][i]),
                    "train_seconds": _plain_all(results["train_seconds"][i]),
                }
            )
    return rows


PER_SEED_COLUMNS = ("returns", "train_seeds", "env_steps", "train_seconds")


def rows_json(rows: list[dict[str, Any]]) -> str:
    """A JSON array, one individual per line."""
    return "[\n" + ",\n".join(json.dumps(row) for row in rows) + ("\n" if rows else "") + "]\n"


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with a header: the rows' nested mappings flattened to ``genes.NAME``,
    ``objectives.NAME`` and ``estimate.NAME`` (as pandas.json_normalize names them), per-seed
    lists to ``returns.seedK`` and so on, other lists (parents, list genes) as JSON text, None
    as an empty cell."""
    flat = []
    for row in rows:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, dict):
                for name, v in value.items():
                    out[f"{key}.{name}"] = v
            elif key in PER_SEED_COLUMNS:
                for k, v in enumerate(value):
                    out[f"{key}.seed{k}"] = v
            else:
                out[key] = value
        flat.append(out)
    columns: dict[str, None] = {}
    for out in flat:
        columns.update(dict.fromkeys(out))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for out in flat:
        writer.writerow(_csv_cell(out.get(column)) for column in columns)
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, float):
        return np.format_float_positional(value, trim="-")
    return str(value)


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
