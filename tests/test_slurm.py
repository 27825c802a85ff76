"""Campaigns through a real Slurm cluster (tests/slurm/start.sh brings one up on this machine)."""

from __future__ import annotations

import copy
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

from hpsrl.cluster.slurm import run_ids
from tests.conftest import copy_workflow, sigint_as_at_a_terminal, wait_until
from tests.test_workflow import BIN, snakemake, training_jobs_shown, write_config

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


# The environment that makes the tests' modules importable to snakemake and its jobs.
_TESTS_IMPORTABLE = {
    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
}


def _copy_profile(workdir: Path, train_resources: dict | None = None) -> None:
    """The test cluster's profile in workdir/slurm-profile, with ``train_resources`` added to the
    training jobs' resources."""
    profile = workdir / "slurm-profile"
    shutil.copytree(REPO / "tests" / "slurm" / "profile", profile)
    if train_resources:
        settings = yaml.safe_load((profile / "config.yaml").read_text())
        settings["set-resources"]["train_individuals"].update(train_resources)
        (profile / "config.yaml").write_text(yaml.safe_dump(settings))


def _slurm_campaign(
    workdir: Path,
    config: dict,
    *,
    dry_run_first: bool = False,
    train_resources: dict | None = None,
) -> Path:
    """Run ``config`` through the test cluster. With ``dry_run_first``, a dry run under the same
    profile comes first, and must have shown the very training jobs (resources and commands)
    that the run then submitted. ``train_resources`` are added to the training jobs' resources."""
    _copy_profile(workdir, train_resources)
    write_config(workdir, config)
    if dry_run_first:
        dry = snakemake(workdir, "-n", "--profile", "slurm-profile", env_extra=_TESTS_IMPORTABLE)
        assert dry.returncode == 0, dry.stderr[-4000:]
    done = snakemake(
        workdir, "--profile", "slurm-profile", timeout=900, env_extra=_TESTS_IMPORTABLE
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:] + _job_logs(workdir)
    if dry_run_first:
        submitted = training_jobs_shown(done.stderr)
        assert submitted, done.stderr[-4000:]
        assert training_jobs_shown(dry.stdout) == submitted
    return workdir / "results" / config["campaign"]


def _job_logs(workdir: Path) -> str:
    """The tail of every job log of the campaign: what a failed job printed, for the failure."""
    tails = []
    for log in sorted(workdir.glob("results/*/logs/**/*.log")):
        tail = log.read_text(errors="replace")[-1500:]
        tails.append(f"\n--- {log.relative_to(workdir)}:\n{tail}")
    return "".join(tails)


