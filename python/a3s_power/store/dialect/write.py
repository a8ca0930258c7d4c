"""Writes a ``Plan`` as a GGUF v3 file, whole or not at all.

Tensors that come unchanged from the blob are copied with ``os.copy_file_range``: the kernel moves
the bytes without passing them through Python, and shares the extents outright on file systems
that can (Btrfs, XFS, ZFS), so a translation there costs little disk.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..blobs import TEMP_PREFIX, fsync_dir
from .plan import ARRAY, BOOL, STRING, Plan

_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                   12: "<d"}
_COPY_CHUNK = 1 << 30


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value: Any, item_type: int | None) -> bytes:
    if vtype == STRING:
        return _string(value)
    if vtype == BOOL:
        return struct.pack("<?", bool(value))
    if vtype == ARRAY:
        assert item_type is not None
        head = struct.pack("<IQ", item_type, len(value))
        if item_type in _SCALAR_FORMATS and item_type != BOOL:
            return head + np.asarray(value, dtype=np.dtype(_SCALAR_FORMATS[item_type])).tobytes()
        return head + b"".join(_value(item_type, v, None) for v in value)
    return struct.pack(_SCALAR_FORMATS[vtype], value)


def header_bytes(plan: Plan, alignment: int) -> tuple[bytes, list[int]]:
    """The header (metadata and tensor infos, padded) and each tensor's offset in the data."""
    out = [b"GGUF", struct.pack("<IQQ", 3, len(plan.tensors), len(plan.kv))]
    for key, kv in plan.kv.items():
        out.append(_string(key) + struct.pack("<I", kv.type) + _value(kv.type, kv.value, kv.item_type))
    offsets, offset = [], 0
    for t in plan.tensors.values():
        offsets.append(offset)
        out.append(_string(t.name) + struct.pack("<I", len(t.shape)) + struct.pack(f"<{len(t.shape)}Q", *t.shape)
                   + struct.pack("<IQ", t.type, offset))
        offset += _padded(t.n_bytes, alignment)
    head = b"".join(out)
    return head + b"\0" * (_padded(len(head), alignment) - len(head)), offsets


def _padded(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def write(plan: Plan, target: Path, progress: Callable[[int, int], None] | None = None) -> None:
    """Writes ``plan`` to ``target`` through a temporary file beside it, synced, then renamed."""
    alignment = plan.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = 32
    head, _ = header_bytes(plan, alignment)
    total = sum(t.n_bytes for t in plan.tensors.values())
    done = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{TEMP_PREFIX}", dir=target.parent)
    try:
        with open(fd, "wb") as out, open(plan.src.path, "rb") as src:
            out.write(head)
            for t in plan.tensors.values():
                n = t.n_bytes
                if t.compute is None:
                    if t.source is None:
                        raise ValueError(f"tensor {t.name} has neither a source nor a computation")
                    out.flush()
                    _copy_range(src.fileno(), t.source, out.fileno(), n)
                    out.seek(0, os.SEEK_END)
                else:
                    data = t.compute()
                    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
                    if len(raw) != n:
                        raise ValueError(f"translated tensor {t.name} has {len(raw)} bytes, expected {n}")
                    out.write(raw)
                out.write(b"\0" * (_padded(n, alignment) - n))
                done += n
                if progress is not None:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _copy_range(src_fd: int, offset: int, dst_fd: int, n: int) -> None:
    """Copies ``n`` bytes at ``offset`` of ``src_fd`` to the end of ``dst_fd``, in the kernel."""
    dst_off = os.lseek(dst_fd, 0, os.SEEK_END)
    while n > 0:
        try:
            copied = os.copy_file_range(src_fd, dst_fd, min(n, _COPY_CHUNK), offset, dst_off)
        except OSError:  # a file system or kernel without it: read and write
            copied = 0
        if copied <= 0:
            chunk = os.pread(src_fd, min(n, 64 << 20), offset)
            if not chunk:
                raise OSError(f"the blob ended {n} bytes early")
            copied = os.pwrite(dst_fd, chunk, dst_off)
        offset += copied
        dst_off += copied
        n -= copied
