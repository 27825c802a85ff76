"""hpsrl.cluster.slurm without a cluster: run IDs from snakemake logs, and the scancel that ends
a run."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from hpsrl.cluster.slurm import cancel_runs, run_ids


def test_run_ids_are_read_from_snakemake_logs(tmp_path):
    first, second = tmp_path / "a.snakemake.log", tmp_path / "b.snakemake.log"
    first.write_text("Using profile slurm-profile\nSLURM run ID: 1e9e4305-9902\nJob 3 ...\n")
    second.write_text("SLURM run ID: mine_3c6da342\nSLURM run ID: 1e9e4305-9902\n")
    assert run_ids([first, second, tmp_path / "missing.log"]) == ["1e9e4305-9902", "mine_3c6da342"]
    assert run_ids([]) == []


def _fake_scancel(folder: Path, status: int) -> Path:
    script = folder / "scancel"
    script.write_text(f'#!/bin/sh\necho "$@" > {folder}/args\necho oops >&2\nexit {status}\n')
    script.chmod(0o755)
    return script


def test_cancel_runs_cancels_this_users_jobs_by_run_name(tmp_path, capsys):
    scancel = _fake_scancel(tmp_path, 0)
    assert cancel_runs(["run-a", "run-b", "run-a", ""], scancel=str(scancel))
    me = pwd.getpwuid(os.getuid()).pw_name
    assert (tmp_path / "args").read_text().split() == ["--user", me, "--name", "run-a,run-b"]
    assert "run-a, run-b" in capsys.readouterr().err


def test_cancel_runs_says_why_it_could_not_and_never_raises(tmp_path, capsys):
    assert cancel_runs([], scancel=str(tmp_path / "none"))  # nothing to cancel: no scancel
    assert not cancel_runs(["run-a"], scancel=str(_fake_scancel(tmp_path, 1)))
    assert "failed (1): oops" in capsys.readouterr().err
    assert not cancel_runs(["run-a"], scancel=str(tmp_path / "no-such-scancel"))
    assert "could not cancel the Slurm jobs of run run-a" in capsys.readouterr().err
