"""The model store: Ollama's layout under one root, shared safely between processes.

    <root>/manifests/<host>/<namespace>/<model>/<tag>   the registry manifest, byte for byte
    <root>/blobs/sha256-<hex>                            content-addressed layers

An existing Ollama models folder works unchanged, and Ollama reads ours. Writers never leave a
manifest that points at a missing blob: blobs are committed first (verified, renamed into place),
the manifest last (temporary file + rename). Operations in flight *pin* the digests they need, so
that a concurrent delete or prune in this or another process cannot remove them; pinning and
pruning exclude each other through one store-wide lock, which manifest writes and deletes hold too.

Anything in the store may vanish while it is being looked at (another thread, server or Ollama
deleting a model and its emptied folders): every scan and read takes a file or folder that has
gone as a model that is not there, never as a failure.
"""

from __future__ import annotations

import builtins
import copy
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from . import dialect, digests, manifest as mf, prompt_cache, tensor_model
from .blobs import TEMP_PREFIX, BlobStore, write_atomic
from .capabilities import derive as derive_capabilities
from .details import details_from_config, details_from_gguf
from .gguf import GGUFError, read_gguf
from .locks import FileLock, is_locked
from .manifest import InvalidManifest, Manifest
from .names import ModelName
from .types import InvalidModelName, LocalModel, ModelNotFound

log = logging.getLogger(__name__)

PRUNE_GRACE_S = 3600.0  # Ollama's layerPruneGracePeriod: files younger than this survive start-up pruning
_PARTIAL = re.compile(r"(sha256-[0-9a-f]{64}|url-[0-9a-f]{32})-partial.*")
_LEGACY_BLOB = re.compile(r"sha256:([0-9a-fA-F]{64})")

_GONE = (FileNotFoundError, NotADirectoryError)  # what a file or folder that was just removed raises


def _entries(folder: Path) -> list[os.DirEntry]:
    """A folder's entries, sorted by name; none if the folder has gone."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except _GONE:
        return []


def _read_with_mtime(path: Path) -> tuple[bytes, int]:
    """A file's bytes and its mtime, from the same open file."""
    with open(path, "rb") as f:
        return f.read(), os.fstat(f.fileno()).st_mtime_ns


def _missing_space(path: Path) -> int:
    """Bytes a sparse file (a partial download, sized to the whole blob) still needs on disk."""
    st = path.stat()
    return max(0, st.st_size - getattr(st, "st_blocks", 0) * 512)


class MissingBlob(FileNotFoundError):
    """A manifest to be written names a blob that is not in the store."""


