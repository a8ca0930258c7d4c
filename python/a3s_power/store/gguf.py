"""A pure-Python reader of GGUF v2/v3 headers: metadata and tensor descriptions, never weights.

The file is memory-mapped and only the header pages are touched, so reading a 40 GB model's
header costs what reading a few megabytes of tokenizer arrays costs. Arrays longer than
``max_array`` are skipped (and reported as ``[]``), as Ollama's ``show`` does without ``verbose``.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import A3SPowerError

MAGIC = b"GGUF"


class GGUFError(A3SPowerError, ValueError):
    pass


# ggml tensor types: name, elements per block, bytes per block.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# llama.cpp's llama_ftype (general.file_type) as Ollama names it.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4",
}

# GGUF value types: struct format of the scalars.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    type: int
    offset: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.type, (f"type{self.type}", 0, 0))[0]

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int | None:
        info = GGML_TYPES.get(self.type)
        if info is None or not info[1]:
            return None
        return self.n_elements // info[1] * info[2]


@dataclass
class GGUFFile:
    path: Path
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    # Each key's GGUF value type, and for arrays the item type: what a rewrite needs to keep them.
    types: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_key(self, suffix: str) -> Any:
        """``<architecture>.<suffix>``, e.g. ``context_length``."""
        return self.metadata.get(f"{self.architecture}.{suffix}")

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def file_type(self) -> str:
        value = self.metadata.get("general.file_type")
        if isinstance(value, int):
            return FILE_TYPES.get(value, "unknown")
        # No general.file_type: the type most of the weight matrices have (F32, F16, Q8_0, ...).
        counts: dict[str, int] = {}
        for t in self.tensors:
            if len(t.shape) >= 2:
                counts[t.type_name] = counts.get(t.type_name, 0) + t.n_elements
        return max(counts, key=counts.__getitem__) if counts else "unknown"


class _Reader:
    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError("truncated GGUF header")

    def scalar(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        self.need(n)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.scalar("<Q")
        self.need(n)
        self.pos += n

    def value(self, vtype: int, max_array: int | None) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.scalar("<I")
            count = self.scalar("<Q")
            if max_array is not None and count > max_array:
                self._skip_array(item_type, count)
                return []
            return [self.value(item_type, max_array) for _ in range(count)]
        raise GGUFError(f"unknown GGUF value type {vtype}")

    def _skip_array(self, item_type: int, count: int) -> None:
        if item_type in _SCALARS:
            n = struct.calcsize(_SCALARS[item_type]) * count
            self.need(n)
            self.pos += n
        elif item_type == _STRING:
            for _ in range(count):
                self.skip_string()
        elif item_type == _ARRAY:
            for _ in range(count):
                self.value(_ARRAY, 0)
        else:
            raise GGUFError(f"unknown GGUF value type {item_type}")


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def read_gguf(path: Path | str, *, max_array: int | None = None, check_size: bool = True) -> GGUFFile:
    """Reads the header; with ``check_size`` a file too short for its tensors is an error."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - opened apart: only its own failure reads "cannot open"
    except OSError as exc:
        raise GGUFError(f"cannot open {path}: {exc.strerror}") from None
    with f:
        size = path.stat().st_size
        if size < 24:
            raise GGUFError(f"{path.name} is not a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            r = _Reader(buf, size)
            if buf[:4] != MAGIC:
                raise GGUFError(f"{path.name} is not a GGUF file")
            r.pos = 4
            version = r.scalar("<I")
            if version not in (2, 3):
                raise GGUFError(f"unsupported GGUF version {version} (2 and 3 are supported)")
            n_tensors = r.scalar("<Q")
            n_kv = r.scalar("<Q")
            if n_tensors > 1 << 24 or n_kv > 1 << 24:
                raise GGUFError("implausible GGUF header counts")
            out = GGUFFile(path, version, file_size=size)
            for _ in range(n_kv):
                key = r.string()
                vtype = r.scalar("<I")
                item_type = None
                if vtype == _ARRAY:
                    r.need(4)
                    (item_type,) = struct.unpack_from("<I", r.buf, r.pos)
                out.types[key] = (vtype, item_type)
                out.metadata[key] = r.value(vtype, max_array)
            for _ in range(n_tensors):
                name = r.string()
                n_dims = r.scalar("<I")
                if n_dims > 8:
                    raise GGUFError(f"tensor {name} has {n_dims} dimensions")
                shape = [r.scalar("<Q") for _ in range(n_dims)]
                out.tensors.append(TensorInfo(name, shape, r.scalar("<I"), r.scalar("<Q")))
            alignment = out.metadata.get("general.alignment", 32)
            if not isinstance(alignment, int) or alignment <= 0:
                alignment = 32
            out.data_offset = (r.pos + alignment - 1) // alignment * alignment
    if check_size:
        for t in out.tensors:
            n = t.n_bytes
            if n is not None and out.data_offset + t.offset + n > size:
                raise GGUFError(f"{path.name} is truncated: tensor {t.name} ends past the end of the file")
    return out
