"""Fuzzed input: generated configs (valid ones and mutated ones: wrong types, out-of-range values,
unknown keys, broken YAML text) and command lines for every hpsrl command, workflow steps
included, with garbage paths. Each either runs or stops with one line naming the problem (exit 1
when it could not do its work, 2 when it was called wrongly); never a traceback, and never a
results folder for a config that is not valid.

The examples are few enough for CI (2 cores, every test in 30 minutes); for a longer hunt, raise
them: ``HPSRL_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import copy
import datetime
import io
import json
import math
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpsrl.campaign.config import (
    ConfigError,
    check_environment,
    load_config,
    load_yaml,
    shared_first_generations,
)
from hpsrl.campaign.model import IndividualResult, SeedResult
from hpsrl.campaign.storage import (
    write_generation,
    write_individual,
    write_manifest,
    write_population,
)
from hpsrl.cli import build_parser, main
from hpsrl.search.evolve import initial_population, planned_size
from tests.conftest import TINY, copy_workflow
from tests.test_workflow import BIN, snakemake

EXAMPLES = int(os.environ.get("HPSRL_FUZZ_EXAMPLES", "0"))


def fuzz(default: int, **kwargs: Any) -> settings:
    """Hypothesis settings of a fuzz test: ``default`` examples unless HPSRL_FUZZ_EXAMPLES says."""
    return settings(
        max_examples=EXAMPLES or default,
        # replaces the profile's list (tests/conftest.py), so it names too_slow again
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **kwargs,
    )


# -- configs --------------------------------------------------------------------------------------

# A YAML file can hold more than JSON: dates, binary, sets, non-finite floats, huge integers.
NASTY_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    2**31,
    2**63,
    10**30,
    -(10**30),
    0.5,
    -0.5,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x",
    "ppo",
    "1e-3",
    "a\nb",
    [],
    [1, "a"],
    [None],
    {},
    {"a": 1},
    {"type": "float"},
    datetime.date(2026, 1, 2),
    datetime.datetime(2026, 1, 2, 3, 4, 5),
    b"\x00\xff",
    {1, 2},
]


def valid_configs() -> st.SearchStrategy[dict[str, Any]]:
    """Small campaigns, mostly valid: the tiny PPO campaign or an algorithm's default genes, with
    budgets, objectives and search settings drawn from what the schema allows."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        algorithm = draw(st.sampled_from(["ppo", "dqn", "tiny-ppo"]))
        if algorithm == "tiny-ppo":
            config = copy.deepcopy(TINY)
        else:
            config = {"campaign": "fuzz", "env": {"id": "CartPole-v1"}, "algorithm": algorithm}
        config["training"] = {
            **config.get("training", {}),
            "steps": draw(st.integers(64, 4096)),
            "seeds": draw(st.integers(1, 3)),
            "eval_episodes": draw(st.integers(1, 4)),
            "aggregate": draw(st.sampled_from(["mean", "median", "min"])),
        }
        config["budget"] = {
            "population": draw(st.integers(2, 6)),
            "generations": draw(st.integers(1, 3)),
        }
        config["ga"] = {
            "tournament_size": draw(st.integers(1, 2)),
            "mutation_prob": draw(st.floats(0, 1)),
        }
        config["search"] = {
            "strategy": draw(st.sampled_from(["ga", "random", "bo"])),
            "racing": {"share": draw(st.sampled_from([0, 0.25, 0.5])), "top": 1},
            "fidelity": {"rungs": draw(st.integers(1, 2)), "eta": 2},
        }
        objectives = [{"name": "return"}]
        if draw(st.booleans()):
            objectives.append({"name": "steps_to_threshold", "threshold": 50})
        config["objectives"] = objectives
        config["retest"] = {"seeds": draw(st.integers(0, 2))}
        config["seed"] = draw(st.integers(0, 2**32))
        return config

    return build()


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path in a nested config, the config itself first."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _at(config: Any, path: tuple) -> Any:
    for key in path:
        config = config[key]
    return config


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    """A valid config with one to three mutations: a value replaced by a value of another type or
    out of range, a key removed or misspelt, an unknown key added, or the whole config replaced."""
    config = draw(valid_configs())
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(config))
        path = draw(st.sampled_from(paths))
        nasty = st.sampled_from(NASTY_VALUES)
        value = st.one_of(nasty, nasty, nasty, st.integers(), st.floats(), st.text(max_size=8))
        mutation = draw(st.sampled_from(["replace", "remove", "misspell", "add", "whole"]))
        if mutation == "whole" or not path:
            return draw(value)
        parent, key = _at(config, path[:-1]), path[-1]
        if mutation == "replace":
            parent[key] = draw(value)
        elif mutation == "remove":
            del parent[key]
        elif isinstance(parent, dict) and mutation == "misspell":
            parent[f"{key}s"] = parent.pop(key)
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(value)
    return config


