"""What accelerators this machine has, for default layer offload and for metrics.

CUDA devices are read through nvidia-smi when it is present; Apple silicon always has Metal.
The llama.cpp build decides whether they can be used (``_core.supports_gpu_offload()``)."""

from __future__ import annotations

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


def _nvidia_smi() -> list[GpuInfo]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,memory.total,memory.used,utilization.gpu",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5:
            continue
        index, name, total, used, util = fields
        try:
            gpus.append(GpuInfo(f"cuda:{index} {name}", "cuda", int(float(total)) << 20, int(float(used)) << 20,
                                float(util) / 100 if util.replace(".", "", 1).isdigit() else 0.0))
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
