"""Results files that are not what they should be: from another campaign, from another hpsrl
(schema_version), changed by hand (wrong shapes, missing datasets, wrong types, a population
whose size disagrees with its results) or damaged. Every reader refuses them with one line that
names the file and what is wrong, and uses none of what they hold; a workflow step moves the
file aside as well, so that rerunning snakemake regenerates it."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpsrl.campaign.config import load_config
from hpsrl.search.evolve import initial_population
from tests.test_fuzz import (
    FUZZ_CAMPAIGN,
    fresh_copy,
    fuzz,
    run_main,
    write_made_up_batch,
    write_made_up_campaign,
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """made-up/: a campaign with made-up results; other/: one that differs only in its seed."""
    folder = tmp_path_factory.mktemp("pristine")
    write_made_up_campaign(folder / "made-up")
    other = copy.deepcopy(FUZZ_CAMPAIGN)
    other["seed"] = 99
    write_made_up_campaign(folder / "other", other)
    return folder


@pytest.fixture
def folder(pristine, tmp_path, monkeypatch) -> Path:
    """A copy of ``pristine`` to damage, as the working folder."""
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _replace(f: h5py.File, name: str, data) -> None:
    del f[name]
    f[name] = data


def _set_attr(name: str, value) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        f.attrs[name] = value

    return change


def _edited_config(f: h5py.File) -> None:
    config = json.loads(f.attrs["config"])
    config["training"]["eval_episodes"] = 5
    f.attrs["config"] = json.dumps(config)


def _grown_population(f: h5py.File) -> None:
    """One individual more in the population than in its results."""
    for item in list(f["population"].values()):
        datasets = item.values() if isinstance(item, h5py.Group) else [item]
        for dataset in list(datasets):
            data = dataset[()]
            _replace(f, dataset.name, np.concatenate([data, data[:1]]))


def _shuffled_offsets(f: h5py.File) -> None:
    offsets = f["results/evidence/offsets"][()]
    _replace(f, "results/evidence/offsets", offsets[::-1].copy())


def _status(f: h5py.File) -> None:
    status = f["results/status"].asstr()[()]
    status[1] = "done"
    _replace(f, "results/status", np.array(status, dtype=object).astype(h5py.string_dtype()))


def _gene_out_of_range(f: h5py.File) -> None:
    gamma = f["population/genes/gamma"][()]
    gamma[0] = 5.0
    _replace(f, "population/genes/gamma", gamma)


# How a generation record is spoilt, and the words of the message that must name what is wrong.
SPOILT_RECORDS: dict[str, tuple[Callable[[h5py.File], None] | str, str]] = {
    "from another campaign": (
        "other",
        "belongs to another campaign than made-up/gen000/population.h5 (they differ in seed)",
    ),
    "from another hpsrl": (
        lambda f: (_set_attr("schema_version", 2)(f), _set_attr("hpsrl_version", "9.0")(f)),
        "was written by hpsrl 9.0 in results schema 2, which hpsrl",
    ),
    "not hpsrl's": (
        lambda f: f.attrs.__delitem__("schema_version"),
        "is not an hpsrl file (it has no schema_version attribute)",
    ),
    "a dataset missing": (
        lambda f: f.__delitem__("results/objectives"),
        "has no dataset /results/objectives",
    ),
    "a wrong shape": (
        lambda f: _replace(f, "results/episode_returns", np.zeros((4, 2, 2))),
        "has /results/episode_returns of shape (4, 2, 2), not (4, 2, 3) (individuals x seeds "
        "x training.eval_episodes)",
    ),
    "a wrong type": (
        lambda f: _replace(f, "population/parents", np.full((4, 2), "0").astype("S")),
        "has /population/parents of type |S1, not int",
    ),
    "a population larger than its results": (
        _grown_population,
        "has /results/returns of shape (4, 2), not (5, 2) (individuals x seeds)",
    ),
    "its config edited": (_edited_config, "has a config that was changed after it was written"),
    "a gene outside its range": (
        _gene_out_of_range,
        "has genes outside the search space (gene 'gamma': 5.0 is outside [0.95, 0.999])",
    ),
    "a status that is neither ok nor failed": (_status, "has statuses ['done'], not ok/failed"),
    "evidence offsets out of order": (
        _shuffled_offsets,
        "has evidence offsets that do not rise from 0",
    ),
    "truncated": ("truncate", "cannot be read (Unable to synchronously open file (truncated"),
}


def spoil(folder: Path, relative: str, how: Callable[[h5py.File], None] | str) -> Path:
    path = folder / "made-up" / relative
    if how == "other":
        shutil.copy(folder / "other" / relative, path)
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[:2000])
    else:
        with h5py.File(path, "a") as f:
            how(f)
    return path


def assert_refused(argv: list[str], words: str, path: str) -> str:
    """The command exits 1 with one line naming ``path`` and what is wrong, printing nothing
    else (nothing half used)."""
    status, stdout, stderr = run_main(argv)
    assert status == 1, (argv, stderr)
    assert stderr.count("\n") == 1 and stderr.startswith(f"hpsrl: error: {path} "), stderr
    assert words in stderr, stderr
    assert stdout == "", stdout
    return stderr


@pytest.mark.parametrize("case", list(SPOILT_RECORDS))
def test_every_reader_refuses_a_spoilt_generation_record(folder, case):
    how, words = SPOILT_RECORDS[case]
    spoil(folder, "gen001.h5", how)
    for command in ("status", "table", "best"):
        message = assert_refused([command, "made-up"], words, "made-up/gen001.h5")
        assert "delete it and rerun snakemake to regenerate it" in message or case.endswith("hpsrl")
    assert (folder / "made-up" / "gen001.h5").exists(), "a reader moves nothing aside"


def test_the_other_readers_refuse_it_too(folder, tmp_path):
    spoil(folder, "gen001.h5", SPOILT_RECORDS["a wrong shape"][0])
    words, path = "has /results/episode_returns of shape", "made-up/gen001.h5"
    for argv in (
        ["report", "made-up"],
        ["export", "made-up"],
        ["export", "made-up", "--optuna", "study.journal"],
        ["evaluate", "made-up"],
        ["compare", "made-up", "other"],
    ):
        assert_refused(argv, words, path)
    assert not any(folder.glob("made-up/report.html")) and not (folder / "study.journal").exists()
    assert not (folder / "made-up" / "export").exists()


def test_a_spoilt_retest_record_is_refused(folder):
    spoil(folder, "retest.h5", lambda f: _replace(f, "results/returns", np.zeros((1, 3))))
    words = "has /results/returns of shape (1, 3), not (1, 2) (individuals x seeds)"
    assert_refused(["best", "made-up"], words, "made-up/retest.h5")
    assert_refused(["report", "made-up"], words, "made-up/retest.h5")


@pytest.mark.parametrize("case", ["from another campaign", "a wrong shape", "from another hpsrl"])
@pytest.mark.parametrize("step", ["evolve", "retest"])
def test_a_workflow_step_moves_a_spoilt_record_aside(folder, case, step):
    how, words = SPOILT_RECORDS[case]
    spoilt = spoil(folder, "gen001.h5", how)
    status, _, stderr = run_main(
        [step, "--out", "next.h5", "made-up/gen000.h5", "made-up/gen001.h5"]
    )
    assert status == 1 and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"hpsrl: error: made-up/gen001.h5 {words}"), stderr
    assert stderr.endswith(
        "; moved it aside to made-up/gen001.h5.corrupt; rerun snakemake to regenerate it\n"
    )
    assert not spoilt.exists() and spoilt.with_name("gen001.h5.corrupt").exists()
    assert not (folder / "next.h5").exists()


def collect_gen001(*previous: str) -> tuple[int, str, str]:
    return run_main(
        [
            *("collect", "--population", "made-up/gen001/population.h5"),
            *("--out", "made-up/gen001.h5", *previous),
            *("made-up/gen001/ind000-001.txt", "made-up/gen001/ind002-003.txt"),
        ]
    )


SPOILT_RESULTS = {
    "a wrong shape": (
        lambda folder: spoil(
            folder, "gen001/ind002.h5", lambda f: _replace(f, "returns", np.zeros(3))
        ),
        "has /returns of shape (3,), not (2,) (seeds)",
    ),
    "another individual's": (
        lambda folder: shutil.copy(
            folder / "made-up/gen001/ind001.h5", folder / "made-up/gen001/ind002.h5"
        ),
        "holds individual 1, not 2 as its name says",
    ),
    "another generation's": (
        lambda folder: shutil.copy(
            folder / "made-up/gen000/ind002.h5", folder / "made-up/gen001/ind002.h5"
        ),
        "holds batch gen000, not gen001 as its name says",
    ),
    "another campaign's": (
        lambda folder: spoil(folder, "gen001/ind002.h5", "other"),
        "was trained for another campaign than gen001's population (they differ in seed)",
    ),
}


@pytest.mark.parametrize("case", list(SPOILT_RESULTS))
def test_collect_moves_a_spoilt_result_aside_and_its_job_runs_again(folder, case):
    (folder / "made-up" / "gen001.h5").unlink()
    change, words = SPOILT_RESULTS[case]
    change(folder)
    status, _, stderr = collect_gen001("--previous", "made-up/gen000.h5")
    assert status == 1 and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"hpsrl: error: made-up/gen001/ind002.h5 {words}"), stderr
    assert (folder / "made-up/gen001/ind002.h5.corrupt").exists()
    # without its manifest, the training job of individuals 2 and 3 runs again on the rerun
    assert not (folder / "made-up/gen001/ind002-003.txt").exists()
    assert (folder / "made-up/gen001/ind000-001.txt").exists()
    assert not (folder / "made-up" / "gen001.h5").exists()


def test_collect_refuses_a_previous_generation_of_another_campaign(folder):
    (folder / "made-up" / "gen001.h5").unlink()
    spoil(folder, "gen000.h5", "other")
    status, _, stderr = collect_gen001("--previous", "made-up/gen000.h5")
    assert status == 1
    assert stderr.startswith(
        "hpsrl: error: made-up/gen000.h5 belongs to another campaign than "
        "made-up/gen000/population.h5 (they differ in seed); moved it aside"
    )
    assert not (folder / "made-up" / "gen001.h5").exists()


def test_collect_refuses_a_previous_record_of_another_generation(folder):
    status, _, stderr = collect_gen001("--previous", "made-up/gen001.h5")
    assert status == 1
    assert stderr == (
        "hpsrl: error: --previous made-up/gen001.h5 is the record of gen001; this batch pools "
        "its evidence with gen000.h5\n"
    )


def test_train_refuses_a_population_of_another_campaign(folder):
    spoil(folder, "gen001/population.h5", "other")
    status, _, stderr = run_main(
        [
            *("train", "--population", "made-up/gen001/population.h5", "--individual", "0"),
            *("--out", "made-up/gen001/ind000.h5"),
        ]
    )
    assert status == 1
    assert stderr.startswith(
        "hpsrl: error: made-up/gen001/population.h5 belongs to another campaign than "
        "made-up/gen000/population.h5"
    )
    assert (folder / "made-up/gen001/population.h5.corrupt").exists()


def test_promote_refuses_a_spoilt_rung(tmp_path, monkeypatch):
    config = copy.deepcopy(FUZZ_CAMPAIGN)
    config["search"] = {"fidelity": {"rungs": 2, "eta": 2}, "racing": {"share": 0}}
    campaign = tmp_path / "rungs"
    write_made_up_batch(campaign, initial_population(load_config(config)))
    monkeypatch.chdir(tmp_path)
    assert run_main(["promote", "--out", "rung1.h5", "rungs/gen000/rung0.h5"])[0] == 0
    with h5py.File(campaign / "gen000" / "rung0.h5", "a") as f:
        del f["results/rank_key"]
    status, _, stderr = run_main(["promote", "--out", "rung1.h5", "rungs/gen000/rung0.h5"])
    assert status == 1
    assert stderr.startswith("hpsrl: error: rungs/gen000/rung0.h5 has no dataset /results/rank_key")
    assert (campaign / "gen000" / "rung0.h5.corrupt").exists()


# -- any change, anywhere -------------------------------------------------------------------------

# The files of a finished campaign, and the commands that read each of them whatever else they do.
READERS = {
    "gen000.h5": [["status", "made-up"], ["table", "made-up"]],
    "gen001.h5": [["status", "made-up"], ["table", "made-up"], ["best", "made-up"]],
    "retest.h5": [["best", "made-up"]],
    "gen001/population.h5": [["collect"]],
    "gen001/ind003.h5": [["collect"]],
}
# Datasets that files written by earlier hpsrl versions lack, read as those versions meant them:
# deleting one is not damage that can be told from an old file.
OPTIONAL = ("steps", "resumes", "lineage_env_steps", "weights_from", "evidence", "estimate")


def _datasets(path: Path) -> list[str]:
    names: list[str] = []
    with h5py.File(path) as f:
        f.visititems(
            lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
        )
    return [n for n in names if not any(part in OPTIONAL for part in n.split("/"))
            and not n.startswith("weights/") and n != "results/evidence/seeds"]  # fmt: skip


ATTRIBUTES = ("schema_version", "config", "config_hash", "batch")


def spoil_item(path: Path, target: str, how: str) -> None:
    """Delete, grow or shrink (one more or one less along the first axis) or retype (numbers to
    text, text to numbers) a dataset of ``path``, or delete or change one of its attributes."""
    with h5py.File(path, "a") as f:
        if target in ATTRIBUTES:
            if how == "delete":
                del f.attrs[target]
            else:
                changed = {"schema_version": 2, "config": "{}", "config_hash": "0" * 16}
                f.attrs[target] = changed.get(target, "gen007") if how != "retype" else 1.5
            return
        if how == "delete":
            del f[target]
            return
        data = f[target][()]
        if how == "grow":
            data = np.concatenate([data, data[:1]])
        elif how == "shrink":
            data = data[:-1]
        elif data.dtype.kind in "OSU":
            data = np.zeros(data.shape)
        else:
            data = data.astype(str).astype("S")
        _replace(f, target, data)


def run_readers(relative: str) -> list[tuple[list[str], int, str, str]]:
    """Each command that reads ``relative`` whatever else it does, as run_main reports it."""
    runs = []
    for argv in READERS[relative]:
        if argv == ["collect"]:
            argv = ["collect", "--population", "made-up/gen001/population.h5", "--out", "x.h5"]
            argv += ["--previous", "made-up/gen000.h5", "made-up/gen001/ind000-001.txt"]
            argv += ["made-up/gen001/ind002-003.txt"]
        runs.append((argv, *run_main(argv)))
    return runs


@fuzz(40)
@given(data=st.data())
def test_any_change_to_a_results_file_is_refused_by_what_reads_it(pristine, tmp_path_factory, data):
    relative = data.draw(st.sampled_from(list(READERS)), label="file")
    with fresh_copy(pristine, tmp_path_factory) as folder:
        path = folder / "made-up" / relative
        target = data.draw(st.sampled_from([*ATTRIBUTES, *_datasets(path)]), label="item")
        how = data.draw(st.sampled_from(["delete", "grow", "shrink", "retype"]), label="how")
        spoil_item(path, target, how)
        runs = run_readers(relative)
        others = [["status", "made-up"], ["best", "made-up"], ["table", "made-up"]]
        runs += [(argv, *run_main(argv)) for argv in others if argv not in READERS[relative]]
    for argv, status, stdout, stderr in runs:
        assert status in (0, 1), (argv, stderr)
        assert status == 0 or (stderr.startswith("hpsrl: error: ") and stderr.count("\n") == 1)
        if argv[0] in [r[0] for r in READERS[relative]]:
            assert status == 1, (argv, target, how, stdout)
            assert f"made-up/{relative} " in stderr, stderr
