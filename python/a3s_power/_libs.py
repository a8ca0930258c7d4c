"""Make llama.cpp's shared libraries loadable before ``_core`` is imported.

``_core`` carries an RPATH to llama-cpp-python's ``llama_cpp/lib`` beside it. Where the layout
differs (another prefix, a relocated environment), loading the libraries by full path first lets
the dynamic linker reuse them by soname, so no LD_LIBRARY_PATH is ever needed.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from collections.abc import Callable
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


class _DlPhdrInfo(ctypes.Structure):
    """The head of glibc's struct dl_phdr_info: all that is read of it."""

    _fields_ = [("dlpi_addr", ctypes.c_void_p), ("dlpi_name", ctypes.c_char_p)]


def loaded_in_order() -> list[str]:
    """Paths of the shared objects in this process, in the order they were loaded (glibc's
    dl_iterate_phdr walks its list of loaded objects from the first)."""
    names: list[str] = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_DlPhdrInfo), ctypes.c_size_t, ctypes.c_void_p)

    def visit(info, _size, _data) -> int:
        name = info.contents.dlpi_name
        names.append(name.decode(errors="replace") if name else "")
        return 0

    ctypes.CDLL(None).dl_iterate_phdr(callback_type(visit), None)
    return names


# std::locale::classic(), exported by libstdc++ and by every private copy of it.
_CXX_PROBE_SYMBOL = "_ZNSt6locale7classicEv"


def _has_private_cxx_runtime(path: str) -> bool:
    """Whether a loaded library answers for the C++ runtime with its own copy rather than the
    shared libstdc++: looked up through the library, the runtime's symbol lands elsewhere."""
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        shared = ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        own = ctypes.addressof(ctypes.c_char.in_dll(lib, _CXX_PROBE_SYMBOL))
        return own != ctypes.addressof(ctypes.c_char.in_dll(shared, _CXX_PROBE_SYMBOL))
    except (OSError, ValueError):
        return False  # not loaded, or no C++ runtime to look up: no copy of its own


def runtime_mix(order: list[str], private: Callable[[str], bool]) -> str | None:
    """The llama.cpp library that issue 14's crash would hit, if any: one with a private C++ runtime
    copy that loaded after the shared libstdc++ (which another extension may have loaded out of the
    global scope). ``order`` is the load order, ``private`` tells a private runtime copy."""
    seen_shared = False
    for path in order:
        name = os.path.basename(path)
        if name.startswith("libstdc++.so"):
            seen_shared = True
        elif seen_shared and name.startswith(("libggml", "libllama", "libmtmd")) and private(path):
            return path
    return None


class CxxRuntimeMixError(ImportError):
    pass


def _refuse_a_known_crash() -> None:
    """llama.cpp already loaded by someone else (llama_cpp imported first) can no longer be fixed by
    _share_the_cxx_runtime: refuse with the remedy rather than crash at the first model load."""
    if os.uname().sysname != "Linux":
        return
    try:
        order = loaded_in_order()
    except (AttributeError, OSError):
        return  # not glibc
    culprit = runtime_mix(order, _has_private_cxx_runtime)
    if culprit:
        raise CxxRuntimeMixError(
            f"{culprit} carries its own copy of the C++ runtime (a llama.cpp built with a statically linked "
            "libstdc++) and was loaded after the shared libstdc++.so.6, out of the global scope: its first "
            "model load would crash. Import a3s_power before llama_cpp, or start Python with "
            "LD_PRELOAD=libstdc++.so.6, or rebuild llama-cpp-python with a compiler that links the shared "
            "runtime.")


def preload() -> None:
    _refuse_a_known_crash()
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
