"""python/a3s_power/_core.pyi against the module itself, by mypy's stubtest: every name, class and
field of the bindings is in the stub and nothing more. What stubtest cannot see (pybind11's
metaclass, classes without a constructor) is listed in stubtest_allowlist.txt with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import a3s_power

ROOT = Path(__file__).resolve().parents[1]


def test_the_stub_matches_the_module(tmp_path):
    pytest.importorskip("mypy.stubtest")
    env = {**os.environ, "PYTHONPATH": str(Path(a3s_power.__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "a3s_power._core", "--allowlist", str(ROOT / "stubtest_allowlist.txt"),
         "--mypy-config-file", os.devnull],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
