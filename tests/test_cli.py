"""The hpsrl command's conventions: --version, what --help lists, exit statuses (1: it could not
do its work, 2: it was called wrongly), and one line for every error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import hpsrl
from hpsrl.cli import build_parser
from tests.test_workflow import BIN

USER_COMMANDS = [
    "init",
    "check",
    "genes",
    "status",
    "table",
    "best",
    "report",
    "export",
    "evaluate",
    "retrain",
    "compare",
]
WORKFLOW_STEPS = ["populate", "train", "collect", "promote", "evolve", "retest"]


def hpsrl_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hpsrl"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_version():
    done = hpsrl_cli("--version")
    assert done.returncode == 0
    assert done.stdout == f"hpsrl {hpsrl.__version__}\n"


def test_help_lists_the_user_commands_and_hides_the_workflow_steps():
    done = hpsrl_cli("--help")
    assert done.returncode == 0
    listed = re.findall(r"^    (\w+) ", done.stdout, flags=re.MULTILINE)
    assert listed == USER_COMMANDS
    for step in WORKFLOW_STEPS:
        assert not re.search(rf"^\s+{step}\s", done.stdout, flags=re.MULTILINE), step
    assert "(populate, train, collect, promote, evolve, retest)" in " ".join(done.stdout.split())


@pytest.mark.parametrize("command", USER_COMMANDS)
def test_each_user_command_has_a_description_and_an_example(command):
    done = hpsrl_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    example = done.stdout.split("\nexample:\n")[1]
    assert example.startswith(f"  hpsrl {command} ")
    description = done.stdout.split("\n\n")[1]
    assert len(description.split()) >= 10, description


@pytest.mark.parametrize("step", WORKFLOW_STEPS)
def test_workflow_steps_stay_callable_and_documented(step):
    done = hpsrl_cli(step, "--help")
    assert done.returncode == 0, done.stderr
    assert "Workflow step, called by the Snakemake rules" in done.stdout
    assert "--out" in done.stdout


def test_every_user_command_is_in_the_parser():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert list(sub.choices) == USER_COMMANDS + WORKFLOW_STEPS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "{tmp}/nowhere"], "is not a campaign folder"),
        (["status", "{tmp}"], "holds no finished generation"),
        (["best", "{tmp}"], "holds no finished generation"),
        (["check", "{tmp}/missing.yaml"], "missing.yaml"),
        (["genes", "a2c"], "a2c"),
        (["retrain", "{tmp}/missing.yaml"], "missing.yaml"),
        (
            ["collect", "--population", "{tmp}/pop.h5", "--out", "{tmp}/g.h5", "{tmp}/j.txt"],
            "j.txt",
        ),
    ],
)
def test_a_command_that_cannot_do_its_work_exits_1_with_one_line(tmp_path, args, message):
    done = hpsrl_cli(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("hpsrl: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert done.stdout == ""


@pytest.fixture(scope="module")
def made_up(tmp_path_factory) -> Path:
    """A folder holding a campaign with made-up results, made-up/, and a text file."""
    from tests.test_fuzz import write_made_up_campaign

    folder = tmp_path_factory.mktemp("made-up")
    write_made_up_campaign(folder / "made-up")
    (folder / "text.txt").write_text("not a result\n")
    return folder


# Command lines that crashed with a traceback until tests/test_fuzz.py found them.
FOUND_BY_THE_FUZZER = {
    "promote, a generation's record": (
        ["promote", "--out", "x.h5", "made-up/gen001.h5"],
        "made-up/gen001.h5 is the record of gen001, not of a successive-halving rung",
    ),
    "evolve, the re-test's record": (
        ["evolve", "--out", "x.h5", "made-up/retest.h5"],
        "made-up/retest.h5 is the record of retest, not of a generation",
    ),
    "evolve, generations out of order": (
        ["evolve", "--out", "x.h5", "made-up/gen001.h5", "made-up/gen000.h5"],
        "hold generations [1, 0]; give each once, in order",
    ),
    "collect, --rungs of no rungs": (
        ["collect", "--rungs", "made-up/retest.h5", "--out", "x.h5"],
        "--rungs gave the records of retest",
    ),
    "train, an individual the population lacks": (
        [
            "train",
            "--population",
            "made-up/gen000/population.h5",
            "--individual",
            "7",
            "--out",
            "x.h5",
        ],
        "has individuals 0..3, not 7; check --individual",
    ),
    "a folder as a result file": (
        ["promote", "--out", "x.h5", "made-up"],
        "made-up is a folder, not an HDF5 result file",
    ),
    "report --out ''": (["report", "made-up", "--out", ""], "cannot write .: it is a folder"),
    "export --optuna a folder": (
        ["export", "made-up", "--optuna", "."],
        "cannot write .: it is a folder; give a file name",
    ),
    "export --out a file": (
        ["export", "made-up", "--out", "text.txt"],
        "text.txt: File exists",
    ),
    "a path with a line break": (
        ["status", "made\nup"],
        "made\\nup is not a campaign folder",
    ),
}


@pytest.mark.parametrize("case", list(FOUND_BY_THE_FUZZER))
def test_what_the_fuzzer_found_exits_1_with_one_line(made_up, case):
    args, message = FOUND_BY_THE_FUZZER[case]
    done = subprocess.run(
        [str(BIN / "hpsrl"), *args], cwd=made_up, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("hpsrl: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert not (made_up / "made-up" / "gen001.h5.corrupt").exists(), "nothing is moved aside"


def test_populate_takes_a_json_object(tmp_path):
    for value, message in (("{no", "not JSON"), ("[1]", "a JSON object is needed, not list")):
        done = hpsrl_cli("populate", "--config-json", value, "--out", str(tmp_path / "p.h5"))
        assert done.returncode == 2
        last = done.stderr.splitlines()[-1]
        assert last.startswith("hpsrl populate: error: argument --config-json")
        assert message in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["status"],
        ["evaluate", "results/x", "--record", "x.avi"],
        ["evaluate", "results/x", "--seed", "one"],
        ["train", "--population", "p.h5", "--individual", "0", "1", "--out", "a.h5"],
    ],
)
def test_a_command_called_wrongly_exits_2_with_its_usage(args):
    done = hpsrl_cli(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("usage: hpsrl")
    assert done.stderr.splitlines()[-1].startswith("hpsrl")
    assert "error: " in done.stderr.splitlines()[-1]


def test_the_module_runs_as_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "hpsrl", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.stdout == f"hpsrl {hpsrl.__version__}\n"
