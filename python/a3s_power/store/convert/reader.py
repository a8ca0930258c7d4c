"""Reading a Hugging Face checkpoint's SafeTensors files, one tensor (and one slice of rows) at a time.

The ``safetensors`` package opens and checks each file and reads every dtype numpy has, by slices
of rows, so a tensor never needs to be in memory whole. numpy has no bfloat16: those tensors are
read through a memory map at the offsets the file's header gives, widened to float32 per slice.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConvertError

_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header
# dtypes read through safetensors' numpy API; BF16 goes through the memory map.
_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_SIZES = {**{k: np.dtype(v).itemsize for k, v in _NUMPY.items()}, "BF16": 2}


@dataclass
class SourceTensor:
    name: str
    dtype: str  # the SafeTensors dtype: "F32", "F16", "BF16", ...
    shape: tuple[int, ...]
    file: Path
    offset: int  # of the data, from the start of the file
    nbytes: int

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    def read_rows(self, start: int, stop: int, native: bool = False) -> np.ndarray:
        """Rows [start, stop) along the first axis, as float32 (integers as they are); with ``native``
        as stored (bfloat16 as its uint16 bits)."""
        if self.dtype == "BF16":
            row = int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1
            mm = np.memmap(self.file, dtype=np.uint16, mode="r", offset=self.offset + 2 * start * row,
                           shape=((stop - start) * row,))
            out = np.array(mm) if native else (mm.astype(np.uint32) << 16).view(np.float32)
            return out.reshape((stop - start, *self.shape[1:]) if self.shape else ())
        from safetensors import safe_open

        with safe_open(str(self.file), framework="np") as f:
            data = f.get_tensor(self.name) if not self.shape else f.get_slice(self.name)[start:stop]
        data = np.asarray(data)
        if native:
            return data
        return data.astype(np.float32) if data.dtype.kind == "f" and data.dtype != np.float32 else data

    def read(self) -> np.ndarray:
        return self.read_rows(0, self.rows)


def _header(path: Path) -> tuple[dict, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ConvertError(f"{path.name}: not a SafeTensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise ConvertError(f"{path.name}: not a SafeTensors file (header of {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise ConvertError(f"{path.name}: not a SafeTensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ConvertError(f"{path.name}: not a SafeTensors file")
    return header, 8 + n


def _check_with_safetensors(path: Path, names: list[str]) -> None:
    """The package's own reader must agree that the file is whole and lists these tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            if sorted(f.keys()) != sorted(names):
                raise ConvertError(f"{path.name}: its tensors do not match its header")
    except SafetensorError as exc:
        raise ConvertError(f"{path.name}: {exc}") from None


def read_file(path: Path) -> Iterator[SourceTensor]:
    header, data_start = _header(path)
    size = path.stat().st_size
    names = [k for k in header if k != "__metadata__"]
    _check_with_safetensors(path, names)
    for name in names:
        info = header[name]
        dtype, shape, (begin, end) = info.get("dtype"), tuple(info.get("shape", ())), info.get("data_offsets", (0, 0))
        if dtype not in _SIZES:
            raise ConvertError(f"{path.name}: tensor {name} has dtype {dtype}, which cannot be converted")
        expected = int(np.prod(shape, dtype=np.int64)) * _SIZES[dtype]
        if end - begin != expected or data_start + end > size:
            raise ConvertError(f"{path.name}: tensor {name} does not fit its file")
        yield SourceTensor(name, dtype, shape, path, data_start + begin, end - begin)


def safetensors_files(model_dir: Path) -> list[Path]:
    """The checkpoint's files: those ``model.safetensors.index.json`` names, else every ``*.safetensors``
    at the top of the folder (``model*`` first, as a sharded checkpoint names them)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        except (OSError, ValueError):
            raise ConvertError("model.safetensors.index.json is not readable JSON") from None
        files = sorted({str(v) for v in weight_map.values()})
        paths = [model_dir / f for f in files]
        for p in paths:
            if not p.is_file() or p.resolve().parent != model_dir.resolve():
                raise ConvertError(f"model.safetensors.index.json names {p.name}, which is not in the model folder")
        return paths
    found = sorted(model_dir.glob("*.safetensors"))
    main = [p for p in found if p.name.startswith("model")]
    return main or found


def read_checkpoint(model_dir: Path) -> dict[str, SourceTensor]:
    files = safetensors_files(model_dir)
    if not files:
        raise ConvertError("no .safetensors files in the model folder")
    tensors: dict[str, SourceTensor] = {}
    for path in files:
        for t in read_file(path):
            if t.name in tensors:
                raise ConvertError(f"tensor {t.name} appears in more than one file")
            tensors[t.name] = t
    return tensors
