"""Import point for the C++ core: ``from a3s_power.core import _core``."""

import os

from . import _libs

# GPUs are numbered as NVML lists them (gpu.py, placement.py); CUDA's own default order,
# fastest first, differs on machines with mixed cards.
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

_libs.preload()

from . import _core  # noqa: E402

__all__ = ["_core"]
