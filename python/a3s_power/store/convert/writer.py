"""Writing the GGUF file tensor by tensor, each in slices of rows, so memory stays bounded by a slice
(about 64 MiB of float32) whatever the model's size. The ``gguf`` package's writer lays out the header,
the metadata and every tensor's description first; the data follows, written here as it is read."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from .errors import ConvertCancelled, ConvertError
from .families import BF16, F16, F32, OutTensor

SLICE_ELEMENTS = 16 << 20  # float32 elements per slice
_STORED = {"F32": F32, "F16": F16, "BF16": BF16}  # checkpoint dtypes written as they are when nothing changes


def to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounding to nearest even (exact for values that came from bfloat16)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def _encode(rows: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    if qtype == F32:
        return rows
    if qtype == F16:
        return rows.astype(np.float16)
    if qtype == BF16:
        return to_bf16(rows)
    raise ValueError(f"cannot write {qtype.name}")


def _slices(t: OutTensor):
    """(start, stop) of row slices of about SLICE_ELEMENTS, each a whole number of ``t.group`` rows."""
    rows = t.shape[0] if t.shape else 1
    per_row = int(np.prod(t.shape[1:], dtype=np.int64)) if len(t.shape) > 1 else 1
    step = max(t.group, (SLICE_ELEMENTS // max(per_row, 1)) // t.group * t.group)
    if len(t.shape) <= 1:
        step = rows
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def write_gguf(path: Path, writer: gguf.GGUFWriter, tensors: list[OutTensor], *,
               progress: Callable[[int, int], None] | None = None,
               cancel: threading.Event | None = None) -> None:
    """``writer`` holds the metadata already; this adds the tensors and writes everything to ``path``."""
    np_types = {F32: np.float32, F16: np.float16, BF16: np.uint16}
    for t in tensors:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np_types[t.qtype]), t.nbytes, raw_dtype=t.qtype)
    total = sum(t.nbytes for t in tensors)
    done = 0
    if cancel is not None and cancel.is_set():
        raise ConvertCancelled()
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    if not writer.fout:
        raise ConvertError("the GGUF writer opened no output file")
    fout = writer.fout[0]
    try:
        for t in tensors:
            writer.write_padding(fout, fout.tell())
            written = 0
            as_stored = False
            for start, stop in _slices(t):
                if cancel is not None and cancel.is_set():
                    raise ConvertCancelled()
                if t.data is not None:
                    rows = t.data[start:stop] if t.data.ndim else t.data
                else:
                    assert t.source is not None
                    as_stored = t.fix is None and bool(t.source.shape) and _STORED.get(t.source.dtype) == t.qtype
                    rows = t.source.read_rows(start, stop, native=as_stored) if t.source.shape else t.source.read()
                if t.fix is not None:
                    rows = t.fix(np.asarray(rows, dtype=np.float32), start)
                data = rows if t.data is None and as_stored else _encode(rows, t.qtype)
                data.tofile(fout)
                written += data.nbytes
                done += data.nbytes
                if progress is not None:
                    progress(done, total)
            if written != t.nbytes:
                raise ValueError(f"{t.name}: wrote {written} bytes, expected {t.nbytes}")
            writer.write_padding(fout, t.nbytes)
        fout.flush()
    except BaseException:
        writer.close()
        path.unlink(missing_ok=True)  # a partial file is of no use to anyone
        raise
    writer.close()
