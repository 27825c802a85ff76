"""hpsrl as a package: what every `pip install` of it builds, without warnings; the workflow its
wheel carries; and `hpsrl init`, which runs that workflow from a folder of one's own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml

import hpsrl
from hpsrl import deploy
from tests.conftest import REPO
from tests.test_workflow import BIN, planned_jobs, snakemake, write_config


def test_building_the_package_warns_of_nothing_and_declares_its_license(tmp_path):
    # What pip asks setuptools for on every install (scripts/setup.sh, pip install -e .): a
    # deprecated pyproject field made it print a warning block three times.
    # (pip builds with setuptools>=77 as pyproject.toml asks; this test with the one installed.)
    pytest.importorskip("setuptools", minversion="77")
    script = textwrap.dedent(f"""
        import sys, warnings
        warnings.simplefilter("always")
        from setuptools import build_meta
        print(build_meta.prepare_metadata_for_build_wheel({str(tmp_path)!r}))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "deprecated" not in done.stderr, done.stderr
    metadata = (tmp_path / done.stdout.split()[-1] / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "the hpsrl developers" in license_text


# What a wheel must carry for `hpsrl init` folders to run campaigns: every tracked file of the
# workflow (Snakefile, workflow/rules, workflow/report, workflow/envs), of the configs and of the
# profiles, under hpsrl/workflow/ in the clone's layout (setup.py copies them there).
WORKFLOW_PATHS = ("Snakefile", "workflow", "config", "profiles")


def build_wheel(dest: Path, tmp_path: Path) -> Path:
    """A wheel built as `pip wheel .` builds it, from a copy of the clone's tracked and new files
    (an in-tree build would leave build/ behind, whose old copies could hide a missing file)."""
    source = tmp_path / "source"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    # --no-build-isolation: the installed setuptools, not one fetched from an index.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dest), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = dest.glob("hpsrl-*.whl")
    return wheel


def tracked_workflow_files() -> set[str]:
    done = subprocess.run(
        ["git", "ls-files", *WORKFLOW_PATHS], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def test_the_wheel_carries_the_workflow_configs_and_profiles(tmp_path):
    wheel = build_wheel(tmp_path / "dist", tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        prefix = "hpsrl/workflow/"
        shipped = {name.removeprefix(prefix) for name in names if name.startswith(prefix)}
        expected = tracked_workflow_files()
        assert {"Snakefile", "workflow/rules/train.smk", "config/config.yaml"} <= expected
        assert shipped == expected
        for name in expected - {"workflow/envs/hpsrl.yaml"}:
            assert archive.read(prefix + name) == (REPO / name).read_bytes(), name
        # The rules' conda environment installs this release, not a clone that is not there.
        environment = archive.read(prefix + "workflow/envs/hpsrl.yaml").decode()
        assert f"- hpsrl[box2d]=={hpsrl.__version__}" in environment
        assert "-e ../.." not in environment
    assert "hpsrl/deploy.py" in names and "hpsrl/schemas/config.schema.yaml" in names
    assert not any(name.startswith(("tests/", "benchmarks/", "scripts/")) for name in names)


def hpsrl_command(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hpsrl"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_init_writes_a_folder_that_runs_the_installed_workflow(tmp_path, tiny_config):
    folder = tmp_path / "my campaign"
    done = hpsrl_command("init", str(folder))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"wrote {folder}/config/config.yaml: the campaign (ppo on ")
    assert lines[-1] == f"next: cd '{folder}' && snakemake --cores all"
    written = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    configs_and_profiles = {
        name for name in tracked_workflow_files() if name.startswith(("config/", "profiles/"))
    }
    assert written == configs_and_profiles | {"workflow/Snakefile"}
    for name in configs_and_profiles:
        assert (folder / name).read_text() == (REPO / name).read_text(), name
    # The folder points at the workflow this hpsrl runs (here: the clone it is installed from),
    # and holds no rule of its own that could go stale.
    snakefile = (folder / "workflow" / "Snakefile").read_text()
    assert "hpsrl.deploy.snakefile()" in snakefile
    assert not re.search(r"^\s*(rule|include)\b", snakefile, flags=re.MULTILINE)
    assert deploy.snakefile() == str(REPO / "Snakefile")

    # `snakemake` there plans the whole campaign: the default target, rule all, is kept.
    write_config(folder, tiny_config)
    counts = planned_jobs(folder)
    assert counts["all"] == 1 and counts["train_individuals"] == 9, counts
    # and the profiles there are the ones it applies (the default one to every run)
    done = snakemake(folder, "-n", "--cores", "1")
    assert done.returncode == 0, done.stderr
    assert "Using workflow specific profile profiles/default" in done.stderr


def test_init_overwrites_nothing(tmp_path):
    folder = tmp_path / "campaign"
    assert hpsrl_command("init", str(folder)).returncode == 0
    config = folder / "config" / "config.yaml"
    config.write_text("campaign: mine\n")
    done = hpsrl_command("init", str(folder))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"hpsrl: error: {config} exists; hpsrl init writes a new campaign folder and overwrites "
        "nothing: give it another folder, or move that file away\n"
    )
    assert config.read_text() == "campaign: mine\n"

    # Any file it would write stops it before it writes the others.
    other = tmp_path / "other"
    (other / "profiles" / "slurm").mkdir(parents=True)
    (other / "profiles" / "slurm" / "config.yaml").write_text("executor: slurm\n")
    done = hpsrl_command("init", str(other))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "profiles/slurm/config.yaml exists" in done.stderr
    assert [p.name for p in other.rglob("*") if p.is_file()] == ["config.yaml"]


@pytest.mark.slow
def test_a_campaign_runs_from_an_init_folder_with_the_wheel_alone(tmp_path, tiny_config):
    """pip install of the wheel into a fresh virtual environment, hpsrl init, snakemake: nothing
    of the clone is used (neither its files nor its .venv)."""
    wheel = build_wheel(tmp_path / "dist", tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    # The clone's .venv and folders out of every path: only the new environment's commands run.
    path = [str(venv / "bin")] + [
        p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() != BIN.resolve()
    ]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
        "PATH": os.pathsep.join(path),
    }

    def run(*args: str, cwd: Path = tmp_path, timeout: int = 900) -> str:
        done = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        return done.stdout

    # torch first, pinned to the CPU build (as scripts/setup.sh does): unpinned, pip would fetch
    # a CUDA build of several GB. [mpi]: mpiexec from the mpich wheel, as on a machine without MPI.
    run(python, "-m", "pip", "install", "-q", "torch==2.13.0")
    run(python, "-m", "pip", "install", "-q", f"{wheel}[mpi]")
    installed = run(python, "-c", "import hpsrl.deploy as d; print(d.snakefile())").strip()
    site_packages = (
        venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    )
    assert installed == str(site_packages / "hpsrl" / "workflow" / "Snakefile")

    out = run("hpsrl", "init", "campaign")
    assert out.splitlines()[-1] == "next: cd campaign && snakemake --cores all"
    folder = tmp_path / "campaign"
    tiny_config["budget"]["generations"] = 1
    write_config(folder, tiny_config)
    run("snakemake", "--cores", "2", cwd=folder)
    results = folder / "results" / "tiny"
    assert (results / "report.html").is_file()
    best = yaml.safe_load((results / "best.yaml").read_text())
    assert best["campaign"] == "tiny" and best["generation"] == "gen000", best
    assert len(best["retest"]["returns_per_seed"]) == 2, best
    assert "gen000" in (results / "status.txt").read_text()
