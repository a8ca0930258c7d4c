#!/usr/bin/env bash
# Issue 14 on a lent NVIDIA machine with no package registry: the server on the GPU, its GPU tests,
# the HTTP benchmark against llama-server (benchmarks/gpu_http_bench.py) on a Llama-3.2-1B and a
# Llama-3.1-8B shape, and README's CUDA install followed as written.
#
# Carried beside the checkout (made here by `scripts/device_gpu.sh pack`, ignored by git):
#   .device/lcp-src.tar.gz  llama-cpp-python 0.3.36's source, trimmed to what builds (no models,
#                           docs, tests, or the web UI's sources)
#   .whl/*.whl              Python 3.12 wheels: the package's and the tests' dependencies, and
#                           scikit-build-core for pip's isolated build of llama-cpp-python
#
# There, `scripts/device_gpu.sh start` runs every stage below in the background (setsid) and
# `scripts/device_gpu.sh wait SECS` waits for it, copying logs and results to $OUT. Stages:
#   1. llama.cpp with CUDA, standalone, for llama-server, llama-bench and llama-batched-bench, and
#      _core against it; random-weight models written meanwhile and quantized to q4_K_M;
#   2. the GPU tests against that build;
#   3. the HTTP benchmark, 1B shape then 8B shape;
#   4. README's CUDA path: llama-cpp-python rebuilt by pip with CMAKE_ARGS, the package installed
#      over it, `a3s-power run` with a model, and the GPU tests again against the installed package.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${A3S_GPU_WORK:-/root/a3s-gpu}
PY=${PYTHON:-python3}
JOBS=$(nproc)
LCP=llama_cpp_python-0.3.36
SRC=$WORK/src/$LCP/vendor/llama.cpp
mkdir -p "$WORK"

stage() { echo; echo "=== $(date +%T) $*"; }

pack() {  # here: the trimmed source and the wheels
  set -e
  mkdir -p "$REPO/.device" "$REPO/.whl"
  local tmp
  tmp=$(mktemp -d)
  $PY -m pip download -q --no-deps --no-binary :all: -d "$tmp" llama-cpp-python==0.3.36
  tar xzf "$tmp/$LCP.tar.gz" -C "$tmp"
  local v=$tmp/$LCP/vendor/llama.cpp
  rm -rf "$tmp/$LCP"/{.git,docs,tests,examples,docker} "$v"/{models,docs,tests,benches,examples,media,.git}
  # The web UI's sources need npm; its CMake files alone build llama-server without it.
  find "$v/tools/ui" -mindepth 1 -maxdepth 1 ! -name CMakeLists.txt ! -name sources.cmake ! -name 'ui.*.in' \
    -exec rm -rf {} +
  tar czf "$REPO/.device/lcp-src.tar.gz" -C "$tmp" "$LCP"
  rm -rf "$tmp"
  $PY -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$REPO/.whl" aiohttp click pydantic jinja2 prometheus-client cryptography nvidia-ml-py \
    pytest pytest-timeout requests ollama openai anthropic jsonschema pexpect gguf diskcache \
    scikit-build-core pathspec packaging
  rm -f "$REPO"/.whl/numpy-*  # the machine's own numpy stays
  ls -la "$REPO/.device/lcp-src.tar.gz" && du -sh "$REPO/.whl"
}

write_models() {  # random weights, f16, then q4_K_M once _core exists
  cd "$REPO"
  PYTHONPATH="$REPO:$WORK/site" $PY -c "
from pathlib import Path
from tests.tiny_models import write_tiny_llama
shapes = {'1b': dict(n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192),
          '8b': dict(n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=14336)}
for name, shape in shapes.items():
    out = Path(f'$WORK/llama-{name}-f16.gguf')
    if not out.exists():
        write_tiny_llama(out.with_suffix('.tmp'), n_ctx=131072, n_vocab=128256, f16=True, **shape)
        out.with_suffix('.tmp').rename(out)
    print('wrote', out, out.stat().st_size, flush=True)
"
}

