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


def test_runtime_mix_is_a_private_copy_loaded_after_the_shared_runtime():
    from a3s_power._libs import runtime_mix

    private = {"/x/libggml-base.so", "/x/libllama.so"}.__contains__
    assert runtime_mix(["", "/usr/lib/libstdc++.so.6", "/x/libggml-base.so"], private) == "/x/libggml-base.so"
    assert runtime_mix(["", "/x/libggml-base.so", "/x/libllama.so", "/usr/lib/libstdc++.so.6"], private) is None
    assert runtime_mix(["", "/usr/lib/libstdc++.so.6", "/y/libggml-base.so"], private) is None  # shared runtime
    assert runtime_mix(["", "/x/libllama.so"], private) is None  # no shared runtime at all


@pytest.fixture(scope="module")
def static_runtime_lib(tmp_path_factory):
    """A library named like llama.cpp's, linked with a static libstdc++ as the GPU machines' GCC does."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("no g++")
    out = tmp_path_factory.mktemp("static") / "libggml-static.so"
    src = out.with_suffix(".cpp")
    src.write_text('#include <regex>\nextern "C" int probe() { return std::regex_match("abc", std::regex("[a-z]+")); }\n')
    r = subprocess.run(["g++", "-shared", "-fPIC", "-static-libstdc++", "-o", str(out), str(src)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"no static libstdc++ to link: {r.stderr[-300:]}")
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's dl_iterate_phdr")
def test_a_known_crashing_mix_is_refused_with_the_remedy(static_runtime_lib):
    # The shared runtime loaded privately first, as an extension (aiohttp's frozenlist) loads it.
    code = ("import ctypes, sys; ctypes.CDLL('libstdc++.so.6'); ctypes.CDLL(sys.argv[1]); import a3s_power._libs as l; "
            "print(l._has_private_cxx_runtime(sys.argv[1])); import a3s_power.core")
    r = subprocess.run([sys.executable, "-c", code, str(static_runtime_lib)], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == "True"
    assert r.returncode != 0 and "CxxRuntimeMixError" in r.stderr and "Import a3s_power before llama_cpp" in r.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's dl_iterate_phdr")
def test_a_private_runtime_loaded_first_is_left_alone(static_runtime_lib):
    code = "import ctypes, sys; ctypes.CDLL(sys.argv[1]); ctypes.CDLL('libstdc++.so.6'); import a3s_power.core; print('ok')"
    r = subprocess.run([sys.executable, "-c", code, str(static_runtime_lib)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
