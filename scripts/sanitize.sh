#!/usr/bin/env bash
# The C++ core under AddressSanitizer and UndefinedBehaviorSanitizer: builds _core with both into
# build/asan (llama.cpp itself stays as installed), then runs the tests that drive the engine,
# sampling, images, the notifier and the scheduler against it. Any report aborts the test run.
#   scripts/sanitize.sh [pytest args...]
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$FLAGS" \
  -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" -DPython_EXECUTABLE="$(command -v python)" > /dev/null
cmake --build build/asan
# The package as it is in the tree, with the sanitized _core in place of the normal one.
PKG=$(mktemp -d)
trap 'rm -rf "$PKG"' EXIT
cp -r python/a3s_power "$PKG/"
rm -f "$PKG"/a3s_power/_core*.so
cp build/asan/_core*.so "$PKG/a3s_power/"
# Python itself is not instrumented: the runtimes are preloaded, and leaks (CPython's own, at
# exit) are not reported.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
TESTS=("$@")
if [ ${#TESTS[@]} -eq 0 ]; then
  TESTS=(tests/test_core_generation.py tests/test_core_sampling.py tests/test_core_model.py tests/test_core_lora.py
         tests/test_notifier.py tests/test_tiny_projector.py tests/test_runner.py tests/test_vision.py
         tests/test_dialect.py tests/test_dialect_qwen35.py tests/test_scheduler.py)
fi
PYTHONPATH="$PKG" python -m pytest -q -x -p no:cacheprovider "${TESTS[@]}"
