"""The MPI training job: seeds spread over ranks, failures recorded, results identical to 1 rank,
several individuals per job."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from hpsrl.campaign.config import load_config
from hpsrl.campaign.model import Population
from hpsrl.campaign.storage import (
    is_result_of,
    is_same_training,
    read_individual_arrays,
    read_weights,
    write_population,
)
from hpsrl.search.evolve import initial_population

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def _train_command(population: Path, out: Path, ranks: int) -> list[str]:
    command = [sys.executable, "-m", "mpi4py", "-m", "hpsrl", "train", "--population",
               str(population), "--individual", "0", "--out", str(out)]  # fmt: skip
    if ranks > 1:
        command = [str(BIN / "mpiexec"), "-n", str(ranks), *command]
    return command


def _train(population: Path, out: Path, ranks: int) -> subprocess.CompletedProcess:
    command = _train_command(population, out, ranks)
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_ranks_equal_two_single_rank_jobs(tiny_config, tmp_path):
    pop = initial_population(load_config(tiny_config))
    write_population(tmp_path / "both.h5", pop)
    done = _train(tmp_path / "both.h5", tmp_path / "mpi.h5", ranks=2)
    assert done.returncode == 0, done.stderr
    with h5py.File(tmp_path / "mpi.h5") as f:
        assert f.attrs["mpi_ranks"] == 2
        assert f.attrs["status"] == "ok"
    both = read_individual_arrays(tmp_path / "mpi.h5")

    one_seed = copy.deepcopy(tiny_config)
    one_seed["training"]["seeds"] = 1  # (a population file's seeds must be its config's)
    for k in range(2):  # the same individual, one seed per single-rank job
        single = initial_population(load_config(one_seed))
        assert single.individuals == pop.individuals
        single.train_seeds = pop.train_seeds[:, k : k + 1]
        single.eval_seeds = pop.eval_seeds[:, k : k + 1]
        write_population(tmp_path / f"seed{k}.h5", single)
        done = _train(tmp_path / f"seed{k}.h5", tmp_path / f"one{k}.h5", ranks=1)
        assert done.returncode == 0, done.stderr
        one = read_individual_arrays(tmp_path / f"one{k}.h5")
        np.testing.assert_array_equal(one["episode_returns"][0], both["episode_returns"][k])
        np.testing.assert_array_equal(one["curve_returns"][0], both["curve_returns"][k])
        weights = read_weights(tmp_path / f"one{k}.h5", 0)
        for name, array in read_weights(tmp_path / "mpi.h5", k).items():
            np.testing.assert_array_equal(weights[name], array)


@pytest.mark.slow
def test_a_job_of_several_individuals_keeps_those_already_trained(tiny_config, tmp_path):
    write_population(tmp_path / "pop.h5", initial_population(load_config(tiny_config)))
    outs = [tmp_path / f"ind00{i}.h5" for i in range(3)]
    manifest = tmp_path / "ind000-002.txt"
    command = [sys.executable, "-m", "mpi4py", "-m", "hpsrl", "train",
               "--population", str(tmp_path / "pop.h5"), "--individual", "0", "1", "2",
               "--out", *map(str, outs), "--manifest", str(manifest)]  # fmt: skip
    done = subprocess.run(
        [str(BIN / "mpiexec"), "-n", "2", *command],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert manifest.read_text().split() == ["ind000.h5", "ind001.h5", "ind002.h5"]
    first = [read_individual_arrays(out) for out in outs]
    kept = outs[0].stat().st_mtime_ns

    # As after a kill half way through the job: some results written, no manifest. The rerun
    # (one rank this time) trains the rest as the two ranks did.
    outs[1].unlink()
    manifest.unlink()
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ind000.h5: already trained, kept" in done.stderr
    assert outs[0].stat().st_mtime_ns == kept
    assert manifest.exists()
    again = read_individual_arrays(outs[1])
    for name in ("episode_returns", "curve_returns", "env_steps"):
        np.testing.assert_array_equal(again[name], first[1][name], err_msg=name)


@pytest.mark.slow
def test_ranks_without_a_seed_leave_the_result_alone(tiny_config, tmp_path):
    tiny_config["training"]["seeds"] = 1
    write_population(tmp_path / "pop.h5", initial_population(load_config(tiny_config)))
    outs = [tmp_path / "a.h5", tmp_path / "b.h5"]
    command = [str(BIN / "mpiexec"), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "hpsrl",
               "train", "--population", str(tmp_path / "pop.h5"), "--individual", "0", "1",
               "--out", *map(str, outs)]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for out in outs:
        assert read_individual_arrays(out)["returns"].shape == (1,)


def test_train_needs_a_result_file_per_individual(tmp_path):
    command = [sys.executable, "-m", "hpsrl", "train", "--population", str(tmp_path / "pop.h5"),
               "--individual", "0", "1", "--out", str(tmp_path / "a.h5")]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "give one --out file per individual" in done.stderr


def test_train_needs_a_same_training_file_per_individual(tmp_path):
    command = [sys.executable, "-m", "hpsrl", "train", "--population", str(tmp_path / "pop.h5"),
               "--individual", "0", "1", "--out", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"),
               "--same-training-as", str(tmp_path / "c.h5")]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--same-training-as 1 files; give one per individual" in done.stderr


@pytest.mark.slow
def test_the_same_training_of_another_campaign_is_copied_not_repeated(tiny_config, tmp_path):
    # As under `snakemake compare`: two strategies' campaigns on one search seed, whose
    # generation 0 is the same sampling of the same genes and seeds.
    def campaign(strategy: str, **changes: Any) -> Population:
        name, search = f"tiny-{strategy}-s0", {"strategy": strategy}
        config = {**tiny_config, "campaign": name, "search": search, **changes}
        return initial_population(load_config(config))

    ga, random = campaign("ga"), campaign("random")
    write_population(tmp_path / "ga.h5", ga)
    write_population(tmp_path / "random.h5", random)
    trained = tmp_path / "ga-ind000.h5"
    done = _train(tmp_path / "ga.h5", trained, ranks=1)
    assert done.returncode == 0, done.stderr

    copied = tmp_path / "random-ind000.h5"
    command = [*_train_command(tmp_path / "random.h5", copied, ranks=1),
               "--same-training-as", str(trained)]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "the same training as" in done.stderr
    assert "mean eval return" not in done.stderr, "copied, not trained again"
    assert is_result_of(copied, random, 0)
    assert not is_result_of(copied, ga, 0)
    with h5py.File(copied) as f:
        assert f.attrs["same_training_as"] == str(trained)
    original, twin = read_individual_arrays(trained), read_individual_arrays(copied)
    for name in ("episode_returns", "curve_returns", "train_seconds"):
        np.testing.assert_array_equal(twin[name], original[name], err_msg=name)
    for name, array in read_weights(trained, 1).items():
        np.testing.assert_array_equal(read_weights(copied, 1)[name], array)

    # Another individual, another budget or another search seed is another training.
    assert is_same_training(trained, random, 0)
    assert not is_same_training(trained, random, 1)
    longer = campaign("random", training={**tiny_config["training"], "steps": 2048})
    assert not is_same_training(trained, longer, 0)
    next_seed = campaign("random", seed=tiny_config["seed"] + 1)
    assert not is_same_training(trained, next_seed, 0)


@pytest.mark.slow
def test_a_diverging_individual_is_recorded_as_failed(tiny_config, tmp_path):
    tiny_config["genes"]["learning_rate"] = {"type": "float", "low": 1e8, "high": 1e9, "log": True}
    pop = initial_population(load_config(tiny_config))
    write_population(tmp_path / "pop.h5", pop)
    done = _train(tmp_path / "pop.h5", tmp_path / "out.h5", ranks=1)
    assert done.returncode == 0, done.stderr
    result = read_individual_arrays(tmp_path / "out.h5")
    assert result["status"] == "failed"
    assert "TrainingDiverged" in result["error"]
    assert np.isnan(result["returns"]).all()
    assert "Traceback" in done.stderr, "the log must hold the traceback"


@pytest.mark.slow
def test_killed_job_resumes_from_its_checkpoints(tiny_config, tmp_path):
    tiny_config["training"]["steps"] = 4096
    tiny_config["training"]["checkpoint"] = {"every_minutes": 0, "every_steps": 512}
    pop = initial_population(load_config(tiny_config))
    write_population(tmp_path / "pop.h5", pop)
    done = _train(tmp_path / "pop.h5", tmp_path / "whole.h5", ranks=2)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "whole.ckpt").exists(), "checkpoints of a finished job are removed"

    out = tmp_path / "resumed.h5"
    job = subprocess.Popen(
        _train_command(tmp_path / "pop.h5", out, ranks=2),
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = tmp_path / "resumed.ckpt"
    deadline = time.monotonic() + 120
    while len(list(checkpoints.glob("seed*.pt"))) < 2:
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.killpg(job.pid, signal.SIGKILL)  # like a Slurm time limit or a node failure
    job.wait()
    assert not out.exists()

    done = _train(tmp_path / "pop.h5", out, ranks=2)
    assert done.returncode == 0, done.stderr
    assert "resuming from env step" in done.stderr
    whole, resumed = read_individual_arrays(tmp_path / "whole.h5"), read_individual_arrays(out)
    for name in ("episode_returns", "curve_returns", "steps_to_threshold", "env_steps"):
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


COUNTER_SCRIPT = """
import sys, time
from mpi4py import MPI
from hpsrl.cluster.mpi import TaskCounter

