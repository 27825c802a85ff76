"""HDF5 files of a campaign: what each holds, written so a killed job never leaves half a file.

Layout of ``RESULTS_DIR/CAMPAIGN/`` (docs/results.md describes every dataset):

- ``gen003/population.h5``: the plan for a generation: genes, lineage and seeds.
- ``gen003/ind005.h5``: one individual's training result: per-seed returns, curves, weights.
- ``gen003/ind004-007.txt``: the manifest of the training job of individuals 4 to 7.
- ``gen003.h5``: the generation record: the population and all its results, objectives and ranks.

Only plain arrays and attributes are stored (JSON text for nested metadata), so nothing read back is
ever unpickled. What they hold, as Python objects, is :mod:`hpsrl.campaign.model`'s (Population,
IndividualResult, Generation); this module reads, checks and writes it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import hpsrl
from hpsrl.campaign.config import SCHEMA_VERSION, ConfigError, search_space, upgraded_config
from hpsrl.campaign.evidence import Evidence, own_evidence, per_seed_objectives
from hpsrl.campaign.gene_columns import decode_individuals, encode_individuals
from hpsrl.campaign.identity import config_hash, describe_changes, same_campaign, trains_alike
from hpsrl.campaign.model import PER_SEED_RESULTS, Generation, IndividualResult, Population
from hpsrl.campaign.paths import (
    BATCH_PATTERN,
    RETEST_BATCH,
    batch_generation,
    campaign_folder,
    first_population,
    named_batch,
)

STR = h5py.string_dtype()


class StorageError(hpsrl.HpsrlError, RuntimeError):
    """A result file that cannot be written or read; the message names it and what to do."""


class CorruptResultError(StorageError):
    """A result file that cannot be used: truncated, corrupt, not HDF5, or not holding what it
    should (another hpsrl's, another campaign's, changed by hand). ``problem`` says what is
    wrong without the path and the advice, for a message that adds its own."""

    def __init__(self, message: str, path: str | Path, problem: str | None = None):
        super().__init__(message)
        self.path = Path(path)
        self.problem = problem


@contextmanager
def atomic_h5(path: str | Path) -> Iterator[h5py.File]:
    """Open ``path`` for writing under a temporary name, renamed into place only when complete.

    A killed process leaves at most a hidden ``.NAME.HOST.PID.*.tmp`` file, never a partial
    ``path``, and the next write in that folder removes it (:func:`_tmp_prefix`); a full disk or a
    read-only folder raises StorageError and leaves every existing file as it was.
    """
    path = Path(path)
    check_replaceable(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
        with h5py.File(tmp, "w") as f:
            yield f
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(
            f"cannot write {path}: {e}. Check that {path.parent} is writable and has free space; "
            "finished results are untouched, rerun once it is fixed"
        ) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def open_h5(path: str | Path) -> Iterator[h5py.File]:
    """Open a result file for reading; a damaged one raises CorruptResultError naming it, a path
    that is missing or a folder a StorageError (nothing there to regenerate)."""
    path = Path(path)
    if not os.path.isfile(path):  # (os.path's: False, not OSError, for a name too long)
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise StorageError(f"{path} {what}, not an HDF5 result file")
    try:
        with h5py.File(path, "r") as f:
            yield f
    except (OSError, KeyError, ValueError) as e:
        raise _damaged(path, f"cannot be read ({_h5_problem(e)})") from e


def _h5_problem(error: BaseException) -> str:
    """h5py's error on one line: HDF5's own text of a failed read spans lines (it includes a
    time stamp); the system's words for an errno say the same in a few."""
    errno = getattr(error, "errno", None)
    if isinstance(error, OSError) and errno:
        return os.strerror(errno)
    return " ".join(str(error).split())


def check_replaceable(path: str | Path) -> None:
    """Before writing ``path`` under a temporary name and renaming it into place: refuse a path
    where something other than a regular file is (a folder: ``--out ''`` is "."; a device such as
    /dev/null, a pipe, a socket), which the rename would replace, not write to."""
    path = Path(path)
    if path.is_dir():
        raise StorageError(f"cannot write {path}: it is a folder; give a file name")
    if os.path.lexists(path) and not path.is_file():
        raise StorageError(f"cannot write {path}: it is not a regular file; give a file name")


def quarantine(path: str | Path) -> Path:
    """Move a damaged result aside (to NAME.corrupt), so that rerunning regenerates it. Only a
    regular file: ValueError for anything else (a device such as /dev/null given as a result,
    a folder, a link), which is not the workflow's to move."""
    path = Path(path)
    if not path.is_file() or path.is_symlink():
        raise ValueError(f"{path} is not a regular file; it is not moved aside")
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    return aside


