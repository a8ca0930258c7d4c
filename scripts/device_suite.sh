#!/usr/bin/env bash
# Runs the test suite on a machine of another CPU generation that has no package registry (the
# lent GPU machines: Intel with AVX-512 and AMX), on the CPU alone, the way a user's fresh install
# would build it there: llama.cpp compiled for that CPU (GGML_NATIVE, as llama-cpp-python builds it),
# _core against it, the tests from this checkout.
#
# What it needs beside the checkout, made here by `scripts/device_suite.sh pack` (into .device/,
# which git ignores):
#   .device/llama.cpp-0c1e570-trim.tar.gz  llama.cpp's source from the llama-cpp-python 0.3.36 sdist
#   .device/llama_cpp_py.tar.gz            llama-cpp-python's Python package without its libraries
#                                          (test_core_reference compares against it)
#   .whl/*.whl                             the test dependencies for Python 3.12 (see pack)
#   .device/smollm2.part-*                 SmolLM2 in pieces small enough for one call each
# Models not carried skip their tests (A3S_POWER_TEST_MODELS_OFFLINE=1).
#
# On the device: `scripts/device_suite.sh build` (llama.cpp, _core, wheels), `... model` after each
# call that carries pieces, `... start` (the suite in the background), `... wait SECS`.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${A3S_SUITE_WORK:-/root/a3s-suite}
PY=${PYTHON:-python3}
SMOL=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$WORK/models" "$WORK/parts"

stage() { echo; echo "=== $(date +%T) $*"; }

pack() {  # here, on a machine with llama-cpp-python installed and the model cached
  mkdir -p "$REPO/.device" "$REPO/.whl"
  local sdist
  sdist=$(mktemp -d)
  $PY -m pip download --no-deps --no-binary :all: -d "$sdist" llama-cpp-python==0.3.36
  (cd "$sdist" && tar xzf llama_cpp_python-0.3.36.tar.gz llama_cpp_python-0.3.36/vendor/llama.cpp &&
   cd llama_cpp_python-0.3.36/vendor &&
   tar czf "$REPO/.device/llama.cpp-0c1e570-trim.tar.gz" --exclude=llama.cpp/tools/server \
     --exclude=llama.cpp/tools/ui --exclude=llama.cpp/tools/cli \
     llama.cpp/{CMakeLists.txt,LICENSE,licenses,cmake,ggml,src,include,common,vendor,tools,gguf-py,scripts,AUTHORS})
  rm -rf "$sdist"
  local site
  site=$($PY -c "import llama_cpp, os; print(os.path.dirname(os.path.dirname(llama_cpp.__file__)))")
  tar czf "$REPO/.device/llama_cpp_py.tar.gz" -C "$site" --exclude=llama_cpp/lib --exclude=__pycache__ llama_cpp
  $PY -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$REPO/.whl" aiohttp click pydantic jinja2 prometheus-client cryptography pytest \
    pytest-timeout pytest-benchmark requests ollama openai anthropic jsonschema pexpect gguf safetensors diskcache
  rm -f "$REPO"/.whl/numpy-*  # the machine's own numpy stays
  split -b 33m -d "$($PY -m tests.model_cache smollm2)" "$REPO/.device/smollm2.part-"
  ls -la "$REPO/.device" && du -sh "$REPO/.whl"
}

