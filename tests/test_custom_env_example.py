"""The example of docs/own-environment.md (examples/custom_env): a package that registers an id on
import, and a campaign config that tunes PPO on it. Nothing is installed: the package is put on
``sys.path`` (and on ``PYTHONPATH`` for subprocesses), as an installed package would be."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from hpsrl.agents import make_hyperparameters
from hpsrl.agents.ppo import train
from hpsrl.agents.run import RunSettings
from hpsrl.campaign.config import check_environment, load_config, load_yaml
from hpsrl.envs.spec import EnvSpec

from .conftest import REPO, copy_workflow

EXAMPLE = REPO / "examples" / "custom_env"
CONFIG = EXAMPLE / "config.yaml"
BIN = Path(sys.executable).parent


@pytest.fixture
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))


def with_example_on_pythonpath() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(EXAMPLE), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def test_example_env_passes_the_gymnasium_checker(example_on_path: None) -> None:
    config = load_config(load_yaml(CONFIG))
    env = EnvSpec.from_config(config["env"]).make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    assert gymnasium.spec(config["env"]["id"]).max_episode_steps == 50
    env.close()


def test_example_config_validates_and_a_short_training_learns(example_on_path: None) -> None:
    config = load_config(load_yaml(CONFIG))
    assert config["env"]["imports"] == ["hpsrl_example_env"]
    assert check_environment(config) == "discrete"
    hp = make_hyperparameters("ppo", config["fixed"])
    result = train(
        EnvSpec.from_config(config["env"]), hp, RunSettings(4096, 0, eval_seed=1, eval_episodes=10)
    )
    assert result.env_steps == 4096  # about a second
    # Random steps score about -0.3, the shortest walk 0.87 on average.
    assert np.mean(result.eval_returns) > 0.5


def test_without_the_package_the_config_fails_with_the_fix() -> None:
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run(
        [sys.executable, "-c", "import hpsrl_example_env"], cwd=REPO, env=bare, timeout=60
    )
    if installed.returncode == 0:
        pytest.skip("hpsrl_example_env is installed (pip install -e examples/custom_env)")
    done = subprocess.run(
        [str(BIN / "hpsrl"), "check", str(CONFIG)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env=bare,
    )
    assert done.returncode != 0
    assert "could not import module 'hpsrl_example_env'" in done.stderr + done.stdout


def test_readme_commands_plan_the_campaign(tmp_path: Path) -> None:
    """`hpsrl check` and `snakemake --configfile examples/custom_env/config.yaml` (dry run)."""
    workdir = copy_workflow(tmp_path)
    checked = subprocess.run(
        [str(BIN / "hpsrl"), "check", str(CONFIG)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env=with_example_on_pythonpath(),
    )
    assert checked.returncode == 0, checked.stderr
    assert "hpsrl_example/GoToTarget-v0 with discrete actions" in checked.stdout
    planned = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--cores", "2", "--configfile", str(CONFIG)],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=300,
        env=with_example_on_pythonpath(),
    )
    assert planned.returncode == 0, planned.stderr
    assert "go-to-target-ppo" in planned.stdout


def _own_environment_docs() -> str:
    return (REPO / "docs" / "own-environment.md").read_text()


def test_readme_pyproject_makes_a_bare_package_folder_installable(tmp_path: Path) -> None:
    """`pip install -e FOLDER` refuses a folder without a pyproject.toml: docs/own-environment.md
    shows the minimal one, the essentials of the example's. Its wheel is built here, from that
    text next to a copy of the bare package, with nothing downloaded."""
    blocks = re.findall(r"```toml\n(.*?)```", _own_environment_docs(), re.S)
    assert len(blocks) == 1, "the section shows one pyproject.toml"
    shown = textwrap.dedent(blocks[0])  # indented in a list item
    lines = [line for line in shown.splitlines() if line.strip()]
    assert set(lines) <= set((EXAMPLE / "pyproject.toml").read_text().splitlines()), (
        "the documented lines are the example's"
    )

    folder = tmp_path / "my_env"
    shutil.copytree(EXAMPLE / "hpsrl_example_env", folder / "hpsrl_example_env")
    (folder / "pyproject.toml").write_text(shown)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run(
        [*pip, "--wheel-dir", str(wheels), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = wheels.glob("hpsrl_example_env-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hpsrl_example_env/__init__.py" in names
    assert "hpsrl_example_env/go_to_target.py" in names