def check_writable(folder: str | Path) -> None:
    """Fail early, before any training, when results could not be written under ``folder``."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise StorageError(
            f"results cannot be written to {folder} ({e.strerror} in {existing}); "
            "choose another results_dir or fix the folder's permissions"
        ) from e


def _write_metadata(f: h5py.File, config: Mapping[str, Any], batch: str) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["hpsrl_version"] = hpsrl.__version__
    f.attrs["batch"] = batch
    f.attrs["config"] = json.dumps(config)  # key order kept: it is the gene order
    f.attrs["config_hash"] = config_hash(config)
    f.attrs["gene_names"] = json.dumps(list(search_space(config).names))
    f.attrs["objective_names"] = json.dumps([o["name"] for o in config["objectives"]])
    f.attrs["objective_directions"] = json.dumps([o["direction"] for o in config["objectives"]])


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=object)


def _read_strings(dataset: h5py.Dataset) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in dataset[()]]


# -- what a file must hold ----------------------------------------------------------------------
#
# Every reader checks a file before it uses any of it: written by this schema version, a complete
# config unchanged since (its stored hash), a batch's name, and every dataset there with the shape
# and type that the config and the population's size give it. A file from another hpsrl, changed
# by hand or damaged is refused with what is wrong (CorruptResultError, which a workflow step
# answers by moving the file aside so that rerunning regenerates it), never half used.

# Keys every stored config has, with what they hold: what the readers index without looking.
STORED_CONFIG_KEYS = {
    "campaign": "text",
    "algorithm": "text",
    "env.id": "text",
    "genes": "a mapping",
    "fixed": "a mapping",
    "training.steps": "a whole number",
    "training.seeds": "a whole number",
    "training.eval_episodes": "a whole number",
    "training.curve_points": "a whole number",
    "training.aggregate": "text",
    "objectives": "a list",
    "budget.population": "a whole number",
    "budget.generations": "a whole number",
    "retest.seeds": "a whole number",
}


def _holds(value: Any, what: str) -> bool:
    """Whether a stored config's ``value`` is ``what`` STORED_CONFIG_KEYS says (a whole number
    may be stored as 4.0: hpsrl took those before it turned them into integers)."""
    if what == "a whole number":
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and float(value).is_integer()
        )
    return isinstance(value, {"text": str, "a mapping": dict, "a list": list}[what])


# numpy dtype kinds of each kind of dataset (h5py reads variable-length strings as objects)
_KINDS = {"float": "f", "int": "iu", "number": "fiu", "str": "OSU"}


def _damaged(
    path: str | Path, problem: str, fix: str = "delete it and rerun snakemake to regenerate it"
) -> CorruptResultError:
    """The error for a file that ``problem`` (a phrase: "has no dataset ...") makes unusable."""
    return CorruptResultError(f"{path} {problem}; {fix}", path, problem)


def _stored_metadata(f: h5py.File, path: str | Path) -> tuple[dict[str, Any], str]:
    """The config and batch of an hpsrl file, checked (see above)."""
    if "schema_version" not in f.attrs:
        raise _damaged(path, "is not an hpsrl file (it has no schema_version attribute)")
    version = f.attrs["schema_version"]
    if not isinstance(version, (int, np.integer)) or int(version) != SCHEMA_VERSION:
        written_by = f.attrs.get("hpsrl_version", "an unknown version")
        shown = int(version) if isinstance(version, (int, np.integer)) else repr(version)
        raise _damaged(
            path,
            f"was written by hpsrl {written_by} in results schema {shown}, which hpsrl "
            f"{hpsrl.__version__} does not read (it reads schema {SCHEMA_VERSION})",
            "read it with a matching hpsrl, or delete it and rerun snakemake to regenerate it",
        )
    try:
        written = json.loads(f.attrs["config"])
    except (KeyError, TypeError, ValueError):
        written = None
    if not isinstance(written, dict):
        raise _damaged(path, "has no config attribute holding a JSON object")
    config = upgraded_config(written)  # today's key names, whenever it was written
    for key, what in STORED_CONFIG_KEYS.items():
        value: Any = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not _holds(value, what):
            raise _damaged(path, f"has a config whose {key} is not {what} ({value!r})")
    objectives = config["objectives"]
    if not objectives or not all(
        isinstance(o, dict)
        and isinstance(o.get("name"), str)
        and isinstance(o.get("direction"), str)
        for o in objectives
    ):
        raise _damaged(path, "has a config whose objectives lack names or directions")
    try:
        search_space(config)
    except ConfigError as e:
        raise _damaged(path, f"has a config whose genes cannot be read ({e})") from None
    stored_hash = f.attrs.get("config_hash")
    if stored_hash is None or str(stored_hash) != config_hash(written):
        raise _damaged(
            path,
            f"has a config that was changed after it was written (its hash is "
            f"{config_hash(written)}, the file says {stored_hash})",
        )
    batch = f.attrs.get("batch")
    if not isinstance(batch, str) or not re.fullmatch(BATCH_PATTERN, batch):
        raise _damaged(path, f"names no batch (attribute batch: {batch!r})")
    named = named_batch(path)
    if named is not None and named[0] != batch:
        raise _damaged(path, f"holds batch {batch}, not {named[0]} as its name says")
    return config, batch


def stored_config(f: h5py.File, path: str | Path) -> dict[str, Any]:
    """The config of an hpsrl file, checked (CorruptResultError where it cannot be used)."""
    return _stored_metadata(f, path)[0]


def _batch_seeds(config: Mapping[str, Any], batch: str) -> int:
    """The training seeds of each individual of a batch: the re-test's own number, or
    training.seeds."""
    if batch == RETEST_BATCH:
        return int(config["retest"]["seeds"])
    return int(config["training"]["seeds"])


def _check_dataset(
    group: h5py.Group, name: str, shape: tuple[int, ...], kind: str, meaning: str, path: Path
) -> None:
    """``group[name]`` must be a dataset of this shape (``meaning`` says what its axes count)
    and kind of values."""
    dataset = group.get(name)
    where = f"{group.name.rstrip('/')}/{name}"
    if not isinstance(dataset, h5py.Dataset):
        raise _damaged(path, f"has no dataset {where}")
    if dataset.shape != shape:
        raise _damaged(path, f"has {where} of shape {dataset.shape}, not {shape} ({meaning})")
    if dataset.dtype.kind not in _KINDS[kind]:
        raise _damaged(path, f"has {where} of type {dataset.dtype}, not {kind}")


def _check_population_group(
    group: h5py.Group, config: dict[str, Any], batch: str, path: Path
) -> int:
    """Check the datasets of a population (see :func:`_write_population_group`); returns its
    number of individuals."""
    if not isinstance(group, h5py.Group):
        raise _damaged(path, "has no population group")
    operator = group.get("operator")
    if not isinstance(operator, h5py.Dataset) or operator.ndim != 1:
        raise _damaged(path, "has no dataset /population/operator of one value per individual")
    n, seeds = len(operator), _batch_seeds(config, batch)
    _check_dataset(group, "operator", (n,), "str", "individuals", path)
    _check_dataset(group, "parents", (n, 2), "int", "individuals x 2 parents", path)
    for name in ("train_seeds", "eval_seeds"):
        _check_dataset(group, name, (n, seeds), "int", "individuals x seeds", path)
    if "steps" in group:  # populations written before successive halving have none
        _check_dataset(group, "steps", (n,), "int", "individuals", path)
    if "resumes" in group:
        _check_dataset(group, "resumes", (n,), "str", "individuals", path)
    space = search_space(config)
    genes = group.get("genes")
    if not isinstance(genes, h5py.Group):
        raise _damaged(path, "has no population/genes group")
    example = encode_individuals(space, [space.sample(np.random.default_rng(0))])
    for name, column in example.items():
        kind = "str" if column.dtype.kind in _KINDS["str"] else "number"
        _check_dataset(genes, name, (n, *column.shape[1:]), kind, "individuals", path)
    return n


def _check_results_group(
    group: h5py.Group, config: dict[str, Any], n: int, seeds: int, path: Path
) -> None:
    """Check a generation record's results against its population of ``n`` individuals (see
    :func:`write_generation`)."""
    if not isinstance(group, h5py.Group):
        raise _damaged(path, "has no results group")
    training = config["training"]
    episodes, points = training["eval_episodes"], training["curve_points"]
    objectives = len(config["objectives"])
    per_seed = "individuals x seeds"
    for name in ("returns", "steps_to_threshold", "train_seconds", "eval_seconds"):
        _check_dataset(group, name, (n, seeds), "float", per_seed, path)
    _check_dataset(group, "env_steps", (n, seeds), "number", per_seed, path)
    if "lineage_env_steps" in group:  # written before weights could be inherited: none
        _check_dataset(group, "lineage_env_steps", (n, seeds), "number", per_seed, path)
    _check_dataset(
        group,
        "episode_returns",
        (n, seeds, episodes),
        "float",
        f"{per_seed} x training.eval_episodes",
        path,
    )
    _check_dataset(
        group,
        "curve_returns",
        (n, seeds, points),
        "float",
        f"{per_seed} x training.curve_points",
        path,
    )
    _check_dataset(group, "curve_steps", (points,), "number", "training.curve_points", path)
    for name in ("status", "error"):
        _check_dataset(group, name, (n,), "str", "individuals", path)
    statuses = set(_read_strings(group["status"]))
    if not statuses <= {"ok", "failed"}:
        raise _damaged(path, f"has statuses {sorted(statuses - {'ok', 'failed'})}, not ok/failed")
    for name in ("objectives", *(("estimate",) if "evidence" in group else ())):
        _check_dataset(group, name, (n, objectives), "float", "individuals x objectives", path)
    _check_dataset(group, "front", (n,), "number", "individuals", path)
    _check_dataset(group, "rank_key", (n,), "float", "individuals", path)
    if "evidence" not in group:  # written before evidence was recorded
        return
    evidence = group["evidence"]
    _check_dataset(evidence, "offsets", (n + 1,), "int", "individuals + 1", path)
    offsets = evidence["offsets"][()]
    rows = int(offsets[-1])
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise _damaged(path, "has evidence offsets that do not rise from 0")
    _check_dataset(evidence, "values", (rows, objectives), "float", "rows x objectives", path)
    _check_dataset(evidence, "source", (rows, 3), "int", "rows x 3", path)
    _check_dataset(evidence, "train_seeds", (rows,), "int", "rows", path)


def _check_individual_file(f: h5py.File, config: dict[str, Any], batch: str, path: Path) -> int:
    """Check one individual's result file (see :func:`write_individual`); returns its number of
    training seeds."""
    for name, kind, what in (
        ("individual", int, "an integer"),
        ("status", str, "text"),
        ("error", str, "text"),
    ):
        value = f.attrs.get(name)
        if isinstance(value, np.integer):
            value = int(value)
        if not isinstance(value, kind):
            raise _damaged(path, f"has no attribute {name} holding {what}")
    if f.attrs["status"] not in ("ok", "failed"):
        raise _damaged(path, f"has status {f.attrs['status']!r}, not ok or failed")
    named = named_batch(path)
    if named is not None and named[1] is not None and named[1] != int(f.attrs["individual"]):
        raise _damaged(
            path, f"holds individual {f.attrs['individual']}, not {named[1]} as its name says"
        )
    seeds = _batch_seeds(config, batch)
    training = config["training"]
    episodes, points = training["eval_episodes"], training["curve_points"]
    for name in ("train_seeds", "eval_seeds"):
        _check_dataset(f, name, (seeds,), "int", "seeds", path)
    for name in ("seed_status", "seed_error", *(("weights_from",) if "weights_from" in f else ())):
        _check_dataset(f, name, (seeds,), "str", "seeds", path)
    for name in ("returns", "steps_to_threshold", "train_seconds", "eval_seconds"):
        _check_dataset(f, name, (seeds,), "float", "seeds", path)
    for name in ("env_steps", *(("lineage_env_steps",) if "lineage_env_steps" in f else ())):
        _check_dataset(f, name, (seeds,), "number", "seeds", path)
    _check_dataset(
        f, "episode_returns", (seeds, episodes), "float", "seeds x training.eval_episodes", path
    )
    _check_dataset(
        f, "curve_returns", (seeds, points), "float", "seeds x training.curve_points", path
    )
    _check_dataset(f, "curve_steps", (points,), "number", "training.curve_points", path)
    try:
        hyperparameters = json.loads(f.attrs["hyperparameters"])
    except (KeyError, TypeError, ValueError):
        hyperparameters = None
    if not isinstance(hyperparameters, dict):
        raise _damaged(path, "has no hyperparameters attribute holding a JSON object")
    return seeds


def check_one_campaign(files: Sequence[tuple[str | Path, Mapping[str, Any]]]) -> None:
    """Refuse files of more than one campaign among ``files`` (path, config): a file copied in
    from another campaign, or made with another config, is named. The campaign is the one of
    generation 0's population in their folder (which snakemake checks the config against
    before every run), or else of the first file given."""
    if not files:
        return
    given = {Path(path): config for path, config in files}
    reference, reference_config = files[0]
    folder = campaign_folder(reference)
    first = first_population(folder) if folder is not None else None
    if first in given:
        reference, reference_config = first, given[first]
    elif first is not None:
        try:
            with open_h5(first) as f:
                reference, reference_config = first, _stored_metadata(f, first)[0]
        except StorageError:  # damaged itself: the files given are compared among themselves
            pass
    for path, config in files:
        if not same_campaign(reference_config, config):
            raise _damaged(
                path,
                f"belongs to another campaign than {reference} (they differ in "
                f"{describe_changes(reference_config, config)})",
            )


def check_campaign_matches(config: Mapping[str, Any], campaign_dir: str | Path) -> None:
    """Refuse to continue a campaign whose finished results were made with another config.

    Only the generation budget may change (raising it extends the campaign).
    """
    first = first_population(campaign_dir)
    if first is None:
        return
    with open_h5(first) as f:
        stored = stored_config(f, first)
    if same_campaign(stored, config):
        return
    raise ConfigError(
        f"{campaign_dir} holds results of another config: {describe_changes(stored, config)} "
        "changed. Results would mean something else, so they are not mixed. To start a new "
        "campaign, give it another name (config key 'campaign'); to continue this one, restore "
        "those keys."
    )


# -- populations --------------------------------------------------------------------------------


def _write_population_group(group: h5py.Group, pop: Population) -> None:
    genes = group.create_group("genes")
    for name, column in encode_individuals(search_space(pop.config), pop.individuals).items():
        genes.create_dataset(name, data=column)
    group.create_dataset("parents", data=pop.parents.astype(np.int64))
    group.create_dataset("operator", data=_strings(pop.operators), dtype=STR)
    group.create_dataset("train_seeds", data=pop.train_seeds.astype(np.uint32))
    group.create_dataset("eval_seeds", data=pop.eval_seeds.astype(np.uint32))
    group.create_dataset("steps", data=pop.steps)
    group.create_dataset("resumes", data=_strings(pop.resumes), dtype=STR)


def _read_population_group(
    group: h5py.Group, config: dict[str, Any], batch: str, path: Path
) -> Population:
    _check_population_group(group, config, batch, path)
    space = search_space(config)
    columns = {name: group["genes"][name][()] for name in space.names}
    try:
        individuals = decode_individuals(space, columns)
        for individual in individuals:
            space.validate(individual)
    except ValueError as e:
        raise _damaged(path, f"has genes outside the search space ({e})") from None
    return Population(
        batch=batch,
        config=config,
        individuals=individuals,
        parents=group["parents"][()],
        operators=_read_strings(group["operator"]),
        train_seeds=group["train_seeds"][()],
        eval_seeds=group["eval_seeds"][()],
        # populations written before successive halving trained every individual in full
        steps=group["steps"][()] if "steps" in group else None,
        resumes=_read_strings(group["resumes"]) if "resumes" in group else None,
    )


def write_population(path: str | Path, pop: Population) -> None:
    with atomic_h5(path) as f:
        _write_metadata(f, pop.config, pop.batch)
        _write_population_group(f.create_group("population"), pop)


def read_population(path: str | Path) -> Population:
    """The population a file holds (a population file or a generation record), checked."""
    with open_h5(path) as f:
        config, batch = _stored_metadata(f, path)
        return _read_population_group(f.get("population"), config, batch, Path(path))


# -- one individual's training result ---------------------------------------------------------


def _padded(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Stack per-seed rows into (seeds, width), NaN where a failed seed has nothing."""
    out = np.full((len(rows), width), np.nan)
    for k, row in enumerate(rows):
        if len(row) == width:
            out[k] = row
    return out


