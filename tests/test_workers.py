"""Warm workers: a pool trains jobs exactly as the jobs' own ranks would, survives jobs that are
killed or wrong, and ends with the process that started it."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hpsrl.campaign.config import load_config
from hpsrl.campaign.storage import read_individual_arrays, read_weights, write_population
from hpsrl.cli import parse_args
from hpsrl.search.evolve import initial_population
from hpsrl.training.train_request import TrainRequest, read_train_command
from hpsrl.training.workers import STOPPED_EXIT, STOPPED_WHY, campaigns_to_train, socket_path
from tests.conftest import sigint_as_at_a_terminal, wait_until
from tests.test_workflow import BIN, snakemake, write_config

PYTHON = sys.executable


@pytest.fixture
def pool(tmp_path):
    """A pool of 2 workers whose parent is this test process; its socket path."""
    path = tmp_path / "workers.sock"
    log = open(tmp_path / "workers.log", "w")  # noqa: SIM115 (closed below)
    command = [PYTHON, "-m", "hpsrl.training.workers", "serve", "--socket", str(path),
               "--workers", "2", "--parent", str(os.getpid()), "--algorithms", "ppo"]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_until(path.exists)
    yield path
    process.terminate()
    assert process.wait(timeout=30) == 0
    log.close()
    assert not path.exists(), "the pool removes its socket"


def _train_command(population: Path, individuals: list[int], outs: list[Path], *extra: str):
    return [PYTHON, "-m", "hpsrl", "train", "--population", str(population),
            "--individual", *map(str, individuals), "--out", *map(str, outs), *extra]  # fmt: skip


def _submit_command(socket: Path, command: list[str]) -> list[str]:
    return [PYTHON, "-m", "hpsrl.training.workers", "submit", str(socket), "--", *command]


def _submit(socket: Path, command: list[str], cwd: Path | None = None):
    return subprocess.run(
        _submit_command(socket, command), cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _start_long_job(socket: Path, tiny_config, tmp_path: Path, out: Path) -> subprocess.Popen:
    """A job that trains for minutes, once the pool has taken it."""
    config = {**tiny_config, "training": {**tiny_config["training"], "steps": 2_000_000}}
    write_population(tmp_path / "long.h5", initial_population(load_config(config)))
    job = subprocess.Popen(
        _submit_command(socket, _train_command(tmp_path / "long.h5", [0], [out])),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "trained by the warm workers" in job.stderr.readline()
    return job


@pytest.fixture
def population(tiny_config, tmp_path) -> Path:
    path = tmp_path / "pop.h5"
    write_population(path, initial_population(load_config(tiny_config)))
    return path


@pytest.mark.slow
def test_warm_workers_train_as_the_jobs_own_rank_would(pool, population, tmp_path):
    # Two jobs in turn: the workers that train the second one trained the first before.
    warm = [tmp_path / f"warm{i}.h5" for i in range(4)]
    manifest = tmp_path / "ind000-001.txt"
    done = _submit(pool, _train_command(population, [0, 1], warm[:2], "--manifest", str(manifest)))
    assert done.returncode == 0, done.stderr
    assert "trained by the warm workers" in done.stderr
    assert "gen000 individual 1 seed 1: mean eval return" in done.stderr  # a worker's log line
    assert manifest.read_text().split() == ["warm0.h5", "warm1.h5"]
    done = _submit(pool, _train_command(population, [2, 3], warm[2:]))
    assert done.returncode == 0, done.stderr

    alone = [tmp_path / f"alone{i}.h5" for i in range(4)]
    env = {**os.environ, "HPSRL_NO_MPI": "1"}
    done = subprocess.run(
        _train_command(population, [0, 1, 2, 3], alone), env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for w, a in zip(warm, alone, strict=True):
        got, expected = read_individual_arrays(w), read_individual_arrays(a)
        for name in ("episode_returns", "curve_returns", "env_steps", "returns"):
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        for k in range(2):
            weights = read_weights(a, k)
            for name, array in read_weights(w, k).items():
                np.testing.assert_array_equal(array, weights[name], err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["never started", "killed"])
def test_without_a_pool_the_job_runs_its_own_command_and_says_why(population, tmp_path, case):
    socket = tmp_path / "workers.sock"
    why = f"hpsrl: no warm workers listen on {socket} (No such file or directory)"
    if case == "killed":  # its pid file is left, naming a process that is gone
        gone = subprocess.Popen(["true"])
        gone.wait()
        socket.with_suffix(".pid").write_text(f"{gone.pid}\n")
        why = f"hpsrl: the warm workers (pid {gone.pid}) are gone"
    out = tmp_path / "ind000.h5"
    done = _submit(socket, _train_command(population, [0], [out]))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "warm workers" in line]
    assert lines == [f"{why}; it trains on its own ranks"], done.stderr
    assert read_individual_arrays(out)["returns"].shape == (2,)


@pytest.mark.slow
def test_a_job_of_another_folder_runs_its_own_command(pool, population, tmp_path):
    # Relative paths (results_dir included) mean the job's folder, where the pool's are not.
    out = tmp_path / "ind000.h5"
    done = _submit(pool, _train_command(population, [0], [out]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "the warm workers serve another folder" in done.stderr
    assert read_individual_arrays(out)["returns"].shape == (2,)


@pytest.mark.slow
def test_a_killed_job_leaves_the_pool_to_the_others(pool, tiny_config, tmp_path):
    long_out = tmp_path / "long0.h5"
    job = _start_long_job(pool, tiny_config, tmp_path, long_out)
    job.send_signal(signal.SIGTERM)  # as snakemake cancels a job
    job.wait(timeout=30)

    write_population(tmp_path / "short.h5", initial_population(load_config(tiny_config)))
    done = _submit(pool, _train_command(tmp_path / "short.h5", [1], [tmp_path / "short1.h5"]))
    assert done.returncode == 0, done.stderr
    assert not long_out.exists(), "the killed job's seeds are not written"


@pytest.mark.slow
def test_a_job_that_cannot_run_gets_the_clis_error_and_the_pool_goes_on(pool, population, tmp_path):
    done = _submit(pool, _train_command(tmp_path / "missing.h5", [0], [tmp_path / "a.h5"]))
    assert done.returncode == 1  # it could not do its work
    assert "hpsrl: error:" in done.stderr and "missing.h5" in done.stderr
    done = _submit(pool, _train_command(population, [0, 1], [tmp_path / "a.h5"]))
    assert done.returncode == 2  # a usage error
    assert "give one --out file per individual" in done.stderr
    done = _submit(pool, _train_command(population, [0], [tmp_path / "a.h5"]))
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_a_dead_worker_fails_its_job_and_is_replaced(pool, tiny_config, tmp_path):
    job = _start_long_job(pool, tiny_config, tmp_path, tmp_path / "long0.h5")
    log = tmp_path / "workers.log"
    ready = re.compile(r"worker pid \d+ ready$", re.MULTILINE)
    wait_until(lambda: len(ready.findall(log.read_text())) == 2)
    time.sleep(1)  # the job's seeds reach the workers as soon as they are ready
    for pid in _children(_pool_pid(pool)):
        os.kill(pid, signal.SIGKILL)
    assert job.wait(timeout=60) == 1
    assert "died" in job.stderr.read()
    write_population(tmp_path / "short.h5", initial_population(load_config(tiny_config)))
    done = _submit(pool, _train_command(tmp_path / "short.h5", [1], [tmp_path / "short1.h5"]))
    assert done.returncode == 0, done.stderr  # trained by the workers that replaced them


@pytest.mark.slow
def test_a_job_held_by_a_stopping_pool_stops_and_does_not_train_alone(pool, tiny_config, tmp_path):
    # What the run's onerror hook does after Ctrl-C: SIGTERM to the pool. A job it holds must
    # stop, not fall back to training on its own ranks (that is for a pool that crashed).
    out = tmp_path / "long0.h5"
    job = _start_long_job(pool, tiny_config, tmp_path, out)
    os.kill(_pool_pid(pool), signal.SIGTERM)
    assert job.wait(timeout=60) == STOPPED_EXIT
    said = job.stderr.read()
    assert STOPPED_WHY in said and "on its own ranks" not in said, said
    assert not out.exists()


def _pool_pid(socket: Path) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in cmdline and str(socket).encode() in cmdline:
                return int(entry.name)
    raise AssertionError("no pool process")


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_the_pool_ends_with_the_process_that_started_it(tmp_path):
    # A stand-in for snakemake: starts a pool as its onstart hook does, then is killed.
    code = (
        "import sys, time; from pathlib import Path; from hpsrl.training import workers;"
        "workers.start_pool(1, [], Path(sys.argv[1])); time.sleep(600)"
    )
    starter = subprocess.Popen([PYTHON, "-c", code, str(tmp_path / "workers.log")])
    path = socket_path(starter.pid)
    wait_until(path.exists)
    pool = _pool_pid(path)
    assert path.parent.stat().st_mode & 0o077 == 0, "only this user may connect"
    starter.kill()
    starter.wait()
    wait_until(lambda: not Path(f"/proc/{pool}").exists() or _is_zombie(pool), timeout=30)
    assert not path.exists()


def test_what_a_killed_pool_leaves_goes_when_the_next_pool_starts(tmp_path):
    # A pool killed with SIGKILL cannot remove its socket; a live run's pool must keep its own.
    code = (
        "import sys, time; from pathlib import Path; from hpsrl.training import workers;"
        "workers.start_pool(1, [], Path(sys.argv[1])); time.sleep(600)"
    )
    starters = []

    def start_run() -> Path:
        """A stand-in for snakemake with its pool; the pool's socket."""
        starters.append(subprocess.Popen([PYTHON, "-c", code, str(tmp_path / "workers.log")]))
        path = socket_path(starters[-1].pid)
        wait_until(path.exists)
        return path

    try:
        live = start_run()
        killed = start_run()
        os.kill(_pool_pid(killed), signal.SIGKILL)
        starters[-1].kill()
        starters[-1].wait()
        left = [killed, killed.with_suffix(".pid")]
        assert all(p.exists() for p in left), "nothing else removes them"

        start_run()
        assert not any(p.exists() for p in left)
        assert live.exists() and live.with_suffix(".pid").exists()
    finally:
        for starter in starters:
            starter.kill()
            starter.wait()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_a_resumed_campaigns_first_jobs_wait_for_the_pool_that_is_starting(workdir, tiny_config):
    # A resumed campaign starts with training jobs: snakemake starts as many as it has cores
    # right after its onstart hook has started the pool, before the pool listens.
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-j2", "results/tiny/gen000/population.h5")
    assert done.returncode == 0, done.stderr[-3000:]
    done = snakemake(workdir, "-j2", "results/tiny/gen000.h5")
    assert done.returncode == 0, done.stderr[-3000:]
    logs = sorted((workdir / "results/tiny/logs/gen000").glob("ind*.log"))
    assert len(logs) == 4
    for log in logs:
        assert "trained by the warm workers" in log.read_text(), log.read_text()