@pytest.fixture(autouse=True)
def _no_slurm_jobs_left_behind(workdir):
    """After each test, cancel every Slurm job of the runs it started (named after the run IDs
    their snakemake logs hold) and wait until the queue has none of them: a test that fails, or a
    job that snakemake missed, leaves no job holding the cluster's cores for the next tests."""
    yield
    names = ",".join(_run_ids(workdir))
    if not names:
        return
    subprocess.run(["scancel", "--name", names], capture_output=True, timeout=60)
    _wait(
        lambda: (
            not subprocess.run(
                ["squeue", "-h", "-n", names, "-o", "%i %T"],
                check=True,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        ),
        timeout=120.0,
    )


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
    tiny_config["budget"]["generations"] = 1
    tiny_config["retest"]["seeds"] = 0
    tiny_config["training"]["individuals_per_job"] = individuals_per_job
    results = _slurm_campaign(workdir, tiny_config, dry_run_first=True)

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
    tiny_config["budget"].update(population=2, generations=1)
    tiny_config["ga"].update(tournament_size=2)
    tiny_config["retest"]["seeds"] = 0
    results = _slurm_campaign(workdir, tiny_config)
    with h5py.File(results / "gen000.h5") as f:
        assert list(f["results/status"].asstr()[()]) == ["failed", "failed"]
        assert all("TrainingDiverged" in e for e in f["results/error"].asstr()[()])
    assert "failures:" in (results / "status.txt").read_text()
    assert yaml.safe_load((results / "best.yaml").read_text())["individual"] is None


def _start_slurm_campaign(
    workdir: Path, config: dict, *args: str, path: str = ""
) -> subprocess.Popen:
    """snakemake --profile slurm-profile ARGS in workdir, in the background; ``path`` goes before
    PATH (a folder of wrappers). The tests' own modules are importable, in the Slurm jobs too
    (sbatch passes the environment on), for the test environments of tests/fixtures_envs.py."""
    _copy_profile(workdir)
    write_config(workdir, config)
    env = {
        **os.environ,
        "PATH": os.pathsep.join(p for p in (path, str(BIN), os.environ["PATH"]) if p),
        **_TESTS_IMPORTABLE,
    }
    return subprocess.Popen(
        [str(BIN / "snakemake"), "--profile", "slurm-profile", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=sigint_as_at_a_terminal,
    )


def _run_ids(workdir: Path) -> list[str]:
    """The Slurm run IDs snakemake logged in workdir; its jobs are named after them."""
    return run_ids(sorted((workdir / ".snakemake" / "log").glob("*.log")))


def _run_id(workdir: Path) -> str:
    """The one Slurm run ID that snakemake logged in workdir, once it has."""
    ids = _wait(lambda: _run_ids(workdir), timeout=120.0)
    assert len(ids) == 1, ids
    return ids[0]


def _run_states(run_id: str) -> dict[str, str]:
    """The state of every job of a run, by job ID: all that the run submitted, as Slurm's
    accounting knows them, whatever snakemake saw."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-S", "now-1days", "--name", run_id, "-o", "JobID,State"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines())


def _run_ended(run_id: str, jobs: int) -> dict[str, str]:
    """The states of a run's jobs once Slurm's accounting has all ``jobs`` of them (it records a
    job a moment after its submission) and none is pending or running any more."""

    seen: dict[str, str] = {}

    def ended():
        seen.update(states := _run_states(run_id))
        busy = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED"}
        return states if len(states) >= jobs and not busy & set(states.values()) else None

    try:
        return _wait(ended, timeout=120.0)
    except AssertionError:
        raise AssertionError(f"run {run_id}: {jobs} jobs did not all end: {seen}") from None


def _running_training_jobs(run_id: str) -> list[str]:
    """IDs of a run's training jobs that Slurm is running."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-n", run_id, "-o", "%i %k"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [line.split()[0] for line in out.splitlines() if "train_individuals" in line]


_COMPARED = ("status", "returns", "episode_returns", "objectives")


def _results(results: Path) -> dict[str, np.ndarray]:
    with h5py.File(results / "gen000.h5") as f:
        return {name: f["results"][name][()] for name in _COMPARED}


def assert_same_results(results: Path, expected: dict[str, np.ndarray]) -> None:
    """The campaign in ``results`` trained generation 0 exactly as ``expected`` says."""
    got = _results(results)
    for name in _COMPARED:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """``uninterrupted(config)``: generation 0 of a campaign of ``_held_campaign``, as a local run
    that nothing holds or interrupts trains it; one run per population, shared by the tests."""
    runs: dict[int, dict[str, np.ndarray]] = {}

    def results(config: dict) -> dict[str, np.ndarray]:
        population = config["budget"]["population"]
        if population not in runs:
            local = copy_workflow(tmp_path_factory.mktemp(f"uninterrupted{population}"))
            config = copy.deepcopy(config)
            config["env"]["kwargs"].update(hold=str(local / "no-hold"), waiting=str(local / "w"))
            write_config(local, config)
            done = snakemake(local, "-j2", env_extra=_TESTS_IMPORTABLE)
            assert done.returncode == 0, done.stderr[-3000:]
            runs[population] = _results(local / "results" / config["campaign"])
        return runs[population]

    return results


# Slurm states change on its polling intervals: look once a second, for up to 5 minutes.
_wait = functools.partial(wait_until, timeout=300.0, poll=1.0)


def _held_campaign(config: dict, folder: Path, after: int = 0) -> tuple[Path, Path]:
    """The campaign on tests.fixtures_envs:HeldEnv, held: each training waits at its env step
    ``after`` for as long as the returned file ``hold`` exists, with a file per waiting rank in the
    returned folder. No test then depends on a training being slow enough to outlast a signal."""
    hold, waiting = folder / "hold", folder / "waiting"
    hold.touch()
    config["env"] = {
        "id": "hpsrl-test/Held-v0",
        "entry_point": "tests.fixtures_envs:HeldEnv",
        "kwargs": {"hold": str(hold), "waiting": str(waiting), "after": after},
    }
    config["objectives"][1]["threshold"] = 8  # MatchEnv scores 10 at most
    config["budget"].update(generations=1)
    config["retest"]["seeds"] = 0
    return hold, waiting


def _waiting_ranks(waiting: Path) -> int:
    return len(list(waiting.glob("*"))) if waiting.is_dir() else 0


def _gated_sbatch(folder: Path) -> tuple[Path, Path, Path]:
    """A folder with an `sbatch` that submits the first job at once and holds every later one
    until the file ``release`` exists, then submits it: the jobs of a run that snakemake is still
    submitting when it is interrupted. Held ones give up, submitting nothing, once the file
    ``abandon`` exists (a test that failed before releasing them). Returns the folder, release
    and abandon."""
    folder.mkdir()
    release, abandon = folder / "release", folder / "abandon"
    real = shutil.which("sbatch")
    assert real, "no sbatch"
    wrapper = folder / "sbatch"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"if ! mkdir '{folder}/first' 2>/dev/null; then\n"
        f"  while [ ! -e '{release}' ]; do\n"
        f"    if [ -e '{abandon}' ]; then exit 1; fi\n"
        "    sleep 0.1\n"
        "  done\n"
        "fi\n"
        f"exec '{real}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return folder, release, abandon


def test_ctrl_c_cancels_every_slurm_job_of_the_run(workdir, tiny_config, tmp_path):
    # 4 training jobs: the first trains (held), the other 3 are still being submitted when
    # snakemake is interrupted and only reach Slurm after the executor plugin has cancelled the
    # jobs it knew of; the workflow's onerror hook must cancel them too.
    _hold, waiting = _held_campaign(tiny_config, tmp_path)
    wrappers, release, abandon = _gated_sbatch(tmp_path / "wrappers")
    proc = _start_slurm_campaign(workdir, tiny_config, path=str(wrappers))
    try:
        run_id = _run_id(workdir)
        _wait(lambda: _waiting_ranks(waiting))  # a training is surely running
        (first,) = _wait(lambda: _run_states(run_id))  # the other 3 are held in sbatch
        proc.send_signal(signal.SIGINT)
        # Once the plugin has cancelled what it knew of, the held submissions go through (after
        # at most 60 s: where the plugin missed the first job too, the hook must cancel it).
        deadline = time.monotonic() + 60
        while not _run_states(run_id)[first].startswith("CANCELLED"):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        release.touch()
        assert proc.wait(timeout=120) != 0
    finally:
        proc.kill()
        abandon.touch()
    states = _run_ended(run_id, 4)
    assert len(states) == 4, states
    assert all(state.startswith("CANCELLED") for state in states.values()), states


def test_after_a_hard_kill_the_documented_cleanup_and_a_rerun_complete_the_campaign(
    workdir, tiny_config, tmp_path, uninterrupted
):
    # snakemake on the "login node" is SIGKILLed while its training jobs run on the compute nodes;
    # the orphans are cancelled as docs/cluster.md says, and the same command run again finishes
    # the campaign (removing the killed run's locks itself) with an uninterrupted run's results.
    hold, waiting = _held_campaign(tiny_config, tmp_path)
    tiny_config["budget"].update(population=2)
    tiny_config["ga"].update(tournament_size=2)
    proc = _start_slurm_campaign(workdir, tiny_config)
    try:
        run_id = _run_id(workdir)
        _wait(lambda: _waiting_ranks(waiting) == 4)  # both jobs' 2 ranks train: all submitted
    finally:
        proc.kill()  # SIGKILL: snakemake cannot cancel its jobs
        proc.wait()
    time.sleep(2)
    jobs = _running_training_jobs(run_id)
    assert len(jobs) == 2, "the orphans keep running"

    readme = (REPO / "docs" / "cluster.md").read_text()
    cleanup = next(line for line in readme.splitlines() if line.startswith("scancel --name"))
    subprocess.run(["bash", "-c", cleanup], cwd=workdir, check=True, timeout=60)
    states = _run_ended(run_id, len(jobs))
    assert sorted(states) == sorted(jobs), states
    assert all(state.startswith("CANCELLED") for state in states.values()), states

    hold.unlink()
    rerun = snakemake(
        workdir, "--profile", "slurm-profile", timeout=900, env_extra=_TESTS_IMPORTABLE
    )
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    assert "hpsrl: removed the locks" in rerun.stderr, rerun.stderr[-4000:]
    assert_same_results(workdir / "results" / "tiny", uninterrupted(tiny_config))


def test_time_limit_is_retried_and_resumes_from_checkpoints(workdir, tiny_config, tmp_path):
    # Each training checkpoints every 2 PPO updates and then waits, held, at its first step after
    # them (128 steps of each of its 4 env copies: 512 env steps): still running, surely, when
    # Slurm's time limit ends it. Held no more, the retried job resumes from the checkpoint.
    steps = 2048
    hold, waiting = _held_campaign(tiny_config, tmp_path, after=128)
    tiny_config["training"]["steps"] = steps
    tiny_config["training"]["checkpoint"] = {"every_minutes": 0, "every_steps": 512}
    tiny_config["budget"].update(population=2)
    tiny_config["ga"].update(tournament_size=2)
    proc = _start_slurm_campaign(workdir, tiny_config, "--retries", "1")
    results = workdir / "results" / "tiny"
    try:
        run_id = _run_id(workdir)
        _wait(lambda: _waiting_ranks(waiting) == 4)  # both jobs' 2 ranks, checkpointed
        for i in range(2):
            assert len(list((results / "gen000" / f"ind{i:03d}.ckpt").glob("seed*.pt"))) == 2
        jobs = _running_training_jobs(run_id)
        assert len(jobs) == 2, jobs
        # As if the jobs had asked for too little time: Slurm ends them at its next check of
        # time limits (every 30 s) past their first minute.
        for job in jobs:
            subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=0:01"], check=True)
        _wait(lambda: all(_sacct_states(jobs)[j] == "TIMEOUT" for j in jobs), timeout=180.0)
        hold.unlink()
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
    states = _run_ended(run_id, 4)
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED", "TIMEOUT", "TIMEOUT"], states
    for i in range(2):
        log = (results / "logs" / "gen000" / f"ind{i:03d}-{i:03d}.log").read_text()
        assert "resuming from env step 512" in log, log[-2000:]
    with h5py.File(results / "gen000.h5") as f:
        assert (f["results/status"].asstr()[()] == "ok").all()
        assert (f["results/env_steps"][()] >= steps).all()
