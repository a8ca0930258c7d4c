#!/usr/bin/env bash
# The release artifacts, checked as a user gets them. Builds the sdist and the wheel with
# `python -m build` (the sdist first, the wheel from the sdist, in build's isolated environment, so
# nothing of this checkout's build/ is used), checks what each holds, installs the wheel into a
# fresh venv, where llama-cpp-python comes from its own package, and runs it there: `_core` imports
# against that package's libraries by its RPATH alone, `a3s-power --version` agrees with the
# installed metadata, and a tiny random-weight model answers in process (`run FILE`) and through
# `serve`.
#
# usage: scripts/wheel_smoke.sh [DIST]
#   DIST     a folder holding one a3s_power sdist and one wheel to check instead of building them
# env: PYTHON (default python3) builds and makes the venv; KEEP=1 keeps the work folder.
# Needs `build` (pip install build) and a package index for the build's and the wheel's
# requirements; llama-cpp-python comes from pip's wheel cache once any install has built it.
# tests/test_wheel.py runs this.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/a3s-power-wheel.XXXXXX")
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  if [ "${KEEP:-}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
stage() { echo "== $(date +%T) $*"; }
fail() { echo "wheel_smoke: $*" >&2; exit 1; }
started=$SECONDS

if [ $# -ge 1 ]; then
  DIST=$(cd "$1" && pwd)
else
  $PY -c "import build" 2>/dev/null || fail "the 'build' package is missing: $PY -m pip install build"
  stage "python -m build: the sdist, then the wheel from it"
  t=$SECONDS
  if ! nice -n 10 $PY -m build --outdir "$WORK/dist" "$REPO" > "$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"
    fail "python -m build failed (the log's end above)"
  fi
  echo "built in $((SECONDS - t)) s"
  DIST=$WORK/dist
fi
shopt -s nullglob
sdists=("$DIST"/a3s_power-*.tar.gz)
wheels=("$DIST"/a3s_power-*.whl)
[ ${#sdists[@]} = 1 ] && [ ${#wheels[@]} = 1 ] || fail "want one sdist and one wheel in $DIST, found: $(ls "$DIST")"
SDIST=${sdists[0]}
WHEEL=${wheels[0]}
ls -l "$SDIST" "$WHEEL"

stage "what the sdist and the wheel hold"
$PY - "$REPO" "$SDIST" "$WHEEL" <<'EOF'
import os, re, shutil, subprocess, sys, tarfile, tempfile, zipfile
from pathlib import Path

repo, sdist, wheel = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
problems = []
LIMIT = 5 << 20  # both are about 0.5 MB; anything near this is something that does not belong

version = re.search(r'^__version__ = "([^"]+)"', (repo / "python/a3s_power/version.py").read_text(), re.M)[1]
pin = re.search(r'"(llama-cpp-python==[^"]+)"', (repo / "pyproject.toml").read_text())[1]
if not wheel.name.startswith(f"a3s_power-{version}-") or sdist.name != f"a3s_power-{version}.tar.gz":
    problems.append(f"{sdist.name}, {wheel.name}: not version {version} (python/a3s_power/version.py)")

# The sdist: what a build needs (the C++ sources CMakeLists.txt names, the package, the stub), no
# build trees, carried device files, caches, compiled objects or models.
with tarfile.open(sdist) as tar:
    names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
for need in ["pyproject.toml", "CMakeLists.txt", "README.md", "PKG-INFO", "python/a3s_power/__init__.py",
             "python/a3s_power/_core.pyi", "python/a3s_power/registry/known_models.json"]:
    if need not in names:
        problems.append(f"sdist lacks {need}")
for source in re.findall(r"\bcpp/\S+\.cpp\b", (repo / "CMakeLists.txt").read_text()):
    if source not in names:
        problems.append(f"sdist lacks {source}, which CMakeLists.txt compiles")
junk = re.compile(r"^(build|dist|\.device|\.whl|\.gl|\.git|\.hypothesis|\.pytest_cache|benchmarks/results)/"
                  r"|(^|/)__pycache__/|\.(so|o|pyc|gguf|whl)$")
problems += [f"sdist holds {n}" for n in names if junk.search(n)]
if sdist.stat().st_size > LIMIT:
    problems.append(f"sdist is {sdist.stat().st_size} bytes")

# The wheel: the package and its compiled core, and no copy of llama.cpp's libraries, which
# llama-cpp-python's own package brings (one copy in the environment, one set of symbols).
with zipfile.ZipFile(wheel) as z:
    wnames = z.namelist()
    metadata = z.read(f"a3s_power-{version}.dist-info/METADATA").decode()
cores = [n for n in wnames if re.fullmatch(r"a3s_power/_core\.[^/]+\.(so|pyd|dylib)", n)]
if len(cores) != 1:
    problems.append(f"wheel has {len(cores)} compiled cores: {cores}")
for need in ["a3s_power/__init__.py", "a3s_power/_core.pyi", "a3s_power/py.typed",
             "a3s_power/registry/known_models.json", "a3s_power/server/webui/index.html",
             "a3s_power/server/webui/app.js"]:
    if need not in wnames:
        problems.append(f"wheel lacks {need}")
missing = sorted(n[len("python/"):] for n in names
                 if n.startswith("python/a3s_power/") and n.endswith(".py") and n[len("python/"):] not in wnames)
if missing:
    problems.append(f"wheel lacks {missing}")
problems += [f"wheel holds {n}" for n in wnames
             if re.search(r"(^|/)lib(llama|ggml|mtmd)[^/]*$|^llama_cpp/|\.libs/", n)
             or (n.endswith((".so", ".dylib", ".dll")) or ".so." in n) and n not in cores]
if f"Requires-Dist: {pin}" not in metadata:
    problems.append(f"wheel's METADATA does not require {pin}")
if f"\nVersion: {version}\n" not in metadata:
    problems.append(f"wheel's METADATA is not version {version}")
if wheel.stat().st_size > LIMIT:
    problems.append(f"wheel is {wheel.stat().st_size} bytes")

# Where _core looks for llama.cpp's libraries: beside it in llama-cpp-python's package first, and
# never in the build's temporary environment, gone once the wheel is made.
if cores and cores[0].endswith(".so") and shutil.which("readelf"):
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as z:
        core = z.extract(cores[0], tmp)
        dynamic = subprocess.run(["readelf", "-d", core], capture_output=True, text=True, check=True).stdout
    rpath = re.search(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]", dynamic)
    paths = rpath[1].split(":") if rpath else []
    print("_core RPATH:", ":".join(paths))
    if not paths or paths[0] != "$ORIGIN/../llama_cpp/lib":
        problems.append(f"_core's RPATH does not start at $ORIGIN/../llama_cpp/lib: {paths}")
    problems += [f"_core's RPATH points into a build environment: {p}" for p in paths if "build-env" in p]

print(f"sdist: {len(names)} entries, {sdist.stat().st_size} bytes; wheel: {len(wnames)} entries, "
      f"{wheel.stat().st_size} bytes")
if problems:
    sys.exit("\n".join(problems))
EOF

stage "a fresh venv, the wheel and its requirements from the index"
t=$SECONDS
$PY -m venv "$WORK/venv"
V=$WORK/venv/bin
"$V/python" -m pip install -q --disable-pip-version-check "$WHEEL" 2>&1 | grep -v "is ignored: it is neither" || true
"$V/python" -m pip show a3s-power > /dev/null || fail "a3s-power did not install"
echo "installed in $((SECONDS - t)) s"

# From here on, nothing of the checkout or the calling shell is seen: another folder, no PYTHONPATH,
# a home and a server address of its own.
mkdir -p "$WORK/home" "$WORK/run"
cd "$WORK/run"
PORT=$("$V/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
clean=(env -i PATH="$V:/usr/bin:/bin" HOME="$WORK/home" A3S_POWER_HOME="$WORK/home/power" LANG=C.UTF-8
       ${LD_LIBRARY_PATH:+LD_LIBRARY_PATH="$LD_LIBRARY_PATH"} OLLAMA_HOST="127.0.0.1:$PORT"
       NO_PROXY=127.0.0.1,localhost TMPDIR="$WORK")

stage "_core imports by its RPATH, against llama-cpp-python's libraries, no other copy in the venv"
"${clean[@]}" "$V/python" - <<'EOF'
import importlib.metadata, importlib.util, re, sys
from pathlib import Path

import a3s_power._core as core  # directly: no preload by a3s_power.core, the RPATH alone

venv = Path(sys.prefix).resolve()
package = Path(importlib.util.find_spec("a3s_power").origin).resolve()
assert package.is_relative_to(venv), f"a3s_power imported from {package}, not the venv"
lib = (Path(importlib.util.find_spec("llama_cpp").origin).parent / "lib").resolve()
mapped = {Path(line.split()[-1]).resolve() for line in open("/proc/self/maps")
          if re.search(r"/lib(llama|ggml|mtmd)[^/]*\.so", line)}
assert mapped and all(p.parent == lib for p in mapped), f"llama.cpp's libraries from {mapped}, not {lib}"
# llama-cpp-python installs its libraries twice itself (llama_cpp/lib and site-packages/lib); no
# other distribution, a3s-power least of all, may bring any.
theirs = {Path(f.locate()).resolve() for f in importlib.metadata.files("llama-cpp-python")}
copies = [p for p in venv.rglob("lib*.so*") if re.match(r"lib(llama|ggml|mtmd)", p.name) and p.resolve() not in theirs]
assert not copies, f"llama.cpp's libraries in the venv from outside llama-cpp-python: {copies}"
print(f"llama.cpp {core.llama_version()} from {lib}: {', '.join(sorted(p.name for p in mapped))}")
print(f"a3s-power {importlib.metadata.version('a3s-power')} from {package.parent}")
EOF

stage "one version: a3s-power --version, a3s_power.__version__, the installed metadata"
said=$("${clean[@]}" a3s-power --version)
echo "$said"
"${clean[@]}" "$V/python" -c "
import importlib.metadata, sys, a3s_power
meta = importlib.metadata.version('a3s-power')
assert a3s_power.__version__ == meta, (a3s_power.__version__, meta)
assert sys.argv[1] == f'a3s-power version is {meta}', sys.argv[1]
" "$said"

stage "a tiny model answers: in process, then through serve"
(cd "$REPO/tests" && "${clean[@]}" "$V/python" -c "
import sys; from pathlib import Path; from tiny_models import write_tiny_llama
write_tiny_llama(Path(sys.argv[1]))" "$WORK/run/tiny.gguf")
"${clean[@]}" a3s-power run "$WORK/run/tiny.gguf" --prompt "hi" > run.out || fail "a3s-power run failed"
[ -n "$(tail -c 1 run.out)" ] && fail "a3s-power run's answer does not end its line"
echo "run: $(wc -c < run.out) bytes of answer"

"${clean[@]}" a3s-power serve > serve.log 2>&1 &
SERVER=$!
printf 'FROM ./tiny.gguf\nPARAMETER temperature 0\n' > Modelfile
"${clean[@]}" "$V/python" - "$PORT" <<'EOF'
import json, sys, time, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(600):
    try:
        print("serve:", json.load(urllib.request.urlopen(base + "/api/version", timeout=5)))
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the server did not answer within a minute:\n" + open("serve.log").read())
EOF
"${clean[@]}" a3s-power create tiny -f Modelfile > create.log 2>&1 || { cat create.log; fail "a3s-power create failed"; }
"${clean[@]}" "$V/python" - "$PORT" <<'EOF'
import json, sys, urllib.request

body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 8, "seed": 1}}
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/generate", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(request, timeout=120))
assert answer["done"] and 1 <= answer["eval_count"] <= 8, answer
print(f"generate: {answer['eval_count']} tokens, done_reason {answer['done_reason']}")
EOF
kill "$SERVER"
wait "$SERVER" || true
SERVER=

stage "wheel smoke passed in $((SECONDS - started)) s"