build_standalone() {
  set -e
  stage "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  lscpu | grep -E "Model name|^CPU\(s\)" || true
  $PY --version; echo "CXX=${CXX:-unset}"
  if [ ! -d "$WORK/src/$LCP" ]; then
    mkdir -p "$WORK/src" && tar xzf "$REPO/.device/lcp-src.tar.gz" -C "$WORK/src"
  fi
  stage "wheels into $WORK/site"
  rm -rf "$WORK/site" && mkdir -p "$WORK/site"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$REPO"/.whl/*.whl
  stage "random-weight models, in the background"
  (write_models > "$WORK/models.log" 2>&1; echo $? > "$WORK/models.rc") &
  if [ ! -f "$WORK/prefix/lib/cmake/llama/llama-config.cmake" ]; then
    stage "llama.cpp with CUDA (standalone, with llama-server, llama-bench, llama-batched-bench)"
    cmake -S "$SRC" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_TOOLS_INSTALL=OFF \
      -DCMAKE_INSTALL_PREFIX="$WORK/prefix" > "$WORK/cmake.log"
    time cmake --build "$WORK/build" --target llama llama-common mtmd llama-server llama-bench llama-batched-bench \
      -j "$JOBS" > "$WORK/build.log"
    cmake --install "$WORK/build" > "$WORK/install.log"
  fi
  stage "_core against $WORK/prefix"
  cmake -S "$REPO" -B "$WORK/build-core" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CPP_PREFIX="$WORK/prefix" \
    -DPython_EXECUTABLE="$(command -v $PY)" -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" > "$WORK/core-cmake.log"
  cmake --build "$WORK/build-core" -j "$JOBS" > "$WORK/core-build.log"
  rm -rf "$WORK/py" && mkdir -p "$WORK/py"
  cp -r "$REPO/python/a3s_power" "$WORK/py/"
  cp "$WORK"/build-core/_core*.so "$WORK/py/a3s_power/"
  export PYTHONPATH="$WORK/py:$WORK/site"
  $PY -c "from a3s_power.core import _core; print('_core', _core.llama_version(), 'offload', _core.supports_gpu_offload())"
  stage "waiting for the models"
  wait
  cat "$WORK/models.log"; [ "$(cat "$WORK/models.rc")" = 0 ]
  for name in ${BENCH_MODELS:-1b 8b}; do
    if [ ! -f "$WORK/llama-$name-q4_K_M.gguf" ]; then
      $PY -c "from a3s_power.core import _core; _core.quantize('$WORK/llama-$name-f16.gguf', '$WORK/q.tmp', 'q4_K_M', $JOBS)"
      mv "$WORK/q.tmp" "$WORK/llama-$name-q4_K_M.gguf" && rm -f "$WORK/llama-$name-f16.gguf"
    fi
  done
  ls -la "$WORK"/*.gguf
}

gpu_tests() {  # $1: the a3s_power on PYTHONPATH (standalone build) or "installed"
  stage "GPU tests ($1)"
  rm -rf "$WORK/tests-run" && mkdir -p "$WORK/tests-run" && cp -r "$REPO/tests" "$REPO/scripts" "$REPO/pyproject.toml" "$WORK/tests-run/"
  cd "$WORK/tests-run"
  if [ "$1" = installed ]; then export PYTHONPATH="$WORK/site"; else export PYTHONPATH="$WORK/py:$WORK/site"; fi
  PATH="$WORK/site/bin:$PATH" HOME="$WORK/home" A3S_POWER_TEST_MODELS_OFFLINE=1 A3S_POWER_TEST_MODELS="$WORK/none" \
    $PY -m pytest -q -p no:cacheprovider -rs tests/test_gpu_server.py tests/test_cxx_runtime.py \
    2>&1 | tail -25
  cd "$REPO"
}

bench() {
  export PYTHONPATH="$WORK/py:$WORK/site"
  for name in ${BENCH_MODELS:-1b 8b}; do
    stage "HTTP benchmark, $name"
    PYTHONUNBUFFERED=1 $PY "$REPO/benchmarks/gpu_http_bench.py" --model "$WORK/llama-$name-q4_K_M.gguf" \
      --bin "$WORK/build/bin" --json "$WORK/bench-$name.json" ${BENCH_ARGS:-} 2>&1 | tee "$WORK/bench-$name.md"
  done
}

readme_path() {  # README's GPU section, offline: the same commands with a local source and wheels
  set -e
  stage "README: CMAKE_ARGS=-DGGML_CUDA=on pip install llama-cpp-python (from the carried source)"
  cd "$REPO"
  export PYTHONPATH="$WORK/site"
  # Offline, pip's isolated build asks for a cmake wheel (scikit-build-core's backend requirement)
  # although the machine has CMake 4.4; building in the machine's own environment takes that one.
  time CMAKE_ARGS="-DGGML_CUDA=on" $PY -m pip install -q --force-reinstall --no-deps --no-cache-dir --no-index \
    ${PIP_BUILD_ARGS---no-build-isolation} \
    --find-links "$REPO/.whl" "$WORK/src/$LCP"
  stage "README: pip install --no-build-isolation --force-reinstall --no-deps ."
  time $PY -m pip install -q --no-build-isolation --force-reinstall --no-deps .
  cd /tmp
  $PY -c "from a3s_power.core import _core; import a3s_power; print(a3s_power.__file__, 'offload', _core.supports_gpu_offload())"
  set +e
  stage "a3s-power run with a model on the GPU"
  export A3S_POWER_HOME="$WORK/readme-home" OLLAMA_HOST=127.0.0.1:11500
  mkdir -p "$A3S_POWER_HOME"
  setsid $PY -m a3s_power serve > "$WORK/readme-serve.log" 2>&1 < /dev/null &
  local serve=$!
  $PY -c "
import time, urllib.request
for _ in range(150):
    try:
        urllib.request.urlopen('http://$OLLAMA_HOST/api/version', timeout=1); break
    except OSError:
        time.sleep(0.2)"
  # Random weights rarely say end-of-text: cap the answer.
  printf 'FROM %s\nTEMPLATE {{ .Prompt }}\nPARAMETER num_predict 64\n' "$WORK/llama-1b-q4_K_M.gguf" > "$WORK/Modelfile"
  $PY -m a3s_power create bench1b -f "$WORK/Modelfile"
  $PY -m a3s_power run bench1b --verbose --prompt "Once upon a time" 2>&1 | tail -8
  $PY -m a3s_power ps
  $PY -c "
import urllib.request
print(''.join(l for l in urllib.request.urlopen('http://$OLLAMA_HOST/metrics').read().decode().splitlines(True)
              if l.startswith('power_gpu')))"
  kill "$serve"; wait "$serve"
  echo "serve exited $?"; grep -E "Traceback|Segmentation" "$WORK/readme-serve.log" || true
  unset A3S_POWER_HOME OLLAMA_HOST
  gpu_tests installed
}

pipeline() {
  build_standalone || { echo "STAGE FAILED: build"; return 1; }
  set +e  # a failing test or benchmark must not stop the stages after it
  gpu_tests standalone
  bench
  [ -n "${SKIP_README:-}" ] || readme_path || echo "STAGE FAILED: readme path"
  stage "all done"
}

case "${1:-}" in
  pack) pack ;;
  pipeline) pipeline ;;
  start)
    rm -f "$WORK/rc"
    setsid nohup bash -c "bash '$REPO/scripts/device_gpu.sh' pipeline > '$WORK/pipeline.log' 2>&1; echo \$? > '$WORK/rc'" \
      < /dev/null > /dev/null 2>&1 &
    echo "pipeline started" ;;
  wait)
    end=$(( $(date +%s) + ${2:-540} ))
    while [ ! -f "$WORK/rc" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
    if [ -n "${OUT:-}" ]; then
      cp "$WORK/pipeline.log" "$OUT/" 2>/dev/null
      cp "$WORK"/bench-*.json "$WORK"/bench-*.md "$OUT/" 2>/dev/null
      tail -c 200000 "$WORK/build.log" > "$OUT/build-tail.log" 2>/dev/null
    fi
    if [ -f "$WORK/rc" ]; then echo "finished, rc $(cat "$WORK/rc")"; else echo "still running"; fi
    tail -c 9000 "$WORK/pipeline.log" ;;
  *) echo "usage: $0 pack|start|wait SECS|pipeline" >&2; exit 2 ;;
esac
