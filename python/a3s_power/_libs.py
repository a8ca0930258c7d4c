"""Make llama.cpp's shared libraries loadable before ``_core`` is imported.

``_core`` carries an RPATH to llama-cpp-python's ``llama_cpp/lib`` beside it. Where the layout
differs (another prefix, a relocated environment), loading the libraries by full path first lets
the dynamic linker reuse them by soname, so no LD_LIBRARY_PATH is ever needed.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from pathlib import Path

# Dependencies first: each library may only load once the ones it links against are in.
_ORDER = ("libggml-base", "libggml-cpu", "libggml", "libllama", "libmtmd")


def llama_lib_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        lib = Path(location) / "lib"
        if lib.is_dir():
            return lib
    return None


def preload() -> None:
    lib = llama_lib_dir()
    if lib is None:
        return
    suffix = ".dylib" if os.uname().sysname == "Darwin" else ".so"
    for stem in _ORDER:
        path = lib / f"{stem}{suffix}"
        if path.exists():
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass  # the RPATH may still find it; _core's import will say if not
