"""Snakemake's locks, after a hard kill: a rerun removes the locks of a run that is dead.

Snakemake locks a working folder while it runs (``.snakemake/locks/N.input.lock`` and
``N.output.lock``) and removes its locks when it ends, but not when it is killed (SIGKILL, a lost
node, the OOM killer): the same command then fails with a LockException until someone runs
``snakemake --unlock``, which removes every lock, also a live run's. Here each run of this
workflow records which lock files it took and which process it is (``.snakemake/hpsrl-runs/
HOST.PID.json``, written by the onstart hook, deleted when the run ends); when snakemake next
starts in the folder, it removes the locks of recorded runs whose process is gone.

A run is taken for dead only on the host that recorded it (its process is not there, or another
process has reused its pid: the start time differs). A run recorded on another host is never
taken for dead: nothing here can see that host's processes, so its locks stay and ``snakemake
--unlock`` is the way, once you know that run is over. Locks without a record (a run with
``--no-hooks``, or killed before its onstart hook) stay too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def _lock_dir(workdir: Path) -> Path:
    return workdir / ".snakemake" / "locks"


def _record_dir(workdir: Path) -> Path:
    return workdir / ".snakemake" / "hpsrl-runs"


def lock_files(workdir: str | Path = ".") -> set[str]:
    """The names of the lock files in ``workdir``'s .snakemake folder now."""
    folder = _lock_dir(Path(workdir))
    return {p.name for p in folder.glob("*.lock")} if folder.is_dir() else set()


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc), or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie is over
        return None
    return fields[19]


def record_run(before: set[str], workdir: str | Path = ".") -> Path | None:
    """Record this process as the run holding the lock files that appeared since ``before``
    (those present when the workflow was read); None if it took none."""
    workdir = Path(workdir)
    mine = sorted(lock_files(workdir) - before)
    if not mine:
        return None
    pid = os.getpid()
    path = _record_dir(workdir) / f"{socket.gethostname()}.{pid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {"host": socket.gethostname(), "pid": pid, "start": process_start(pid), "locks": mine}
        )
    )
    os.replace(tmp, path)
    return path


def forget_run(workdir: str | Path = ".") -> None:
    """Delete this process's run record (snakemake removes its locks itself when it ends)."""
    path = _record_dir(Path(workdir)) / f"{socket.gethostname()}.{os.getpid()}.json"
    path.unlink(missing_ok=True)


def remove_dead_runs_locks(workdir: str | Path = ".") -> list[str]:
    """Remove the lock files of recorded runs on this host whose process is gone, and their
    records; return one line per run removed, saying which."""
    workdir = Path(workdir)
    folder = _record_dir(workdir)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    host = socket.gethostname()
    for path in sorted(folder.glob("*.json")):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written, or not ours to judge
        if run.get("host") != host:
            continue
        start = process_start(int(run["pid"]))
        if start is not None and start == run.get("start"):
            continue  # that run is still going
        for name in run.get("locks", []):
            with contextlib.suppress(OSError):
                (_lock_dir(workdir) / Path(name).name).unlink()
        path.unlink(missing_ok=True)
        removed.append(
            f"hpsrl: removed the locks of snakemake run {run['pid']} on {host}, which was "
            "killed; the campaign continues"
        )
    return removed
