"""Populations and generations of any size: names past 999, and plans that stay quick."""

from __future__ import annotations

import h5py
import pytest

from hpsrl.campaign.paths import batch_name, generation_files, individuals_per_job, result_path
from tests.test_workflow import snakemake, write_config


def test_names_grow_past_three_digits(tmp_path):
    assert batch_name(7) == "gen007" and batch_name(1000) == "gen1000"
    assert result_path("gen1000", 1023) == "gen1000/ind1023.h5"
    for g in (999, 1000, 10, 2):
        (tmp_path / f"{batch_name(g)}.h5").touch()
    assert [p.name for p in generation_files(tmp_path)] == [
        "gen002.h5",
        "gen010.h5",
        "gen999.h5",
        "gen1000.h5",
    ]


@pytest.mark.parametrize(
    "population, chosen, expected", [(8, "auto", 1), (64, "auto", 1), (65, "auto", 2),
                                     (1024, "auto", 16), (1024, 3, 3)]
)  # fmt: skip
def test_auto_batching_keeps_a_batch_at_64_jobs(population, chosen, expected):
    assert (
        individuals_per_job({"training": {"individuals_per_job": chosen}}, population) == expected
    )


@pytest.mark.slow
def test_more_than_999_generations_plan(workdir, tiny_config):
    tiny_config["budget"]["generations"] = 1001
    tiny_config["retest"]["seeds"] = 0
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-n", "--printshellcmds", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "hpsrl evolve --out results/tiny/gen1000/population.h5 results/tiny/gen999.h5"
        in done.stdout
    )
    assert "--out results/tiny/gen1000.h5 --previous results/tiny/gen999.h5" in done.stdout


@pytest.mark.slow
def test_a_population_of_1024_trains(workdir, tiny_config):
    tiny_config["budget"].update(population=1024, generations=1)
    tiny_config["training"].update(steps=256, seeds=1, eval_episodes=1, curve_points=2)
    tiny_config["retest"]["seeds"] = 0
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-j2", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    results = workdir / "results" / "tiny"
    assert (results / "gen000" / "ind1023.h5").exists()
    assert (results / "gen000" / "ind1008-1023.txt").exists(), "16 individuals per job (auto)"
    with h5py.File(results / "gen000.h5") as f:
        assert f["results/returns"].shape == (1024, 1)
        assert (f["results/status"].asstr()[()] == "ok").all()
