"""The one build step pyproject.toml cannot declare: the wheel carries hpsrl's Snakemake workflow.

`pip install hpsrl` must be able to run campaigns from any folder (`hpsrl init`:
hpsrl/deploy.py), so the wheel holds the workflow as package data under hpsrl/workflow/. The
files stay where a clone runs them (Snakefile, workflow/, config/ and profiles/ at the repository
root, where `snakemake` needs no install step) and are copied into the build in the same layout, so
that the paths the Snakefile and rules give relative to themselves (include:, report:, conda:,
captions) hold in both places. Package data cannot do this: it must lie inside the package's folder.
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

# What a campaign needs, relative to the repository root and to hpsrl/workflow/ in the wheel:
# the workflow, the default and example configs, and the profiles. MANIFEST.in puts the same
# files into the sdist, which `python -m build` makes the wheel from.
WORKFLOW_FILES = (
    "Snakefile",
    "workflow/rules/*.smk",
    "workflow/report/*.rst",
    "workflow/envs/*.yaml",
    "config/config.yaml",
    "config/examples/*.yaml",
    "profiles/*/config.yaml",
)

# The conda environment of the rules (snakemake --sdm conda) installs hpsrl from the clone it lies
# in; the wheel's copy has no clone around it and installs this very release instead.
CLONE_REQUIREMENT = "- -e ../..[box2d]"
RELEASE_REQUIREMENT = "- hpsrl[box2d]=={version}"


class BuildPyWithWorkflow(build_py):
    """build_py, then the workflow files copied into the build's hpsrl/workflow/."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            # An editable install runs the clone's own files (hpsrl.deploy.workflow_root).
            return
        target = Path(self.build_lib) / "hpsrl" / "workflow"
        # A rule file deleted since the last in-tree build must not ship from build/ again.
        shutil.rmtree(target, ignore_errors=True)
        for pattern in WORKFLOW_FILES:
            sources = sorted(ROOT.glob(pattern))
            if not sources:
                raise SystemExit(f"setup.py: no workflow file matches {pattern} under {ROOT}")
            for source in sources:
                relative = source.relative_to(ROOT)
                text = source.read_text()
                if relative.parts[:2] == ("workflow", "envs"):
                    text = _release_environment(text, relative, self.distribution.get_version())
                dest = target / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(text)


def _release_environment(text: str, relative: Path, version: str) -> str:
    if CLONE_REQUIREMENT not in text:
        raise SystemExit(
            f"setup.py: {relative} no longer installs hpsrl with '{CLONE_REQUIREMENT}'; update "
            "CLONE_REQUIREMENT in setup.py to what it says now"
        )
    return text.replace(CLONE_REQUIREMENT, RELEASE_REQUIREMENT.format(version=version))


setup(cmdclass={"build_py": BuildPyWithWorkflow})
