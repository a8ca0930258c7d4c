"""What accelerators this machine has, for default layer offload, /api/ps and /metrics.

NVIDIA cards are read through NVML (NVIDIA's own library, by its maintained Python binding
``nvidia-ml-py``), which answers in microseconds without starting a process; Apple silicon always
has Metal. The llama.cpp build decides whether they can be used (``_core.supports_gpu_offload()``).

A CUDA device is numbered as CUDA numbers it in this process (llama.cpp's ``main_gpu`` and
``tensor_split`` count the same way): CUDA_VISIBLE_DEVICES hides and reorders cards, and the others
keep NVML's PCI bus order, which CUDA follows on identical cards or with
CUDA_DEVICE_ORDER=PCI_BUS_ID."""

from __future__ import annotations

import logging
import os
import platform
import threading
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class GpuInfo:
    name: str
    kind: str  # cuda | metal
    memory_total: int = 0
    memory_used: int = 0
    utilization: float = 0.0  # 0-1, over NVML's last sample period
    index: int = 0  # the device number llama.cpp uses for it


@dataclass(frozen=True)
class _Card:
    """One card as NVML lists it."""

    nvml_index: int
    uuid: str
    handle: object


def _visible(cards: Sequence[_Card]) -> list[_Card]:
    """The cards CUDA_VISIBLE_DEVICES lets this process see, in its order. Entries are indices or
    UUID prefixes; as in CUDA, the first that names no card ends the list."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return list(cards)
    seen: list[_Card] = []
    for entry in (e.strip() for e in spec.split(",")):
        named = (c for c in cards if entry and (entry == str(c.nvml_index)
                                                 or entry.startswith("GPU-") and c.uuid.startswith(entry)))
        card = next(named, None)
        if card is None or card in seen:
            break
        seen.append(card)
    return seen


class _Nvml:
    """NVML, initialised once per process on first use; absent (no driver, no binding) is remembered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lib = None
        self._tried = False

    def lib(self):
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    self._lib = pynvml
                except Exception as exc:  # noqa: BLE001 - no driver, no library, no card: no NVIDIA GPU
                    log.debug("NVML not available: %s", exc)
            return self._lib

    def reset(self) -> None:
        """Forget what was found (tests swap the binding)."""
        with self._lock:
            self._lib, self._tried = None, False


_nvml = _Nvml()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvidia() -> list[GpuInfo]:
    nv = _nvml.lib()
    if nv is None:
        return []
    try:
        cards = []
        for i in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            cards.append(_Card(i, _text(nv.nvmlDeviceGetUUID(handle)), handle))
    except nv.NVMLError as exc:
        log.debug("NVML could not list the cards: %s", exc)
        return []
    gpus = []
    for ordinal, card in enumerate(_visible(cards)):
        try:
            memory = nv.nvmlDeviceGetMemoryInfo(card.handle)
            name = _text(nv.nvmlDeviceGetName(card.handle))
        except nv.NVMLError:
            continue  # a card that does not report its memory cannot be placed on
        try:
            utilization = nv.nvmlDeviceGetUtilizationRates(card.handle).gpu / 100
        except nv.NVMLError:
            utilization = 0.0  # not supported on this card (some MIG and vGPU setups)
        gpus.append(GpuInfo(f"cuda:{ordinal} {name}", "cuda", int(memory.total), int(memory.used), utilization,
                            ordinal))
    return gpus


def gpu_stats() -> list[GpuInfo]:
    """The accelerators and their memory now."""
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return [GpuInfo("metal:0", "metal")]
    return _nvidia()
