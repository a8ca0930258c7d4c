"""Creating a model: /api/create's structured request (what a Modelfile becomes).

``prepare_create`` checks the request and everything it names before a byte of progress is sent
(errors carry Ollama's HTTP status); ``run_create`` then builds the layers (quantizing on
request), writes the config and, last, the manifest. Layers of the base model are reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import A3SPowerError, InvalidOptionError
from ..hosts import remote_url
from . import convert, digests, manifest as mf
from .details import config_for, remote_config_for
from .gguf import GGUFError, GGUFFile, read_gguf
from .manifest import Layer, Manifest
from .modelfile import MESSAGE_ROLES
from .names import ModelName
from .parameters import UnknownParameter, check_params
from .quantize import DISPLAY, SOURCE_TYPES, estimate_size, normalize_type, quantize
from .store import ModelStore, Pin
from .types import InvalidModelName, ModelNotFound

log = logging.getLogger(__name__)

TEXT_LAYERS = {"template": mf.TEMPLATE, "system": mf.SYSTEM}


class CreateError(A3SPowerError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = self.http_status = status


@dataclass
class CreatePlan:
    name: ModelName
    base_layers: list[Layer] = field(default_factory=list)  # from the parent model, in order
    parent: str = ""
    files: list[tuple[str, str]] = field(default_factory=list)  # (filename, digest) of uploaded GGUFs
    convert_files: list[tuple[str, str]] = field(default_factory=list)  # (path, digest): a SafeTensors model
    convert_dir: Path | None = None  # ``from``: a Hugging Face model folder on this machine
    adapters: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # media type -> content replacing the base's
    licenses: list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    quantize: str | None = None
    requires: str | None = None
    pull_from: str | None = None  # a parent model that must be pulled first
    remote_host: str = ""  # with ``from``: a remote model, ``from`` on that host (engine/remote.py)
    remote_model: str = ""


def _check_template(template: str) -> None:
    if template.count("{{") != template.count("}}") or template.count("{%") != template.count("%}"):
        raise CreateError("template error: unbalanced template delimiters")


def _blob_digest(store: ModelStore, digest: Any, filename: str) -> str:
    try:
        d = digests.normalize(digest)
    except digests.InvalidDigest:
        raise CreateError(f"invalid digest for {filename!r}: {digest!r}") from None
    if not store.blobs.exists(d):
        raise CreateError(f"blob {d} for {filename!r} not found, upload it with /api/blobs first")
    return d


def prepare_create(store: ModelStore, body: dict[str, Any], *, allow_folders: bool = True) -> CreatePlan:
    """``allow_folders``: ``from`` may name a model folder of this machine (the server gives it only to
    clients on this machine: others upload the folder's files as blobs)."""
    raw_name = body.get("model") or body.get("name")
    if not raw_name:
        raise CreateError("model is required")
    try:
        plan = CreatePlan(ModelName.parse(raw_name))
    except InvalidModelName:
        raise CreateError("invalid model name") from None
    files = body.get("files") or {}
    source = body.get("from")
    if not source and not files:
        raise CreateError("neither 'from' or 'files' was specified")
    if not isinstance(files, dict) or not isinstance(body.get("adapters") or {}, dict):
        raise CreateError("'files' and 'adapters' must map file names to digests")
    if source and files:
        raise CreateError("give either 'from' or 'files', not both")
    safetensors = any(str(f).endswith(".safetensors") for f in files)
    for filename, digest in files.items():
        if safetensors:
            _check_relative(filename)
            plan.convert_files.append((filename, _blob_digest(store, digest, filename)))
        else:
            plan.files.append((filename, _blob_digest(store, digest, filename)))
    if safetensors:
        if "config.json" not in files:
            raise CreateError("a SafeTensors model needs its config.json among 'files'")
        _check_convertible(store.blobs.path(dict(plan.convert_files)["config.json"]))
    for filename, digest in (body.get("adapters") or {}).items():
        plan.adapters.append(_blob_digest(store, digest, filename))
    if source and body.get("remote_host"):
        if not isinstance(source, str) or not isinstance(body["remote_host"], str):
            raise CreateError("'from' and 'remote_host' must be strings")
        try:
            plan.remote_host, plan.remote_model = remote_url(body["remote_host"]), source
        except ValueError:
            raise CreateError("bad remote") from None
        source = None  # a model on that host: nothing to read or pull here
    elif source:
        if not isinstance(source, str):
            raise CreateError("'from' must be a model name")
        if (folder := _local_folder(source)) is not None:
            if not allow_folders:
                raise CreateError("a model folder on the server's machine may be named only by a client on that "
                                  "machine; upload its files instead", 403)
            _check_convertible(folder / "config.json")
            plan.convert_dir = folder
            source = None
    if source:
        try:
            stored, base = store.read_manifest(source)
        except (ModelNotFound, InvalidModelName):
            try:
                ModelName.parse(source)
            except InvalidModelName:
                raise CreateError(f"invalid model name {source!r} in 'from'") from None
            plan.pull_from = source
        else:
            plan.base_layers = list(base.layers)
            plan.parent = stored.display
    for key, media_type in TEXT_LAYERS.items():
        if (value := body.get(key)) is not None:
            if not isinstance(value, str):
                raise CreateError(f"'{key}' must be a string")
            if key == "template":
                _check_template(value)
            plan.texts[media_type] = value
    if (lic := body.get("license")) is not None:
        plan.licenses = [lic] if isinstance(lic, str) else list(lic) if isinstance(lic, list) else None
        if plan.licenses is None or not all(isinstance(x, str) for x in plan.licenses):
            raise CreateError("'license' must be a string or a list of strings")
    if (params := body.get("parameters")) is not None:
        if not isinstance(params, dict):
            raise CreateError("'parameters' must be an object")
        try:
            plan.parameters = check_params(params)
        except (UnknownParameter, InvalidOptionError) as exc:
            raise CreateError(str(exc)) from None
    if (messages := body.get("messages")) is not None:
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("role") in (*MESSAGE_ROLES, "tool")
                and isinstance(m.get("content", ""), str) for m in messages):
            raise CreateError('messages must be objects with a role ("system", "user" or "assistant") and content')
        plan.messages = [{"role": m["role"], "content": m.get("content", "")} for m in messages]
    if q := body.get("quantize") or body.get("quantization"):
        try:
            plan.quantize = normalize_type(q)
        except InvalidOptionError as exc:
            raise CreateError(str(exc)) from None
    if isinstance(body.get("requires"), str):
        plan.requires = body["requires"]
    return plan


