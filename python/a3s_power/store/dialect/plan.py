"""An editable view of a GGUF file: its metadata and tensors, changed in memory, then written anew.

A translation edits a ``Plan`` made from the original blob (keys renamed, defaults filled in,
tensors renamed, hidden or computed from others) and writes it to a derived file. A tensor that
is only renamed keeps pointing at its bytes in the blob and is copied by the kernel when written;
only computed tensors (a type promotion, a merge, a permutation) pass through Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..gguf import GGML_TYPES, GGUFFile, TensorInfo

# GGUF value types (gguf.h's gguf_type).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
F32, F16, BF16 = 0, 1, 30  # ggml types a translation computes in

_NUMPY_OF = {F32: np.float32, F16: np.float16}


@dataclass
class KV:
    type: int
    value: Any
    item_type: int | None = None  # for arrays


@dataclass
class Tensor:
    """A tensor of the translated file. ``shape`` is ggml's order (fastest dimension first).
    Its bytes are ``source`` (an absolute offset in the blob) or what ``compute`` returns."""

    name: str
    type: int
    shape: list[int]
    source: int | None = None
    compute: Callable[[], bytes | np.ndarray] | None = None

    @property
    def n_bytes(self) -> int:
        _, block, size = GGML_TYPES[self.type]
        n = 1
        for d in self.shape:
            n *= d
        return n // block * size


class Plan:
    """The translated file being planned: ordered metadata and ordered tensors."""

    def __init__(self, src: GGUFFile) -> None:
        self.src = src
        self.kv: dict[str, KV] = {}
        for key, value in src.metadata.items():
            vtype, item_type = src.types[key]
            self.kv[key] = KV(vtype, value, item_type)
        self.tensors: dict[str, Tensor] = {
            t.name: Tensor(t.name, t.type, list(t.shape), source=src.data_offset + t.offset) for t in src.tensors}
        self._source_info: dict[str, TensorInfo] = {t.name: t for t in src.tensors}

    def copy(self) -> Plan:
        out = Plan.__new__(Plan)
        out.src, out._source_info = self.src, self._source_info
        out.kv = {k: replace(v) for k, v in self.kv.items()}
        out.tensors = {k: replace(v, shape=list(v.shape)) for k, v in self.tensors.items()}
        return out

    # --- metadata ------------------------------------------------------------------------------

    @property
    def arch(self) -> str:
        return str(self.get("general.architecture", ""))

    def has(self, key: str) -> bool:
        return key in self.kv

    def get(self, key: str, default: Any = None) -> Any:
        kv = self.kv.get(key)
        return default if kv is None else kv.value

    def set(self, key: str, vtype: int, value: Any, item_type: int | None = None) -> None:
        self.kv[key] = KV(vtype, value, item_type)

    def set_str(self, key: str, value: str) -> None:
        self.set(key, STRING, value)

    def set_u32(self, key: str, value: int) -> None:
        self.set(key, UINT32, int(value))

    def set_f32(self, key: str, value: float) -> None:
        self.set(key, FLOAT32, float(value))

    def set_bool(self, key: str, value: bool) -> None:
        self.set(key, BOOL, bool(value))

    def set_array(self, key: str, item_type: int, values: Iterable[Any]) -> None:
        self.set(key, ARRAY, list(values), item_type)

    def default(self, key: str, vtype: int, value: Any, item_type: int | None = None) -> None:
        """Sets ``key`` only where the file lacks it (a key the converter left out)."""
        if key not in self.kv:
            self.set(key, vtype, value, item_type)

    def copy_key(self, src: str, dst: str) -> None:
        if src in self.kv:
            self.kv[dst] = replace(self.kv[src])

    def rename_key(self, src: str, dst: str) -> None:
        if src in self.kv:
            self.kv[dst] = self.kv.pop(src)

    def delete(self, key: str) -> None:
        self.kv.pop(key, None)

    def rename_prefix(self, old: str, new: str) -> None:
        """Every key under ``old`` moves under ``new`` (an architecture's renamed key prefix)."""
        self.kv = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in self.kv.items()}

    def keep_keys(self, *prefixes: str) -> None:
        """Only the keys under ``prefixes`` stay (a projector needs none of the text model's)."""
        self.kv = {k: v for k, v in self.kv.items() if k.startswith(prefixes)}

    def become_clip(self, projector_type: str, type_key: str = "clip.projector_type") -> None:
        """This plan as a projector file llama.cpp's mtmd loads: the general and ``clip.`` keys only
        (none of the text model's), architecture ``clip``, a vision encoder of ``projector_type``.
        Copy what the projector needs from the text model's keys into ``clip.`` ones first."""
        self.keep_keys("general.", "clip.")
        self.set_str("general.architecture", "clip")
        self.set_str(type_key, projector_type)
        self.set_bool("clip.has_vision_encoder", True)

    def truncate_array(self, key: str, n: int) -> None:
        kv = self.kv.get(key)
        if kv is not None and kv.type == ARRAY and len(kv.value) > n:
            kv.value = kv.value[:n]

    def collapse_to_max(self, key: str) -> None:
        """An array-valued count (one per layer) becomes its largest value, where llama.cpp wants one."""
        kv = self.kv.get(key)
        if kv is not None and kv.type == ARRAY:
            self.kv[key] = KV(UINT32, int(max(kv.value)) if kv.value else 0)

    # --- tensors -------------------------------------------------------------------------------

    def tensor(self, name: str) -> Tensor | None:
        return self.tensors.get(name)

    def names(self, pattern: str | None = None) -> list[str]:
        rx = re.compile(pattern) if pattern else None
        return [n for n in self.tensors if rx is None or rx.search(n)]

    def has_prefix(self, *prefixes: str) -> bool:
        return any(n.startswith(prefixes) for n in self.tensors)

    def rename_tensor(self, old: str, new: str) -> None:
        t = self.tensors.pop(old, None)
        if t is not None:
            t.name = new
            self.tensors[new] = t  # at the end now: GGUF does not mind the order

    def rename_containing(self, needle: str, repl: str) -> None:
        """The first occurrence of ``needle`` in every tensor name becomes ``repl``."""
        renamed = {}
        for name, t in self.tensors.items():
            if needle in name:
                t.name = name.replace(needle, repl, 1)
            renamed[t.name] = t
        self.tensors = renamed

    def rename_regex(self, pattern: str, repl: str) -> None:
        rx = re.compile(pattern)
        renamed = {}
        for name, t in self.tensors.items():
            t.name = rx.sub(repl, name)
            renamed[t.name] = t
        self.tensors = renamed

    def drop_prefix(self, *prefixes: str) -> None:
        """Hides tensors from this file: the text model never sees the vision tower, and so on."""
        self.tensors = {n: t for n, t in self.tensors.items() if not n.startswith(prefixes)}

    def keep_prefix(self, *prefixes: str) -> None:
        self.tensors = {n: t for n, t in self.tensors.items() if n.startswith(prefixes)}

    def add(self, tensor: Tensor) -> None:
        self.tensors[tensor.name] = tensor

    # --- tensor data ---------------------------------------------------------------------------

    def raw(self, t: Tensor) -> memoryview:
        """The bytes of a source tensor, straight from the blob's mapping."""
        assert t.source is not None
        return memoryview(self._mapping())[t.source:t.source + t.n_bytes]

    def array(self, t: Tensor) -> np.ndarray:
        """A float tensor as numpy, shape in numpy's order (slowest dimension first)."""
        if t.compute is not None:
            data = t.compute()
            arr = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=_dtype(t.type))
        else:
            arr = _as_float(self.raw(t), t.type)
        return arr.reshape(list(reversed(t.shape)))

    def promote_f32(self, name: str) -> None:
        """F16/BF16 to F32, where llama.cpp's converter stores a tensor in F32 (convolution kernels)."""
        t = self.tensors.get(name)
        if t is None or t.type == F32:
            return
        src = replace(t, shape=list(t.shape))
        t.type, t.source = F32, None
        t.compute = lambda: self.array(src).astype(np.float32)

    def computed(self, name: str, shape: list[int], fn: Callable[[], np.ndarray], type_: int = F32) -> Tensor:
        """A new tensor of ``type_`` (F32 or F16) whose data ``fn`` returns in numpy's order."""
        np_type = _dtype(type_)
        return Tensor(name, type_, list(shape), compute=lambda: np.ascontiguousarray(fn(), dtype=np_type))

    def source(self, name: str) -> Tensor | None:
        """A tensor as the blob holds it, even one this plan hides (a projector reading a row of
        the text model's embeddings)."""
        info = self._source_info.get(name)
        if info is None:
            return None
        return Tensor(info.name, info.type, list(info.shape), source=self.src.data_offset + info.offset)

    def row(self, t: Tensor, i: int) -> np.ndarray:
        """Row ``i`` (along the slowest dimension) of a source tensor as float32, whatever its
        type: a quantized row is dequantized alone, never the whole tensor."""
        size = t.n_bytes // t.shape[-1]
        raw = self.raw(t)[i * size:(i + 1) * size]
        if t.type in (F32, F16, BF16):
            return _as_float(raw, t.type).astype(np.float32)
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        data = np.frombuffer(raw, dtype=np.uint8)
        return dequantize(data, GGMLQuantizationType(t.type)).astype(np.float32).reshape(-1)

    def reorder_rows(self, name: str, order: Iterable[int]) -> None:
        """The rows (slowest dimension) of a tensor in a new order: row ``i`` becomes what row
        ``order[i]`` was (a head layout permuted). Whole rows move, so any ggml type works."""
        t = self.tensors.get(name)
        if t is None:
            return
        index = np.asarray(list(order), dtype=np.int64)
        if sorted(index.tolist()) != list(range(t.shape[-1])):
            raise ValueError(f"{name}: not a permutation of its {t.shape[-1]} rows")
        src = replace(t, shape=list(t.shape))

        def data() -> bytes:
            raw = self.raw(src) if src.compute is None else _bytes(src.compute())
            rows = np.frombuffer(raw, dtype=np.uint8).reshape(len(index), -1)
            return rows[index].tobytes()

        t.source, t.compute = None, data

    def concat_slowest(self, names: list[str], new_name: str) -> Tensor:
        """Tensors of one type stacked along their slowest dimension (merged Q/K/V, gate and up):
        their bytes end to end, whatever their type, since a block never crosses a row."""
        parts = [self.tensors[n] for n in names]
        shape = list(parts[0].shape)
        shape[-1] = sum(p.shape[-1] for p in parts)
        srcs = [replace(p, shape=list(p.shape)) for p in parts]

        def data() -> bytes:
            return b"".join(bytes(self.raw(p)) if p.compute is None else _bytes(p.compute()) for p in srcs)

        return Tensor(new_name, parts[0].type, shape, compute=data)

    _map = None

    def _mapping(self):
        if self._map is None:
            import mmap

            with open(self.src.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map


def _dtype(type_: int):
    if type_ not in _NUMPY_OF:
        raise ValueError(f"cannot compute a tensor of ggml type {type_}")
    return _NUMPY_OF[type_]


def _as_float(raw: memoryview, type_: int) -> np.ndarray:
    if type_ == BF16:
        return (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    if type_ in _NUMPY_OF:
        return np.frombuffer(raw, dtype=_NUMPY_OF[type_])
    raise ValueError(f"tensor of ggml type {GGML_TYPES.get(type_, (type_,))[0]} cannot be transformed")


def _bytes(data: bytes | np.ndarray) -> bytes:
    return data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
