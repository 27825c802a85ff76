"""What a failed workflow step leaves behind for the rerun, and how it says what failed.

A workflow step that finds a damaged file moves it aside, and one that finds a training job's
manifest listing a result that is gone or damaged deletes that manifest: rerunning snakemake
then regenerates what is missing instead of failing on it again. These functions do that, and
their names say so; the callers (the ``hpsrl`` command, the warm workers) only print the message
and exit with its status.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hpsrl import HpsrlError
from hpsrl.campaign.config import one_line
from hpsrl.campaign.storage import CorruptResultError, StorageError, quarantine

# Commands that read results only the workflow made: a damaged input is moved aside, so that
# rerunning snakemake regenerates it instead of failing on it again.
WORKFLOW_STEPS = ("train", "collect", "promote", "evolve", "retest")

# Exit statuses, as Unix tools (and argparse) give them: 1 when a command could not do its work
# (a missing or damaged file, a campaign with nothing to show, ...), 2 when it was called wrongly
# (argparse's usage errors). A bug ends with its traceback and status 1.
RUNTIME_ERROR = 1
USAGE_ERROR = 2


def quarantine_damaged_input(command: str, error: BaseException) -> Path | None:
    """Where ``error`` says that a file the workflow step ``command`` read is damaged, move that
    file aside (to NAME.corrupt, :func:`~hpsrl.campaign.storage.quarantine`) so that rerunning
    snakemake regenerates it, and return where it went. None where nothing was moved: another error,
    a command people run (their files are theirs), or not a regular file."""
    if not isinstance(error, CorruptResultError) or command not in WORKFLOW_STEPS:
        return None
    # only a regular file the workflow wrote: never a device, a folder or a link's target
    # (os.path's tests: False, not OSError, for a name too long)
    if not os.path.isfile(error.path) or os.path.islink(error.path):
        return None
    return quarantine(error.path)


def failure_message(error: BaseException, moved_aside_to: Path | None = None) -> str | None:
    """The one-line message for an expected failure, or None for a bug (which keeps its
    traceback). ``moved_aside_to``: where :func:`quarantine_damaged_input` moved the damaged file
    that ``error`` names, if it did."""
    if isinstance(error, CorruptResultError):
        if moved_aside_to is not None:
            problem = error.problem or f"is damaged ({error.__cause__ or error})"
            return one_line(
                f"hpsrl: error: {error.path} {problem}; moved it aside to {moved_aside_to}; "
                "rerun snakemake to regenerate it"
            )
        return one_line(f"hpsrl: error: {error}")
    if isinstance(error, HpsrlError):
        return one_line(f"hpsrl: error: {error}")
    if isinstance(error, OSError):  # a path given that cannot be read or written as asked
        where = f"{error.filename}: " if error.filename is not None else ""
        return one_line(f"hpsrl: error: {where}{error.strerror or error}")
    return None


def delete_manifests_of_missing_results(listed: Mapping[Path, Path]) -> None:
    """Where a result file that a training job's manifest lists (``listed``: result file ->
    manifest) is missing, delete that manifest and raise StorageError: snakemake then runs the
    job again, which trains that individual again."""
    for path, manifest in listed.items():
        if not path.exists():
            manifest.unlink()
            raise StorageError(
                f"{path} is missing (listed by {manifest}, now removed); rerun snakemake to "
                "train it again"
            )


def delete_manifest_of_damaged_result(result: Path, listed: Mapping[Path, Path]) -> None:
    """Delete the manifest that lists the damaged result file ``result``, if one does
    (``listed``: result file -> manifest). Without it the job that wrote the result runs again on
    the rerun, training just the individuals whose results are missing."""
    if result in listed:
        listed[result].unlink(missing_ok=True)