def write_individual(path: str | Path, result: IndividualResult, config: Mapping[str, Any]) -> None:
    with atomic_h5(path) as f:
        _write_metadata(f, config, result.batch)
        f.attrs["individual"] = result.individual
        f.attrs["steps"] = result.steps
        f.attrs["status"] = result.status
        f.attrs["error"] = result.error
        f.attrs["hyperparameters"] = json.dumps(result.hyperparameters, sort_keys=True)
        f.attrs["mpi_ranks"] = result.mpi_ranks
        f.attrs["hostname"] = result.hostname
        f.attrs["slurm_job_id"] = result.slurm_job_id
        seeds = result.seeds
        f["train_seeds"] = result.train_seeds.astype(np.uint32)
        f["eval_seeds"] = result.eval_seeds.astype(np.uint32)
        f.create_dataset("seed_status", data=_strings([s.status for s in seeds]), dtype=STR)
        f.create_dataset("seed_error", data=_strings([s.error for s in seeds]), dtype=STR)
        episodes = _padded([s.eval_returns for s in seeds], result.eval_episodes)
        f["episode_returns"] = episodes
        f["returns"] = episodes.mean(axis=1)
        f["steps_to_threshold"] = np.array([s.steps_to_threshold for s in seeds], dtype=float)
        f["env_steps"] = np.array([s.env_steps for s in seeds], dtype=np.int64)
        f["train_seconds"] = np.array([s.train_seconds for s in seeds], dtype=float)
        f["eval_seconds"] = np.array([s.eval_seconds for s in seeds], dtype=float)
        ok_curves = [s.curve_steps for s in seeds if len(s.curve_steps) == result.curve_points]
        steps = ok_curves[0] if ok_curves else np.zeros(result.curve_points, dtype=np.int64)
        f["curve_steps"] = np.asarray(steps, dtype=np.int64)
        f["curve_returns"] = _padded([s.curve_returns for s in seeds], result.curve_points)
        f.create_dataset("weights_from", data=_strings([s.weights_from for s in seeds]), dtype=STR)
        f["lineage_env_steps"] = np.array([s.lineage_env_steps for s in seeds], dtype=np.int64)
        weights = f.create_group("weights")
        for k, s in enumerate(seeds):
            group = weights.create_group(f"seed{k}")
            for name, array in s.weights.items():
                group[name] = array


