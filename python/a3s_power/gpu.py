"""What accelerators this machine has, for default layer offload and for metrics.

CUDA devices are read through nvidia-smi when it is present; Apple silicon always has Metal.
The llama.cpp build decides whether they can be used (``_core.supports_gpu_offload()``).

A CUDA device is numbered as CUDA numbers it in this process (llama.cpp's ``main_gpu`` and
``tensor_split`` count the same way): CUDA_VISIBLE_DEVICES hides and reorders cards, and the others
keep nvidia-smi's PCI bus order, which CUDA follows on identical cards or with
CUDA_DEVICE_ORDER=PCI_BUS_ID."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache


@dataclass
class GpuInfo:
    name: str
    kind: str  # cuda | metal
    memory_total: int = 0
    memory_used: int = 0
    utilization: float = 0.0
    index: int = 0  # the device number llama.cpp uses for it


def _visible(rows: list[list[str]]) -> list[list[str]]:
    """The nvidia-smi rows (index, uuid, ...) that CUDA_VISIBLE_DEVICES lets this process see, in
    its order. Entries are indices or UUID prefixes; as in CUDA, the first that names no card ends
    the list."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return rows
    seen: list[list[str]] = []
    for entry in (e.strip() for e in spec.split(",")):
        named = (r for r in rows if entry and (entry == r[0] or entry.startswith("GPU-") and r[1].startswith(entry)))
        row = next(named, None)
        if row is None or row in seen:
            break
        seen.append(row)
    return seen


def _nvidia_smi() -> list[GpuInfo]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[f.strip() for f in line.split(",")] for line in out.strip().splitlines()]
    gpus = []
    for ordinal, (_, _, name, total, used, util) in enumerate(_visible([r for r in rows if len(r) == 6])):
        try:
            gpus.append(GpuInfo(f"cuda:{ordinal} {name}", "cuda", int(float(total)) << 20, int(float(used)) << 20,
                                float(util) / 100 if util.replace(".", "", 1).isdigit() else 0.0, ordinal))
        except ValueError:
            continue
    return gpus


def gpu_stats() -> list[GpuInfo]:
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return [GpuInfo("metal:0", "metal")]
    return _nvidia_smi()


@lru_cache(maxsize=1)
def detect() -> list[GpuInfo]:
    return gpu_stats()
