"""Ollama's own GGUF dialect, translated into files llama.cpp loads.

Before v0.30 Ollama converted many library models with its own converter: other key and tensor
names, missing keys, and for vision models the projector inside the one blob. Ollama now carries a
load-time translation in its patched llama.cpp; we use llama.cpp as released, which loads only
files, so we write the translated form once, beside the store:

    <models>/derived/sha256-<blob digest>.v<TRANSLATOR_VERSION>/model.gguf      the text model
                                                                 projector.gguf  the vision projector

made on a model's first load (or right after its pull), keyed by the blob's digest and by this
translator's version (a new version makes new files; old ones are pruned), and removed with the
blob. The blob itself is never touched, so pulls, pushes, ``cp`` and ``/api/blobs`` see the
original bytes. Disk cost: one copy of the text tensors and of the vision tensors (about the
blob's size), less on file systems that share copied extents.

Each architecture's facts (which keys, which tensor names) live in its own module here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ...errors import A3SPowerError
from .. import digests
from ..blobs import write_atomic
from ..gguf import GGUFFile, read_gguf
from ..locks import FileLock
from .plan import Plan
from .write import write

# Bump when a translation changes what it writes: derived files of older versions are remade.
TRANSLATOR_VERSION = 1

# Tensor prefixes of the parts Ollama's converter put inside the text model's blob.
EMBEDDED_PREFIXES = ("v.", "mm.", "a.")


class UnsupportedDialect(A3SPowerError):
    """A GGUF in Ollama's dialect whose architecture we cannot translate."""


@dataclass(frozen=True)
class Dialect:
    """How one architecture's Ollama-dialect files become llama.cpp's: ``detect`` recognises the
    dialect from the header, ``text`` edits the text model's plan in place, ``projector`` (for
    families with vision) edits a copy of the plan into a ``clip`` projector."""

    arch: str  # general.architecture as Ollama's converter wrote it
    detect: Callable[[GGUFFile], bool]
    text: Callable[[Plan], None]
    projector: Callable[[Plan], None] | None = None
    vision_prefixes: tuple[str, ...] = ("v.", "mm.")
    notes: str = ""


_DIALECTS: list[Dialect] = []


def register(dialect: Dialect) -> Dialect:
    _DIALECTS.append(dialect)
    return dialect


@dataclass
class Translation:
    """What a blob needs before llama.cpp can load it. ``error`` is set instead of ``dialect``
    for a blob in the dialect that cannot be translated: the model lists and shows, and its
    load fails with that message."""

    dialect: Dialect | None
    has_projector: bool = False  # the blob carries a vision tower that becomes a projector
    error: str = ""


def has_tensor(h: GGUFFile, name: str) -> bool:
    return any(t.name == name for t in h.tensors)


def has_prefix(h: GGUFFile, *prefixes: str) -> bool:
    return any(t.name.startswith(prefixes) for t in h.tensors)


def detect(h: GGUFFile) -> Translation | None:
    """The translation a model file needs, None for a file llama.cpp loads as it is. A file
    that is clearly Ollama's dialect (a vision tower inside a text model) with no translation for
    its architecture raises ``UnsupportedDialect``."""
    _load_handlers()
    arch = h.architecture
    for d in _DIALECTS:
        if d.arch == arch and d.detect(h):
            return Translation(d, d.projector is not None and has_prefix(h, *d.vision_prefixes))
    if arch not in ("clip", "") and has_prefix(h, *EMBEDDED_PREFIXES):
        raise UnsupportedDialect(
            f'this model is in Ollama\'s own GGUF dialect (architecture "{arch}" with embedded vision or audio '
            f"tensors), which A3S Power cannot translate yet")
    return None


def loadable(spec):
    """``spec`` (a ``LocalModel``) as llama.cpp can load it: for a blob in Ollama's dialect, a
    copy pointing at the derived files, written first if need be (slow once: call off the loop)."""
    t = spec.translation
    if t is None:
        return spec
    if t.dialect is None:
        raise UnsupportedDialect(t.error)
    files = ensure(spec.model_path, spec.model_digest, spec.store_root, t)
    return replace(spec, model_path=files["model"], projector_path=files.get("projector") or spec.projector_path,
                   translation=None)


def supported_architectures() -> list[str]:
    _load_handlers()
    return sorted({d.arch for d in _DIALECTS})


def derived_root(store_root: Path) -> Path:
    return store_root / "derived"


def derived_dir(store_root: Path, digest: str) -> Path:
    return derived_root(store_root) / f"{digests.filename(digest)}.v{TRANSLATOR_VERSION}"


def is_current(name: str, digest_filename: str | None = None) -> bool:
    """Whether a folder under ``derived/`` is of this translator version (and of that blob)."""
    stem, _, version = name.rpartition(".v")
    if version != str(TRANSLATOR_VERSION):
        return False
    return digest_filename is None or stem == digest_filename


def ensure(blob: Path, digest: str, store_root: Path, translation: Translation,
           progress: Callable[[str, int, int], None] | None = None) -> dict[str, Path]:
    """The derived files of ``blob``, written now if they are not there yet (once: other
    processes wait on a lock). Returns ``{"model": path, "projector": path}`` (no projector for a
    text-only model)."""
    folder = derived_dir(store_root, digest)
    done = folder / "complete.json"
    files = {"model": folder / "model.gguf"}
    if translation.has_projector:
        files["projector"] = folder / "projector.gguf"
    if done.is_file():
        return files
    assert translation.dialect is not None
    with FileLock(derived_root(store_root) / f".{folder.name}.lock", remove_on_release=True):
        if done.is_file():
            return files
        header = read_gguf(blob)
        plan = Plan(header)
        text = plan.copy()
        translation.dialect.text(text)
        write(text, files["model"], _stage(progress, "translating model"))
        if "projector" in files:
            clip = plan.copy()
            clip.keep_prefix(*translation.dialect.vision_prefixes)
            assert translation.dialect.projector is not None
            translation.dialect.projector(clip)
            write(clip, files["projector"], _stage(progress, "translating projector"))
        write_atomic(done, json.dumps({"blob": digests.normalize(digest), "dialect": translation.dialect.arch,
                                       "translator_version": TRANSLATOR_VERSION}).encode())
    return files


def _stage(progress, status: str):
    if progress is None:
        return None
    return lambda done, total: progress(status, done, total)


def remove_for(store_root: Path, digest: str) -> None:
    """Removes every derived folder of a blob (all translator versions)."""
    root = derived_root(store_root)
    prefix = digests.filename(digest) + ".v"
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(prefix) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def _load_handlers() -> None:
    # always: a family module imported on its own (a test's fixture) must not stand for all of them
    from . import families  # noqa: F401 - registers every architecture (once: modules are cached)