def read_individual_arrays(
    path: str | Path, pop: Population | None = None, individual: int | None = None
) -> dict[str, Any]:
    """The per-seed arrays and status of one result file (weights are left on disk), checked;
    with ``pop`` and ``individual``, also that it holds the training of that individual of
    that population (another campaign's, batch's or individual's is refused)."""
    with open_h5(path) as f:
        config, batch = _stored_metadata(f, path)
        _check_individual_file(f, config, batch, Path(path))
        if pop is not None and individual is not None:
            if not same_campaign(config, pop.config):
                raise _damaged(
                    path,
                    f"was trained for another campaign than {pop.batch}'s population (they "
                    f"differ in {describe_changes(pop.config, config)})",
                )
            if not _holds_individual(f, pop, individual):
                raise _damaged(
                    path,
                    f"holds {batch} individual {f.attrs['individual']}, not the training of "
                    f"{pop.batch} individual {individual} (its genes, seeds and steps)",
                )
        out: dict[str, Any] = {name: f[name][()] for name in PER_SEED_RESULTS}
        out["curve_steps"] = f["curve_steps"][()]
        out["lineage_env_steps"] = _lineage_env_steps(f)
        weights_from = _read_strings(f["weights_from"]) if "weights_from" in f else []
        out["weights_from"] = np.array(weights_from or [""] * len(out["env_steps"]))
        out["status"] = str(f.attrs["status"])
        out["error"] = str(f.attrs["error"])
        out["config_hash"] = str(f.attrs["config_hash"])
        return out