def _yaml_text(config: Any) -> str:
    """YAML for anything a mutation made: dates, sets and bytes as YAML writes them."""
    return yaml.dump(config, Dumper=yaml.Dumper, sort_keys=False, allow_unicode=True)


@st.composite
def broken_yaml(draw: st.DrawFn) -> str:
    """The YAML text of a valid config, damaged: characters deleted, inserted (YAML's syntax
    characters, tabs), lines duplicated or cut."""
    lines = yaml.safe_dump(draw(valid_configs()), sort_keys=False).splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        j = draw(st.integers(0, len(line)))
        edit = draw(st.sampled_from(["insert", "delete", "duplicate", "cut", "tab"]))
        if edit == "insert":
            lines[i] = line[:j] + draw(st.sampled_from(list(":{}[]-#\"'&*!|>%@`,?\\"))) + line[j:]
        elif edit == "delete":
            lines[i] = line[:j] + line[j + 1 :]
        elif edit == "duplicate":
            lines.insert(i, line)
        elif edit == "cut":
            lines = [*lines[:i], line[:j]]
        else:
            lines[i] = "\t" + line
    return "".join(lines)


def plan_like_snakemake(path: Path) -> dict[str, Any] | None:
    """What ``snakemake -n`` and ``hpsrl check`` do with a config file before any job, in this
    process (workflow/rules/common.smk): the config loaded, its compared campaigns derived, its
    environment made, generation 0 planned. Returns the config, or None after a ConfigError of
    one line that names a key or the file; anything else raised fails the test."""
    try:
        config = load_config(load_yaml(path))
        shared_first_generations(config)  # derives compare's campaigns too
        check_environment(config)
    except ConfigError as e:
        message = str(e)
        assert message.count("\n") == 0, message
        assert "config" in message, message
        return None
    first = initial_population(config)  # what hpsrl populate writes
    assert len(first) == planned_size(config, first.batch)
    return config