def _check_relative(filename: str) -> None:
    """A file of a SafeTensors model lands at this path inside a temporary folder: nowhere else."""
    parts = filename.replace("\\", "/").split("/")
    if not filename or filename.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise CreateError(f"invalid file path {filename!r}")


def _check_convertible(config: Path) -> None:
    try:
        convert.check_config(config)
    except (convert.ConvertError, OSError, ValueError) as exc:
        raise CreateError(str(exc) if isinstance(exc, convert.ConvertError) else "config.json is not readable JSON") \
            from None


def _local_folder(source: str) -> Path | None:
    """``from`` naming a folder of this machine (an absolute path, ``~`` or ``./``): a model to convert."""
    if not source.startswith(("/", "~", "./", "../")):
        return None
    path = Path(os.path.expanduser(source))
    if not path.is_dir():
        return None
    if not convert.is_model_dir(path):
        raise CreateError(f"{source}: not a model folder (config.json and .safetensors files)")
    return path


def _status(text: str, **fields) -> dict:
    return {"status": text, **{k: v for k, v in fields.items() if v is not None}}


def _header(store: ModelStore, digest: str) -> GGUFFile:
    try:
        return read_gguf(store.blobs.path(digest), max_array=0)
    except GGUFError as exc:  # named by its blob's file name, not by the store's path
        raise CreateError(f"invalid model file: {str(exc).replace(str(store.blobs.dir) + os.sep, '')}") from None


def _is_projector(header: GGUFFile) -> bool:
    return header.architecture == "clip" or header.metadata.get("general.type") == "mmproj"


def _layer_status(store: ModelStore, digest: str) -> dict:
    verb = "using existing" if store.blobs.exists(digest) else "creating new"
    return _status(f"{verb} layer {digest}")


def _no_room_for(tmp: Path, estimate: int) -> None:
    """llama.cpp does not say why writing failed: a disk without room for the rest is full."""
    try:
        written = tmp.stat().st_size
        free = shutil.disk_usage(tmp.parent).free
    except OSError:
        return
    if free < max(0, estimate - written) or free < (1 << 20):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def _quantize_layer(store: ModelStore, pin: Pin, layer: Layer, qtype: str,
                          interval_s: float) -> AsyncGenerator[dict | Layer, None]:
    src = store.blobs.path(layer.digest)
    header = _header(store, layer.digest)
    if header.file_type not in SOURCE_TYPES:
        raise CreateError(f"quantization is only supported for F16 and F32 models, this one is {header.file_type}")
    label = f"quantizing {header.file_type} model to {DISPLAY[qtype]}"
    estimate = estimate_size(header, qtype)
    # The temporary goes whatever happens: on failure; on cancellation, once the quantization
    # (which cannot be interrupted) has stopped writing it; and a killed process's at the next
    # start, since nobody holds it locked any more (see BlobStore.temp_file).
    with store.blobs.temp_file() as tmp:
        try:
            async for done, total in quantize(src, tmp, qtype, estimate, interval_s=interval_s):
                yield _status(label, digest="0", total=total, completed=done)
            await asyncio.to_thread(read_gguf, tmp, max_array=0)  # a full disk can leave it cut short
        except (A3SPowerError, GGUFError) as exc:
            _no_room_for(tmp, estimate)
            message = str(exc)
            for path, shown in ((tmp, "the quantized model"), (src, digests.short(layer.digest)),
                                (store.root, "the model store")):
                message = message.replace(str(path), shown)
            log.warning("quantizing %s to %s: %s", layer.digest, qtype, exc)
            raise CreateError(f"quantization failed: {message}", 500) from None
        digest = await asyncio.to_thread(digests.sha256_file, tmp)
        pin.add([digest])
        size = tmp.stat().st_size
        store.blobs.adopt_file(tmp, digest)
    yield Layer(mf.MODEL, digest, size)


