"""Campaigns through a real Slurm cluster (tests/slurm/start.sh brings one up on this machine)."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from tests.conftest import wait_until
from tests.test_workflow import BIN, snakemake, write_config

REPO = Path(__file__).resolve().parents[1]


def _cluster_answers() -> bool:
    if not (shutil.which("sinfo") and shutil.which("sacct")):
        return False
    try:
        for command in (["sinfo", "-h"], ["sacct", "-n", "-X", "-S", "now"]):
            subprocess.run(command, check=True, capture_output=True, timeout=20)
    except (subprocess.SubprocessError, OSError):
        return False
    return True


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not _cluster_answers(),
        reason="no Slurm cluster answers (sinfo/sacct); as root, start the local one with "
        "tests/slurm/start.sh (scripts/test.sh does it when run as root)",
    ),
]


def _slurm_campaign(workdir: Path, config: dict) -> Path:
    shutil.copytree(REPO / "tests" / "slurm" / "profile", workdir / "slurm-profile")
    write_config(workdir, config)
    done = snakemake(workdir, "--profile", "slurm-profile", timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return workdir / "results" / config["campaign"]


def _sacct_states(job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines())


@pytest.mark.parametrize("individuals_per_job", [1, 2])
def test_campaign_through_slurm_equals_local_run(
    workdir, tiny_config, tmp_path, individuals_per_job
):
    tiny_config["ga"]["generations"] = 1
    tiny_config["report"]["retest_seeds"] = 0
    tiny_config["training"]["individuals_per_job"] = individuals_per_job
    results = _slurm_campaign(workdir, tiny_config)

    job_ids = []
    for i in range(4):
        with h5py.File(results / "gen000" / f"ind{i:03d}.h5") as f:
            assert f.attrs["mpi_ranks"] == 2, "each training job runs one MPI rank per seed"
            job_ids.append(str(f.attrs["slurm_job_id"]))
    assert all(job_ids), "every training job ran inside a Slurm job"
    assert len(set(job_ids)) == 4 // individuals_per_job, job_ids
    states = _sacct_states(job_ids)
    assert all(states[j] == "COMPLETED" for j in job_ids), states

    # The same campaign run locally, one individual per job.
    local = tmp_path / "local"
    (local / "config").mkdir(parents=True)
    for name in ("Snakefile", "workflow", "profiles"):
        (local / name).symlink_to(workdir / name)
    tiny_config["training"]["individuals_per_job"] = 1
    write_config(local, tiny_config)
    done = snakemake(local, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(results / "gen000.h5") as a, h5py.File(local / "results/tiny/gen000.h5") as b:
        for name in ("returns", "episode_returns", "objectives"):
            np.testing.assert_array_equal(a["results"][name][()], b["results"][name][()])


def test_failed_training_inside_slurm_is_recorded_and_campaign_completes(workdir, tiny_config):
    tiny_config["genes"]["learning_rate"] = {"type": "float", "low": 1e8, "high": 1e9, "log": True}
    tiny_config["ga"].update(population=2, generations=1, tournament_size=2)
    tiny_config["report"]["retest_seeds"] = 0
    results = _slurm_campaign(workdir, tiny_config)
    with h5py.File(results / "gen000.h5") as f:
        assert list(f["results/status"].asstr()[()]) == ["failed", "failed"]
        assert all("TrainingDiverged" in e for e in f["results/error"].asstr()[()])
    assert "failures:" in (results / "status.txt").read_text()
    assert yaml.safe_load((results / "best.yaml").read_text())["individual"] is None


def _start_slurm_campaign(workdir: Path, config: dict, *args: str) -> subprocess.Popen:
    shutil.copytree(REPO / "tests" / "slurm" / "profile", workdir / "slurm-profile")
    write_config(workdir, config)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen(
        [str(BIN / "snakemake"), "--profile", "slurm-profile", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Ctrl-C as at a terminal, also where the tests run in the background of a script (which
        # starts them with SIGINT ignored, an inheritance snakemake would keep)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _run_ids(workdir: Path) -> list[str]:
    """The Slurm run IDs snakemake logged in workdir; its jobs are named after them."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.log"))
    return [
        line.split()[-1]
        for log in logs
        for line in log.read_text().splitlines()
        if "SLURM run ID" in line
    ]