class ModelStore:
    def __init__(self, root: Path, *, noprune: bool = False) -> None:
        self.root = Path(root)
        self.blobs = BlobStore(self.root)
        self.manifests_dir = self.root / "manifests"
        self.noprune = noprune
        self._lock_path = self.root / ".a3s-store.lock"
        self._pins_dir = self.root / ".a3s-pins"
        self._gguf_cache: dict[tuple[str, int], tuple] = {}
        self._resolved: dict[tuple, LocalModel] = {}

    @classmethod
    def from_config(cls, config) -> ModelStore:
        return cls(config.models_root, noprune=getattr(config, "noprune", False))

    # --- names and manifests -------------------------------------------------------------------

    @staticmethod
    def parse(name: str | ModelName) -> ModelName:
        return name if isinstance(name, ModelName) else ModelName.parse(name)

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir.joinpath(*name.manifest_relpath.parts)

    def find(self, name: str | ModelName) -> ModelName | None:
        """The stored name matching ``name`` case-insensitively, spelt as it is on disk."""
        wanted = self.parse(name)
        try:
            if self.manifest_path(wanted).is_file():
                return wanted
        except OSError:  # a path this file system cannot hold (too long): no such model
            return None
        folder = self.manifests_dir
        found: list[str] = []
        for part in wanted.manifest_relpath.parts:
            match = next((e.name for e in _entries(folder) if e.name.lower() == part.lower()), None)
            if match is None:
                return None
            found.append(match)
            folder = folder / match
        if not folder.is_file():
            return None
        host, namespace, model, tag = found
        return ModelName(host, namespace, model, tag, scheme=wanted.scheme)

    def _read(self, name: str | ModelName) -> tuple[ModelName, Manifest, int]:
        shown = name if isinstance(name, str) else name.display
        stored = self.find(name)
        if stored is None:
            raise ModelNotFound(shown)
        try:
            raw, mtime_ns = _read_with_mtime(self.manifest_path(stored))
        except (*_GONE, IsADirectoryError):
            raise ModelNotFound(shown) from None
        return stored, Manifest.parse(raw), mtime_ns

    def read_manifest(self, name: str | ModelName) -> tuple[ModelName, Manifest]:
        """The stored manifest; ModelNotFound if there is none, InvalidManifest if it is damaged."""
        stored, manifest, _ = self._read(name)
        return stored, manifest

    def _manifest_files(self) -> Iterator[tuple[tuple[str, str, str, str], os.DirEntry]]:
        """Every file four levels down (``host/namespace/model/tag``), whatever its name."""
        for host in _entries(self.manifests_dir):
            for namespace in _entries(Path(host.path)):
                for model in _entries(Path(namespace.path)):
                    for tag in _entries(Path(model.path)):
                        if tag.is_file():  # False for an entry that has gone meanwhile
                            yield (host.name, namespace.name, model.name, tag.name), tag

    def names(self) -> Iterator[ModelName]:
        for parts, _ in self._manifest_files():
            try:
                name = ModelName(*parts)
                name.check()
            except InvalidModelName:
                continue  # temporary files and anything else that is not a model
            yield name

    def _manifests_with_mtime(self) -> Iterator[tuple[ModelName, Manifest, int]]:
        for name in self.names():
            try:
                raw, mtime_ns = _read_with_mtime(self.manifest_path(name))
                yield name, Manifest.parse(raw), mtime_ns
            except _GONE:
                continue  # deleted since it was listed
            except (InvalidManifest, OSError) as exc:
                log.warning("skipping manifest %s: %s", name.full, exc)

    def manifests(self) -> Iterator[tuple[ModelName, Manifest]]:
        for name, manifest, _ in self._manifests_with_mtime():
            yield name, manifest

    def modified_at(self, name: ModelName) -> datetime:
        try:
            ns = self.manifest_path(name).stat().st_mtime_ns
        except _GONE:
            raise ModelNotFound(name.display) from None
        return _local_time(ns)

    # --- writing ----------------------------------------------------------------------------------

    def write_manifest(self, name: str | ModelName, manifest: Manifest) -> ModelName:
        """Writes a manifest atomically; every blob it names must be in the store (and pinned).
        Under the store lock: no delete or prune in between removes a blob or the folders."""
        name = self.parse(name)
        with self._store_lock():
            missing = [d for d in manifest.digests() if not self.blobs.exists(d)]
            if missing:
                raise MissingBlob(f"cannot write manifest {name.display}: blob {missing[0]} is missing")
            existing = self.find(name)
            write_atomic(self.manifest_path(existing or name), manifest.raw)
        return existing or name

    def add_layer(self, pin: Pin, media_type: str, data: bytes) -> mf.Layer:
        """Stores small content (pinned first, so it cannot be pruned before its manifest exists)."""
        digest = digests.sha256_bytes(data)
        pin.add([digest])
        self.blobs.write_bytes(data)
        return mf.Layer(media_type, digest, len(data))

    def copy(self, source: str, destination: str) -> ModelName:
        dst = self.parse(destination)
        src_name, manifest = self.read_manifest(source)
        with self.pinned(manifest.digests()):
            try:
                return self.write_manifest(dst, manifest)
            except MissingBlob:  # the source was deleted, and its blobs, before they were pinned
                raise ModelNotFound(source) from None

    def delete(self, name: str | ModelName) -> None:
        """Removes a model's manifest, then its blobs that nothing else references. ModelNotFound
        when there is no such model, also when another delete removed it first."""
        shown = name if isinstance(name, str) else name.display
        with self._store_lock():
            stored, manifest = self.read_manifest(name)
            path = self.manifest_path(stored)
            try:
                path.unlink()
            except _GONE:  # removed by someone who does not take our lock (Ollama)
                raise ModelNotFound(shown) from None
            self._remove_empty_dirs(path.parent)
            self._remove_unused_locked(manifest.digests())

    # --- pins, pruning ----------------------------------------------------------------------------

    @contextmanager
    def _store_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self._lock_path):
            yield

    def pin(self, digest_list: Iterable[str] = ()) -> Pin:
        """Keeps blobs from being pruned or deleted (by any process) until the pin is released."""
        return Pin(self, digest_list)

    @contextmanager
    def pinned(self, digest_list: Iterable[str]) -> Iterator[Pin]:
        pin = self.pin(digest_list)
        try:
            yield pin
        finally:
            pin.release()

    def _referenced(self) -> set[str]:
        """Digests of every manifest and of every live pin. Call with the store lock held."""
        used: set[str] = set()
        for _, manifest in self.manifests():
            used |= manifest.digests()
        for entry in _entries(self._pins_dir):
            pin = Path(entry.path)
            if not is_locked(pin):
                pin.unlink(missing_ok=True)  # its owner died
                continue
            try:
                used |= set(json.loads(pin.read_text() or "[]"))
            except (OSError, ValueError):
                continue
        return used

    def remove_unused(self, candidates: Iterable[str]) -> list[str]:
        """Deletes those of ``candidates`` that no manifest and no pin references."""
        with self._store_lock():
            return self._remove_unused_locked(candidates)

    def _remove_unused_locked(self, candidates: Iterable[str]) -> list[str]:
        removed = []
        used = self._referenced()
        for digest in candidates:
            if digest not in used and self.blobs.remove(digest):
                dialect.remove_for(self.root, digest)
                removed.append(digest)
        return removed

    def prune(self, grace_s: float = PRUNE_GRACE_S) -> list[str]:
        """Start-up cleaning: unreferenced blobs and partial downloads older than ``grace_s``, a
        partial download of any age that the disk has no room left to finish, temporary files
        nobody is writing, and empty manifest folders. Returns the names of removed files. Files
        that vanish meanwhile (a server deleting on the same store) are simply gone already."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        cutoff = time.time() - grace_s
        with self._store_lock():
            used = {digests.filename(d) for d in self._referenced()}
            free: int | None = None
            unfinishable: set[str] = set()  # partial downloads the disk has no room left to finish
            for entry in _entries(self.blobs.dir):  # sorted: a partial's data file before its state files
                path, name = Path(entry.path), entry.name
                try:
                    young = path.stat().st_mtime > cutoff
                except _GONE:
                    continue
                is_blob = re.fullmatch(r"sha256-[0-9a-f]{64}", name) is not None
                if name.startswith(TEMP_PREFIX):
                    if is_locked(path):
                        continue  # being written (its writer holds it locked)
                elif m := _PARTIAL.fullmatch(name):
                    base = m.group(1)
                    if is_locked(self.blobs.dir / (base + "-partial.lock")):
                        continue  # a download is using it
                    if young and name == base + "-partial" and entry.is_file():
                        if free is None:
                            free = _free_space(self.blobs.dir)
                        try:
                            if _missing_space(path) >= free:
                                unfinishable.add(base)
                        except _GONE:
                            continue
                    if young and base not in unfinishable:
                        continue  # kept for the pull that resumes it
                elif not is_blob or young or name in used:
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):  # a PyPI pull's work folder (``…-partial-pypi``)
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                except _GONE:
                    continue
                removed.append(name)
            self._prune_manifest_folders()
            removed += self._prune_derived()
            removed += prompt_cache.prune(self.root)
        return removed

    def _prune_derived(self) -> list[str]:
        """Translations (store/dialect) of blobs that are gone, or by an older translator. Call
        with the store lock held; a translation being written holds its own lock and is kept."""
        removed = []
        root = dialect.derived_root(self.root)
        for entry in _entries(root):
            if not entry.is_dir(follow_symlinks=False):
                continue
            stem = entry.name.rpartition(".v")[0]
            if is_locked(root / f".{entry.name}.lock"):
                continue  # being written
            if dialect.is_current(entry.name) and (self.blobs.dir / stem).is_file():
                for part in _entries(Path(entry.path)):  # what a killed translation left
                    if TEMP_PREFIX in part.name:
                        Path(part.path).unlink(missing_ok=True)
                        removed.append(f"derived/{entry.name}/{part.name}")
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(f"derived/{entry.name}")
        return removed

    def _prune_manifest_folders(self) -> None:
        """Removes manifest temporaries (no write is in flight: they happen under the store lock,
        held here) and empty folders, deepest first."""
        folders: list[Path] = []
        for host in _entries(self.manifests_dir):
            if not host.is_dir(follow_symlinks=False):
                continue
            for namespace in _entries(Path(host.path)):
                if not namespace.is_dir(follow_symlinks=False):
                    continue
                for model in _entries(Path(namespace.path)):
                    if not model.is_dir(follow_symlinks=False):
                        continue
                    for tag in _entries(Path(model.path)):
                        if tag.name.startswith(".") and TEMP_PREFIX in tag.name:
                            Path(tag.path).unlink(missing_ok=True)
                    folders.append(Path(model.path))
                folders.append(Path(namespace.path))
            folders.append(Path(host.path))
        for folder in folders:  # children before their parents
            try:
                folder.rmdir()
            except OSError:
                pass

    def fix_legacy_blob_names(self) -> None:
        """Old Ollama versions named blobs ``sha256:<hex>``; rename them as Ollama does at start-up."""
        for entry in _entries(self.blobs.dir):
            if m := _LEGACY_BLOB.fullmatch(entry.name):
                target = self.blobs.dir / f"sha256-{m.group(1).lower()}"
                if not target.exists():
                    try:
                        os.replace(entry.path, target)
                    except _GONE:
                        pass  # another server renamed it first

    def startup(self) -> None:
        """What the server does to its store when it starts. Cleaning that fails (a file it
        cannot remove) is reported and does not keep the server from starting."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.fix_legacy_blob_names()
            if not self.noprune:
                removed = self.prune()
                if removed:
                    log.info("pruned %d unused files from the model store", len(removed))
        except OSError as exc:
            log.warning("cleaning the model store: %s", exc)

    def _remove_empty_dirs(self, folder: Path) -> None:
        while folder != self.manifests_dir and self.manifests_dir in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # --- reading models ---------------------------------------------------------------------------

    def _read_layer_text(self, layer: mf.Layer) -> str:
        return self.blobs.path(layer.digest).read_text(encoding="utf-8", errors="replace")

    def _read_layer_json(self, layer: mf.Layer):
        try:
            return json.loads(self.blobs.path(layer.digest).read_bytes())
        except (ValueError, OSError):
            return None

    def config_of(self, manifest: Manifest) -> dict:
        config = self._read_layer_json(manifest.config) if self.blobs.exists(manifest.config.digest) else None
        return config if isinstance(config, dict) else {}

    def gguf_header(self, path: Path):
        """The GGUF header of a blob (no big arrays), cached by path and mtime."""
        key = (str(path), path.stat().st_mtime_ns)
        if key not in self._gguf_cache:
            if len(self._gguf_cache) > 64:
                self._gguf_cache.clear()
            self._gguf_cache[key] = (read_gguf(path, max_array=0, check_size=False),)
        return self._gguf_cache[key][0]

    @staticmethod
    def _details(config: dict, header, parent: str) -> dict:
        """Details from the config blob, blanks filled from the GGUF header."""
        details = details_from_config(config, parent)
        if header is not None:
            for key, value in details_from_gguf(header, parent).items():
                if not details.get(key):
                    details[key] = value
        return details

    def resolve(self, name: str) -> LocalModel:
        """The model a request names, with every layer's content; what the scheduler loads.
        Every request resolves its model, so the answer is kept for as long as the manifest file
        is the same file, unchanged (blobs never change: they are named by their content)."""
        stored = self.find(name)
        if stored is None:
            raise ModelNotFound(name)
        path = self.manifest_path(stored)
        try:
            st = path.stat()
        except OSError:
            raise ModelNotFound(name) from None
        key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
        spec = self._resolved.get(key)
        if spec is None or not (spec.remote_host or spec.unsupported or spec.model_path.is_file()):
            spec = self._resolve_uncached(name)
            if len(self._resolved) > 256:
                self._resolved.clear()
            self._resolved[key] = spec
        return copy.deepcopy(spec)

    def _resolve_uncached(self, name: str) -> LocalModel:
        try:
            return self._resolve_layers(name)
        except _GONE:  # the model was deleted while its layers were read
            raise ModelNotFound(name) from None

    def _resolve_layers(self, name: str) -> LocalModel:
        stored, manifest, mtime_ns = self._read(name)
        model_layer = manifest.model_layer()
        config = self.config_of(manifest)
        remote = model_layer is None and bool(config.get("remote_host") and config.get("remote_model"))
        tensors = model_layer is None and not remote and tensor_model.is_tensor_model(manifest)
        if model_layer is None and not remote and not tensors:
            raise ModelNotFound(name)
        model_path = self.blobs.path(model_layer.digest) if model_layer else Path()
        if model_layer is not None and not model_path.is_file():
            raise ModelNotFound(name)
        spec = LocalModel(name=stored.display, model_path=model_path, digest=manifest.digest, size=manifest.size,
                          modified_at=_local_time(mtime_ns))
        spec.renderer, spec.parser, spec.requires = (str(config.get(k) or "")
                                                     for k in ("renderer", "parser", "requires"))
        for layer in manifest.layers:
            if layer.media_type != mf.MODEL and not self.blobs.exists(layer.digest):
                raise ModelNotFound(name)
            if layer.media_type in (mf.TEMPLATE, mf.LEGACY_PROMPT):
                spec.template = self._read_layer_text(layer)
            elif layer.media_type == mf.SYSTEM:
                spec.system = self._read_layer_text(layer)
            elif layer.media_type == mf.PARAMS:
                params = self._read_layer_json(layer)
                spec.parameters = params if isinstance(params, dict) else {}
            elif layer.media_type == mf.MESSAGES:
                messages = self._read_layer_json(layer)
                spec.messages = messages if isinstance(messages, list) else []
            elif layer.media_type == mf.LICENSE:
                spec.license.append(self._read_layer_text(layer))
            elif layer.media_type == mf.ADAPTER:
                spec.adapter_paths.append(self.blobs.path(layer.digest))
            elif layer.media_type == mf.PROJECTOR and spec.projector_path is None:
                spec.projector_path = self.blobs.path(layer.digest)
        if tensors:  # kept, listed and shown; never run, and so no capabilities
            hf = tensor_model.json_file(manifest, "config.json", self.blobs.path)
            n_params = tensor_model.parameter_count(tensor_model.tensors(manifest, self.blobs.path))
            spec.details = tensor_model.details(config, hf, n_params)
            spec.unsupported = tensor_model.cannot_run(spec.name)
            return spec
        if remote:
            spec.remote_host, spec.remote_model = config["remote_host"], config["remote_model"]
            spec.details = self._details(config, None, "")
            caps = config.get("capabilities")
            spec.capabilities = list(caps) if isinstance(caps, list) else ["completion"]
            return spec
        if model_layer is None:  # neither remote nor tensors: refused above
            raise ModelNotFound(name)
        try:
            header = self.gguf_header(model_path)
        except (GGUFError, OSError):
            header = None
        spec.details = self._details(config, header, model_layer.from_ or "")
        metadata = header.metadata if header is not None else {}
        if header is not None:
            spec.translation = self._translation(header)
            spec.model_digest, spec.store_root = model_layer.digest, self.root
        embedded_projector = spec.translation is not None and spec.translation.has_projector
        template = spec.template or metadata.get("tokenizer.chat_template")
        spec.capabilities = derive_capabilities(metadata, template,
                                                has_projector=spec.projector_path is not None or embedded_projector,
                                                family=spec.details.get("family", ""))
        return spec

    @staticmethod
    def _translation(header) -> dialect.Translation | None:
        """What a blob in Ollama's own GGUF dialect needs before it loads (None: nothing)."""
        try:
            return dialect.detect(header)
        except dialect.UnsupportedDialect as exc:
            return dialect.Translation(None, error=str(exc))

    def list_models(self) -> list[LocalModel]:
        """Every model, newest first, with what ``/api/tags`` shows (no layer contents)."""
        out = []
        for name, manifest, mtime_ns in self._manifests_with_mtime():
            layer = manifest.model_layer()
            config = self.config_of(manifest)
            header = None
            if layer is not None and not all(config.get(k) for k in ("model_family", "model_type", "file_type")):
                try:
                    header = self.gguf_header(self.blobs.path(layer.digest))
                except (GGUFError, OSError):
                    header = None
            hf = tensor_model.json_file(manifest, "config.json", self.blobs.path) if layer is None else {}
            if layer is None and tensor_model.is_tensor_model(manifest):
                details = tensor_model.details(config, hf, 0)
            else:
                details = self._details(config, header, (layer.from_ or "") if layer else "")
            details.update(self._lengths(config, layer, hf))
            out.append(LocalModel(name=name.display, model_path=self.blobs.path(layer.digest) if layer else Path(),
                                  digest=manifest.digest, size=manifest.size, modified_at=_local_time(mtime_ns),
                                  details=details, remote_host=str(config.get("remote_host") or ""),
                                  remote_model=str(config.get("remote_model") or ""),
                                  capabilities=self._listed_capabilities(name)))
        out.sort(key=lambda m: m.modified_at or datetime.min.astimezone(), reverse=True)
        return out

    list = list_models  # the name the OpenAI routes use

    def _lengths(self, config: dict, layer: mf.Layer | None, hf: dict) -> dict:
        """``context_length`` and ``embedding_length`` as /api/tags reports them (Ollama >= 0.30):
        the config blob's, else the GGUF header's, else a safetensors model's config.json; absent if none."""
        header = None
        if layer is not None and not all(config.get(k) for k in ("context_length", "embedding_length")):
            try:
                header = self.gguf_header(self.blobs.path(layer.digest))
            except (GGUFError, OSError):
                header = None
        info = tensor_model.model_info(hf, 0) if hf else {}
        out = {}
        for key in ("context_length", "embedding_length"):
            value = config.get(key)
            if not (isinstance(value, int) and value > 0) and header is not None:
                value = header.arch_key(key)
            if not (isinstance(value, int) and value > 0):
                value = info.get(f"{info.get('general.architecture')}.{key}")
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                out[key] = value
        return out

    def _listed_capabilities(self, name: ModelName) -> builtins.list[str]:  # list: the method above
        """The capabilities /api/show reports (resolve's, cached as resolve is); none for a model
        whose layers cannot be read."""
        try:
            return self.resolve(name.full).capabilities
        except (ModelNotFound, InvalidManifest, OSError):
            return []


def _local_time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9).astimezone()


def _free_space(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


class Pin:
    """A pin file under ``.a3s-pins``, locked by its owner for as long as it lives; a dead owner's
    pin is unlocked and ignored (and removed) by the next prune."""

    def __init__(self, store: ModelStore, digest_list: Iterable[str] = ()) -> None:
        self._store = store
        self._digests: set[str] = set()
        store._pins_dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(store._pins_dir / f"{os.getpid()}-{uuid.uuid4().hex}", remove_on_release=True)
        with store._store_lock():
            self._lock.acquire()
        self.add(digest_list)

    def add(self, digest_list: Iterable[str]) -> None:
        new = {digests.normalize(d) for d in digest_list} - self._digests
        if not new:
            return
        self._digests |= new
        # Written under the store lock so that a prune sees all of it or none of it; once it is
        # written a blob that still exists stays, and one already pruned is visibly missing.
        with self._store._store_lock(), open(self._lock.path, "w") as f:
            json.dump(sorted(self._digests), f)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> Pin:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
