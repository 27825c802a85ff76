from __future__ import annotations

import copy
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]

# Never let a test oversubscribe the 2 cores of CI with torch threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Property tests judge results, not speed: on 2 shared cores, Hypothesis's timing checks (a deadline
# per example, "data generation too slow") failed tests whose every example was right.
settings.register_profile("hpsrl", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("hpsrl")

TINY: dict[str, Any] = {
    "campaign": "tiny",
    "results_dir": "results",
    "seed": 7,
    "env": {"id": "CartPole-v1"},
    "algorithm": "ppo",
    "genes": {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
        "gamma": {"type": "float", "low": 0.95, "high": 0.999},
        "activation": {"type": "categorical", "choices": ["tanh", "relu"]},
        "hidden_sizes": {
            "type": "list",
            "min_length": 1,
            "max_length": 2,
            "element": {"type": "int", "low": 8, "high": 32},
        },
    },
    "fixed": {"num_envs": 4, "num_steps": 64, "batch_size": 64, "update_epochs": 2},
    "training": {"steps": 1024, "seeds": 2, "eval_episodes": 3, "curve_points": 4},
    "objectives": [
        {"name": "return", "direction": "maximize"},
        {"name": "steps_to_threshold", "direction": "minimize", "threshold": 50},
    ],
    "budget": {"population": 4, "generations": 2},
    "ga": {"tournament_size": 2},
    "retest": {"seeds": 2},
}


def sigint_as_at_a_terminal() -> None:
    """Popen's preexec_fn for a child that a test stops with SIGINT, as Ctrl-C at a terminal
    would: where the tests themselves run in the background of a script (`cmd &` without job
    control), they start with SIGINT ignored, the child would inherit that across exec, and
    Python would then never raise KeyboardInterrupt in it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until(condition, timeout: float = 60.0, poll: float = 0.02):
    """Poll ``condition`` every ``poll`` seconds until it returns something true; return that.
    Fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)
    return value


@pytest.fixture
def tiny_config() -> dict[str, Any]:
    """A campaign that trains in about a second per individual."""
    return copy.deepcopy(TINY)


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow (Snakefile, rules, config, profiles) into ``dest`` to run snakemake in."""
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy(src, dest / name)
    return dest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the workflow to run snakemake in."""
    return copy_workflow(tmp_path)