@pytest.mark.slow
def test_ctrl_c_stops_snakemake_its_jobs_and_the_workers(workdir, tiny_config):
    tiny_config["training"]["steps"] = 2_000_000  # jobs that would train for minutes
    write_config(workdir, tiny_config)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.Popen(
        [str(BIN / "snakemake"), "-j2"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=sigint_as_at_a_terminal,
    )
    log = workdir / "results/tiny/logs/workers.log"
    try:
        wait_until(lambda: log.exists() and "seeds queued" in log.read_text(), timeout=120)
        pool = _pool_pid(socket_path(run.pid))
        time.sleep(2)  # the seeds are in training
        children = Path(f"/proc/{pool}/task/{pool}/children").read_text()
        workers = [int(pid) for pid in children.split()]
        assert workers, "the pool has its worker processes"
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert run.wait(timeout=180) != 0  # seconds, even on a busy machine
    finally:  # a snakemake that did not stop must not go on training after the test
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    wait_until(lambda: not Path(f"/proc/{pool}").exists() or _is_zombie(pool), timeout=15)
    # The pool ends when snakemake stops it (or is gone), so whether it saw the jobs go first
    # (and logged that it dropped their queued seeds) is a race; what matters is that no worker
    # trains on.
    for worker in workers:
        wait_until(lambda w=worker: not Path(f"/proc/{w}").exists() or _is_zombie(w), timeout=15)


# -- Which campaigns have training jobs to run (Snakemake's private DAG API) ----------------------


def _job(rule: str, campaign: str) -> SimpleNamespace:
    return SimpleNamespace(
        rule=SimpleNamespace(name=rule), wildcards=SimpleNamespace(campaign=campaign)
    )


def _workflow(jobs: list[SimpleNamespace]) -> SimpleNamespace:
    return SimpleNamespace(dag=SimpleNamespace(needrun_jobs=lambda: iter(jobs)))


def test_this_snakemake_lists_the_jobs_it_will_run():
    # if this fails, a Snakemake upgrade removed its private DAG.needrun_jobs: warm workers then
    # start in every local run, even one with nothing to train
    import snakemake.api  # noqa: F401 (imports snakemake.dag without a circular import)
    from snakemake.dag import DAG

    assert callable(getattr(DAG, "needrun_jobs", None))


def test_campaigns_to_train_lists_each_campaign_with_training_jobs_once_in_order():
    jobs = [_job("init", "a"), _job("train_individuals", "b"), _job("train_individuals", "a"),
            _job("train_individuals", "b"), _job("select", "c")]  # fmt: skip
    assert campaigns_to_train(_workflow(jobs), "train_individuals") == ["b", "a"]
    assert campaigns_to_train(_workflow(jobs[:1]), "train_individuals") == []


def _raises():
    raise RuntimeError("DAG not built yet")


@pytest.mark.parametrize(
    "workflow",
    [
        SimpleNamespace(),  # no dag
        SimpleNamespace(dag=None),  # dag not there (yet)
        SimpleNamespace(dag=SimpleNamespace()),  # no needrun_jobs
        SimpleNamespace(dag=SimpleNamespace(needrun_jobs=_raises)),
        _workflow([SimpleNamespace(rule="train_individuals")]),  # jobs of another shape
    ],
    ids=["no-dag", "dag-none", "no-needrun_jobs", "raises", "other-jobs"],
)
def test_campaigns_to_train_is_unknown_where_snakemake_changed(workflow, caplog):
    with caplog.at_level(logging.WARNING, "hpsrl.training.workers"):
        assert campaigns_to_train(workflow, "train_individuals") is None
    assert "warm workers start whether or not a train_individuals job runs" in caplog.text


# -- The request a job hands the pool -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--population", "p.h5", "--individual", "3", "--out", "a.h5"],
        ["--population", "p.h5", "--individual", "3", "4", "--out", "a.h5", "b.h5",
         "--manifest", "ind003-004.txt", "--same-training-as", "x.h5", "y.h5"],
    ],
    ids=["one", "all-options"],
)  # fmt: skip
def test_the_pool_gets_the_request_hpsrl_train_would_run(argv):
    request = read_train_command(argv)
    assert request == TrainRequest.from_arguments(parse_args(["train", *argv]))
    assert TrainRequest.from_json(json.loads(json.dumps(request.to_json()))) == request


