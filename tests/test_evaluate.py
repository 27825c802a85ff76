"""hpsrl evaluate: a stored agent, rebuilt from its result file, plays as it did in the campaign."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsrl.campaign.config import load_config
from hpsrl.campaign.storage import write_population
from hpsrl.readers.evaluate import evaluate_agent, load_agent, record_episode
from hpsrl.search.evolve import initial_population

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
    # (arguments, exit status: 1 for what cannot be done, 2 for a usage error, message)
    cases = [
        (("--generation", "gen000", "--individual", "7"), 1, "no result for individual 7"),
        (("--generation", "gen000", "--individual", "1", "--seed-index", "5"), 1, "not 5"),
        (("--generation", "gen000", "--individual", "1", "--record", "x.avi"), 2, "or .mp4"),
        ((), 1, "holds no finished generation"),
    ]
    for args, status, message in cases:
        done = subprocess.run(
            [sys.executable, "-m", "hpsrl", "evaluate", str(trained), *args],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == status, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert done.stderr.splitlines()[-1].startswith("hpsrl: error: ")
        assert "Traceback" not in done.stderr


# A machine without a display or sound: what SDL's probes complained about (XDG_RUNTIME_DIR).
HEADLESS = {
    name: value
    for name, value in ENV.items()
    if name not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "SDL_VIDEODRIVER")
}


@pytest.mark.slow
def test_evaluate_records_an_mp4_quietly_on_a_headless_machine(trained, tmp_path):
    import imageio.v2 as imageio

    video = tmp_path / "episode.mp4"
    command = [sys.executable, "-m", "hpsrl", "evaluate", str(trained), "--generation", "gen000",
               "--individual", "1", "--episodes", "1", "--seed", "5",
               "--record", str(video)]  # fmt: skip
    done = subprocess.run(command, env=HEADLESS, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "nothing on stderr (SDL printed 'error: XDG_RUNTIME_DIR ...')"
    frames = int(re.search(r"one episode, (\d+) frames", done.stdout).group(1))
    reader = imageio.get_reader(video, format="FFMPEG")
    try:
        assert reader.get_meta_data()["codec"] == "h264"
        shapes = [frame.shape for frame in reader]
    finally:
        reader.close()
    assert len(shapes) == frames > 5
    assert shapes[0][0] >= 100 and shapes[0][1] >= 100
    assert not list(tmp_path.glob(".*.tmp*")), "its temporary file is gone"


def test_mp4_without_ffmpeg_is_one_line_saying_what_to_do(tmp_path):
    # Checked before anything runs, so no trained campaign is needed.
    video = tmp_path / "episode.mp4"
    command = [sys.executable, "-m", "hpsrl", "evaluate", str(tmp_path), "--record", str(video)]
    env = {**ENV, "IMAGEIO_FFMPEG_EXE": str(tmp_path / "no-ffmpeg")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"hpsrl: error: cannot record {video}: IMAGEIO_FFMPEG_EXE")
    assert done.stderr.count("\n") == 1 and not video.exists()


def test_mp4_without_imageio_says_what_to_install(tmp_path, monkeypatch, capsys):
    from hpsrl.cli import main

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    video = tmp_path / "episode.mp4"
    assert main(["evaluate", str(tmp_path), "--record", str(video)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hpsrl: error: cannot record {video}: writing MP4 needs imageio")
    assert "pip install 'hpsrl[video]'" in err and err.count("\n") == 1