async def _convert_layer(store: ModelStore, pin: Pin, plan: CreatePlan,
                         interval_s: float) -> AsyncGenerator[dict | Layer, None]:
    """Converts the SafeTensors model (a folder here, or uploaded files linked into a temporary
    folder) into a new F16 GGUF blob, written to a temporary file and renamed into place."""
    with tempfile.TemporaryDirectory(prefix="a3s-power-convert-") as links:
        folder = plan.convert_dir
        if folder is None:
            folder = Path(links)
            for filename, digest in plan.convert_files:
                target = folder / filename
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(store.blobs.path(digest))
        state = {"done": 0, "total": 0}
        cancel = threading.Event()
        with store.blobs.temp_file() as tmp:
            def progress(done: int, total: int) -> None:
                state.update(done=done, total=total)

            task = asyncio.ensure_future(asyncio.to_thread(
                convert.convert_model, folder, tmp, progress=progress, cancel=cancel))
            try:
                yield _status("converting model")
                while not task.done():
                    await asyncio.wait({task}, timeout=interval_s)
                    if not task.done() and state["total"]:
                        yield _status("converting model", total=state["total"], completed=state["done"])
                result = task.result()
            except convert.ConvertError as exc:
                raise CreateError(str(exc).replace(str(folder) + os.sep, "")) from None
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("converting %s: %r", folder, exc)
                raise CreateError(f"conversion failed: {exc}", 500) from None
            finally:
                if not task.done():  # cancelled: the worker stops at its next slice
                    cancel.set()
                    await asyncio.gather(task, return_exceptions=True)
            log.info("converted %s (%s, %d tensors, %s)", folder, result.family, result.tensors, result.file_type)
            digest = await asyncio.to_thread(digests.sha256_file, tmp)
            pin.add([digest])
            size = tmp.stat().st_size
            store.blobs.adopt_file(tmp, digest)
    yield Layer(mf.MODEL, digest, size)


async def run_create(store: ModelStore, plan: CreatePlan, *, progress_interval_s: float = 0.25,
                     pull=None) -> AsyncIterator[dict]:
    """Builds the model; yields Ollama's progress lines. ``pull`` pulls a missing parent."""
    if plan.pull_from is not None:
        if pull is None:
            raise CreateError(f"model '{plan.pull_from}' not found", 404)
        async for line in pull(plan.pull_from):
            if line.get("status") != "success":
                yield line
        stored, base = store.read_manifest(plan.pull_from)
        plan.base_layers, plan.parent = list(base.layers), stored.display
    converted: Layer | None = None
    written = False
    lines = _create_layers(store, plan, progress_interval_s)
    try:
        async for line in lines:
            if isinstance(line, Layer):
                converted = line
            elif line.get("status") == "success":
                written = True
                if converted is not None and plan.quantize:  # the F16 conversion only fed the quantization
                    store.remove_unused([converted.digest])
                yield line
            else:
                yield line
    finally:
        await lines.aclose()  # releases its pin first
        if converted is not None and not written:  # failed or cancelled after converting
            store.remove_unused([converted.digest])


