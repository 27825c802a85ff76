"""What a person reads about a campaign: a table per generation and the best individual."""

from __future__ import annotations

import csv
import io
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from hpsrl.campaign.evidence import pooled_objectives, pools_evidence
from hpsrl.campaign.model import Generation
from hpsrl.campaign.paths import RETEST_BATCH, batch_generation, batch_name, generation_files
from hpsrl.campaign.storage import StorageError, read_generations, read_population
from hpsrl.readers.progress import campaign_progress, latest_config, progress_line
from hpsrl.search.evolve import best_candidates, best_of, generation_leader
from hpsrl.search.moo import best_value, higher_is_better


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


def plain_values(value: Any) -> Any:
    """:func:`plain_number` through lists, tuples, dicts and numpy arrays."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain_values(v) for v in value]
    if isinstance(value, dict):
        return {k: plain_values(v) for k, v in value.items()}
    return plain_number(value)


def generation_summary(gen: Generation) -> dict[str, Any]:
    """One generation as ``hpsrl status`` shows it: individuals ok and failed; the leader (the
    best estimate of the primary objective, among those trained in full), with the seeds behind
    it; each objective's best and median over the valid individuals' own seeds; the failures."""
    objectives = gen.config["objectives"]
    ok = gen.ok
    i = generation_leader(gen)
    leader = None
    if i is not None:
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
            best = best_value(values, o["direction"])
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


def status_table(campaign_dir: str | Path, gens: Sequence[Generation] | None = None) -> str:
    """Per generation: individuals ok/failed, each objective's best and median over the
    individuals' own seeds, and (pooled evidence) the leader: the best estimate of the primary
    objective, with the seeds behind it; then where the campaign is (:mod:`hpsrl.readers.progress`).
    ``gens``: the finished generations where the caller has read them already."""
    if gens is None:
        gens, progress = _finished_and_progress(campaign_dir)
    else:
        progress = campaign_progress(campaign_dir)
    lines = [_status_text(gens[-1].config, [generation_summary(g) for g in gens])] if gens else []
    if not gens:
        lines.append("no finished generation yet\n")
    if progress is not None:
        lines.append(f"\n{progress_line(progress)}\n")
    return "".join(lines)


def _finished_and_progress(
    campaign_dir: str | Path,
) -> tuple[list[Generation], dict[str, Any] | None]:
    """The finished generations' records, and where the campaign is; a folder with neither
    raises FileNotFoundError (see :func:`generation_files`)."""
    progress = campaign_progress(campaign_dir)
    try:
        files = generation_files(campaign_dir)
    except FileNotFoundError:
        if progress is None:
            raise
        files = []
    return read_generations(files), progress


def _status_text(config: dict[str, Any], summaries: list[dict[str, Any]]) -> str:
    objectives = config["objectives"]
    pooled = pools_evidence(config)
    header = ["gen", "ok", "failed"]
    if pooled:
        header.append(f"leader: estimated {objectives[0]['name']} (seeds)")
    for o in objectives:
        arrow = "max" if higher_is_better(o["direction"]) else "min"
        header += [f"best {o['name']} ({arrow})", f"median {o['name']}"]
    rows = [header]
    for gen in summaries:
        row = [batch_name(gen["generation"]), str(gen["ok"]), str(gen["failed"])]
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
        f"{batch_name(gen['generation'])} individual {f['individual']}: {f['error']}"
        for gen in summaries
        for f in gen["failures"]
    ]
    if failures:
        lines += ["", "failures:", *failures]
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "-" if value is None else _fmt(value)


def status_data(campaign_dir: str | Path) -> dict[str, Any]:
    """``hpsrl status --json``: the campaign, its table per generation, its answer so far (with
    its held-out test where there is one: see :func:`best_summary`; None before the first
    generation is finished) and where it is (:func:`hpsrl.readers.progress.campaign_progress`)."""
    gens, progress = _finished_and_progress(campaign_dir)
    config = gens[-1].config if gens else latest_config(campaign_dir)
    assert config is not None  # a folder with neither generations nor progress raised
    progress = progress or {}
    return {
        "campaign": config["campaign"],
        "env": config["env"]["id"],
        "algorithm": config["algorithm"],
        "strategy": config.get("search", {}).get("strategy", "ga"),
        "generations_planned": progress.get("generations", config["budget"]["generations"]),
        "objectives": [
            {"name": o["name"], "direction": o["direction"]} for o in config["objectives"]
        ],
        "generations": [generation_summary(gen) for gen in gens],
        "answer": plain_values(best_summary(campaign_dir)) if gens else None,
        "finished": bool(progress.get("finished", False)),
        "in_progress": progress.get("in_progress"),
    }


def watch_status(
    campaign_dir: str | Path,
    every: float,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    clock: Callable[[], str] = lambda: time.strftime("%H:%M:%S"),
) -> None:
    """Print the status every ``every`` seconds until the campaign is finished (then once more,
    final) or Ctrl-C. On a terminal the screen is redrawn; otherwise (a file, a pipe) a
    snapshot is printed each time it changes, and with ``as_json`` one JSON document per line.
    A folder that holds no campaign yet is waited for (snakemake may be starting); a damaged
    file ends the watch on the first look, later it is shown and looked at again."""
    terminal = out.isatty() and not as_json
    shown, first = None, True
    with _interrupts_between_snapshots() as interrupted:
        while True:
            try:
                if as_json:
                    data = status_data(campaign_dir)
                    text, done = json.dumps(data) + "\n", data["finished"]
                else:  # finished first: files are only ever added, so the text is final then
                    done = _finished(campaign_dir)
                    text = status_table(campaign_dir)
            except FileNotFoundError as e:  # snakemake has not written the campaign yet
                text, done = _watch_note("waiting", str(e), as_json), False
            except StorageError as e:
                if first:
                    raise
                text, done = _watch_note("error", str(e), as_json), False
            first = False
            if terminal:
                footer = "finished" if done else f"every {every:g} s, Ctrl-C to stop"
                out.write(f"\x1b[H\x1b[2J{campaign_dir} at {clock()} ({footer})\n\n{text}")
            elif text != shown:
                out.write(text if as_json or shown is None else f"\n{text}")
            out.flush()
            shown = text
            if done:
                return
            if interrupted.wait(every):  # Ctrl-C: how a watch is meant to end
                if terminal:
                    out.write("\n")
                return


@contextmanager
def _interrupts_between_snapshots() -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT) sets the event instead of raising KeyboardInterrupt wherever the watch
    is: raised inside h5py, it can leave h5py's lock held, and the process hangs (4 of 30 stops
    of a watch refreshing every 0.01 s did). Off the main thread, where no handler can be set,
    Ctrl-C raises."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _watch_note(kind: str, message: str, as_json: bool) -> str:
    if as_json:
        return json.dumps({kind: message}) + "\n"
    return f"{'hpsrl: error' if kind == 'error' else kind}: {message}\n"


def _finished(campaign_dir: str | Path) -> bool:
    progress = campaign_progress(campaign_dir)
    return progress is not None and progress["finished"]


# -- one row per individual ---------------------------------------------------------------------


def individual_rows(campaign_dir: str | Path) -> list[dict[str, Any]]:
    """Every individual of every finished generation, in order: how it was made, its genes,
    its objectives over its own seeds, the estimate selection ranked it by and the seeds of
    evidence behind that, its front, status, and per training seed its return, training seed,
    env steps and training seconds (``hpsrl table``). Failed values are None."""
    gens = read_generations(generation_files(campaign_dir))
    return [individual_row(gen, i) for gen in gens for i in range(len(gen.population))]


def individual_row(gen: Generation, i: int) -> dict[str, Any]:
    """Individual ``i`` of a generation record, as plain data (see :func:`individual_rows`)."""
    pop, results = gen.population, gen.results
    names = [o["name"] for o in gen.config["objectives"]]
    return {
        "generation": batch_generation(pop.batch),
        "individual": i,
        "operator": pop.operators[i],
        "parents": [int(p) for p in pop.parents[i] if p >= 0],
        "steps": int(pop.steps[i]),
        "genes": plain_values(dict(pop.individuals[i])),
        "objectives": dict(zip(names, plain_values(gen.objectives[i]), strict=True)),
        "estimate": dict(zip(names, plain_values(gen.estimate[i]), strict=True)),
        "evidence_seeds": int(gen.evidence.seeds[i]),
        "front": int(gen.front[i]),
        "status": str(results["status"][i]),
        "error": str(results["error"][i]),
        "returns": plain_values(results["returns"][i]),
        "train_seeds": plain_values(pop.train_seeds[i]),
        "env_steps": plain_values(results["env_steps"][i]),
        "train_seconds": plain_values(results["train_seconds"][i]),
    }


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
    """The campaign's answer (:func:`hpsrl.search.evolve.best_of`):
    first its held-out re-test on fresh seeds when the campaign has one, then its
    hyperparameters, objectives over all the seeds it was trained on (their number), the
    estimate selection ranked it by (pooled evidence), and its own per-seed returns."""
    campaign_dir = Path(campaign_dir)
    files = generation_files(campaign_dir)
    config = read_population(files[-1]).config
    paths = list(best_candidates(config, files))
    retest_file = campaign_dir / f"{RETEST_BATCH}.h5"
    if retest_file.exists():  # read with the candidates: one campaign's, checked together
        paths.append(retest_file)
    candidates = read_generations(paths)
    retest = candidates.pop() if paths[-1] == retest_file else None
    found = best_of(candidates)
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
    retest = _retest_of(retest, source, best, config)
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
    retest: Generation | None, source: Generation, best: int, config: dict[str, Any]
) -> dict[str, Any] | None:
    """The held-out re-test (its record, where the campaign has one) of individual ``best`` of
    ``source``."""
    if retest is None:
        return None
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


def best_yaml(campaign_dir: str | Path, best: dict[str, Any] | None = None) -> str:
    """``hpsrl best``'s output: :func:`best_summary` as YAML (``best``: that summary where the
    caller has it already)."""
    return yaml.safe_dump(best if best is not None else best_summary(campaign_dir), sort_keys=False)
