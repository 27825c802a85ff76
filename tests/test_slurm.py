"""Campaigns through a real Slurm cluster (tests/slurm/start.sh brings one up on this machine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from tests.test_workflow import snakemake, write_config

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
    return dict(line.split("|", 1) for line in out.split())


def test_campaign_through_slurm_equals_local_run(workdir, tiny_config, tmp_path):
    tiny_config["ga"]["generations"] = 1
    tiny_config["report"]["retest_seeds"] = 0
    results = _slurm_campaign(workdir, tiny_config)

    job_ids = []
    for i in range(4):
        with h5py.File(results / "gen000" / f"ind{i:03d}.h5") as f:
            assert f.attrs["mpi_ranks"] == 2, "each training job runs one MPI rank per seed"
            job_ids.append(str(f.attrs["slurm_job_id"]))
    assert all(job_ids), "every training job ran inside a Slurm job"
    states = _sacct_states(job_ids)
    assert all(states[j] == "COMPLETED" for j in job_ids), states

    local = tmp_path / "local"
    local.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles"):
        (local / name).symlink_to(workdir / name)
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
