#!/usr/bin/env bash
# Builds llama.cpp (the copy inside llama-cpp-python 0.3.36, commit 0c1e570) with CUDA, builds
# _core against that install prefix, writes a Llama-3.2-1B-shaped random-weight model, quantizes it
# to q4_K_M through _core, and runs benchmarks/gpu_bench.py (ours against llama-bench,
# llama-batched-bench and the raw loop benchmarks/gpu_ref_loop.cpp). Meant for a machine with an NVIDIA GPU, nvcc, CMake, ninja and Python with
# pybind11 and numpy, and no network: the llama.cpp source comes as a trimmed tarball made by
#
#   tar xzf llama_cpp_python-0.3.36.tar.gz llama_cpp_python-0.3.36/vendor/llama.cpp
#   cd llama_cpp_python-0.3.36/vendor && tar czf REPO/.gpu/llama.cpp-0c1e570-trim.tar.gz \
#     --exclude=llama.cpp/tools/server --exclude=llama.cpp/tools/ui --exclude=llama.cpp/tools/cli \
#     llama.cpp/{CMakeLists.txt,LICENSE,licenses,cmake,ggml,src,include,common,vendor,tools,gguf-py,scripts,AUTHORS}
#
# (gguf-py, in it, is what tests/tiny_models.py imports as `gguf`).
#
# From the repository root:
#   benchmarks/gpu_device.sh run        # everything, in the foreground
#   benchmarks/gpu_device.sh start      # the same in the background (setsid), once
#   benchmarks/gpu_device.sh wait SECS  # wait for the background run up to SECS, copy logs to $OUT
#
# GPU_BENCH=multi runs benchmarks/gpu_multi_bench.py (two GPUs or more) instead of gpu_bench.py.
#
# Environment: A3S_GPU_WORK (work folder, default /root/a3s-gpu), A3S_GPU_TARBALL, CUDA_ARCH (90).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${A3S_GPU_WORK:-/root/a3s-gpu}
TARBALL=${A3S_GPU_TARBALL:-$REPO/.gpu/llama.cpp-0c1e570-trim.tar.gz}
ARCH=${CUDA_ARCH:-90}
JOBS=$(nproc)
PY=${PYTHON:-python3}
mkdir -p "$WORK"

stage() { echo; echo "=== $(date +%T) $*"; }

