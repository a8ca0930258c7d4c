"""One C++ runtime per process (issue 14): a llama.cpp linked with a static libstdc++ crashed in its
tokenizer's std::regex when another extension had loaded the shared runtime first (aiohttp's
frozenlist, as the server imports it). a3s_power.core now puts the shared runtime into the global
symbol scope before llama.cpp loads. On a machine whose llama.cpp links the shared runtime (most)
these tests pass either way; on the GPU machines' build they failed before (see scripts/
cxx_runtime_probe.py, which reproduces it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[1] / "scripts" / "cxx_runtime_probe.py"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps and glibc's global scope")
def test_the_shared_cxx_runtime_is_global_once_the_core_is_imported():
    # std::locale::classic(), looked up in the global scope (dlsym on the whole process).
    code = "import ctypes, aiohttp, a3s_power.core; print(hasattr(ctypes.CDLL(None), '_ZNSt6locale7classicEv'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
@pytest.mark.parametrize("first", [[], ["aiohttp"], ["numpy", "aiohttp"], ["a3s_power.core", "aiohttp"]])
def test_a_model_loads_whatever_was_imported_first(tiny_path, first):
    r = subprocess.run([sys.executable, str(PROBE), tiny_path, *first], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert "loaded" in r.stdout
