"""What translating Ollama's GGUF dialect costs (store/dialect): seconds and extra disk per GB.

Writes a gpt-oss model in Ollama's dialect (architecture ``gptoss``) with random f16 weights at
about the size asked, then times the translation into the derived file llama.cpp loads, cold
(page cache dropped where allowed) and warm, and reports the disk it took (free space before and
after, which is what a file system that shares copied extents would not spend).

    PYTHONPATH=python python benchmarks/dialect_translate.py --gb 2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from a3s_power.store import dialect
from a3s_power.store.gguf import read_gguf
from tests.dialect_models import gptoss_pair


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return "sha256:" + h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0, help="about how big the model is, in GB (f16)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()

    # Experts hold nearly all the weights: 3 matrices of n_embd x n_ff per expert per layer.
    n_embd, n_ff, n_expert = 1024, 2048, 8
    per_layer = 3 * n_embd * n_ff * n_expert * 2
    n_layer = max(1, round(args.gb * 1e9 / per_layer))
    work = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        _, ollama = gptoss_pair(n_embd=n_embd, n_layer=n_layer, n_head=16, n_head_kv=8, head_dim=64,
                                n_expert=n_expert, n_ff_exp=n_ff)
        ollama.tensors = {k: (v.astype(np.float16) if v.ndim >= 2 else v) for k, v in ollama.tensors.items()}
        blob = ollama.write(work / "blob.gguf")
        ollama = None
        size = blob.stat().st_size
        digest = _sha256(blob)
        translation = dialect.detect(read_gguf(blob, max_array=0, check_size=False))
        store = work / "store"
        store.mkdir()
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3")
            cold = "cold (page cache dropped)"
        except OSError:
            cold = "page cache not dropped (no permission)"
        free = shutil.disk_usage(store).free
        started = time.perf_counter()
        files = dialect.ensure(blob, digest, store, translation)
        first = time.perf_counter() - started
        spent = free - shutil.disk_usage(store).free
        shutil.rmtree(files["model"].parent)
        started = time.perf_counter()
        dialect.ensure(blob, digest, store, translation)
        warm = time.perf_counter() - started
        gb = size / 1e9
        print(f"model: gpt-oss in Ollama's dialect, {n_layer} layers, {gb:.2f} GB f16")
        print(f"translation, {cold}: {first:.2f} s ({first / gb:.2f} s per GB)")
        print(f"translation, warm: {warm:.2f} s ({warm / gb:.2f} s per GB)")
        print(f"extra disk: {spent / 1e9:.2f} GB ({spent / size:.2f} GB per GB of model)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
