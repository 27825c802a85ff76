"""A rerun after a hard kill removes the killed run's locks, and only those
(hpsrl/campaign/locks.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from hpsrl.campaign import locks


def take_locks(workdir, *names):
    folder = workdir / ".snakemake" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("results/x.h5\n")


def record(workdir, pid, host=None, start=None, lock_names=("0.input.lock", "0.output.lock")):
    folder = workdir / ".snakemake" / "hpsrl-runs"
    folder.mkdir(parents=True, exist_ok=True)
    host = host or socket.gethostname()
    run = {"host": host, "pid": pid, "start": start, "locks": list(lock_names)}
    (folder / f"{host}.{pid}.json").write_text(json.dumps(run))


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_a_run_records_the_locks_it_took_and_forgets_them(tmp_path):
    take_locks(tmp_path, "0.input.lock")
    before = locks.lock_files(tmp_path)
    take_locks(tmp_path, "1.input.lock", "1.output.lock")
    path = locks.record_run(before, tmp_path)
    run = json.loads(path.read_text())
    assert run["pid"] == os.getpid() and run["locks"] == ["1.input.lock", "1.output.lock"]
    assert run["start"] == locks.process_start(os.getpid())
    assert locks.remove_dead_runs_locks(tmp_path) == [], "this run is alive"
    locks.forget_run(tmp_path)
    assert not path.exists()


def test_the_locks_of_a_dead_run_go_and_no_others(tmp_path):
    take_locks(tmp_path, "0.input.lock", "0.output.lock", "1.input.lock", "1.output.lock")
    dead = dead_pid()
    record(tmp_path, dead, start="12345")
    record(tmp_path, os.getpid(), start=locks.process_start(os.getpid()),
           lock_names=("1.input.lock", "1.output.lock"))  # fmt: skip
    removed = locks.remove_dead_runs_locks(tmp_path)
    assert len(removed) == 1 and f"snakemake run {dead} " in removed[0]
    assert locks.lock_files(tmp_path) == {"1.input.lock", "1.output.lock"}


def test_a_reused_pid_is_a_dead_run(tmp_path):
    take_locks(tmp_path, "0.input.lock")
    record(tmp_path, os.getpid(), start="1", lock_names=("0.input.lock",))  # another start time
    assert len(locks.remove_dead_runs_locks(tmp_path)) == 1
    assert locks.lock_files(tmp_path) == set()


def test_a_run_on_another_host_is_never_taken_for_dead(tmp_path):
    take_locks(tmp_path, "0.input.lock")
    record(tmp_path, dead_pid(), host="another-login-node", lock_names=("0.input.lock",))
    assert locks.remove_dead_runs_locks(tmp_path) == []
    assert locks.lock_files(tmp_path) == {"0.input.lock"}