def one_config(config: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config", numbered=True) / "config.yaml"
    path.write_text(_yaml_text(config))
    return path


@fuzz(300)
@given(config=st.one_of(valid_configs(), mutated_configs()))
def test_a_generated_config_loads_or_names_its_problem(config, tmp_path_factory):
    plan_like_snakemake(one_config(config, tmp_path_factory))


@fuzz(300)
@given(text=broken_yaml())
def test_broken_yaml_loads_or_names_the_file_and_line(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("config", numbered=True) / "broken.yaml"
    path.write_text(text)
    try:
        load_yaml(path)
    except ConfigError as e:
        message = str(e)
        assert message.count("\n") == 0 and str(path) in message, message
        if "not valid YAML" in message:
            assert "line " in message, message
        return
    plan_like_snakemake(path)


# -- a made-up campaign, and garbage -------------------------------------------------------------

FUZZ_CAMPAIGN = {
    **copy.deepcopy(TINY),
    "campaign": "made-up",
    "training": {"steps": 256, "seeds": 2, "eval_episodes": 3, "curve_points": 4},
}


def made_up_seed(rng: np.random.Generator, config: dict[str, Any]) -> SeedResult:
    """One seed's training as train_seed reports it, with made-up numbers and no weights."""
    training = config["training"]
    return SeedResult(
        status="ok",
        eval_returns=rng.uniform(0, 500, training["eval_episodes"]),
        curve_steps=np.linspace(0, training["steps"], training["curve_points"]).astype(np.int64),
        curve_returns=rng.uniform(0, 500, training["curve_points"]),
        steps_to_threshold=float(rng.integers(1, training["steps"])),
        env_steps=training["steps"],
        train_seconds=1.5,
        eval_seconds=0.25,
        lineage_env_steps=training["steps"],
    )


def write_made_up_batch(folder: Path, population, previous=None):
    """A batch as the workflow leaves it: its population, a result file per individual, a
    manifest per pair of individuals and its record (collected from those files)."""
    from hpsrl.search.generation import collect

    rng = np.random.default_rng(len(population) + (previous is not None))
    batch = folder / population.batch
    write_population(batch / "population.h5", population)
    paths = []
    for i in range(len(population)):
        seeds = [made_up_seed(rng, population.config) for _ in population.train_seeds[i]]
        result = IndividualResult(
            batch=population.batch,
            individual=i,
            hyperparameters=population.hyperparameters(i),
            train_seeds=population.train_seeds[i],
            eval_seeds=population.eval_seeds[i],
            seeds=seeds,
            eval_episodes=population.config["training"]["eval_episodes"],
            curve_points=population.config["training"]["curve_points"],
            steps=int(population.steps[i]),
        )
        paths.append(batch / f"ind{i:03d}.h5")
        write_individual(paths[-1], result, population.config)
    for first in range(0, len(paths), 2):
        last = min(first + 1, len(paths) - 1)
        write_manifest(batch / f"ind{first:03d}-{last:03d}.txt", paths[first : last + 1])
    record = collect(population, paths, previous)
    write_generation(folder / f"{population.batch}.h5", record)
    return record


def write_made_up_campaign(folder: Path, config: dict[str, Any] | None = None) -> Path:
    """Two generations and the re-test of a campaign with made-up results (nothing trained): every
    file the workflow writes, each made by hpsrl's own code from the one before."""
    from hpsrl.search.evolve import next_population, retest_population

    config = load_config(config or FUZZ_CAMPAIGN)
    first = write_made_up_batch(folder, initial_population(config))
    second = write_made_up_batch(folder, next_population([first], config), first)
    write_made_up_batch(folder, retest_population([first, second], config))
    return folder


def write_garbage(folder: Path) -> None:
    """Files that are not what a command wants, beside the made-up campaign ``folder/made-up``."""
    (folder / "empty.h5").write_bytes(b"")
    (folder / "text.txt").write_text("not a result\n")
    (folder / "noise.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    good = (folder / "made-up" / "gen001.h5").read_bytes()
    (folder / "truncated.h5").write_bytes(good[: len(good) // 2])
    with h5py.File(folder / "foreign.h5", "w") as f:  # HDF5, but not hpsrl's
        f["x"] = np.arange(3)
        f.attrs["config"] = "{not json"
    (folder / "config.yaml").write_text(yaml.safe_dump(FUZZ_CAMPAIGN))
    (folder / "broken.yaml").write_text("ga: {population: 4\nseed: 1\n")
    (folder / "list.yaml").write_text("- 1\n- 2\n")
    exported = {"env": {"id": "CartPole-v1"}, "algorithm": "a2c", "training": {"steps": 64}}
    (folder / "hyperparameters.yaml").write_text(
        yaml.safe_dump({**exported, "hyperparameters": {}})
    )
    (folder / "manifest.txt").write_text("made-up/gen000/ind000.h5\nmissing.h5\n")
    (folder / "binary.txt").write_bytes(b"\xff\xfe\x00garbage")


# Paths a command may be given, relative to a folder holding the made-up campaign and the garbage.
PATHS = [
    "made-up",
    "made-up/gen000",
    "made-up/gen000.h5",
    "made-up/gen001.h5",
    "made-up/retest.h5",
    "made-up/gen000/population.h5",
    "made-up/gen001/population.h5",
    "made-up/retest/population.h5",
    "made-up/gen000/ind001.h5",
    "made-up/retest/ind000.h5",
    "made-up/gen001/ind002-003.txt",
    "missing.h5",
    "missing/folder/x.h5",
    "",
    ".",
    "/",
    "/dev/null",
    "empty.h5",
    "text.txt",
    "noise.h5",
    "truncated.h5",
    "foreign.h5",
    "config.yaml",
    "broken.yaml",
    "list.yaml",
    "hyperparameters.yaml",
    "manifest.txt",
    "binary.txt",
    "a" * 300,
    "caf\udcff.h5",  # a name that is not UTF-8, as Python decodes it from the command line
    "-",
]
INTEGERS = ["0", "1", "2", "3", "-1", "7", str(2**31), str(2**63), str(-(2**63)), "1.5", "x", ""]
NAMES = ["gen000", "gen001", "retest", "gen999", "gen000/rung0", "../made-up", "", "x\ny"]


# Where a command writes. Only paths inside the folder it runs in are given there (tests run as
# root on some machines: "/" or /dev/null as an output would be written over), and a pipe made
# in that folder stands for a device.
OUTPUTS = {"out", "folder", "optuna", "record", "plot", "summary", "manifest"}
PIPE = "pipe.h5"
INSIDE = [path for path in PATHS if not path.startswith("/")] + [PIPE]


def _inside(text: str) -> bool:
    """Whether a generated path stays in the folder the command runs in."""
    return not text.startswith(("/", "~")) and ".." not in text


def option_values(action) -> st.SearchStrategy[str]:
    """Values for one argparse option or positional: its choices, numbers for a number, paths
    for the rest, and now and then anything (as a path, always one inside the folder)."""
    anything = st.text(st.characters(exclude_characters="\x00"), max_size=12)  # argv has no NUL
    if action.choices:
        return st.one_of(st.sampled_from(list(action.choices)), anything)
    if action.type in (int, float):
        return st.one_of(st.sampled_from(INTEGERS), anything)
    if action.dest == "generation":
        return st.one_of(st.sampled_from(NAMES), anything)
    if action.dest == "config_json":
        configs = st.one_of(valid_configs(), mutated_configs())
        return st.one_of(configs.map(lambda c: json.dumps(c, default=str)), anything)
    anywhere = anything.filter(_inside)
    if action.dest in OUTPUTS:
        return st.one_of(st.sampled_from(INSIDE), st.sampled_from(INSIDE), anywhere)
    return st.one_of(st.sampled_from(PATHS), st.sampled_from(PATHS), anywhere)


def _subparsers() -> dict[str, Any]:
    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    return dict(sub.choices)


COMMANDS = _subparsers()


@st.composite
def command_lines(draw: st.DrawFn, commands: list[str] | None = None) -> list[str]:
    """An hpsrl command line: a command, some of its options and positionals (required ones
    mostly there) with generated values, and now and then something that is not an option.
    ``status --watch`` is left out: waiting for a campaign to appear is what it is for."""
    command = draw(st.sampled_from(commands or list(COMMANDS)))
    argv = [command]
    for action in COMMANDS[command]._actions:
        if action.dest in ("help", "watch"):
            continue
        if not draw(st.floats(0, 1)) < (
            0.9 if action.required or not action.option_strings else 0.4
        ):
            continue
        if action.nargs == 0:  # a flag
            argv.append(action.option_strings[0])
            continue
        count = {None: 1, "?": draw(st.integers(0, 1)), "+": draw(st.integers(1, 3))}.get(
            action.nargs, draw(st.integers(0, 3))
        )
        values = [draw(option_values(action)) for _ in range(count)]
        if action.option_strings:
            argv.append(draw(st.sampled_from(action.option_strings)))
        argv += values
    if draw(st.integers(0, 9)) == 0:
        argv.insert(draw(st.integers(1, len(argv))), draw(st.sampled_from(["--bogus", "-x", "--"])))
    return argv


@pytest.fixture(scope="module")
def garbage(tmp_path_factory) -> Path:
    """A folder with a made-up campaign (made-up/) and garbage, copied afresh for every command
    line so that what one writes (--out) cannot change what the next reads."""
    folder = tmp_path_factory.mktemp("garbage")
    write_made_up_campaign(folder / "made-up")
    write_garbage(folder)
    return folder


@contextmanager
def fresh_copy(source: Path, tmp_path_factory) -> Iterator[Path]:
    import shutil

    folder = tmp_path_factory.mktemp("run", numbered=True)
    shutil.copytree(source, folder, dirs_exist_ok=True)
    os.mkfifo(folder / PIPE)  # (not in ``source``: copying a pipe would wait for a writer)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(cwd)
        shutil.rmtree(folder, ignore_errors=True)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """hpsrl's main in this process: (exit status, stdout, stderr). An exception that escapes it
    would be a traceback, and fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code
    return status, out.getvalue(), err.getvalue()


def assert_runs_or_says_why(argv: list[str], status: int, stderr: str) -> None:
    """The command line's contract: status 0; or 1 with one ``hpsrl: error:`` line; or 2 with
    its usage and one error line (argparse's, or parse_args's own checks)."""
    lines = stderr.split("\n")[:-1]  # line breaks, not the other characters splitlines splits at
    if status == 0:
        return
    if status == 1:
        assert len(lines) == 1 and lines[0].startswith("hpsrl: error: "), (argv, stderr)
        assert stderr.endswith("\n"), (argv, stderr)
    else:
        assert status == 2, (argv, status, stderr)
        assert stderr.startswith("usage: hpsrl"), (argv, stderr)
        assert lines[-1].startswith("hpsrl") and ": error: " in lines[-1], (argv, stderr)


@fuzz(150)
@given(argv=command_lines())
def test_every_command_runs_or_says_why_in_one_line(argv, garbage, tmp_path_factory):
    with fresh_copy(garbage, tmp_path_factory):
        status, _, stderr = run_main(argv)
    assert_runs_or_says_why(argv, status, stderr)


# -- the same through the real commands -----------------------------------------------------------


# What hpsrl's log lines start with (hpsrl.LOG_FORMAT): a time stamp and a level.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) ")


def hpsrl_command(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # A drawn file name may not be UTF-8 ('caf\udcff.h5'): hpsrl echoes it as the bytes it was
    # given, and its output reads back as the same surrogates.
    return subprocess.run(
        [str(BIN / "hpsrl"), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=300,
    )


@fuzz(12)
@given(argv=command_lines())
def test_the_real_command_runs_or_says_why_in_one_line(argv, garbage, tmp_path_factory):
    """As the in-process test, through the installed command: its exit status, and stderr with
    hpsrl's log lines (the workflow steps log what they do) left out."""
    with fresh_copy(garbage, tmp_path_factory) as folder:
        done = hpsrl_command(argv, folder)
    assert "Traceback" not in done.stderr, (argv, done.stderr)
    own = "".join(
        line for line in done.stderr.splitlines(keepends=True) if not LOG_LINE.match(line)
    )
    assert_runs_or_says_why(argv, done.returncode, own)


@fuzz(8)
@given(config=st.one_of(valid_configs(), mutated_configs()))
def test_snakemake_plans_a_valid_config_and_names_the_problem_of_another(config, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow", numbered=True))
    (workdir / "config" / "config.yaml").write_text(_yaml_text(config))
    valid = plan_like_snakemake(workdir / "config" / "config.yaml") is not None
    before = {p.name for p in workdir.iterdir()} | {".snakemake"}
    done = snakemake(workdir, "-n", "--quiet", "rules")
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert {p.name for p in workdir.iterdir()} <= before, "a dry run writes no results"
    if valid:
        assert done.returncode == 0, output
    else:
        assert done.returncode != 0
        assert len([line for line in output.splitlines() if line.startswith("hpsrl: ")]) == 1, (
            output
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["populate", "--config-json", json.dumps(FUZZ_CAMPAIGN), "--out", PIPE],
        ["report", "made-up", "--out", PIPE],
        ["export", "made-up", "--optuna", PIPE],
        ["compare", "made-up", "--plot", PIPE, "--summary", "s.yaml"],
        ["evaluate", "made-up", "--record", "pipe.gif"],
    ],
)
def test_an_output_that_is_no_regular_file_is_refused_and_left_alone(
    argv, garbage, tmp_path_factory
):
    """A command never renames its output over a device, a pipe or a socket (as root, ``--out
    /dev/null`` would replace /dev/null): it says so, and the pipe standing for one stays."""
    with fresh_copy(garbage, tmp_path_factory) as folder:
        os.mkfifo(folder / "pipe.gif")
        status, _, stderr = run_main(argv)
        assert status == 1, (argv, stderr)
        assert "is not a regular file" in stderr, stderr
        assert stat.S_ISFIFO(os.lstat(folder / PIPE).st_mode)
        assert stat.S_ISFIFO(os.lstat(folder / "pipe.gif").st_mode)