@pytest.mark.parametrize(
    "argv",
    [
        ["--population", "p.h5", "--individual", "0", "1", "--out", "a.h5"],
        ["--population", "p.h5", "--individual", "0", "--out", "a.h5",
         "--same-training-as", "x.h5", "y.h5"],
        ["--population", "p.h5", "--individual", "zero", "--out", "a.h5"],
        ["--population", "p.h5", "--individual", "0"],
        ["--population", "p.h5", "--individual", "0", "--out", "a.h5", "--verbose"],
        ["--help"],
    ],
)  # fmt: skip
def test_what_hpsrl_train_refuses_is_no_request_and_the_command_says_why(argv, capsys):
    # submit then runs the command itself, which gives its own usage error (or help)
    assert read_train_command(argv) is None
    with pytest.raises(SystemExit):
        parse_args(["train", *argv])


@pytest.mark.parametrize(
    "fields",
    [
        {"individuals": [0], "out_paths": ["a.h5"], "manifest": None, "same_training": None},
        {"population": "p.h5", "individuals": [], "out_paths": [], "manifest": None,
         "same_training": None},
        {"population": "p.h5", "individuals": ["0"], "out_paths": ["a.h5"], "manifest": None,
         "same_training": None},
        {"population": "p.h5", "individuals": [0, 1], "out_paths": ["a.h5"], "manifest": None,
         "same_training": None},
        {"population": 1, "individuals": [0], "out_paths": ["a.h5"], "manifest": None,
         "same_training": None},
    ],
    ids=["no-population", "no-individual", "not-an-int", "lengths", "not-a-path"],
)  # fmt: skip
def test_the_pool_refuses_what_is_no_request(fields):
    with pytest.raises((KeyError, TypeError, ValueError)):
        TrainRequest.from_json(fields)
