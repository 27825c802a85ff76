"""A recorded campaign: what the tiny campaign wrote (every generation's genes, lineage, seeds,
per-seed returns, evidence and objectives, the re-test, best.yaml) when it was recorded, which
every later version must write again, bit for bit. Refactors promise behaviour-preserving; this
test holds them to it. A change that is meant to change results re-records, and its commit says why:

    .venv/bin/python -m tests.test_recorded_campaign --record

Training runs with torch, MKL and numpy on their portable code paths (RECORDING_ENV), so that the
recording holds on CPUs with and without AVX-512, AMD's and Intel's; on this project's machines the
native paths give the same bytes too.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from tests.conftest import REPO, TINY, copy_workflow
from tests.test_workflow import snakemake, write_config

RECORDING = REPO / "tests" / "data" / "recorded_campaign.json"

# torch's portable kernels, MKL's results independent of the instruction set, numpy without its
# AVX2/AVX-512 loops: floating-point results that do not depend on the CPU.
RECORDING_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "OMP_NUM_THREADS": "1",
}

# Wall-clock measurements, the only things that differ between two runs of a campaign. The config
# attributes are its input (their encoding may change; test_config checks what they hold).
_NOT_RESULTS = {"train_seconds", "eval_seconds", "config", "config_hash"}


def recorded_config() -> dict[str, Any]:
    """The tiny campaign over 3 generations: the GA's operators, racing and pooled evidence, the
    re-test and best.yaml all have something to do."""
    config = copy.deepcopy(TINY)
    config["budget"]["generations"] = 3
    return config


def _plain(value: Any) -> Any:
    """JSON's form of an HDF5 value; floats as Python writes them (they read back exactly) and
    NaN as the string "nan", so that equal records compare equal."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def campaign_record(results: Path) -> dict[str, Any]:
    """Everything the campaign in ``results`` computed: each generation record's (and the
    re-test's) attributes and datasets, and best.yaml."""
    record: dict[str, Any] = {}
    for path in sorted(results.glob("**/*.h5")):
        if path.name.startswith("ind"):  # an individual's result: its record holds it too
            continue
        with h5py.File(path, "r") as f:
            entry = {
                f"@{k}": _plain(v) for k, v in sorted(f.attrs.items()) if k not in _NOT_RESULTS
            }

            def add(name: str, obj: Any, entry: dict[str, Any] = entry) -> None:
                if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] not in _NOT_RESULTS:
                    entry[name] = _plain(obj[()])

            f.visititems(add)
        record[path.relative_to(results).as_posix()] = entry
    record["best.yaml"] = _plain(yaml.safe_load((results / "best.yaml").read_text()))
    return record


def run_recorded_campaign(workdir: Path) -> dict[str, Any]:
    config = recorded_config()
    write_config(copy_workflow(workdir), config)
    done = snakemake(workdir, "-j2", env_extra=RECORDING_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return campaign_record(workdir / "results" / config["campaign"])


def test_the_campaign_writes_what_was_recorded(tmp_path):
    expected = json.loads(RECORDING.read_text())
    got = json.loads(json.dumps(run_recorded_campaign(tmp_path)))  # tuples as JSON has them
    assert got.keys() == expected.keys()
    for name, entry in expected.items():
        if name == "best.yaml":
            assert got[name] == entry, name
            continue
        assert got[name].keys() == entry.keys(), name
        for key, value in entry.items():
            assert got[name][key] == value, f"{name}: {key} differs from the recording"


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(f"usage: {sys.executable} -m tests.test_recorded_campaign --record")
    with tempfile.TemporaryDirectory() as folder:
        RECORDING.parent.mkdir(exist_ok=True)
        RECORDING.write_text(json.dumps(run_recorded_campaign(Path(folder)), indent=1) + "\n")
    print(f"recorded {RECORDING.relative_to(REPO)}")
