"""``hpsrl init DIR``: a folder of one's own that runs campaigns with the installed hpsrl.

A wheel of hpsrl carries its Snakemake workflow (the Snakefile, workflow/rules, workflow/report,
workflow/envs, the default and example configs and the profiles) under hpsrl/workflow/, in the
layout of the repository root (setup.py copies it there); an editable install from a clone uses
the clone's own files. ``hpsrl init`` writes a folder in the layout of the deployments of
Snakemake's workflow catalogue (what snakedeploy writes): config/ and profiles/ to edit, and
workflow/Snakefile, which reads the installed workflow instead of a copy of it, so that upgrading
hpsrl upgrades the workflow of every such folder and none goes stale.

That Snakefile includes the installed one rather than using Snakemake's ``module`` directive (what
snakedeploy writes for catalogue workflows): Snakemake registers onstart, onsuccess and onerror
handlers only from the main Snakefile, not from a module, and hpsrl's start the warm workers,
record the run's locks and cancel its Slurm jobs after Ctrl-C; a module also skips the workflow's
own configfile logic (a --configfile replaces config/config.yaml, see the Snakefile).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hpsrl

PACKAGE = Path(__file__).resolve().parent

# Written by hpsrl init: the folder's Snakefile. `workflow.include` is what Snakemake compiles the
# `include:` directive to; overwrite_default_target=True reads the file as Snakemake reads a main
# Snakefile (api.py does the same), keeping its default target, rule all, which the directive
# would drop: `snakemake` with no target would then do nothing.
SNAKEFILE = """\
# A campaign folder of hpsrl, written by `hpsrl init` (hpsrl {version}). The workflow is the one the
# installed hpsrl carries, read from it at every run: upgrading hpsrl upgrades it, and this file
# holds no rules to go stale. Edit config/config.yaml (the campaign) and profiles/ (how it runs).
#
#   snakemake --cores all                 # run or continue the campaign on this machine
#   snakemake --profile profiles/slurm    # the same on a Slurm cluster
#
# Read as this folder's main Snakefile, keeping its default target (rule all), which the
# include: directive would drop.
import hpsrl.deploy

workflow.include(hpsrl.deploy.snakefile(), overwrite_default_target=True)
"""


class DeployError(hpsrl.HpsrlError):
    """hpsrl init could not write its folder, or the workflow is missing from the install."""


@dataclass(frozen=True)
class _Written:
    """One file hpsrl init writes: where in the folder, and its text."""

    path: Path
    text: str


def workflow_root() -> Path:
    """The folder holding the Snakefile, workflow/, config/ and profiles/: hpsrl/workflow/ of an
    installed wheel, or the root of the clone an editable install runs from."""
    for root in (PACKAGE / "workflow", PACKAGE.parent):
        if (root / "Snakefile").is_file() and (root / "workflow" / "rules").is_dir():
            return root
    raise DeployError(
        f"hpsrl's Snakemake workflow is missing from its installation ({PACKAGE}): reinstall "
        "hpsrl from a wheel (pip install hpsrl) or from a clone (pip install -e .)"
    )


def snakefile() -> str:
    """The installed workflow's Snakefile, which an hpsrl init folder's Snakefile includes."""
    return str(workflow_root() / "Snakefile")


def _folder_files() -> list[_Written]:
    root = workflow_root()
    files = [_Written(Path("config/config.yaml"), (root / "config/config.yaml").read_text())]
    files += [
        _Written(path.relative_to(root), path.read_text())
        for path in sorted((root / "config/examples").glob("*.yaml"))
    ]
    files += [
        _Written(path.relative_to(root), path.read_text())
        for path in sorted((root / "profiles").glob("*/config.yaml"))
    ]
    files.append(_Written(Path("workflow/Snakefile"), SNAKEFILE.format(version=hpsrl.__version__)))
    return files


def init_folder(folder: Path) -> list[Path]:
    """Write a campaign folder into ``folder`` (made if missing): config/config.yaml, the example
    configs, the profiles and workflow/Snakefile. Overwrites nothing: a folder that holds any of
    these files already (a campaign's config above all) is refused whole, before anything is
    written. Returns the paths written, relative to ``folder``."""
    if folder.exists() and not folder.is_dir():
        raise DeployError(f"{folder} is a file; hpsrl init writes a campaign folder: give a folder")
    files = _folder_files()
    for file in files:
        existing = folder / file.path
        if existing.exists():
            raise DeployError(
                f"{existing} exists; hpsrl init writes a new campaign folder and overwrites "
                "nothing: give it another folder, or move that file away"
            )
    written = []
    for file in files:
        path = folder / file.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(file.text)
        except OSError as e:
            raise DeployError(f"could not write {path}: {e.strerror or e}") from e
        written.append(file.path)
    return written
