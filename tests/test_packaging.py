"""hpsrl as a package: what every `pip install` of it builds, without warnings."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO


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
