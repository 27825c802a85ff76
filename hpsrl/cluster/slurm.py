"""The Slurm jobs of a snakemake run: find them by its run ID, cancel them all.

The Snakemake Slurm executor plugin names every job it submits after a run ID of its own, a UUID
(with ``--slurm-jobname-prefix P``: ``P_UUID``) that it logs as ``SLURM run ID: ...`` in the run's
log (``.snakemake/log/*.snakemake.log``). Interrupted (Ctrl-C), it cancels the jobs it is tracking
at that moment, by job ID, and can miss some (plugin 2.8.0 with snakemake 9):

- jobs whose ``sbatch`` is still under way or queued when the signal comes: the plugin submits
  from a pool of threads, cancels what has been submitted, then waits for the pool, which goes on
  submitting what was queued;
- jobs that its status thread has taken out of its list of active jobs to poll them (``sacct``,
  seconds on a loaded machine) and not yet put back.

Those jobs keep running (training) for nothing. The workflow's onerror hook (the Snakefile), which
snakemake runs after the plugin has cancelled and finished submitting, calls :func:`cancel_runs`
with the run's log: ``scancel --name RUN_ID`` ends every job of the run whatever the plugin knew.
The README's cleanup after a hard kill of snakemake does the same by hand.

Standard library only: the hook runs in the snakemake process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

#: What the plugin writes before a run's ID in the run's log.
RUN_ID_MARK = "SLURM run ID:"


def run_ids(logs: Iterable[str | Path]) -> list[str]:
    """The Slurm run IDs logged in the snakemake logs ``logs`` (missing files are skipped), in
    their order, without repeats."""
    found: list[str] = []
    for log in logs:
        try:
            text = Path(log).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if RUN_ID_MARK in line:
                run_id = line.split(RUN_ID_MARK, 1)[1].strip()
                if run_id and run_id not in found:
                    found.append(run_id)
    return found


def cancel_runs(ids: Iterable[str], scancel: str = "scancel") -> bool:
    """Cancel every pending or running Slurm job named after one of the run IDs ``ids`` (this
    user's only). Says on stderr what it did or why it could not; returns whether scancel
    succeeded (True when there is nothing to cancel). Never raises: it runs while snakemake
    exits."""
    names = [i for i in dict.fromkeys(ids) if i]
    if not names:
        return True
    command = [scancel, "--user", _user(), "--name", ",".join(names)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        print(
            f"hpsrl: could not cancel the Slurm jobs of run {', '.join(names)}: {e}",
            file=sys.stderr,
        )
        return False
    if done.returncode != 0:
        print(
            f"hpsrl: `{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()}",
            file=sys.stderr,
        )
        return False
    print(f"hpsrl: cancelled what was left of Slurm run {', '.join(names)}", file=sys.stderr)
    return True


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
