"""hpsrl evaluate: a stored agent, rebuilt from its result file, plays as it did in the campaign."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsrl.config import load_config
from hpsrl.evaluate import evaluate_agent, load_agent, record_episode
from hpsrl.evolve import initial_population
from hpsrl.storage import write_population

ENV = {**os.environ, "HPSRL_NO_MPI": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A campaign folder with gen000's individual 1 trained (1 MPI-less process)."""
    from tests.conftest import TINY

    campaign = tmp_path_factory.mktemp("campaign")
    population = campaign / "gen000" / "population.h5"
    write_population(population, initial_population(load_config(TINY)))
    out = campaign / "gen000" / "ind001.h5"
    command = [sys.executable, "-m", "hpsrl", "train", "--population", str(population),
               "--individual", "1", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return campaign


@pytest.mark.slow
@pytest.mark.parametrize("seed_index", [0, 1])
def test_the_stored_agent_reproduces_its_evaluation(trained, seed_index):
    agent = load_agent(trained / "gen000" / "ind001.h5", seed_index)
    returns = evaluate_agent(agent, episodes=len(agent.stored_returns))
    np.testing.assert_array_equal(returns, agent.stored_returns)


@pytest.mark.slow
def test_evaluate_command_and_recording(trained, tmp_path):
    gif = tmp_path / "episode.gif"
    command = [sys.executable, "-m", "hpsrl", "evaluate", str(trained), "--generation", "gen000",
               "--individual", "1", "--episodes", "4", "--seed", "123",
               "--record", str(gif)]  # fmt: skip
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 greedy episodes from seed 123" in done.stdout
    assert len(done.stdout.split("returns: ")[1].splitlines()[0].split()) == 4
    with Image.open(gif) as image:
        assert image.n_frames > 5
        assert image.size[0] > 100 and image.size[1] > 100


@pytest.mark.slow
def test_a_recorded_episode_is_the_agents_own(trained, tmp_path):
    agent = load_agent(trained / "gen000" / "ind001.h5", 0)
    episode_return, frames = record_episode(agent, tmp_path / "a.gif", seed=5)
    # CartPole pays 1 per step: the return counts the steps, one frame more (the first).
    assert frames == episode_return + 1
    assert record_episode(agent, tmp_path / "b.gif", seed=5) == (episode_return, frames)


def test_bad_requests_get_one_line_each(trained, tmp_path):
    cases = {
        ("--generation", "gen000", "--individual", "7"): "no result for individual 7",
        ("--generation", "gen000", "--individual", "1", "--seed-index", "5"): "not 5",
        ("--generation", "gen000", "--individual", "1", "--record", "x.mp4"): "ending in .gif",
        (): "holds no finished generation",
    }
    for args, message in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "hpsrl", "evaluate", str(trained), *args],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
