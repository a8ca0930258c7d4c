"""Where a model goes: which GPUs, how many layers on each, and what stays on the CPU.

Pure functions of the model's memory estimate and the GPUs' memory, so the scheduler's choices
can be tested on any inventory. llama.cpp offloads n_layer + 1 layers (the repeating blocks, then
the output layer): the last n_gpu_layers of them go to the GPUs, device after device, in the
proportions of tensor_split. Whole layer counts given as those proportions make it put on each GPU
exactly the layers counted here.

Rules, the most explicit first: a user's tensor_split (a layer split, or a row or tensor split if
asked); split_mode row, tensor or layer (over every GPU, by free memory); a pinned main_gpu or split_mode none (one
GPU); OLLAMA_SCHED_SPREAD (layers over every GPU, by free memory); else the freest GPU alone when
the model fits there, layers over every GPU when it fits only so, and where it fits nowhere, as
many layers as fit with the rest on the CPU (as Ollama does).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from ..errors import InvalidOptionError
from ..gpu import GpuInfo
from .memory import Estimate, format_bytes
from .options import LoadOptions


@dataclass(frozen=True)
class GpuShare:
    """What one GPU holds of a model."""

    index: int  # the device number llama.cpp uses
    name: str
    layers: int
    bytes: int  # weights, KV cache and compute buffers
    weights: int  # the part of bytes that models over the same file share

    @property
    def id(self) -> str:
        return f"cuda:{self.index}"


@dataclass(frozen=True)
class Placement:
    n_gpu_layers: int  # -1: all of them
    split_mode: str = "layer"
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()  # per device number: whole layer counts, or row proportions
    gpus: tuple[GpuShare, ...] = ()
    cpu_bytes: int = 0
    complete: bool = True  # every layer asked for is on a GPU

    @property
    def vram(self) -> int:
        return sum(g.bytes for g in self.gpus)

    @property
    def total(self) -> int:
        return self.vram + self.cpu_bytes

    def apply(self, load: LoadOptions) -> LoadOptions:
        """The load options that make llama.cpp put the model here."""
        return replace(load, num_gpu=self.n_gpu_layers, main_gpu=self.main_gpu, split_mode=self.split_mode,
                       tensor_split=self.tensor_split)

    def __str__(self) -> str:
        on = ", ".join(f"{g.id} {g.layers} layers {format_bytes(g.bytes)}" for g in self.gpus) or "no GPU"
        return f"{on}; {format_bytes(self.cpu_bytes)} on the CPU ({self.split_mode} split)"


def free_memory(gpu: GpuInfo, promised: int = 0, loading: int = 0, overhead: int = 0) -> int:
    """What a new model may take on one GPU, from two views that each count a model once.
    Measured: NVML's used memory already holds the models this server has loaded (and other
    processes), so only loads still in flight (``loading``, not allocated yet) come off it.
    Promised: the total less what this server's models were promised, loaded or loading, which
    covers what grows after a load (CUDA's memory pool at the first batches). The smaller counts,
    as in Ollama's scheduler. OLLAMA_GPU_OVERHEAD stays free on each GPU."""
    measured = gpu.memory_total - gpu.memory_used - loading
    return max(0, min(measured, gpu.memory_total - promised) - overhead)


def promised(placed: Iterable[tuple[Hashable, Placement]]) -> dict[int, int]:
    """Bytes on each GPU of models already placed, given as (weights key, placement): the weights
    of each key once (models over the same file share them), every model's own KV cache and buffers."""
    out: dict[int, int] = defaultdict(int)
    seen = set()
    for key, placement in placed:
        for g in placement.gpus:
            out[g.index] += g.bytes if key not in seen else g.bytes - g.weights
        seen.add(key)
    return dict(out)


def place(est: Estimate, gpus: Sequence[GpuInfo], load: LoadOptions, *, promised: Mapping[int, int] | None = None,
          loading: Mapping[int, int] | None = None, overhead: int = 0, spread: bool = False) -> Placement:
    """Where a new model goes, by the rules above. ``promised`` is what this server's models hold
    on each GPU, ``loading`` the part of it still being loaded (see free_memory); ``overhead`` is
    kept free on each GPU; ``spread`` is OLLAMA_SCHED_SPREAD."""
    cards = sorted(gpus, key=lambda g: g.index)
    offloadable = est.layers + 1
    want = offloadable if load.num_gpu < 0 else min(load.num_gpu, offloadable)
    if want == 0 or not cards:
        return Placement(0, cpu_bytes=est.total)
    free = _free(cards, promised, loading, overhead)
    if load.main_gpu >= 0 and load.main_gpu not in free:
        raise InvalidOptionError(f"invalid option main_gpu: there is no GPU {load.main_gpu} ({len(cards)} found)")
    # What each GPU has for layers once its compute buffer is there: the measure of a spread.
    room = [max(0, free[g.index] - est.compute) for g in cards]
    main = load.main_gpu if load.main_gpu >= 0 else max(cards, key=lambda g: free[g.index]).index
    asked = [load.tensor_split[g.index] if g.index < len(load.tensor_split) else 0.0 for g in cards]
    if load.tensor_split and not any(asked):
        raise InvalidOptionError(f"invalid option tensor_split: it gives nothing to the {len(cards)} GPUs found")

    def result(mode: str, n: int, shares: tuple[GpuShare, ...], split: Sequence[float] = ()) -> Placement:
        if n == 0:
            return Placement(0, cpu_bytes=est.total, complete=False)
        by_device = [0.0] * (cards[-1].index + 1)
        for g, value in zip(cards, split):
            by_device[g.index] = float(value)
        lead = main if mode != "layer" else max(shares, key=lambda s: s.layers).index
        return Placement(-1 if n == offloadable else n, mode, lead, tuple(by_device) if split else (), shares,
                         _cpu_bytes(est, n), n == want)

    def over_all() -> Placement:  # layers over every GPU in proportion to its room, none past what it holds
        caps = [r // sum(_per_layer(est)) for r in room]
        counts = _apportion(min(want, sum(caps)), room, caps) if any(caps) else [0] * len(cards)
        return result("layer", sum(counts), _by_layer(est, cards, counts), counts)

    if load.split_mode in ("row", "tensor"):
        proportions = asked if load.tensor_split else room
        by = _by_row if load.split_mode == "row" else _by_tensor
        n, shares = _most(want, free, lambda n: by(est, cards, n, proportions, main))
        return result(load.split_mode, n, shares, proportions)
    if load.tensor_split:
        n, shares = _most(want, free, lambda n: _by_layer(est, cards, _apportion(n, asked)))
        layers = {s.index: s.layers for s in shares}
        return result("layer", n, shares, [layers.get(g.index, 0) for g in cards])
    if load.split_mode == "layer" or (spread and load.split_mode == "auto" and load.main_gpu < 0):
        return over_all()
    n, shares = _most(want, free, lambda n: _by_layer(est, [g for g in cards if g.index == main], [n]))
    alone = result("none", n, shares)
    if n == want or load.main_gpu >= 0 or load.split_mode == "none" or len(cards) == 1:
        return alone
    spread_out = over_all()
    return spread_out if sum(g.layers for g in spread_out.gpus) > n else alone


def alongside(base: Placement, est: Estimate, gpus: Sequence[GpuInfo], *, promised: Mapping[int, int] | None = None,
              loading: Mapping[int, int] | None = None, overhead: int = 0) -> Placement:
    """A model over weights that another loaded model has placed: llama.cpp loads them once, so its
    layers are where they are and only its own KV cache and buffers are new. Complete when those fit."""
    n = base.n_gpu_layers if base.n_gpu_layers >= 0 else est.layers + 1
    if base.split_mode in ("row", "tensor"):
        by = _by_row if base.split_mode == "row" else _by_tensor
        shares = by(est, base.gpus, n, [base.tensor_split[g.index] for g in base.gpus], base.main_gpu)
    else:
        shares = _by_layer(est, base.gpus, [g.layers for g in base.gpus])
    free = _free(gpus, promised, loading, overhead)
    fits = all(s.bytes - s.weights <= free.get(s.index, 0) for s in shares)
    return replace(base, gpus=shares, cpu_bytes=_cpu_bytes(est, n), complete=base.complete and fits)


# What llama.cpp logs when a buffer does not fit on a device (CUDA, Metal, Vulkan and the
# allocator above them), as a load error carries it.
_OUT_OF_MEMORY = re.compile(r"out of memory|failed to allocate|unable to allocate|cudaMalloc failed|"
                            r"alloc_buffer|insufficient memory", re.IGNORECASE)


def ran_out_of_memory(message: str) -> bool:
    return bool(_OUT_OF_MEMORY.search(message))


def fewer_layers(n_gpu_layers: int, est: Estimate) -> int | None:
    """The layer count to try after a load with ``n_gpu_layers`` ran out of GPU memory (the
    estimate was too low, or another process took memory meanwhile): three quarters of them, at
    least one fewer, down to none. None when none were on a GPU."""
    n = est.layers + 1 if n_gpu_layers < 0 else n_gpu_layers
    if n <= 0:
        return None
    return min(n - 1, n * 3 // 4)


# --- the arithmetic ---------------------------------------------------------------------------


def _free(gpus: Sequence[GpuInfo], promised: Mapping[int, int] | None, loading: Mapping[int, int] | None,
          overhead: int) -> dict[int, int]:
    promised, loading = promised or {}, loading or {}
    return {g.index: free_memory(g, promised.get(g.index, 0), loading.get(g.index, 0), overhead) for g in gpus}


def _per_layer(est: Estimate) -> tuple[int, int]:
    """Weights and KV cache of one offloaded layer. The output layer has no KV cache but a large
    matrix; taking it as an average layer keeps the sums simple and errs on the side of room."""
    return max(1, est.weights // (est.layers + 1)), est.kv_cache // max(est.layers, 1)


def _cpu_bytes(est: Estimate, gpu_layers: int) -> int:
    if gpu_layers > est.layers:
        return 0  # all offloaded: the input embeddings llama.cpp keeps on the CPU count in the GPUs' share
    weights, kv = _per_layer(est)
    rest = max(0, est.weights + est.kv_cache - gpu_layers * (weights + kv))
    return rest + est.compute


def _by_layer(est: Estimate, cards: Sequence, counts: Sequence[int]) -> tuple[GpuShare, ...]:
    """Whole layers per GPU, each GPU with layers also holding a compute buffer."""
    weights, kv = _per_layer(est)
    return tuple(GpuShare(g.index, g.name, c, c * (weights + kv) + est.compute, c * weights)
                 for g, c in zip(cards, counts) if c)


def _by_row(est: Estimate, cards: Sequence, n: int, proportions: Sequence[float], main: int) -> tuple[GpuShare, ...]:
    """n layers whose matrices are split by rows over the GPUs; the KV cache and the compute buffer
    stay on the main GPU, as llama.cpp's row split keeps them."""
    weights, kv = _per_layer(est)
    total = sum(proportions) or 1
    shares = []
    for g, p in zip(cards, proportions):
        if p or g.index == main:
            w = int(n * weights * p / total)
            shares.append(GpuShare(g.index, g.name, n, w + (n * kv + est.compute if g.index == main else 0), w))
    return tuple(shares)


def _by_tensor(est: Estimate, cards: Sequence, n: int, proportions: Sequence[float], main: int
               ) -> tuple[GpuShare, ...]:
    """n layers whose weights and KV cache llama.cpp's tensor split (tensor parallelism) spreads
    over the GPUs in proportion; each GPU computes its part, so each holds a compute buffer."""
    weights, kv = _per_layer(est)
    total = sum(proportions) or 1
    return tuple(GpuShare(g.index, g.name, n, int(n * (weights + kv) * p / total) + est.compute,
                          int(n * weights * p / total)) for g, p in zip(cards, proportions) if p)


def _most(want: int, free: Mapping[int, int], layout: Callable[[int], tuple[GpuShare, ...]]
          ) -> tuple[int, tuple[GpuShare, ...]]:
    """The most layers, up to ``want``, whose layout fits every GPU's free memory."""
    for n in range(want, 0, -1):
        shares = layout(n)
        if all(s.bytes <= free[s.index] for s in shares):
            return n, shares
    return 0, ()


def _apportion(n: int, weights: Sequence[float], caps: Sequence[int] | None = None) -> list[int]:
    """n whole layers in proportion to ``weights`` (largest remainders), none past its cap."""
    caps = caps if caps is not None else [n] * len(weights)
    total = sum(weights)
    ideal = [n * w / total for w in weights]
    counts = [min(cap, int(x)) for cap, x in zip(caps, ideal)]
    while sum(counts) < n:
        i = max((i for i in range(len(counts)) if counts[i] < caps[i]), key=lambda i: ideal[i] - counts[i])
        counts[i] += 1
    return counts