build() {
  set -e
  stage "machine"
  lscpu | grep -E "Model name|^CPU\(s\)" || true
  grep -o -w -E "avx2|avx512f|avx512_bf16|avx512_vnni|amx_tile|amx_int8|amx_bf16" /proc/cpuinfo | sort | uniq -c || true
  $PY --version
  if [ ! -f "$WORK/prefix/lib/cmake/llama/llama-config.cmake" ]; then
    stage "llama.cpp for this CPU"
    rm -rf "$WORK/src" && mkdir -p "$WORK/src.tmp"
    tar xzf "$REPO/.device/llama.cpp-0c1e570-trim.tar.gz" -C "$WORK/src.tmp" && mv "$WORK/src.tmp/llama.cpp" "$WORK/src"
    cmake -S "$WORK/src" -B "$WORK/build-llama" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
      -DGGML_CUDA=OFF -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_TOOLS_INSTALL=OFF \
      -DCMAKE_INSTALL_PREFIX="$WORK/prefix" > "$WORK/cmake.log"
    cmake --build "$WORK/build-llama" --target llama llama-common mtmd -j "$(nproc)" > "$WORK/build.log"
    cmake --install "$WORK/build-llama" > "$WORK/install.log"
  fi
  stage "Python packages"
  rm -rf "$WORK/site" && mkdir -p "$WORK/site"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$REPO"/.whl/*.whl
  tar xzf "$REPO/.device/llama_cpp_py.tar.gz" -C "$WORK/site"
  ln -sfn "$WORK/prefix/lib" "$WORK/site/llama_cpp/lib"
  stage "_core"
  cmake -S "$REPO" -B "$WORK/build-core" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CPP_PREFIX="$WORK/prefix" \
    -DPython_EXECUTABLE="$(command -v $PY)" -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" > "$WORK/core-cmake.log"
  cmake --build "$WORK/build-core" -j "$(nproc)" > "$WORK/core-build.log"
  rm -rf "$WORK/repo" && mkdir -p "$WORK/repo"
  cp -r "$REPO"/{python,tests,pyproject.toml,README.md} "$WORK/repo/"
  cp "$WORK"/build-core/_core*.so "$WORK/repo/python/a3s_power/"
  cd "$WORK/repo" && PYTHONPATH="$WORK/repo/python:$WORK/site" $PY -c \
    "from a3s_power.core import _core; import llama_cpp; print('_core', _core.llama_version()); print(_core.system_info())"
}

model() {  # joins the pieces carried so far
  cp "$REPO"/.device/smollm2.part-* "$WORK/parts/" 2>/dev/null || true
  ls -la "$WORK/parts"
  cat "$WORK"/parts/smollm2.part-* > "$WORK/models/$SMOL.tmp"
  if [ "$(sha256sum "$WORK/models/$SMOL.tmp" | cut -d' ' -f1)" = "$SMOL_SHA" ]; then
    mv "$WORK/models/$SMOL.tmp" "$WORK/models/$SMOL" && echo "SmolLM2 complete and verified"
  else
    rm -f "$WORK/models/$SMOL.tmp" && echo "SmolLM2 still incomplete"
  fi
}

run_suite() {
  cd "$WORK/repo"
  export PYTHONPATH="$WORK/repo/python:$WORK/site" A3S_POWER_TEST_MODELS="$WORK/models" \
    A3S_POWER_TEST_MODELS_OFFLINE=1 PATH="$WORK/site/bin:$PATH" HOME="$WORK/home"
  mkdir -p "$HOME"
  $PY -m pytest -q -p no:cacheprovider -rs --durations=15 "$@"
}

case "${1:-}" in
  pack) pack ;;
  build) build ;;
  model) model ;;
  run) shift; run_suite "$@" ;;
  start)
    shift
    rm -f "$WORK/rc"
    setsid nohup bash -c "bash '$REPO/scripts/device_suite.sh' run $* > '$WORK/suite.log' 2>&1; echo \$? > '$WORK/rc'" \
      < /dev/null > /dev/null 2>&1 &
    echo "suite started" ;;
  wait)
    end=$(( $(date +%s) + ${2:-540} ))
    while [ ! -f "$WORK/rc" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
    [ -n "${OUT:-}" ] && cp "$WORK/suite.log" "$OUT/" 2>/dev/null
    if [ -f "$WORK/rc" ]; then echo "finished, rc $(cat "$WORK/rc")"; else echo "still running"; fi
    tail -c 6000 "$WORK/suite.log" ;;
  *) echo "usage: $0 pack|build|model|run [pytest args]|start [pytest args]|wait SECS" >&2; exit 2 ;;
esac
