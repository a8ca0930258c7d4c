"""The release artifacts: the version written once, and scripts/wheel_smoke.sh (sdist and wheel by
`python -m build`, the wheel installed and run in a fresh venv)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from a3s_power.version import __version__

REPO = Path(__file__).resolve().parent.parent

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def test_the_version_is_written_once():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    provider = project["tool"]["scikit-build"]["metadata"]["version"]
    assert provider["input"] == "python/a3s_power/version.py"


def test_the_installed_metadata_has_that_version():
    try:
        installed = importlib.metadata.version("a3s-power")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("a3s-power is not installed (the package runs from a source tree)")
    assert installed == __version__, "the installed a3s-power is of another version: reinstall it"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a pip cache without llama-cpp-python's wheel builds it twice
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the smoke test reads /proc and ELF headers")
@pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="needs `build` (pip install build)")
@pytest.mark.skipif(bool(os.environ.get("A3S_POWER_TEST_MODELS_OFFLINE")),
                    reason="offline: building and installing the wheel needs the package index")
def test_the_wheel_installs_and_runs_in_a_fresh_venv():
    result = subprocess.run(["bash", str(REPO / "scripts/wheel_smoke.sh")], env={**os.environ, "PYTHON": sys.executable},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "wheel smoke passed" in result.stdout