comm = MPI.COMM_WORLD
counter = TaskCounter(comm)
taken = []
if comm.rank == 0:
    busy_until = time.perf_counter() + 2.0
    while time.perf_counter() < busy_until:  # computing, no MPI call: the others must not wait
        pass
while (task := counter.next()) < 20:
    taken.append(task)
    time.sleep(0.01)
counter.close()
with open(f"{sys.argv[1]}/rank{comm.rank}.txt", "w") as f:  # not stdout: mpiexec mixes lines
    f.write(",".join(map(str, taken)))
"""


def test_a_free_rank_takes_the_next_task_while_rank_0_is_busy(tmp_path):
    script = tmp_path / "counter.py"
    script.write_text(COUNTER_SCRIPT)
    done = subprocess.run(
        [str(BIN / "mpiexec"), "-n", "2", sys.executable, str(script), str(tmp_path)],
        capture_output=True, text=True, env=_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Rank 1 took every task while rank 0 computed (20 x 10 ms < 2 s); each task went out once.
    assert (tmp_path / "rank1.txt").read_text() == ",".join(map(str, range(20)))
    assert (tmp_path / "rank0.txt").read_text() == ""


BLAS_THREADS_SCRIPT = """
import json, numpy, torch
from threadpoolctl import threadpool_info
from hpsrl.cluster.mpi import limit_threads
before = [pool["num_threads"] for pool in threadpool_info()]
limit_threads()
after = [pool["num_threads"] for pool in threadpool_info()]
print(json.dumps({"before": before, "after": after, "torch": torch.get_num_threads()}))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS uses one thread anyway")
def test_a_rank_limits_numpys_blas_threads_not_only_torchs():
    # Without a limit numpy's OpenBLAS starts a thread per core, and two ranks on two cores
    # trained several times slower. The variables that would hide the problem are removed.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["HPSRL_TORCH_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", BLAS_THREADS_SCRIPT], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout)
    assert max(threads["before"]) > 1  # the test would be empty otherwise
    assert threads["after"] == [1] * len(threads["after"]) and threads["torch"] == 1
