"""Tiny campaigns through the real snakemake command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from hpsrl.campaign.config import load_config, search_space
from hpsrl.cluster.executor import requested_executor, runs_locally
from tests.conftest import copy_workflow

BIN = Path(sys.executable).parent


def snakemake(
    workdir: Path, *args: str, timeout: int = 600, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env_extra or {})}
    return subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def planned_jobs(workdir: Path, *targets: str) -> dict[str, int]:
    """Jobs per rule that `snakemake -n [TARGET ...]` plans."""
    done = snakemake(workdir, "-n", *targets, "--quiet", "rules")
    assert done.returncode == 0, done.stderr
    counts = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_dry_run_shows_the_whole_campaign(workdir, tiny_config):
    write_config(workdir, tiny_config)
    counts = planned_jobs(workdir)
    # 2 generations x 4 individuals + the re-test of the best one.
    assert counts["train_individuals"] == 9
    assert counts["collect_generation"] == 3
    assert counts["init_population"] == 1
    assert counts["evolve_population"] == 1


def test_several_individuals_per_training_job(workdir, tiny_config):
    tiny_config["training"]["individuals_per_job"] = 3
    write_config(workdir, tiny_config)
    # Per generation one job of 3 individuals and one of the last 1; the re-test is one job.
    assert planned_jobs(workdir)["train_individuals"] == 2 * 2 + 1
    done = snakemake(workdir, "-n", "--printshellcmds")
    assert "--individual 0 1 2 --out results/tiny/gen000/ind000.h5" in done.stdout
    assert "--manifest results/tiny/gen000/ind000-002.txt" in done.stdout


def test_training_jobs_launch_no_more_ranks_than_cores(workdir, tiny_config):
    write_config(workdir, tiny_config)  # 2 seeds per individual: 2 ranks, 1 with --cores 1
    for cores, ranks in (("2", 2), ("1", 1)):
        assert launched_ranks(workdir, "--cores", cores) == {str(ranks)}


def test_batched_training_jobs_use_every_core(workdir, tiny_config):
    # Jobs of 3 individuals x 2 seeds and of the last 1 individual; the re-test's 2 seeds.
    tiny_config["training"]["individuals_per_job"] = 3
    write_config(workdir, tiny_config)
    assert launched_ranks(workdir, "--cores", "4") == {"4", "2"}
    assert launched_ranks(workdir, "--cores", "8") == {"6", "2"}


def test_local_training_jobs_go_to_the_warm_workers(workdir, tiny_config):
    write_config(workdir, tiny_config)
    submit = (
        "python -m hpsrl.training.workers submit "
        f"{tempfile.gettempdir()}/hpsrl-{os.getuid()}/workers-"
    )
    # A job that the workers train takes one core, so that snakemake runs one per core; without a
    # pool it would launch one rank.
    done = snakemake(workdir, "-n", "--printshellcmds", "--cores", "2")
    command = rf"{submit}\d+\.sock -- mpiexec -n 1 python -m mpi4py -m hpsrl train"
    assert re.search(command, done.stdout), done.stdout
    # No pool to hand them to: with --no-hooks (onstart starts it), or turned off.
    for args, env in ((["--no-hooks"], {}), ([], {"HPSRL_WARM_WORKERS": "0"})):
        done = snakemake(workdir, "-n", "-p", "--cores", "2", *args, env_extra=env)
        assert "mpiexec -n 2 python -m mpi4py -m hpsrl train" in done.stdout
        assert "hpsrl.training.workers" not in done.stdout


def training_jobs_shown(log: str) -> dict[str, tuple[dict[str, str], str]]:
    """Per training job that a snakemake log shows (a dry run's stdout, a run's stderr), keyed by
    its output: its resources, less those Snakemake sizes from input files that a dry run cannot
    know yet (disk, tmpdir), and its shell command."""
    jobs = {}
    for block in re.split(r"^(?:local)?rule ", log, flags=re.MULTILINE):
        if not block.startswith("train_individuals:"):
            continue
        output = re.search(r"^    output: (.*)$", block, flags=re.MULTILINE).group(1)
        shown = re.search(r"^    resources: (.*)$", block, flags=re.MULTILINE).group(1)
        resources = dict(item.split("=", 1) for item in shown.split(", "))
        resources = {k: v for k, v in resources.items() if not k.startswith(("disk", "tmpdir"))}
        command = re.search(r"^Shell command: (.*)$", block, flags=re.MULTILINE).group(1)
        jobs[output] = (resources, command)
    return jobs


def test_slurm_dry_run_shows_what_slurm_is_asked_for(workdir, tiny_config):
    # A dry run executes with Snakemake's local "dryrun" executor whatever the profile says; it
    # must still plan the jobs a Slurm run submits: each asking for one individual's seeds as
    # tasks (2) of one CPU each, launched by srun, not handed to warm workers.
    pytest.importorskip("snakemake_executor_plugin_slurm")
    tiny_config["training"]["individuals_per_job"] = 2
    tiny_config["training"]["steps"] = 60_000  # 2 minutes per individual at 500 steps/s
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-n", "--profile", "profiles/slurm")
    assert done.returncode == 0, done.stderr
    jobs = training_jobs_shown(done.stdout)
    # 2 generations of 2 jobs of 2 individuals, and the re-test of 1
    assert sorted(jobs) == [
        "results/tiny/gen000/ind000-001.txt",
        "results/tiny/gen000/ind002-003.txt",
        "results/tiny/gen001/ind000-001.txt",
        "results/tiny/gen001/ind002-003.txt",
        "results/tiny/retest/ind000-000.txt",
    ]
    for output, (resources, command) in jobs.items():
        individuals = 1 if "retest" in output else 2
        assert resources["tasks"] == "2", (output, resources)
        assert resources["cpus_per_task"] == "1"
        assert resources["mem_mb_per_cpu"] == "1000"
        assert resources["mpi"] == "srun --mpi=pmi2"
        assert resources["runtime"] == str(5 + 2 * individuals)  # minutes
        assert command.startswith("srun --mpi=pmi2 -n 2 python -m mpi4py -m hpsrl train"), command
    # --set-threads asks Slurm for that many tasks, in the dry run as in the submission.
    done = snakemake(
        workdir, "-n", "--profile", "profiles/slurm", "--set-threads", "train_individuals=3"
    )
    assert done.returncode == 0, done.stderr
    for resources, command in training_jobs_shown(done.stdout).values():
        assert resources["tasks"] == "3"
        assert command.startswith("srun --mpi=pmi2 -n 3 python -m mpi4py -m hpsrl train")
    # The same dry run without the profile plans this machine's run: warm workers, one core each.
    done = snakemake(workdir, "-n", "--cores", "2")
    for resources, command in training_jobs_shown(done.stdout).values():
        assert resources["tasks"] == "1" and resources["mpi"] == "mpiexec"
        assert command.startswith("python -m hpsrl.training.workers submit ")


@pytest.mark.parametrize("key", ["training", "retest"])
def test_a_slurm_run_of_one_seed_jobs_stops_before_any_job(workdir, tiny_config, key):
    # The Slurm plugin refuses an MPI job of one task; a one-seed re-test would fail only after
    # the whole search, so the run stops at once, dry run included, and says what to change.
    pytest.importorskip("snakemake_executor_plugin_slurm")
    tiny_config[key]["seeds"] = 1
    write_config(workdir, tiny_config)
    for dry in (["-n"], []):
        done = snakemake(workdir, *dry, "--profile", "profiles/slurm")
        assert done.returncode != 0
        assert f"hpsrl: {key}.seeds is 1" in done.stderr, done.stderr[-2000:]
        assert "Set " + key + ".seeds to 2 or more" in done.stderr
        assert not (workdir / "results").exists()
    # --set-threads chooses the tasks itself; and locally one seed is fine.
    asked = snakemake(
        workdir, "-n", "--profile", "profiles/slurm", "--set-threads", "train_individuals=2"
    )
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert snakemake(workdir, "-n", "--cores", "2").returncode == 0


def test_the_executor_a_command_line_asks_for(tmp_path, monkeypatch):
    monkeypatch.chdir(copy_workflow(tmp_path))
    assert requested_executor(["-n"]) == "local"
    assert requested_executor(["-n", "--executor", "slurm", "--jobs", "4"]) == "slurm"
    assert requested_executor(["-n", "--profile", "profiles/slurm"]) == "slurm"
    assert requested_executor(["-n", "--profile", "profiles/missing"]) is None
    assert requested_executor(["--no-such-option"]) is None
    assert not runs_locally("slurm")
    assert runs_locally("local") and runs_locally("dryrun")


def launched_ranks(workdir, *args):
    """The rank counts of the training jobs a dry run plans, each job launching its own ranks."""
    done = snakemake(
        workdir, "-n", "--printshellcmds", *args, env_extra={"HPSRL_WARM_WORKERS": "0"}
    )
    assert done.returncode == 0, done.stderr
    return set(re.findall(r"mpiexec -n (\d+) python -m mpi4py -m hpsrl train", done.stdout))


def test_lint_is_clean(workdir):
    done = snakemake(workdir, "--lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_bad_config_fails_before_any_job(workdir, tiny_config):
    tiny_config["ga"]["tournament_size"] = 9
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-j1")
    assert done.returncode != 0
    assert "ga.tournament_size" in done.stdout + done.stderr
    assert not (workdir / "results").exists()


@pytest.mark.slow
def test_tiny_campaign_runs_resumes_and_is_reproducible(workdir, tiny_config, tmp_path):
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    results = workdir / "results" / "tiny"

    with h5py.File(results / "gen001.h5") as f:
        assert f.attrs["batch"] == "gen001"
        assert f["results/returns"].shape == (4, 2)
        assert f["results/episode_returns"].shape == (4, 2, 3)
        assert f["results/objectives"].shape == (4, 2)
        assert f["population/operator"].asstr()[0] == "elite"
        assert set(f["population/genes"]) == set(search_space(load_config(tiny_config)).names)
        assert (f["results/status"].asstr()[()] == "ok").all()
        assert np.isfinite(f["results/returns"][()]).all()
    # Run locally, the jobs' seeds were trained by the run's warm workers (hpsrl.training.workers).
    assert "trained by the warm workers" in (results / "logs/gen001/ind003-003.log").read_text()
    best = yaml.safe_load((results / "best.yaml").read_text())
    assert best["generation"] == "gen001"
    assert len(best["retest"]["returns_per_seed"]) == 2

    again = snakemake(workdir, "-j2")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr

    # Regrouping a finished campaign's training jobs trains nothing again.
    trained = {p: p.stat().st_mtime_ns for p in results.glob("*/ind*.h5")}
    tiny_config["training"]["individuals_per_job"] = 2
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in results.glob("*/ind*.h5")} == trained

    # The same root seed in another folder, with a whole generation per training job and each
    # job launching its own ranks instead of warm workers, gives the same genes and returns.
    other = tmp_path / "other"
    (other / "config").mkdir(parents=True)
    for name in ("Snakefile", "workflow", "profiles"):
        os.symlink(workdir / name, other / name)
    tiny_config["training"]["individuals_per_job"] = 4
    write_config(other, tiny_config)
    done = snakemake(other, "-j2", env_extra={"HPSRL_WARM_WORKERS": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    own_ranks = (other / "results/tiny/logs/gen001/ind000-003.log").read_text()
    assert "warm workers" not in own_ranks and "seed 1: mean eval return" in own_ranks
    for name in ("gen000.h5", "gen001.h5", "retest.h5"):
        with h5py.File(results / name) as a, h5py.File(other / "results" / "tiny" / name) as b:
            for gene in a["population/genes"]:
                np.testing.assert_array_equal(
                    a["population/genes"][gene][()], b["population/genes"][gene][()]
                )
            np.testing.assert_array_equal(a["results/returns"][()], b["results/returns"][()])


def test_changed_config_is_refused_on_existing_results(workdir, tiny_config):
    tiny_config["training"]["steps"] = 64
    tiny_config["fixed"]["num_steps"] = 16
    tiny_config["budget"]["generations"] = 1
    tiny_config["retest"]["seeds"] = 0
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-j2", "--until", "init_population")
    assert done.returncode == 0, done.stderr[-2000:]
    population = workdir / "results" / "tiny" / "gen000" / "population.h5"
    before = population.read_bytes()

    tiny_config["budget"]["generations"] = 3  # extending is allowed
    write_config(workdir, tiny_config)
    assert snakemake(workdir, "-n").returncode == 0

    tiny_config["training"]["steps"] = 128
    tiny_config["env"]["id"] = "Acrobot-v1"
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-n")
    assert done.returncode != 0
    message = done.stdout + done.stderr
    assert "env.id, training.steps changed" in message
    assert "'campaign'" in message
    assert population.read_bytes() == before


@pytest.mark.slow
def test_raising_generations_extends_a_finished_campaign(workdir, tiny_config):
    tiny_config["budget"]["generations"] = 1
    tiny_config["retest"]["seeds"] = 0
    write_config(workdir, tiny_config)
    assert snakemake(workdir, "-j2").returncode == 0
    results = workdir / "results" / "tiny"
    first = {p: p.stat().st_mtime_ns for p in results.glob("gen000*/*.h5")}
    first[results / "gen000.h5"] = (results / "gen000.h5").stat().st_mtime_ns

    tiny_config["budget"]["generations"] = 2
    write_config(workdir, tiny_config)
    assert planned_jobs(workdir)["train_individuals"] == 4
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in first.items()), "generation 0 was redone"
    with h5py.File(results / "gen001.h5") as f:
        assert f["results/returns"].shape == (4, 2)
    assert "gen001" in (results / "status.txt").read_text()