@contextmanager
def open_result(path: str | Path) -> Iterator[tuple[h5py.File, dict[str, Any], int]]:
    """An individual's result file, open for reading once checked: the file, its config and its
    number of training seeds."""
    with open_h5(path) as f:
        config, batch = _stored_metadata(f, path)
        yield f, config, _check_individual_file(f, config, batch, Path(path))


def read_weights(path: str | Path, seed_index: int = 0) -> dict[str, np.ndarray]:
    """The network training seed ``seed_index`` ended with, as a state dict of arrays."""
    with open_result(path) as (f, _, _):
        return read_seed_weights(f, seed_index, Path(path))


def read_all_weights(path: str | Path) -> list[dict[str, np.ndarray]]:
    """The network each training seed ended with, from one opening of the checked file (so that
    all come from the same file, even if it is replaced meanwhile)."""
    with open_result(path) as (f, _, seeds):
        return [read_seed_weights(f, k, Path(path)) for k in range(seeds)]


def read_seed_weights(f: h5py.File, seed_index: int, path: Path) -> dict[str, np.ndarray]:
    """Seed ``seed_index``'s network from the open result file ``f`` (at ``path``)."""
    group = f.get(f"weights/seed{seed_index}")
    if not isinstance(group, h5py.Group):
        raise _damaged(path, f"has no weights of training seed {seed_index}")
    if not all(isinstance(group[name], h5py.Dataset) for name in group):
        raise _damaged(path, f"has weights of training seed {seed_index} that are no arrays")
    return {name: group[name][()] for name in group}