def _running_training_jobs(workdir: Path) -> list[str]:
    """IDs of the last run's training jobs that Slurm is running."""
    run_ids = _run_ids(workdir)
    if not run_ids:
        return []
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-n", run_ids[-1], "-o", "%i %k"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [line.split()[0] for line in out.splitlines() if "train_individuals" in line]


# Slurm states change on its polling intervals: look once a second, for up to 5 minutes.
_wait = functools.partial(wait_until, timeout=300.0, poll=1.0)


def _long_campaign(config: dict) -> dict:
    # Long enough that the jobs are surely still running when the test cancels them: 400k steps
    # once finished first on a fast CPU (both jobs COMPLETED, not CANCELLED); 4M take minutes.
    config["training"]["steps"] = 4_000_000
    config["ga"].update(generations=1)
    config["report"]["retest_seeds"] = 0
    return config


def test_ctrl_c_cancels_the_slurm_jobs(workdir, tiny_config):
    proc = _start_slurm_campaign(workdir, _long_campaign(tiny_config))
    try:
        jobs = _wait(lambda: _running_training_jobs(workdir))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) != 0
    finally:
        proc.kill()
    states = _wait(lambda: (s := _sacct_states(jobs)) and "RUNNING" not in s.values() and s)
    assert all(state.startswith("CANCELLED") for state in states.values()), states


def test_after_a_hard_kill_the_documented_cleanup_cancels_orphans(workdir, tiny_config):
    proc = _start_slurm_campaign(workdir, _long_campaign(tiny_config))
    _wait(lambda: _running_training_jobs(workdir))
    proc.kill()  # SIGKILL: snakemake cannot cancel its jobs
    proc.wait()
    time.sleep(5)
    jobs = _running_training_jobs(workdir)
    assert jobs, "the orphans keep running"

    readme = (REPO / "README.md").read_text()
    cleanup = next(line for line in readme.splitlines() if line.startswith("scancel --name"))
    subprocess.run(["bash", "-c", cleanup], cwd=workdir, check=True, timeout=60)
    states = _wait(lambda: (s := _sacct_states(jobs)) and "RUNNING" not in s.values() and s)
    assert all(state.startswith("CANCELLED") for state in states.values()), states
    assert snakemake(workdir, "--profile", "slurm-profile", "--unlock").returncode == 0


def test_time_limit_is_retried_and_resumes_from_checkpoints(workdir, tiny_config):
    # Slurm ends a job past its 1-minute limit at its next check (every 30 s), so a training must
    # outlast 90 s by a margin even with fast agents sharing 2 cores: 4M steps (3-4 minutes here).
    tiny_config["training"]["steps"] = 4_000_000
    tiny_config["training"]["checkpoint"] = {"every_minutes": 0, "every_steps": 20_000}
    tiny_config["ga"].update(population=2, generations=1, tournament_size=2)
    tiny_config["report"]["retest_seeds"] = 0
    proc = _start_slurm_campaign(workdir, tiny_config, "--retries", "1")
    results = workdir / "results" / "tiny"
    try:
        _wait(lambda: list((results / "gen000" / "ind000.ckpt").glob("seed*.pt")))
        jobs = _running_training_jobs(workdir)
        # As if the job had asked for too little time: Slurm ends it at its next check.
        for job in jobs:
            subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=0:01"], check=True)
        assert proc.wait(timeout=900) == 0
    finally:
        proc.kill()
    assert "TIMEOUT" in _sacct_states(jobs).values()
    log = (results / "logs" / "gen000" / "ind000-000.log").read_text()
    assert "resuming from env step" in log
    with h5py.File(results / "gen000.h5") as f:
        assert (f["results/status"].asstr()[()] == "ok").all()
        assert (f["results/env_steps"][()] >= 4_000_000).all()
