"""The campaign's HTML report: its sections and pictures, for finished, partial and failed
campaigns; and Snakemake's own report."""

from __future__ import annotations

import base64
import copy
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from hpsrl.config import load_config, search_space
from hpsrl.evolve import initial_population
from hpsrl.generation import generation_record
from hpsrl.report import write_report
from hpsrl.storage import Generation, write_generation
from tests.conftest import TINY, copy_workflow
from tests.test_workflow import BIN, snakemake, write_config

# One gene-distribution plot per searched gene: TINY's own and its algorithm's default genes.
GENES = len(search_space(load_config(TINY)))

EVERY_SECTION = (
    "summary",
    "retest",  # the held-out test, what people quote first
    "objectives",
    "pareto",
    "genes",
    "curves",
    "failures",
    "config",
)


def sections(text: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', text)


def pictures(text: str) -> list[np.ndarray]:
    """Every embedded PNG, decoded."""
    encoded = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    return [image.imread(io.BytesIO(base64.b64decode(data)), format="png") for data in encoded]


def assert_pictures_show_something(text: str, expected: int) -> None:
    found = pictures(text)
    assert len(found) == expected
    for picture in found:
        assert picture.shape[0] > 100 and picture.shape[1] > 100
        assert picture[..., :3].std() > 0.05, "a blank picture"


def hpsrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hpsrl"), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """The tiny campaign, run to its end by snakemake (report included); its working folder."""
    workdir = copy_workflow(tmp_path_factory.mktemp("report"))
    write_config(workdir, copy.deepcopy(TINY))
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_workflow_writes_a_report_with_every_section(campaign):
    text = (campaign / "results" / "tiny" / "report.html").read_text()
    assert sections(text) == list(EVERY_SECTION)
    # objectives, Pareto front, one per gene, learning curves, re-test
    assert_pictures_show_something(text, 1 + 1 + GENES + 1 + 1)
    for shown in ("CartPole-v1", "best return (max)", "hidden_sizes", "No individual failed."):
        assert shown in text
    # the held-out test is the first number the report gives
    first = re.search(r"<p><strong>(.*?)</strong>", text).group(1)
    assert first.startswith("Held-out test: mean return ")
    assert "2 of 2 finished" in text


@pytest.mark.slow
def test_snakemake_report_holds_our_outputs(campaign):
    done = snakemake(campaign, "--report", "snakemake-report.html")
    assert done.returncode == 0, done.stderr[-3000:]
    text = (campaign / "snakemake-report.html").read_text()
    for output in ("report.html", "status.txt", "best.yaml"):
        assert output in text


@pytest.mark.slow
def test_report_of_a_campaign_with_only_its_first_generation(campaign, tmp_path):
    partial = tmp_path / "tiny"
    partial.mkdir()
    shutil.copy(campaign / "results" / "tiny" / "gen000.h5", partial)
    out = tmp_path / "partial.html"
    done = hpsrl("report", str(partial), "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "retest" not in sections(text)
    assert "1 of 2 finished (the campaign is still running or was stopped)" in text
    assert_pictures_show_something(text, 1 + 1 + GENES + 1)


def fake_generation(
    config: dict, batch: str, failed: list[int], previous: Generation | None = None
) -> Generation:
    """A generation of ``config`` with made-up results; ``failed`` individuals failed;
    ``previous``: the record of the generation before (whose evidence it pools)."""
    population = initial_population(config)
    population.batch = batch
    n, seeds, points = len(population), config["training"]["seeds"], 4
    rng = np.random.default_rng(len(batch) + len(failed))
    returns = rng.uniform(10, 200, (n, seeds))
    curves = np.sort(rng.uniform(10, 200, (n, seeds, points)), axis=2)
    status = np.array(["ok"] * n, dtype=object)
    error = np.array([""] * n, dtype=object)
    for i in failed:
        returns[i], curves[i] = np.nan, np.nan
        status[i], error[i] = "failed", "seed 0: TrainingDiverged: PPO loss is nan at step 512"
    results = {
        "returns": returns,
        "episode_returns": returns[..., None].repeat(3, axis=2),
        "steps_to_threshold": np.full((n, seeds), np.inf),
        "env_steps": np.full((n, seeds), 1024),
        "train_seconds": np.ones((n, seeds)),
        "eval_seconds": np.ones((n, seeds)),
        "curve_returns": curves,
        "curve_steps": np.arange(1, points + 1) * 256,
        "status": status,
        "error": error,
    }
    return generation_record(population, results, previous)


def test_report_with_one_objective_and_failed_individuals(tmp_path):
    raw = copy.deepcopy(TINY)
    raw["objectives"] = [{"name": "return"}]
    raw["ga"]["generations"] = 3
    config = load_config(raw)
    folder = tmp_path / "tiny"
    first = fake_generation(config, "gen000", failed=[1])
    write_generation(folder / "gen000.h5", first)
    write_generation(
        folder / "gen001.h5", fake_generation(config, "gen001", failed=[0, 1, 2, 3], previous=first)
    )
    text = write_report(folder, tmp_path / "report.html").read_text()
    assert sections(text) == ["summary", "objectives", "genes", "curves", "failures", "config"]
    assert "5 failed individuals." in text
    assert "TrainingDiverged: PPO loss is nan at step 512" in text
    assert_pictures_show_something(text, 1 + GENES + 1)


def test_report_of_a_folder_without_generations_says_so(tmp_path):
    done = hpsrl("report", str(tmp_path))
    assert done.returncode == 1
    assert "holds no finished generation" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
