"""The workflow's steps between trainings: what Snakemake's rules run through ``hpsrl collect``,
``promote``, ``evolve`` and ``retest`` (populate and train are one call each, in the CLI).

Each reads records that a user or another campaign could have put in the wrong place, so each
checks what it was given (the right batch, one campaign, in order) before it writes anything; a
damaged training result is moved aside and its manifest deleted, so that rerunning snakemake
trains that individual again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hpsrl.campaign.paths import batch_generation, batch_name, rung_batch, rung_of
from hpsrl.campaign.storage import (
    CorruptResultError,
    StorageError,
    check_one_campaign,
    read_generation,
    read_generations,
    read_manifest,
    read_population,
    write_generation,
    write_population,
)
from hpsrl.training.recovery import (
    delete_manifest_of_damaged_result,
    delete_manifests_of_missing_results,
)


def collect(
    population_path: Path, manifests: Sequence[Path], previous_path: Path | None, out: Path
) -> None:
    """Stack a batch's training results (the files its jobs' ``manifests`` list) into its record
    at ``out``, pooling evidence with the record of the generation before (``previous_path``)."""
    from hpsrl.search.generation import collect as collect_results

    previous = read_generation(previous_path) if previous_path else None
    listed = {path: manifest for manifest in manifests for path in read_manifest(manifest)}
    delete_manifests_of_missing_results(listed)
    population = read_population(population_path)
    if previous is not None:  # the older file first: it names a population of another campaign
        _check_previous(previous, previous_path, batch_generation(population.batch))
        check_one_campaign([(previous_path, previous.config), (population_path, population.config)])
    try:
        generation = collect_results(population, list(listed), previous)
    except CorruptResultError as e:
        delete_manifest_of_damaged_result(e.path, listed)
        raise
    write_generation(out, generation)


def combine_rungs(rung_paths: Sequence[Path], previous_path: Path | None, out: Path) -> None:
    """Combine the records of a generation's successive-halving rungs (``genGGG/rung0.h5``
    first, in order) into the generation's record at ``out``; drop the rungs' checkpoints unless
    the config keeps them."""
    from hpsrl.search.generation import combine_rungs as combined
    from hpsrl.training.train import remove_rung_checkpoints

    previous = read_generation(previous_path) if previous_path else None
    records = [read_generation(path) for path in rung_paths]
    batches = [record.population.batch for record in records]
    number = batch_generation(batches[0])
    if number is None or batches != [rung_batch(number, r) for r in range(len(batches))]:
        raise StorageError(
            f"--rungs gave the records of {', '.join(batches)}; give those of one "
            "generation's successive-halving rungs, genGGG/rung0.h5 first, in order"
        )
    _check_previous(previous, previous_path, number)
    check_one_campaign(
        [(path, r.config) for path, r in zip(rung_paths, records, strict=True)]
        + ([(previous_path, previous.config)] if previous else [])
    )
    _check_promotions(records, rung_paths)
    generation = combined(records, previous)
    config = generation.config
    if not config["training"]["checkpoint"]["keep"]:
        campaign_dir = Path(config["results_dir"]) / config["campaign"]
        remove_rung_checkpoints(campaign_dir, batch_generation(generation.population.batch))
    write_generation(out, generation)


def promote(rung_path: Path, out: Path) -> None:
    """Write the population of the rung after ``rung_path``'s: its best individuals."""
    from hpsrl.campaign.halving import promoted_population

    record = read_generation(rung_path)
    if rung_of(record.population.batch) is None:
        raise StorageError(
            f"{rung_path} is the record of {record.population.batch}, not of a "
            "successive-halving rung; promote takes a rung's record, genGGG/rungR.h5"
        )
    check_one_campaign([(rung_path, record.config)])
    write_population(out, promoted_population(record))


def evolve(generation_paths: Sequence[Path], out: Path) -> None:
    """Write generation g+1's population from the records of generations up to g."""
    from hpsrl.search.evolve import next_population, reads_whole_history

    history = _generation_records(generation_paths)
    if reads_whole_history(history[-1].config) and [
        batch_generation(g.population.batch) for g in history
    ] != list(range(len(history))):
        raise StorageError(
            f"search.strategy {history[-1].config['search']['strategy']} proposes from every "
            "earlier generation: give all their records, gen000.h5 first, in order"
        )
    write_population(out, next_population(history, history[-1].config))


def retest(generation_paths: Sequence[Path], out: Path) -> None:
    """Write the held-out test's population: the campaign's answer on fresh seeds."""
    from hpsrl.search.evolve import retest_population

    generations = _generation_records(generation_paths)
    write_population(out, retest_population(generations, generations[-1].config))


def _check_previous(previous, path: Path | None, generation: int | None) -> None:
    """``previous`` must be the record of the generation before ``generation``."""
    if previous is None:
        return
    expected = None if not generation else batch_name(generation - 1)
    if previous.population.batch != expected:
        wanted = f"{expected}.h5" if expected else "none (the first generation pools nothing)"
        raise StorageError(
            f"--previous {path} is the record of {previous.population.batch}; this batch pools "
            f"its evidence with {wanted}"
        )


def _check_promotions(records: Sequence, paths: Sequence[Path]) -> None:
    """Each rung after the first holds individuals of the rung before it, each once."""
    for r in range(1, len(records)):
        parents = records[r].population.parents[:, 0]
        before = len(records[r - 1].population)
        if len(set(parents.tolist())) != len(parents) or not all(0 <= p < before for p in parents):
            problem = (
                f"promotes individuals {parents.tolist()}, which are not distinct individuals "
                f"of {paths[r - 1]} (0..{before - 1})"
            )
            raise CorruptResultError(
                f"{paths[r]} {problem}; delete it and rerun snakemake to regenerate it",
                paths[r],
                problem,
            )


def _generation_records(paths: Sequence[Path]) -> list:
    """The generation records that evolve and retest read, checked to be that: a generation's
    record each (not a rung's or the re-test's), in generation order, of one campaign."""
    records = read_generations(paths)
    numbers = []
    for path, record in zip(paths, records, strict=True):
        batch = record.population.batch
        if batch_generation(batch) is None or rung_of(batch) is not None:
            raise StorageError(
                f"{path} is the record of {batch}, not of a generation; give generation "
                "records, genGGG.h5, in order"
            )
        numbers.append(batch_generation(batch))
    if numbers != sorted(set(numbers)):
        raise StorageError(
            f"the generation records given hold generations {numbers}; give each once, in order"
        )
    return records