def _lineage_env_steps(f: h5py.File | h5py.Group) -> np.ndarray:
    # Files written before weights could be inherited trained every seed from scratch.
    return f["lineage_env_steps"][()] if "lineage_env_steps" in f else f["env_steps"][()]


def read_lineage_weights(path: str | Path, seed_index: int) -> tuple[dict[str, np.ndarray], int]:
    """The weights seed ``seed_index`` of a result file ended with, and the env steps they were
    trained for along their lineage (that seed's and its ancestors'), for a child to start from.

    Raises ValueError when that seed failed, so has no weights; CorruptResultError when the file
    cannot be read.
    """
    with open_h5(path) as f:  # (it turns any ValueError raised inside into a CorruptResultError)
        config, batch = _stored_metadata(f, path)
        seeds = _check_individual_file(f, config, batch, Path(path))
        if not 0 <= seed_index < seeds:
            raise _damaged(path, f"has training seeds 0..{seeds - 1}, not {seed_index}")
        status = _read_strings(f["seed_status"])[seed_index]
        error = _read_strings(f["seed_error"])[seed_index]
        weights = read_seed_weights(f, seed_index, Path(path))
        lineage_env_steps = int(_lineage_env_steps(f)[seed_index])
    if status != "ok" or not weights:
        raise ValueError(f"{path} seed {seed_index} failed ({error}), so it has no weights")
    return weights, lineage_env_steps


