"""Recovery: a failed workflow step moves a damaged input aside and deletes the manifest that
lists a result gone or damaged, so that the rerun regenerates them; a command people run moves
nothing of theirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsrl.campaign.storage import CorruptResultError, StorageError
from hpsrl.envs.spec import EnvConfigError, EnvSpec
from hpsrl.training.recovery import (
    delete_manifest_of_damaged_result,
    delete_manifests_of_missing_results,
    failure_message,
    quarantine_damaged_input,
)


def _damaged(path: Path) -> CorruptResultError:
    return CorruptResultError(f"{path} is truncated", path, "is truncated")


def test_a_workflow_step_moves_its_damaged_input_aside_and_says_where(tmp_path):
    path = tmp_path / "ind000.h5"
    path.write_text("not HDF5")
    error = _damaged(path)
    aside = quarantine_damaged_input("collect", error)
    assert aside == tmp_path / "ind000.h5.corrupt" and aside.exists() and not path.exists()
    assert failure_message(error, aside) == (
        f"hpsrl: error: {path} is truncated; moved it aside to {aside}; rerun snakemake to "
        "regenerate it"
    )


def test_a_command_people_run_leaves_a_damaged_file_where_it_is(tmp_path):
    path = tmp_path / "gen000.h5"
    path.write_text("not HDF5")
    error = _damaged(path)
    assert quarantine_damaged_input("report", error) is None
    assert path.exists()
    assert failure_message(error) == f"hpsrl: error: {path} is truncated"


def test_other_failures_move_nothing_and_a_bug_has_no_message(tmp_path):
    assert quarantine_damaged_input("train", StorageError("full disk")) is None
    assert failure_message(StorageError("full disk")) == "hpsrl: error: full disk"
    assert failure_message(RuntimeError("a bug")) is None


def test_a_command_that_cannot_make_the_env_says_so_in_one_line():
    # e.g. `hpsrl retrain` or `hpsrl evaluate` where this Python lacks the env's module
    with pytest.raises(EnvConfigError) as caught:
        EnvSpec("Mine-v0", imports=("no_such_module_of_envs",)).register()
    message = failure_message(caught.value)
    assert message is not None and message.startswith("hpsrl: error: could not import module")
    assert "\n" not in message


def test_a_missing_result_deletes_the_manifest_that_lists_it(tmp_path):
    kept, missing = tmp_path / "ind000.h5", tmp_path / "ind001.h5"
    kept.write_text("")
    manifest = tmp_path / "ind000-001.txt"
    manifest.write_text("ind000.h5\nind001.h5\n")
    with pytest.raises(StorageError, match=r"ind001\.h5 is missing .* now removed"):
        delete_manifests_of_missing_results({kept: manifest, missing: manifest})
    assert not manifest.exists()


def test_a_damaged_result_deletes_the_manifest_that_lists_it_alone(tmp_path):
    manifests = [tmp_path / "ind000-000.txt", tmp_path / "ind001-001.txt"]
    for manifest in manifests:
        manifest.write_text("")
    listed = {tmp_path / "ind000.h5": manifests[0], tmp_path / "ind001.h5": manifests[1]}
    delete_manifest_of_damaged_result(tmp_path / "ind001.h5", listed)
    delete_manifest_of_damaged_result(tmp_path / "elsewhere.h5", listed)  # listed by none
    assert [m.exists() for m in manifests] == [True, False]
