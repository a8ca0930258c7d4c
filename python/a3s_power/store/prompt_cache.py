"""Where loaded models keep conversations on disk (the prompt cache's disk tier, cpp/prompt_disk.h):
``<models>/cache/prompts/<key>/``, one folder per model file, adapters, projector and KV layout, so
that cells written for one never go into another. ``meta.json`` names the model file (``path``); a
folder whose model is gone is removed when the store is pruned."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .blobs import write_atomic

FOLDER = Path("cache") / "prompts"


def _identity(path: Path) -> str:
    """A blob is its digest (its name); any other file its path, size and time of change."""
    if path.name.startswith("sha256-"):
        return path.name
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def folder_for(root: Path, model: Path, adapters: Sequence[Path] = (), projector: Path | None = None, *,
               kv_cache_type: str = "f16", flash_attention: bool | None = None, kv_unified: bool = False) -> Path:
    """The folder for a model loaded this way, made if missing."""
    identity = {"model": _identity(model), "adapters": [_identity(Path(a)) for a in adapters],
                "projector": _identity(projector) if projector else None, "kv_cache_type": kv_cache_type,
                "flash_attention": flash_attention, "kv_unified": kv_unified}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    folder = root / FOLDER / key
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "meta.json"
    if not meta.exists():
        write_atomic(meta, json.dumps({"path": str(model), "identity": identity}, indent=1).encode())
    return folder


def prune(root: Path) -> list[str]:
    """Removes the folders of models that are gone (and any without a readable meta.json)."""
    removed: list[str] = []
    base = root / FOLDER
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            model = Path(json.loads((Path(entry.path) / "meta.json").read_text())["path"])
            keep = model.is_file()
        except (OSError, ValueError, KeyError, TypeError):
            keep = False
        if not keep:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(f"{FOLDER}/{entry.name}")
    return removed