# -- the generation record -------------------------------------------------------------------


def write_generation(path: str | Path, gen: Generation) -> None:
    with atomic_h5(path) as f:
        _write_metadata(f, gen.config, gen.population.batch)
        _write_population_group(f.create_group("population"), gen.population)
        results = f.create_group("results")
        for name, array in gen.results.items():
            if name in ("status", "error"):
                results.create_dataset(name, data=_strings(array), dtype=STR)
            else:
                results[name] = array
        results["objectives"] = gen.objectives
        results["front"] = gen.front.astype(np.int64)
        results["rank_key"] = gen.rank_key
        results["estimate"] = gen.estimate
        evidence = results.create_group("evidence")
        evidence["seeds"] = gen.evidence.seeds
        evidence["offsets"] = gen.evidence.offsets
        evidence["values"] = gen.evidence.values
        evidence["source"] = gen.evidence.source
        evidence["train_seeds"] = gen.evidence.train_seeds


def read_generation(path: str | Path) -> Generation:
    """A generation record (or a rung's, or the re-test's), checked: its population and every
    result dataset of the shape its population and config give it."""
    with open_h5(path) as f:
        config, batch = _stored_metadata(f, path)
        pop = _read_population_group(f.get("population"), config, batch, Path(path))
        group = f.get("results")
        _check_results_group(group, config, len(pop), _batch_seeds(config, batch), Path(path))
        results: dict[str, Any] = {
            name: group[name][()] for name in (*PER_SEED_RESULTS, "curve_steps")
        }
        results["lineage_env_steps"] = _lineage_env_steps(group)
        results["status"] = np.array(_read_strings(group["status"]))
        results["error"] = np.array(_read_strings(group["error"]))
        objectives = group["objectives"][()]
        if "evidence" in group:
            stored = group["evidence"]
            evidence = Evidence(
                offsets=stored["offsets"][()],
                values=stored["values"][()],
                source=stored["source"][()],
                train_seeds=stored["train_seeds"][()],
            )
            estimate = group["estimate"][()]
        else:  # written before evidence was recorded: every individual's own seeds
            generation = batch_generation(pop.batch)
            evidence = own_evidence(
                -1 if generation is None else generation,
                per_seed_objectives(results, config),
                pop.train_seeds,
            )
            estimate = objectives
        return Generation(
            population=pop,
            results=results,
            objectives=objectives,
            front=group["front"][()],
            rank_key=group["rank_key"][()],
            evidence=evidence,
            estimate=estimate,
        )


def read_generations(paths: Sequence[str | Path]) -> list[Generation]:
    """Records of one campaign, each checked (:func:`read_generation`), and all of one campaign
    (:func:`check_one_campaign`): what every reader of several records reads them with."""
    records = [read_generation(path) for path in paths]
    check_one_campaign([(path, r.config) for path, r in zip(paths, records, strict=True)])
    return records


# -- a training job's results and its manifest ---------------------------------------------------
#
# A training job writes one result file per individual as soon as that individual is trained, then
# a manifest listing them, which is the job's snakemake output. Result files are not snakemake
# outputs, so a rerun after a kill (--rerun-incomplete deletes incomplete outputs) keeps those that
# were finished and trains only the rest; training is deterministic given its seeds, so keeping a
# result gives what retraining would.


def _holds_individual(f: h5py.File, pop: Population, individual: int) -> bool:
    """Whether the result file ``f`` is of this batch and individual, with its genes, seeds and
    step budget."""
    full = pop.config["training"]["steps"]  # files written before rungs trained in full
    return (
        str(f.attrs["batch"]) == pop.batch
        and int(f.attrs["individual"]) == individual
        and int(f.attrs.get("steps", full)) == int(pop.steps[individual])
        and json.loads(f.attrs["hyperparameters"])
        == json.loads(json.dumps(pop.hyperparameters(individual)))
        and np.array_equal(f["train_seeds"][()], pop.train_seeds[individual])
    )