run_all() {
  set -e
  stage "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv || true
  { nvcc --version | tail -2; cmake --version | head -1; ninja --version; } || true
  $PY -c 'import sys, sysconfig, numpy, pybind11; print(sys.version.split()[0], sysconfig.get_paths()["include"], "numpy", numpy.__version__, "pybind11", pybind11.__version__)'

  if [ ! -f "$WORK/src/CMakeLists.txt" ]; then
    stage "extract $TARBALL"
    rm -rf "$WORK/src.tmp" && mkdir -p "$WORK/src.tmp"
    tar xzf "$TARBALL" -C "$WORK/src.tmp" && mv "$WORK/src.tmp/llama.cpp" "$WORK/src" && rm -rf "$WORK/src.tmp"
  fi

  # The model needs no GPU build: write it while llama.cpp compiles.
  local F32=$WORK/tiny-llama-1b-f32.gguf
  if [ ! -f "$F32" ]; then
    stage "writing the f32 model in the background"
    (cd "$REPO" && PYTHONPATH="$WORK/src/gguf-py:$REPO" $PY -c "
from pathlib import Path
from tests.tiny_models import write_tiny_llama
write_tiny_llama(Path('$F32.tmp'), n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192, n_ctx=4096, n_vocab=128256)
" && mv "$F32.tmp" "$F32") > "$WORK/model.log" 2>&1 &
    MODEL_PID=$!
  fi

  if [ ! -f "$WORK/prefix/lib/cmake/llama/llama-config.cmake" ]; then
    stage "configure llama.cpp (CUDA, sm_$ARCH)"
    cmake -S "$WORK/src" -B "$WORK/build-llama" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DBUILD_SHARED_LIBS=ON \
      -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
      -DLLAMA_OPENSSL=OFF -DLLAMA_TOOLS_INSTALL=OFF -DCMAKE_INSTALL_PREFIX="$WORK/prefix"
    stage "build llama.cpp: llama mtmd llama-bench llama-batched-bench, -j$JOBS"
    time cmake --build "$WORK/build-llama" --target llama mtmd llama-bench llama-batched-bench -j "$JOBS"
    stage "install to $WORK/prefix"
    cmake --install "$WORK/build-llama" > "$WORK/install.log"
    grep -c Installing "$WORK/install.log"
  fi
  ls "$WORK/prefix/lib" "$WORK/prefix/include"

  stage "build _core against $WORK/prefix"
  cmake -S "$REPO" -B "$WORK/build-core" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CPP_PREFIX="$WORK/prefix" -DPython_EXECUTABLE="$(command -v $PY)" \
    -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)"
  time cmake --build "$WORK/build-core" -j "$JOBS"
  rm -rf "$WORK/py" && mkdir -p "$WORK/py" && cp -r "$REPO/python/a3s_power" "$WORK/py/"
  cp "$WORK"/build-core/_core*.so "$WORK/py/a3s_power/"
  # The prefix's own libraries carry no RUNPATH (llama-cpp-python gives its copies $ORIGIN); _core's
  # old-style RPATH (--disable-new-dtags) also serves their dependencies, so no LD_LIBRARY_PATH.
  readelf -d "$WORK"/py/a3s_power/_core*.so | grep -E "RPATH|RUNPATH" || true
  ldd "$WORK"/py/a3s_power/_core*.so | grep -E "llama|ggml|mtmd|cuda|cublas|not found" || true
  export PYTHONPATH="$WORK/py:$REPO"
  g++ -O2 -std=c++17 "$REPO/benchmarks/gpu_ref_loop.cpp" -I"$WORK/prefix/include" -L"$WORK/prefix/lib" \
    -lllama -lggml -lggml-base -Wl,-rpath,"$WORK/prefix/lib" -Wl,--disable-new-dtags -o "$WORK/gpu_ref_loop"
  $PY -c "from a3s_power.core import _core; print('_core imported:', _core.llama_version(), 'gpu offload:', _core.supports_gpu_offload()); print(_core.system_info())"

  if [ -n "${MODEL_PID:-}" ]; then
    stage "waiting for the f32 model"
    wait "$MODEL_PID" || { cat "$WORK/model.log"; exit 1; }
  fi
  cat "$WORK/model.log" 2>/dev/null || true; ls -la "$F32"
  local Q=$WORK/tiny-llama-1b-q4_K_M.gguf
  if [ ! -f "$Q" ]; then
    stage "quantize to q4_K_M through _core.quantize"
    time $PY -c "from a3s_power.core import _core; _core.quantize('$F32', '$Q.tmp', 'q4_K_M', $JOBS)"
    mv "$Q.tmp" "$Q"
  fi
  ls -la "$Q"

  stage "bench"
  if [ "${GPU_BENCH:-single}" = multi ]; then  # several GPUs: benchmarks/gpu_multi_bench.py
    # It runs the scheduler, which needs pydantic and jinja2: wheels carried in .gpu/wheels, made by
    #   pip download pydantic jinja2 --python-version 3.12 --only-binary=:all: \
    #     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/wheels
    $PY -m pip install -q --no-index --find-links "$REPO/.gpu/wheels" --target "$WORK/pydeps" pydantic jinja2
    export PYTHONPATH="$PYTHONPATH:$WORK/pydeps"
    PYTHONUNBUFFERED=1 $PY "$REPO/benchmarks/gpu_multi_bench.py" --model "$Q" --bin "$WORK/build-llama/bin" \
      --json "$WORK/gpu_multi_bench.json" ${GPU_BENCH_ARGS:-}
  else
    PYTHONUNBUFFERED=1 $PY "$REPO/benchmarks/gpu_bench.py" --model "$Q" --bin "$WORK/build-llama/bin" \
      --raw "$WORK/gpu_ref_loop" --json "$WORK/gpu_bench.json" ${GPU_BENCH_ARGS:-}
  fi
  stage "done"
}

case "${1:-run}" in
  run)
    run_all ;;
  start)
    if [ -f "$WORK/pid" ] && kill -0 "$(cat "$WORK/pid")" 2>/dev/null; then
      echo "already running: pid $(cat "$WORK/pid")"
    else
      rm -f "$WORK/rc"
      setsid nohup bash -c "bash '$REPO/benchmarks/gpu_device.sh' run; echo \$? > '$WORK/rc'" \
        > "$WORK/log.txt" 2>&1 < /dev/null &
      echo $! > "$WORK/pid"
      echo "started: pid $(cat "$WORK/pid"), log $WORK/log.txt"
    fi ;;
  wait)
    end=$(( $(date +%s) + ${2:-540} ))
    while [ ! -f "$WORK/rc" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
    if [ -n "${OUT:-}" ]; then
      cp "$WORK/log.txt" "$OUT/" 2>/dev/null
      cp "$WORK/gpu_bench.json" "$WORK/gpu_multi_bench.json" "$OUT/" 2>/dev/null
      cp "$WORK/model.log" "$OUT/" 2>/dev/null
    fi
    if [ -f "$WORK/rc" ]; then echo "finished, rc $(cat "$WORK/rc")"; else echo "still running"; fi
    tail -c 9000 "$WORK/log.txt" ;;
  *)
    echo "usage: $0 run|start|wait [SECS]" >&2; exit 2 ;;
esac
