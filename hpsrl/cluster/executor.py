"""Which executor a snakemake run was asked for, also in a dry run, which hides it.

The workflow plans a training job differently where it runs on this machine (warm workers, a rank
per training, at most --cores) and where it is submitted to a cluster (one Slurm job with a task
per seed, launched by srun): workflow/rules/common.smk, jobs_run_here. A real run tells it by
its executor plugin. A dry run (-n) does not: Snakemake validates the run against the executor
it was asked for, then plans it with its own local "dryrun" executor and keeps no record of the
other (snakemake/api.py, execute_workflow), so `snakemake -n --profile profiles/slurm` would show
the local plan. This module reads the executor from the command line again, as Snakemake's own
parser reads it (--executor, or a profile's `executor:`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
from collections.abc import Sequence
from pathlib import Path


def requested_executor(argv: Sequence[str]) -> str | None:
    """The executor that the snakemake command line ``argv`` (its arguments, without the program)
    asks for, profiles included: "local" where it names none. None where Snakemake's parser
    rejects it, or reads profiles that are not where it looks (after --directory moved the run
    elsewhere): the caller then cannot tell."""
    from snakemake.cli import parse_args

    # The parser says which profiles it uses, and argparse prints its usage on a bad argument:
    # the run itself said all that already.
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            _, args = parse_args(list(argv))
    except (Exception, SystemExit):
        return None
    return args.executor or "local"


@functools.cache
def this_runs_executor() -> str | None:
    """requested_executor of this process's command line, where this process is the snakemake
    command (None otherwise: snakemake called through its Python API by another program, whose
    arguments are not snakemake's). Parsed once per process: about 0.2 s."""
    program = Path(sys.argv[0])
    if program.name != "snakemake" and program.parent.name != "snakemake":  # python -m snakemake
        return None
    return requested_executor(sys.argv[1:])


def runs_locally(executor: str) -> bool:
    """Whether the executor plugin ``executor`` runs jobs on this machine (local, dryrun, touch)
    rather than submitting them (slurm, ...); True for a name no installed plugin has."""
    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

    try:
        plugin = ExecutorPluginRegistry().get_plugin(executor)
    except Exception:
        return True
    return bool(plugin.common_settings.local_exec)
