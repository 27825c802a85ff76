"""One training job: one or more individuals, each with its seeds spread over the MPI ranks (or
the warm workers of a local run, hpsrl/training/workers.py); rank 0 writes each individual's result,
then the job's manifest (:class:`TrainingJob`, whoever trains the seeds).

A seed whose training raises or diverges becomes a failed SeedResult with the traceback, not a
crash: the individual is recorded as failed and the campaign goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsrl.campaign.model import IndividualResult, Population, SeedResult
from hpsrl.campaign.paths import batch_generation, batch_name, result_path
from hpsrl.campaign.storage import (
    CorruptResultError,
    StorageError,
    check_one_campaign,
    copy_result,
    is_result_of,
    is_same_training,
    read_lineage_weights,
    read_population,
    write_individual,
    write_manifest,
)
from hpsrl.cluster.mpi import TaskCounter, arrived, limit_threads, next_arrival, send_to_root, world
from hpsrl.training.train_request import TrainRequest

if TYPE_CHECKING:  # torch is imported only once a job really trains
    from hpsrl.agents.checkpoints import Checkpointing

log = logging.getLogger(__name__)


def _return_threshold(config: dict[str, Any]) -> float | None:
    for objective in config["objectives"]:
        if objective["name"] == "steps_to_threshold":
            return float(objective["threshold"])
    return None


def checkpoint_dir(out_path: str | Path) -> Path:
    """Where the seeds of the job writing ``out_path`` keep their checkpoints (not a rule output:
    snakemake would delete it with a failed job's outputs, the very case it is there for)."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}.ckpt")


def _checkpointing(
    config: dict[str, Any], folder: Path, k: int, rung: bool
) -> Checkpointing | None:
    """Seed ``k``'s checkpoints: as training.checkpoint says, and always on a successive-halving
    rung (``rung``), whose training saves where it stops for the next rung to continue, or
    continues where the last rung stopped."""
    from hpsrl.agents.checkpoints import Checkpointing

    every = config["training"]["checkpoint"]
    minutes, steps = every["every_minutes"], every["every_steps"]
    if not minutes and not steps and not rung:
        return None
    return Checkpointing(
        path=folder / f"seed{k}.pt",
        every_steps=steps or None,
        every_seconds=minutes * 60 if minutes else None,
    )


def inherited_from(pop: Population, individual: int) -> str:
    """The result file, relative to the campaign folder, whose weights ``individual`` starts from
    (seed K from its seed K): with ga.inherit_weights, from generation 1 on, that of its first
    parent (an elite's: its own) in the previous generation. "" where it trains from scratch
    (generation 0, the re-test, without inherit_weights)."""
    generation = batch_generation(pop.batch)
    if not pop.config["ga"].get("inherit_weights") or generation is None:
        return ""
    parent = int(pop.parents[individual, 0])
    if generation == 0 or parent < 0:  # the ga gives every later individual a first parent
        return ""
    return result_path(batch_name(generation - 1), parent)


def _read_inheritance(pop: Population, individual: int, k: int) -> tuple[dict[str, Any], int]:
    """The weights and lineage env steps of seed ``k`` of the file :func:`inherited_from` names.

    A parent seed that failed has no weights: ValueError (the seed fails). A parent file that is
    missing or unreadable is a damaged campaign folder, not a property of this individual:
    StorageError, so that the job fails instead of recording the individual as failed for good.
    """
    campaign_dir = Path(pop.config["results_dir"]) / pop.config["campaign"]
    path = campaign_dir / inherited_from(pop, individual)
    if not path.exists():
        problem = "is missing"
    else:
        try:
            return read_lineage_weights(path, k)
        except CorruptResultError as e:
            problem = f"cannot be read ({e.__cause__})"
    raise StorageError(
        f"{pop.batch} individual {individual} starts from the weights of {path} "
        f"(ga.inherit_weights), which {problem}. The result files of earlier generations are "
        "needed until the campaign ends: restore it, or delete the manifest of the training job "
        "that wrote it (the indFFF-LLL.txt that lists it) and rerun snakemake to train it again"
    )


def continue_from_rung(pop: Population, individual: int, k: int, checkpoints: Path) -> None:
    """Where ``individual`` continues an earlier rung's training (``pop.resumes``), move that
    training's checkpoint of seed ``k`` into ``checkpoints`` unless one is there already (a
    resumed job's). Moved, not copied: nothing else needs it, and the rung's disk use stays that
    of one training per individual. Without it (gone, or never written: a seed that failed) the
    training starts from scratch and reaches the same result, a stopped and continued run being
    bit-identical to one that never stopped."""
    if not pop.resumes[individual]:
        return
    campaign_dir = Path(pop.config["results_dir"]) / pop.config["campaign"]
    earlier = checkpoint_dir(campaign_dir / pop.resumes[individual]) / f"seed{k}.pt"
    mine = checkpoints / f"seed{k}.pt"
    if mine.exists() or not earlier.exists():
        return
    checkpoints.mkdir(parents=True, exist_ok=True)
    os.replace(earlier, mine)
    log.info("%s individual %d seed %d continues %s", pop.batch, individual, k, earlier)


def train_seed(
    pop: Population, individual: int, k: int, checkpoints: Path | None = None
) -> SeedResult:
    """Train and evaluate one seed of one individual, resuming from its checkpoint in
    ``checkpoints`` if there is one (or continuing an earlier rung's: :func:`continue_from_rung`),
    starting from inherited weights where :func:`inherited_from` names a file, and stopping at
    the individual's step budget (``pop.steps``); failures are returned, not raised, except for a
    parent's result file that is missing or damaged (StorageError)."""
    from hpsrl.agents import RunSettings, get_algorithm, make_hyperparameters
    from hpsrl.envs.spec import EnvSpec

    config = pop.config
    train_seed_, eval_seed = int(pop.train_seeds[individual, k]), int(pop.eval_seeds[individual, k])
    started = time.perf_counter()
    weights_from = inherited_from(pop, individual)
    # RunSettings' initial_weights, given only when inheriting
    inherited: dict[str, Any] = {}
    inherited_steps = 0
    total_steps = config["training"]["steps"]
    stop_at = int(pop.steps[individual])
    stops_early = stop_at < total_steps
    try:
        if checkpoints is not None:
            continue_from_rung(pop, individual, k, checkpoints)
        if weights_from:
            weights, inherited_steps = _read_inheritance(pop, individual, k)
            inherited["initial_weights"] = weights
            log.info(
                "%s individual %d seed %d starts from the weights of %s seed %d (%d env steps)",
                pop.batch,
                individual,
                k,
                weights_from,
                k,
                inherited_steps,
            )
        algorithm = get_algorithm(config["algorithm"])
        hp = make_hyperparameters(config["algorithm"], pop.hyperparameters(individual))
        result = algorithm.train(
            EnvSpec.from_config(config["env"]),
            hp,
            RunSettings(
                total_steps,
                train_seed_,
                eval_seed=eval_seed,
                eval_episodes=config["training"]["eval_episodes"],
                curve_points=config["training"]["curve_points"],
                return_threshold=_return_threshold(config),
                checkpoint=(
                    _checkpointing(
                        config, checkpoints, k, stops_early or bool(pop.resumes[individual])
                    )
                    if checkpoints
                    else None
                ),
                stop_at=stop_at if stops_early else None,
                **inherited,
            ),
        )
    except StorageError:  # a parent's result file is gone: see _read_inheritance
        raise
    except Exception as e:  # a failed individual is data: record why and go on
        log.error(
            "%s individual %d seed %d failed after %.1f s:\n%s",
            pop.batch,
            individual,
            k,
            time.perf_counter() - started,
            traceback.format_exc(),
        )
        return SeedResult(
            status="failed", error=f"{type(e).__name__}: {e}", weights_from=weights_from
        )
    log.info(
        "%s individual %d seed %d: mean eval return %.1f in %.1f s (%d env steps)",
        pop.batch,
        individual,
        k,
        result.eval_returns.mean(),
        result.train_seconds,
        result.env_steps,
    )
    return SeedResult(
        status="ok",
        eval_returns=result.eval_returns,
        curve_steps=result.curve_steps,
        curve_returns=result.curve_returns,
        steps_to_threshold=float(result.steps_to_threshold),
        env_steps=int(result.env_steps),
        train_seconds=float(result.train_seconds),
        eval_seconds=float(result.eval_seconds),
        weights={name: t.detach().cpu().numpy() for name, t in result.model_state.items()},
        weights_from=weights_from,
        lineage_env_steps=inherited_steps + int(result.env_steps),
    )


def plan_job(
    population_path: str | Path,
    individuals: Sequence[int],
    out_paths: Sequence[str | Path],
    same_training: Sequence[str | Path] | None = None,
) -> tuple[Population, list[tuple[int, Path]]]:
    """The population and the (individual, result file) pairs of a job still to train.

    An individual whose result is already there (from a job that was killed or cut by its time
    limit half way) is not trained again. Nor is one whose ``same_training`` entry (a result
    file of another campaign) holds the very same training (:func:`is_same_training`): it is
    copied here.
    """
    pop, todo = read_population(population_path), []
    check_one_campaign([(population_path, pop.config)])  # not one copied from elsewhere
    twins = same_training or [None] * len(individuals)
    for individual, out_path, twin in zip(individuals, out_paths, twins, strict=True):
        if not 0 <= individual < len(pop):
            raise StorageError(
                f"{population_path} has individuals 0..{len(pop) - 1}, not {individual}; "
                "check --individual"
            )
        if is_result_of(out_path, pop, individual):
            log.info("%s: already trained, kept", out_path)
        elif twin is not None and is_same_training(twin, pop, individual):
            copy_result(twin, out_path, pop)
            log.info("%s: the same training as %s, copied", out_path, twin)
        else:
            todo.append((individual, Path(out_path)))
    return pop, todo


class TrainingJob:
    """One training job's bookkeeping, whoever trains its seeds (the job's own MPI ranks:
    :func:`run_job`; the warm workers of a local run: hpsrl/training/workers.py): what is left to
    train (:func:`plan_job`), each individual's result file written as soon as all its seeds are in
    (:meth:`record_seeds`), then the manifest (:meth:`write_manifest`). ``ranks``: the processes
    that train its seeds side by side, recorded in each result file."""

    def __init__(self, request: TrainRequest, ranks: int) -> None:
        self.request, self.ranks = request, ranks
        self.pop, self.todo = plan_job(
            request.population, request.individuals, request.out_paths, request.same_training
        )
        self._due = dict(self.todo)  # individual -> its result file, until written
        self._seeds: dict[int, dict[int, SeedResult]] = {i: {} for i, _ in self.todo}

    @property
    def seeds(self) -> list[tuple[int, int]]:
        """The (individual, seed index) pairs to train, in order."""
        n_seeds = self.pop.train_seeds.shape[1]
        return [(individual, k) for individual, _ in self.todo for k in range(n_seeds)]

    def checkpoints(self, individual: int) -> Path:
        """Where the seeds of ``individual`` (not written yet) keep their checkpoints."""
        return checkpoint_dir(self._due[individual])

    def record_seeds(self, individual: int, by_seed: dict[int, SeedResult]) -> None:
        """Take trained seeds of ``individual`` (seed index -> result); once all its seeds are in,
        write its result file."""
        self._seeds[individual].update(by_seed)
        if len(self._seeds[individual]) == self.pop.train_seeds.shape[1]:
            out_path = self._due.pop(individual)
            write_result(self.pop, individual, self._seeds.pop(individual), out_path, self.ranks)

    @property
    def all_written(self) -> bool:
        return not self._due

    def write_manifest(self) -> None:
        """List every result file of the job (those kept or copied too) in its manifest, where it
        has one: the rule's output, written last."""
        if self.request.manifest is not None:
            write_manifest(self.request.manifest, self.request.out_paths)


def run_job(
    population_path: str | Path,
    individuals: Sequence[int],
    out_paths: Sequence[str | Path],
    manifest: str | Path | None = None,
    same_training: Sequence[str | Path] | None = None,
) -> None:
    """Train ``individuals`` (those :func:`plan_job` leaves) one after the other, each with its
    seeds spread over the MPI ranks; rank 0 writes each result to its ``out_paths`` entry as soon
    as it is done, then ``manifest`` (:class:`TrainingJob`).
    """
    request = TrainRequest(
        Path(population_path),
        tuple(individuals),
        tuple(Path(p) for p in out_paths),
        None if manifest is None else Path(manifest),
        None if same_training is None else tuple(Path(p) for p in same_training),
    )
    comm = world()
    job, pop, todo = None, None, None
    if comm.rank == 0:
        job = TrainingJob(request, comm.size)
        pop, todo = job.pop, job.todo
    todo = comm.bcast(todo, root=0)
    if todo:
        pop = comm.bcast(pop, root=0)
        limit_threads()
        _train_all(comm, pop, todo, job)
    if job is not None:
        job.write_manifest()


def _train_all(
    comm: Any, pop: Population, todo: list[tuple[int, Path]], job: TrainingJob | None
) -> None:
    """The ranks train the seeds of ``todo``'s individuals in order, each rank taking the next seed
    not yet taken as soon as it is free; rank 0 hands each seed to ``job`` as it reports, which
    writes an individual as soon as all its seeds are in. Seeds take different times (evaluation
    episodes end when they end, diverging hyperparameters train faster or slower), so a fixed
    share per rank would leave ranks waiting for the slowest at the end of the job."""
    n_seeds = pop.train_seeds.shape[1]
    tasks = [(individual, out_path, k) for individual, out_path in todo for k in range(n_seeds)]
    counter = TaskCounter(comm)

    def my_next_seed() -> Iterator[tuple[int, int, SeedResult]]:
        while (task := counter.next()) < len(tasks):
            individual, out_path, k = tasks[task]
            yield individual, k, train_seed(pop, individual, k, checkpoint_dir(out_path))

    if job is None:  # not rank 0
        sends = [send_to_root(comm, {k: seed}, tag=i) for i, k, seed in my_next_seed()]
        for request in sends:
            request.wait()
        counter.close()
        return
    for individual, k, seed in my_next_seed():
        job.record_seeds(individual, {k: seed})
        for tag, seeds in arrived(comm):
            job.record_seeds(tag, seeds)
    while not job.all_written:
        job.record_seeds(*next_arrival(comm))
    counter.close()


def write_result(
    pop: Population, individual: int, by_seed: dict[int, SeedResult], out_path: Path, ranks: int
) -> None:
    """Write an individual's seeds as its result file (``ranks``: the processes that trained
    the job's seeds side by side), then drop their checkpoints unless the config keeps them."""
    result = IndividualResult(
        batch=pop.batch,
        individual=individual,
        hyperparameters=pop.hyperparameters(individual),
        train_seeds=pop.train_seeds[individual],
        eval_seeds=pop.eval_seeds[individual],
        seeds=[by_seed[k] for k in range(len(by_seed))],
        eval_episodes=pop.config["training"]["eval_episodes"],
        curve_points=pop.config["training"]["curve_points"],
        steps=int(pop.steps[individual]),
        mpi_ranks=ranks,
    )
    write_individual(out_path, result, pop.config)
    # an early rung's checkpoints stay for the next rung (see remove_rung_checkpoints)
    if pop.complete()[individual] and not pop.config["training"]["checkpoint"]["keep"]:
        shutil.rmtree(checkpoint_dir(out_path), ignore_errors=True)
    log.info("%s individual %d: %s, written to %s", pop.batch, individual, result.status, out_path)


def remove_rung_checkpoints(campaign_dir: str | Path, generation: int) -> None:
    """Delete the checkpoints a generation's successive-halving rungs kept for their next rung,
    once the generation is combined (unless training.checkpoint.keep): those of the
    configurations that were not promoted, which nothing continues."""
    for folder in Path(campaign_dir).glob(f"{batch_name(generation)}/rung*/ind*.ckpt"):
        shutil.rmtree(folder, ignore_errors=True)
