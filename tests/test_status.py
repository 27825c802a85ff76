"""What people and their scripts read of a campaign: hpsrl status (text and --json) and hpsrl
table (one row per individual, CSV or JSON), on made-up generations and on a real campaign."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from hpsrl.campaign.config import load_config, search_space
from hpsrl.campaign.model import Generation
from hpsrl.campaign.paths import generation_files
from hpsrl.campaign.storage import (
    read_generation,
    read_generations,
    write_generation,
    write_population,
)
from hpsrl.readers.summary import plain_number, status_table
from hpsrl.search.evolve import initial_population, next_population
from hpsrl.search.generation import generation_record
from tests.conftest import TINY, copy_workflow
from tests.test_workflow import BIN, snakemake, write_config


def hpsrl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hpsrl"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )


def made_up_generation(
    config: dict, generation: int, previous: Generation | None = None, failed: tuple = ()
) -> Generation:
    """A generation of ``config`` with made-up results: returns that rise with the individual's
    index, steps to the threshold in the tens of thousands, ``failed`` individuals failed."""
    population = initial_population(config)
    population.batch = f"gen{generation:03d}"
    n, seeds = len(population), config["training"]["seeds"]
    returns = 10.0 * np.arange(1, n + 1)[:, None] + np.arange(seeds)[None, :] + generation
    steps_to = 31283.0 + 2.0 * np.arange(n)[:, None].repeat(seeds, axis=1)
    status = np.array(["ok"] * n, dtype=object)
    error = np.array([""] * n, dtype=object)
    for i in failed:
        returns[i], steps_to[i] = np.nan, np.inf
        status[i], error[i] = "failed", "seed 1: TrainingDiverged: PPO loss is nan at step 512"
    results = {
        "returns": returns,
        "episode_returns": returns[..., None].repeat(3, axis=2),
        "steps_to_threshold": steps_to,
        "env_steps": np.full((n, seeds), config["training"]["steps"]),
        "train_seconds": np.full((n, seeds), 1.25),
        "eval_seconds": np.ones((n, seeds)),
        "curve_returns": np.zeros((n, seeds, 4)),
        "curve_steps": np.arange(1, 5) * 256,
        "status": status,
        "error": error,
    }
    return generation_record(population, results, previous)


def write_made_up_campaign(folder: Path) -> Path:
    """Two generations of 4 made-up individuals of 40k steps in ``folder``, individual 2 of
    gen001 failed; no held-out test (so the campaign is not finished)."""
    config = copy.deepcopy(TINY)
    config["training"]["steps"] = 40000
    config = load_config(config)
    first = made_up_generation(config, 0)
    write_generation(folder / "gen000.h5", first)
    write_generation(folder / "gen001.h5", made_up_generation(config, 1, first, failed=(2,)))
    return folder


@pytest.fixture
def made_up_campaign(tmp_path) -> Path:
    return write_made_up_campaign(tmp_path / "results" / "tiny")


def test_numbers_print_plainly():
    assert plain_number(np.int64(31280)) == 31280 and isinstance(plain_number(31280.0), int)
    assert plain_number(np.float64(0.25)) == 0.25
    assert plain_number(np.nan) is None and plain_number(np.inf) is None
    assert plain_number(np.True_) is True and plain_number("relu") == "relu"


def test_status_table_prints_step_counts_as_integers(made_up_campaign):
    done = hpsrl("status", str(made_up_campaign))
    assert done.returncode == 0, done.stderr
    assert "e+" not in done.stdout, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["gen", "ok", "failed"]
    # gen000: steps to the threshold 31283, 31285, 31287, 31289: best 31283, median 31286
    assert lines[1].split()[-2:] == ["31283", "31286"]
    assert lines[2].split()[:3] == ["gen001", "3", "1"]
    assert lines[-4:] == [
        "failures:",
        "gen001 individual 2: seed 1: TrainingDiverged: PPO loss is nan at step 512",
        "",
        "in progress: retest (the held-out test of the answer): its population is not written yet",
    ]


def test_status_table_of_generations_read_already_is_the_one_read_from_the_folder(
    made_up_campaign,
):
    """The report hands status_table the generations it has read: the same table."""
    gens = read_generations(generation_files(made_up_campaign))
    assert status_table(made_up_campaign, gens) == status_table(made_up_campaign)


def test_status_json_is_the_table_and_the_answer(made_up_campaign):
    done = hpsrl("status", str(made_up_campaign), "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["campaign"] == "tiny" and status["generations_planned"] == 2
    assert [o["name"] for o in status["objectives"]] == ["return", "steps_to_threshold"]
    first, second = status["generations"]
    assert (first["generation"], first["ok"], first["failed"]) == (0, 4, 0)
    assert first["objectives"]["steps_to_threshold"] == {
        "direction": "minimize",
        "best": 31283,
        "median": 31286,
    }
    assert first["objectives"]["return"]["best"] == 40.5  # individual 3: seeds 40 and 41
    assert (second["ok"], second["failed"]) == (3, 1)
    assert second["failures"] == [
        {"individual": 2, "error": "seed 1: TrainingDiverged: PPO loss is nan at step 512"}
    ]
    assert second["leader"]["evidence_seeds"] >= 2
    answer = status["answer"]
    assert answer["generation"] == "gen001" and "retest" not in answer
    # what hpsrl best says, as JSON
    best = yaml.safe_load(hpsrl("best", str(made_up_campaign)).stdout)
    assert answer == json.loads(json.dumps(best))


def test_table_has_a_row_per_individual_in_csv_and_json(made_up_campaign):
    config = load_config(TINY)
    genes = list(search_space(config).names)
    done = hpsrl("table", str(made_up_campaign), "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["generation"], r["individual"]) for r in rows] == [
        (g, i) for g in (0, 1) for i in range(4)
    ]
    done = hpsrl("table", str(made_up_campaign))  # CSV by default
    assert done.returncode == 0, done.stderr
    assert "e+" not in done.stdout
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(table) == len(rows) == 8
    columns = list(table[0])
    assert columns[:5] == ["generation", "individual", "operator", "parents", "steps"]
    assert [c for c in columns if c.startswith("genes.")] == [f"genes.{g}" for g in genes]
    for expected in (
        "objectives.return",
        "objectives.steps_to_threshold",
        "estimate.return",
        "evidence_seeds",
        "front",
        "status",
        "error",
        "returns.seed0",
        "returns.seed1",
        "train_seeds.seed1",
        "env_steps.seed0",
        "train_seconds.seed1",
    ):
        assert expected in columns, expected

    for folder_row, row in zip(table, rows, strict=True):
        gen = read_generation(made_up_campaign / f"gen{row['generation']:03d}.h5")
        i = row["individual"]
        assert row["operator"] == folder_row["operator"] == gen.population.operators[i]
        assert row["parents"] == [p for p in gen.population.parents[i].tolist() if p >= 0]
        assert json.loads(folder_row["parents"]) == row["parents"]
        assert row["genes"] == json.loads(json.dumps(gen.population.individuals[i]))
        assert row["evidence_seeds"] == int(gen.evidence.seeds[i])
        assert row["train_seeds"] == gen.population.train_seeds[i].tolist()
        assert row["env_steps"] == [40000, 40000] and folder_row["env_steps.seed1"] == "40000"
        assert row["train_seconds"] == [1.25, 1.25]
        assert folder_row["steps"] == "40000"
        if gen.ok[i]:
            assert row["status"] == "ok" and row["error"] == ""
            assert row["objectives"]["return"] == pytest.approx(gen.objectives[i, 0])
            assert row["estimate"]["return"] == pytest.approx(gen.estimate[i, 0])
            assert float(folder_row["estimate.return"]) == pytest.approx(gen.estimate[i, 0])
            assert row["returns"] == gen.results["returns"][i].tolist()
        else:  # what a failed individual does not have is null in JSON, empty in CSV
            assert row["status"] == "failed" and "TrainingDiverged" in row["error"]
            assert row["objectives"] == {"return": None, "steps_to_threshold": None}
            assert row["returns"] == [None, None]
            assert folder_row["objectives.return"] == folder_row["returns.seed0"] == ""


def test_table_of_a_folder_without_generations_says_so(tmp_path):
    done = hpsrl("table", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("hpsrl: error: ") and "no finished generation" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """The tiny campaign, run to its end by snakemake: its campaign folder."""
    workdir = copy_workflow(tmp_path_factory.mktemp("status"))
    write_config(workdir, copy.deepcopy(TINY))
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir / "results" / "tiny"


@pytest.mark.slow
def test_status_json_and_table_of_a_real_campaign(campaign):
    status = json.loads(hpsrl("status", str(campaign), "--json").stdout)
    assert [g["generation"] for g in status["generations"]] == [0, 1]
    answer = status["answer"]
    assert answer == json.loads(json.dumps(yaml.safe_load((campaign / "best.yaml").read_text())))
    assert answer["retest"]["status"] == "ok" and len(answer["retest"]["returns_per_seed"]) == 2

    rows = json.loads(hpsrl("table", str(campaign), "--format", "json").stdout)
    assert len(rows) == 8
    table = list(csv.DictReader(io.StringIO(hpsrl("table", str(campaign)).stdout)))
    gen1 = read_generation(campaign / "gen001.h5")
    raced = [r for r in rows if r["generation"] == 1 and r["operator"] == "elite"]
    assert raced and all(r["evidence_seeds"] > 2 for r in raced)  # pooled with generation 0
    for row, line in zip(rows[4:], table[4:], strict=True):
        i = row["individual"]
        assert row["env_steps"] == gen1.results["env_steps"][i].tolist() == [1024, 1024]
        assert line["env_steps.seed0"] == "1024"
        assert row["returns"] == pytest.approx(gen1.results["returns"][i].tolist())
        assert float(line["returns.seed1"]) == pytest.approx(gen1.results["returns"][i, 1])
        assert row["objectives"]["return"] == pytest.approx(gen1.objectives[i, 0])


# -- the batch in progress, and --watch ---------------------------------------------------------


def test_status_shows_a_generation_being_planned_then_trained(made_up_campaign):
    (made_up_campaign / "gen001.h5").unlink()
    (made_up_campaign / "gen001").mkdir()  # evolve has not written its population yet
    done = hpsrl("status", str(made_up_campaign))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:2]] == ["gen000"]
    assert lines[-1] == "in progress: gen001 (generation 2 of 2): its population is not written yet"

    first = read_generation(made_up_campaign / "gen000.h5")
    write_population(
        made_up_campaign / "gen001" / "population.h5", next_population([first], first.config)
    )
    done = hpsrl("status", str(made_up_campaign), "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["finished"] is False
    assert status["in_progress"] == {
        "batch": "gen001",
        "generation": 1,
        "rung": None,
        "rungs": 1,
        "individuals": 4,
        "trained": 0,
        "failed": 0,
        "queued": 4,
        "jobs_done": 0,
        "stage": "training",
    }
    assert status["answer"]["generation"] == "gen000"  # the answer so far


def test_status_of_a_campaign_before_its_first_generation(made_up_campaign):
    config = read_generation(made_up_campaign / "gen000.h5").config
    for path in made_up_campaign.glob("gen*.h5"):
        path.unlink()
    population = initial_population(config)
    write_population(made_up_campaign / "gen000" / "population.h5", population)
    done = hpsrl("status", str(made_up_campaign))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "no finished generation yet"
    assert done.stdout.splitlines()[-1].startswith(
        "in progress: gen000 (generation 1 of 2): 0 trained"
    )
    status = json.loads(hpsrl("status", str(made_up_campaign), "--json").stdout)
    assert status["generations"] == [] and status["answer"] is None


def test_watch_ends_quietly_on_ctrl_c(made_up_campaign):
    # Not finished (its held-out test was never run), so the watch goes on until interrupted.
    watch = subprocess.Popen(
        [str(BIN / "hpsrl"), "status", str(made_up_campaign), "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout.readline().split()[:3] == ["gen", "ok", "failed"]
    while not (line := watch.stdout.readline()).startswith("in progress: "):
        assert line, "the snapshot ended without its progress line"
    assert line.startswith("in progress: retest (the held-out test of the answer)")
    watch.send_signal(signal.SIGINT)
    _, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert err == ""


@pytest.mark.slow
def test_ctrl_c_never_hangs_a_watch_whenever_it_comes(made_up_campaign):
    """Ctrl-C at any moment of a watch that reads the campaign all the time: a KeyboardInterrupt
    raised inside h5py could leave its lock held and the process hung (4 of 30 such stops did;
    these 15 caught it before it was fixed)."""
    rng = np.random.default_rng(0)
    for delay in rng.uniform(0, 1, size=15):
        watch = subprocess.Popen(
            [str(BIN / "hpsrl"), "status", str(made_up_campaign), "--watch", "0.01"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watch.stdout.readline()  # its first snapshot: it reads the files again and again
        time.sleep(delay)
        watch.send_signal(signal.SIGINT)
        try:
            _, err = watch.communicate(timeout=30)
        finally:
            watch.kill()
        assert watch.returncode == 0, err
        assert err == ""


def test_watch_needs_a_positive_interval(made_up_campaign):
    done = hpsrl("status", str(made_up_campaign), "--watch", "0")
    assert done.returncode == 2 and "above 0" in done.stderr


@pytest.mark.slow
def test_status_shows_a_half_written_generation_and_never_fails_on_it(campaign, tmp_path):
    half = shutil.copytree(campaign, tmp_path / "tiny")
    for name in ("gen001.h5", "retest.h5", "status.txt", "best.yaml", "report.html"):
        (half / name).unlink()
    shutil.rmtree(half / "retest")
    batch = half / "gen001"
    (batch / "ind003.h5").unlink()  # not trained yet
    (batch / "ind003-003.txt").unlink()
    (batch / "ind002-002.txt").unlink()  # trained, its job not done yet
    # a writer at work (its temporary file), and a result file cut short
    (batch / f".ind003.h5.{socket.gethostname()}.{os.getpid()}.x.tmp").write_bytes(b"\x89HDF")
    (batch / "ind001.h5").write_bytes((batch / "ind001.h5").read_bytes()[:500])
    with h5py.File(batch / "ind000.h5", "r+") as f:  # one that failed
        f.attrs["status"] = "failed"

    done = hpsrl("status", str(half))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("gen000 ") and not any(line.startswith("gen001 ") for line in lines)
    assert lines[-1] == (
        "in progress: gen001 (generation 2 of 2): 1 trained, 1 failed, 2 queued of 4 "
        "individuals; 2 training jobs done"
    )
    status = json.loads(hpsrl("status", str(half), "--json").stdout)
    progress = status["in_progress"]
    assert (progress["trained"], progress["failed"], progress["queued"]) == (1, 1, 2)
    assert status["answer"]["generation"] == "gen000"
    assert len(json.loads(hpsrl("table", str(half), "--format", "json").stdout)) == 4

    # A finished campaign: --watch prints it once and ends.
    done = hpsrl("status", str(campaign), "--watch", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == hpsrl("status", str(campaign)).stdout
    assert done.stdout.splitlines()[-1] == "finished: 2 of 2 generations and the held-out test"


# The order batches are trained in, for a campaign of 2 generations of 2 rungs each.
BATCH_ORDER = ["gen000/rung0", "gen000/rung1", "gen000", "gen001/rung0", "gen001/rung1", "gen001"]


@pytest.mark.slow
def test_watch_follows_a_running_campaign_to_its_end(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = copy.deepcopy(TINY)
    config["search"] = {"fidelity": {"rungs": 2, "eta": 3}}
    write_config(workdir, config)
    results = workdir / "results" / "tiny"
    command = [str(BIN / "hpsrl"), "status", str(results), "--watch", "0.3", "--json"]
    # started before snakemake: it waits for the campaign to appear
    watch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = snakemake(workdir, "-j2")
        assert run.returncode == 0, run.stderr[-3000:]
        out, err = watch.communicate(timeout=120)
    finally:
        watch.kill()
    assert watch.returncode == 0 and err == "", err
    documents = [json.loads(line) for line in out.splitlines()]
    assert "waiting" in documents[0]
    statuses = [d for d in documents if "campaign" in d]
    assert statuses[-1]["finished"] and statuses[-1]["in_progress"] is None
    assert statuses[-1]["answer"]["retest"]["status"] == "ok"
    # Progress only goes forward: batches in order, and in a batch, individuals trained.
    order = [*BATCH_ORDER, "retest"]
    seen = [
        (order.index(s["in_progress"]["batch"]), s["in_progress"].get("trained", 0)
         + s["in_progress"].get("failed", 0))
        for s in statuses[:-1]
    ]  # fmt: skip
    assert seen == sorted(seen), seen
    assert any(s["in_progress"]["stage"] == "training" for s in statuses[:-1])
    assert {s["in_progress"]["rung"] for s in statuses[:-1]} >= {0, 1}
