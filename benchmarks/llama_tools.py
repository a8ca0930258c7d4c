"""llama.cpp's own tools (llama-server, llama-bench) built from the very llama.cpp our core uses:
the source inside the pinned llama-cpp-python sdist (llama.cpp commit 0c1e570), fetched from
PyPI and compiled once into a cache outside the repository.

    python benchmarks/llama_tools.py          # builds if needed, prints the binaries' folder
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e570"
CACHE = Path(os.environ.get("A3S_POWER_BENCH_CACHE", Path.home() / ".cache" / "a3s-power" / "bench"))
TARGETS = ("llama-server", "llama-bench")


def _sdist() -> Path:
    target = CACHE / f"llama_cpp_python-{VERSION}.tar.gz"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    # The simple index (PEP 503) lists the sdist with its sha256.
    request = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/", headers={"Accept": "text/html"})
    with urllib.request.urlopen(request, timeout=60) as r:
        page = r.read().decode()
    match = re.search(rf'href="([^"]*llama_cpp_python-{re.escape(VERSION)}\.tar\.gz)#sha256=([0-9a-f]+)"', page)
    if not match:
        raise RuntimeError(f"no sdist of llama-cpp-python {VERSION} on PyPI's index")
    url, sha = match.groups()
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=300) as r, open(partial, "wb") as out:
        while block := r.read(1 << 20):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != sha:
        partial.unlink()
        raise RuntimeError("the llama-cpp-python sdist does not match its sha256")
    partial.rename(target)
    return target


def build() -> Path:
    out = CACHE / f"llama.cpp-{LLAMA_CPP_COMMIT}"
    bin_dir = out / "build" / "bin"
    if all((bin_dir / t).exists() for t in TARGETS):
        return bin_dir
    src = out / "src"
    if not (src / "CMakeLists.txt").exists():
        src.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(_sdist()) as tar:
            prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(src, members=[m for m in members if m.name], filter="data")
    build_dir = out / "build"
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF",
             "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF"]
    if shutil.which("ninja"):
        flags += ["-G", "Ninja"]
    subprocess.run(["cmake", "-S", str(src), "-B", str(build_dir), *flags], check=True)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", *TARGETS, "-j", str(os.cpu_count() or 2)],
                   check=True)
    return bin_dir


if __name__ == "__main__":
    print(build())
    sys.exit(0)