async def _create_layers(store: ModelStore, plan: CreatePlan,
                         progress_interval_s: float) -> AsyncGenerator[dict | Layer, None]:
    converted = None
    with store.pin([layer.digest for layer in plan.base_layers] + [d for _, d in plan.files]
                   + [d for _, d in plan.convert_files] + plan.adapters) as pin:
        layers = list(plan.base_layers)
        if plan.convert_dir is not None or plan.convert_files:
            async with contextlib.aclosing(_convert_layer(store, pin, plan, progress_interval_s)) as items:
                async for item in items:  # closed at once if the client goes: the worker stops
                    if isinstance(item, Layer):
                        converted = item
                    yield item
            if converted is None:  # _convert_layer yields its layer last, or raises
                raise CreateError("the conversion made no model layer", 500)
            layers = [converted]
        if plan.files:
            yield _status("parsing GGUF")
            models: list[Layer] = []
            projectors: list[Layer] = []
            for _filename, digest in plan.files:
                header = await asyncio.to_thread(_header, store, digest)
                (projectors if _is_projector(header) else models).append(
                    Layer(mf.PROJECTOR if _is_projector(header) else mf.MODEL, digest, store.blobs.size(digest)))
            if len(models) != 1:
                raise CreateError(f"expected one model file among 'files', found {len(models)}")
            layers = models + projectors
        model_layer = next((layer for layer in layers if layer.media_type == mf.MODEL), None)
        if model_layer is None and not plan.remote_host:
            raise CreateError("the base model has no weights")
        if plan.parent and model_layer is not None and model_layer.from_ is None:
            model_layer = Layer(mf.MODEL, model_layer.digest, model_layer.size, from_=plan.parent)
            layers = [model_layer if layer.media_type == mf.MODEL else layer for layer in layers]
        if plan.quantize:
            if model_layer is None:
                raise CreateError("a remote model has no weights to quantize")
            quantized = None
            async for item in _quantize_layer(store, pin, model_layer, plan.quantize, progress_interval_s):
                if isinstance(item, Layer):
                    quantized = item
                else:
                    yield item
            if quantized is None:  # _quantize_layer yields its layer last, or raises
                raise CreateError("the quantization made no model layer", 500)
            layers = [quantized if layer is model_layer else layer for layer in layers]
            model_layer = quantized
        else:
            if plan.files:
                yield _status("validating GGUF model")

        def replace(media_type: str, contents: list[bytes]) -> None:
            nonlocal layers
            layers = [layer for layer in layers if layer.media_type != media_type
                      and not (media_type == mf.TEMPLATE and layer.media_type == mf.LEGACY_PROMPT)]
            for data in contents:
                layers.append(store.add_layer(pin, media_type, data))

        statuses = []
        if plan.adapters:
            for digest in plan.adapters:
                header = await asyncio.to_thread(_header, store, digest)
                if header.metadata.get("general.type") not in (None, "adapter"):
                    raise CreateError(f"{digest} is not an adapter")
            layers = [layer for layer in layers if layer.media_type != mf.ADAPTER]
            layers += [Layer(mf.ADAPTER, d, store.blobs.size(d)) for d in plan.adapters]
        for media_type, text in plan.texts.items():
            statuses.append(_layer_status(store, digests.sha256_bytes(text.encode())))
            replace(media_type, [text.encode()])
        if plan.licenses is not None:
            statuses += [_layer_status(store, digests.sha256_bytes(t.encode())) for t in plan.licenses]
            replace(mf.LICENSE, [t.encode() for t in plan.licenses])
        if plan.messages is not None:
            data = json.dumps(plan.messages).encode()
            statuses.append(_layer_status(store, digests.sha256_bytes(data)))
            replace(mf.MESSAGES, [data] if plan.messages else [])
        if plan.parameters is not None:
            merged: dict[str, Any] = {}
            for layer in layers:
                if layer.media_type == mf.PARAMS:
                    try:
                        merged.update(json.loads(store.blobs.path(layer.digest).read_bytes()))
                    except (OSError, ValueError):
                        pass
            merged.update(plan.parameters)
            data = json.dumps(merged).encode()
            statuses.append(_layer_status(store, digests.sha256_bytes(data)))
            replace(mf.PARAMS, [data] if merged else [])
        if model_layer is not None:
            yield _status(f"using existing layer {model_layer.digest}")
        for line in statuses:
            yield line
        if plan.remote_host:
            config = store.add_layer(pin, mf.CONFIG_MEDIA_TYPE, remote_config_for(
                plan.remote_host, plan.remote_model, [layer.digest for layer in layers], requires=plan.requires))
        else:
            if model_layer is None:  # refused above: only a remote model may have no weights
                raise CreateError("the base model has no weights")
            header = await asyncio.to_thread(_header, store, model_layer.digest)
            projector_layer = next((layer for layer in layers if layer.media_type == mf.PROJECTOR), None)
            projector = await asyncio.to_thread(_header, store, projector_layer.digest) if projector_layer else None
            config = store.add_layer(pin, mf.CONFIG_MEDIA_TYPE,
                                     config_for(header, [layer.digest for layer in layers], projector=projector,
                                                requires=plan.requires))
        yield _status("writing manifest")
        store.write_manifest(plan.name, Manifest.build(config, layers))
    yield _status("success")


def import_gguf(store: ModelStore, path: Path) -> str:
    """Copies a GGUF file into the blobs (the CLI's upload, done in-process); returns its digest."""
    if not path.is_file():
        raise CreateError(f"{path}: no such file")
    try:
        read_gguf(path, max_array=0)
    except GGUFError as exc:
        raise CreateError(str(exc)) from None
    digest, _ = store.blobs.import_file(path)
    return digest


