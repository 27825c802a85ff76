"""Where a campaign is: the batch being trained and how far it got, from the files alone.

Snakemake is not asked: a campaign folder says all there is to say. Generations are finished in
order; the first generation without its record ``genGGG.h5`` is the one in progress, and in it
the first rung without its record ``genGGG/rungR.h5`` (successive halving,
:mod:`hpsrl.campaign.halving`); after the last generation comes the held-out test (``retest/``). In
that batch's folder the population ``population.h5`` (written by init, evolve or promote), each
individual's result file ``indIII.h5`` and each training job's manifest ``indFFF-LLL.txt`` appear
as it progresses.

Every one of those files is written under a temporary name and renamed into place, but a reader
still finds a batch half done: files that are not there yet, a population still being planned,
the temporary files of writers at work. Nothing here fails on that: a file that is missing or
cannot be read counts as not written yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpsrl.campaign.halving import rung_steps, rungs
from hpsrl.campaign.paths import (
    RETEST_BATCH,
    batch_generation,
    batch_name,
    manifest_individuals,
    record_path,
    result_path,
    rung_batch,
    rung_of,
)
from hpsrl.campaign.storage import (
    StorageError,
    open_h5,
    read_population,
    result_status,
    stored_config,
)


def _stored_config(path: Path) -> dict[str, Any] | None:
    """The config of a campaign's file, or None where it has none that can be used (the file
    is then passed over, as one not written yet)."""
    try:
        with open_h5(path) as f:
            return stored_config(f, path)
    except (StorageError, KeyError, ValueError, OSError):
        return None


def latest_config(campaign_dir: str | Path) -> dict[str, Any] | None:
    """The config of the campaign's latest batch (a campaign extended by raising
    budget.generations has it in its newer files), or None where nothing was planned yet."""
    campaign_dir = Path(campaign_dir)
    if not campaign_dir.is_dir():
        return None
    found = []
    records = [*campaign_dir.glob("gen*.h5"), *campaign_dir.glob("gen*/rung*.h5")]
    populations = [
        *campaign_dir.glob("gen*/population.h5"),
        *campaign_dir.glob("gen*/rung*/population.h5"),
    ]
    for path in [*records, *populations]:
        batch = path.relative_to(campaign_dir).as_posix().removesuffix(".h5")
        batch = batch.removesuffix("/population")
        generation = batch_generation(batch)
        if generation is not None:
            found.append((generation, rung_of(batch) or 0, path))
    for _, _, path in sorted(found, reverse=True):
        config = _stored_config(path)
        if config is not None:
            return config
    return None


def campaign_progress(campaign_dir: str | Path) -> dict[str, Any] | None:
    """What the campaign is doing, as a dict: ``finished`` (bool), ``generations`` (planned)
    and ``finished_generations``; unless finished, ``in_progress``: the batch, its generation
    and rung, what stage it is at (``planning`` its population, ``training``, ``collecting``
    its record, ``combining`` its rungs' records) and, once its population is written, its
    individuals trained (ok), failed and queued (not trained yet), and its training jobs done.
    None where the folder holds no campaign yet."""
    campaign_dir = Path(campaign_dir)
    config = latest_config(campaign_dir)
    if config is None:
        return None
    generations = config["budget"]["generations"]
    finished = [
        g for g in range(generations) if (campaign_dir / record_path(batch_name(g))).exists()
    ]
    progress: dict[str, Any] = {
        "finished": False,
        "generations": generations,
        "finished_generations": len(finished),
        "retest": config["retest"]["seeds"] > 0,
    }
    count = rungs(config)
    for g in range(generations):
        if g in finished:
            continue
        if count == 1:
            progress["in_progress"] = _batch(campaign_dir, config, batch_name(g), g)
            return progress
        for r in range(count):
            if not (campaign_dir / record_path(rung_batch(g, r))).exists():
                progress["in_progress"] = _batch(campaign_dir, config, rung_batch(g, r), g, r)
                return progress
        progress["in_progress"] = {
            "batch": batch_name(g),
            "generation": g,
            "rung": None,
            "rungs": count,
            "stage": "combining",
        }
        return progress
    if progress["retest"] and not (campaign_dir / record_path(RETEST_BATCH)).exists():
        progress["in_progress"] = _batch(campaign_dir, config, RETEST_BATCH, None)
        return progress
    progress["finished"] = True
    return progress


def _batch(
    campaign_dir: Path,
    config: dict[str, Any],
    batch: str,
    generation: int | None,
    rung: int | None = None,
) -> dict[str, Any]:
    """How far the training of ``batch`` got."""
    folder = campaign_dir / batch
    out: dict[str, Any] = {
        "batch": batch,
        "generation": generation,
        "rung": rung,
        "rungs": rungs(config) if generation is not None else 1,
    }
    if rung is not None:
        out["steps"] = rung_steps(config)[rung]
    try:
        population = read_population(folder / "population.h5")
    except (StorageError, KeyError, ValueError, OSError):
        out["stage"] = "planning"  # its population is not written yet
        return out
    n = len(population)
    statuses = [
        result_status(campaign_dir / result_path(batch, i), population, i) for i in range(n)
    ]
    covered: set[int] = set()
    jobs_done = 0
    for manifest in folder.glob("ind*-*.txt"):
        individuals = manifest_individuals(manifest.name)
        if individuals is not None:
            jobs_done += 1
            covered.update(individuals)
    trained = statuses.count("ok")
    failed = sum(1 for s in statuses if s is not None and s != "ok")
    out |= {
        "individuals": n,
        "trained": trained,
        "failed": failed,
        "queued": n - trained - failed,
        "jobs_done": jobs_done,
        "stage": "collecting" if trained + failed == n and covered >= set(range(n)) else "training",
    }
    return out


def progress_line(progress: dict[str, Any]) -> str:
    """One line for a person: where the campaign is."""
    generations = progress["generations"]
    if progress["finished"]:
        retest = " and the held-out test" if progress["retest"] else ""
        return f"finished: {generations} of {generations} generations{retest}"
    batch = progress["in_progress"]
    if batch["generation"] is None:
        where = f"{batch['batch']} (the held-out test of the answer)"
    else:
        where = f"{batch['batch']} (generation {batch['generation'] + 1} of {generations}"
        if batch["rung"] is not None:
            where += f", rung {batch['rung'] + 1} of {batch['rungs']} to {batch['steps']} env steps"
        where += ")"
    stage = batch["stage"]
    if stage == "planning":
        return f"in progress: {where}: its population is not written yet"
    if stage == "combining":
        return f"in progress: {where}: its {batch['rungs']} rungs trained, combining them"
    counts = (
        f"{batch['trained']} trained, {batch['failed']} failed, {batch['queued']} queued "
        f"of {_count(batch['individuals'], 'individual')}; "
        f"{_count(batch['jobs_done'], 'training job')} done"
    )
    if stage == "collecting":
        return f"in progress: {where}: {counts}; collecting them"
    return f"in progress: {where}: {counts}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
