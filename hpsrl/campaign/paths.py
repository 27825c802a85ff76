"""Where a campaign's files are: the one naming scheme of batches, results and generation records.

``RESULTS_DIR/CAMPAIGN/`` holds a batch folder per generation (``gen003/``: its population, one
result file per individual ``ind005.h5``, a manifest per training job ``ind004-007.txt``), or per
successive-halving rung of it (``gen003/rung1/``), the re-test's (``retest/``), and a record per
batch beside its folder (``gen003.h5``, ``gen003/rung1.h5``, ``retest.h5``). Numbers have at least
three digits and as many more as they need (``gen1000``, ``ind1023``), so populations and
generations of any size are named; sort them with :func:`generation_files`, not by name.

The Snakemake rules (workflow/rules/common.smk) and the package both name files through this
module; its patterns are the rules' wildcard constraints.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RETEST_BATCH = "retest"

#: Wildcard constraints of the rules (regular expressions). "At least three digits" is spelt
#: ``\d{3}\d*``: Snakemake reads the comma of ``\d{3,}`` inside a constraint as a separator.
BATCH_PATTERN = r"gen\d{3}\d*(/rung\d)?|retest"
NUMBER_PATTERN = r"\d{3}\d*"
#: The first batch of generation 0 / of any later generation (what init / evolve write).
FIRST_GENERATION_PATTERN = r"gen000(/rung0)?"
LATER_GENERATION_PATTERN = r"gen(?!000(?:/|$))\d{3}\d*(/rung0)?"

_GENERATION = re.compile(r"gen(\d{3}\d*)")
_GENERATION_FILE = re.compile(r"^gen(\d{3}\d*)\.h5$")
_MANIFEST = re.compile(r"^ind(\d{3}\d*)-(\d{3}\d*)\.txt$")


def batch_name(generation: int) -> str:
    """A generation's batch (and folder): ``gen003``."""
    return f"gen{generation:03d}"


def rung_batch(generation: int, rung: int) -> str:
    """A successive-halving rung's batch (and folder): ``gen003/rung1``."""
    return f"{batch_name(generation)}/rung{rung}"


def batch_generation(batch: str) -> int | None:
    """The generation a batch belongs to (``gen003``, ``gen003/rung1`` -> 3); None for the
    re-test."""
    found = _GENERATION.match(batch)
    return int(found.group(1)) if found else None


def rung_of(batch: str) -> int | None:
    """The rung of a rung batch (``gen003/rung1`` -> 1); None for any other batch."""
    _, _, rung = batch.partition("/rung")
    return int(rung) if rung else None


def result_path(batch: str, individual: int) -> str:
    """An individual's result file, relative to the campaign folder: ``gen003/ind005.h5``."""
    return f"{batch}/ind{individual:03d}.h5"


def manifest_path(batch: str, first: int, last: int) -> str:
    """The manifest of the training job of individuals ``first`` to ``last``, relative to the
    campaign folder: ``gen003/ind004-007.txt``."""
    return f"{batch}/ind{first:03d}-{last:03d}.txt"


def manifest_individuals(name: str) -> range | None:
    """The individuals a manifest's file name covers (``ind004-007.txt`` -> 4..7), or None for a
    name that is no manifest's."""
    found = _MANIFEST.match(name)
    return range(int(found.group(1)), int(found.group(2)) + 1) if found else None


def record_path(batch: str) -> str:
    """A batch's record, relative to the campaign folder: ``gen003.h5``, ``gen003/rung1.h5``."""
    return f"{batch}.h5"


#: Training jobs per batch that training.individuals_per_job "auto" keeps to: snakemake plans a
#: job in about 3.5 ms, so 100 generations of 64 jobs plan in about 20 s.
JOBS_PER_BATCH = 64


def individuals_per_job(config: Mapping[str, Any], batch_size: int) -> int:
    """How many individuals of a batch of ``batch_size`` each training job trains
    (training.individuals_per_job; "auto": as few as keep the batch at JOBS_PER_BATCH jobs)."""
    chosen = config["training"]["individuals_per_job"]
    if chosen == "auto":
        return max(1, math.ceil(batch_size / JOBS_PER_BATCH))
    return int(chosen)


# A file of a campaign, relative to its folder: a batch's record, population or result file.
_CAMPAIGN_FILE = re.compile(
    rf"(?P<batch>{BATCH_PATTERN})"
    rf"(\.h5|/population\.h5|/ind(?P<individual>{NUMBER_PATTERN})\.h5)"
)


def _campaign_file(path: Path) -> tuple[Path, re.Match[str]] | None:
    for folder in list(path.parents)[:3]:
        found = _CAMPAIGN_FILE.fullmatch(path.relative_to(folder).as_posix())
        if found:
            return folder, found
    return None


def campaign_folder(path: str | Path) -> Path | None:
    """The campaign folder that a record, population or result file lies in, by its name
    (``.../CAMPAIGN/gen003/ind005.h5`` -> ``.../CAMPAIGN``); None for a path named otherwise."""
    found = _campaign_file(Path(path))
    return found[0] if found else None


def named_batch(path: str | Path) -> tuple[str, int | None] | None:
    """The batch (and for a result file, the individual) that a file's name says it holds
    (``.../gen003/ind005.h5`` -> ``("gen003", 5)``, ``.../gen003.h5`` -> ``("gen003", None)``);
    None for a path named otherwise."""
    found = _campaign_file(Path(path))
    if found is None:
        return None
    individual = found[1]["individual"]
    return found[1]["batch"], None if individual is None else int(individual)


def first_population(campaign_dir: str | Path) -> Path | None:
    """Generation 0's population (its first rung's, with successive halving), the file the
    campaign's config is checked against; None before it is written."""
    for batch in (batch_name(0), rung_batch(0, 0)):
        path = Path(campaign_dir) / batch / "population.h5"
        if path.exists():
            return path
    return None


def generation_files(campaign_dir: str | Path) -> list[Path]:
    """The campaign's finished generation records, in generation order. FileNotFoundError (with
    what to do) for a folder that is no campaign or holds none yet."""
    campaign_dir = Path(campaign_dir)
    if not campaign_dir.is_dir():
        raise FileNotFoundError(
            f"{campaign_dir} is not a campaign folder (expected RESULTS_DIR/CAMPAIGN, e.g. "
            "results/cartpole-ppo)"
        )
    numbered = [
        (int(found.group(1)), path)
        for path in campaign_dir.iterdir()
        if (found := _GENERATION_FILE.match(path.name))
    ]
    if not numbered:
        raise FileNotFoundError(
            f"{campaign_dir} holds no finished generation (gen000.h5, ...) yet; run snakemake first"
        )
    return [path for _, path in sorted(numbered)]