def is_result_of(path: str | Path, pop: Population, individual: int) -> bool:
    """Whether ``path`` holds the finished training of exactly this individual of ``pop``."""
    if not Path(path).exists():
        return False
    try:
        with open_h5(path) as f:
            return _is_training_of(f, Path(path), pop, individual)
    except (StorageError, KeyError, ValueError):
        return False


def _is_training_of(f: h5py.File, path: Path, pop: Population, individual: int) -> bool:
    """Whether the result file ``f`` holds, intact, the training of this individual of ``pop``;
    CorruptResultError where it is not intact (so that it is trained again)."""
    config, batch = _stored_metadata(f, path)
    _check_individual_file(f, config, batch, path)
    return same_campaign(config, pop.config) and _holds_individual(f, pop, individual)


def result_status(path: str | Path, pop: Population, individual: int) -> str | None:
    """The status (``ok`` or ``failed``) of this individual of ``pop`` if ``path`` holds its
    finished training; None if it does not (yet): missing, another training's, unreadable."""
    if not Path(path).exists():
        return None
    try:
        with open_h5(path) as f:
            if not _is_training_of(f, Path(path), pop, individual):
                return None
            return str(f.attrs["status"])
    except (StorageError, KeyError, ValueError):
        return None


def is_same_training(path: str | Path, pop: Population, individual: int) -> bool:
    """Whether ``path``, a result of another campaign, holds exactly the training that this
    individual of ``pop`` would do: same batch, genes and seeds, from scratch (no inherited
    weights), and a config that trains alike (hpsrl.campaign.identity.trains_alike). The
    strategies that `snakemake compare` runs on one search seed share generation 0 in this way."""
    if not Path(path).exists():
        return False
    try:
        with open_h5(path) as f:
            stored, batch = _stored_metadata(f, path)
            _check_individual_file(f, stored, batch, Path(path))
            return (
                trains_alike(stored, pop.config)
                and _holds_individual(f, pop, individual)
                and not any(_read_strings(f["weights_from"]))
            )
    except (StorageError, KeyError, ValueError):
        return False


def copy_result(source: str | Path, dest: str | Path, pop: Population) -> None:
    """Write the result file ``source`` (see :func:`is_same_training`) as ``dest``, a result of
    ``pop``'s campaign, recording where it came from (attribute ``same_training_as``)."""
    with open_h5(source) as src, atomic_h5(dest) as f:
        for name in src:
            src.copy(src[name], f, name=name)
        f.attrs.update(src.attrs)
        _write_metadata(f, pop.config, pop.batch)
        f.attrs["same_training_as"] = str(source)


def _tmp_prefix(path: Path) -> str:
    """How this process's temporary names for ``path`` start: ``.NAME.HOST.PID.``, first removing
    the temporary files in its folder whose writer ran on this host and is gone (killed mid-write:
    nothing else would ever remove them). Those of live writers, and of other hosts sharing the
    folder (their pids mean nothing here), are left alone."""
    host = socket.gethostname()
    try:
        with os.scandir(path.parent) as entries:
            names = [e.name for e in entries if e.name[:1] == "." and e.name.endswith(".tmp")]
    except OSError:  # the write that follows says what is wrong with the folder
        names = []
    for name in names:
        _, mark, writer = name.removesuffix(".tmp").rpartition(f".{host}.")
        pid = writer.split(".")[0]
        if mark and pid.isdigit():
            try:
                os.kill(int(pid), 0)  # signal 0: only whether it runs
            except ProcessLookupError:
                (path.parent / name).unlink(missing_ok=True)
            except PermissionError:  # another user's process: it runs
                pass
    return f".{path.name}.{host}.{os.getpid()}."


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file under a temporary name and rename it into place, so that a reader (or a
    rerun after a kill) never sees half of it; failures raise StorageError naming the file."""
    path = Path(path)
    check_replaceable(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_tmp_prefix(path)}tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {e}") from e


def write_manifest(path: str | Path, results: Sequence[str | Path]) -> None:
    """List a job's result files (names relative to the manifest's folder), atomically."""
    path = Path(path)
    names = [os.path.relpath(r, path.parent) for r in results]
    write_text_atomic(path, "".join(f"{name}\n" for name in names))


def read_manifest(path: str | Path) -> list[Path]:
    """The result files a training job's manifest lists."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problem = getattr(e, "strerror", None) or e
        raise _damaged(path, f"cannot be read ({problem})", "rerun snakemake") from e
    return [path.parent / line for line in lines if line.strip()]
