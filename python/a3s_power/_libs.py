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


def _share_the_cxx_runtime() -> None:
    """Puts the system's C++ runtime into the global symbol scope before llama.cpp's libraries load.

    A llama.cpp built by a compiler that links libstdc++ statically (seen with a GCC under /opt on
    the GPU machines: no library NEEDs libstdc++.so.6, each exports hundreds of std:: symbols)
    carries private runtime copies. When another extension (aiohttp's frozenlist, numpy) has loaded
    the shared libstdc++ first, privately and out of the global scope, the copies disagree on
    locale facet ids and the first std::regex in llama.cpp's tokenizer crashes (issue 14). With the
    shared runtime global first, every exported std:: symbol binds to it, as LD_PRELOAD would do.
    For an ordinary build, which links the shared runtime anyway, this changes nothing.
    """
    if os.uname().sysname == "Darwin":
        return
    try:
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass  # no shared C++ runtime on this system: nothing to share


def preload() -> None:
    _share_the_cxx_runtime()
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
