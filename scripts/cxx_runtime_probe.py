"""Which C++ runtimes a process holds after importing the given modules, then a model load (issue 14).

Usage: python scripts/cxx_runtime_probe.py MODEL.gguf [module ...]
"""
import importlib
import sys


def runtimes() -> list[str]:
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if "libstdc++" in line or "libc++" in line})


for name in sys.argv[2:]:
    importlib.import_module(name)
    print(f"after {name}: {runtimes()}", flush=True)
from a3s_power.core import _core  # noqa: E402

print("after _core:", runtimes(), flush=True)
model = _core.Model(sys.argv[1])
print("loaded", model.n_vocab if hasattr(model, "n_vocab") else "", flush=True)
