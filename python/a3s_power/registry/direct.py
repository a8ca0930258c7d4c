"""Pulling a GGUF file from a plain URL (``https://…/model.gguf``), with the same resume,
retries and verification as registry pulls, then making a model of it.

The digest is unknown until the bytes are in, so the partial file is named after the URL
(``url-<hash>-partial``); a ``.source`` file next to it remembers the URL, size and ETag, and a
changed remote file restarts the download. A name given by the caller (the built-in registry's)
is used; otherwise the name comes from the URL: ``<host>/<namespace>/<file stem>:latest``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from ..store import digests, manifest as mf
from ..store.blobs import BlobStore, DigestMismatch
from ..store.details import config_for
from ..store.gguf import GGUFError, read_gguf
from ..store.locks import FileLock
from ..store.names import DEFAULT_NAMESPACE, DEFAULT_TAG, ModelName
from ..store.store import ModelStore, Pin
from .builtin import KnownModel
from .download import PartialFile, download
from .errors import RegistryError
from .progress import LayerProgress, status, while_running
from .settings import TransferSettings
from .transport import USER_AGENT


def name_for_url(url: str) -> ModelName:
    parts = urlsplit(url)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    stem = re.sub(r"[^A-Za-z0-9\-_.]", "-", segments[-1].rsplit(".", 1)[0]).strip(".-") or "model"
    namespace = segments[0] if len(segments) > 1 and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9\-_]{0,79}", segments[0]) \
        else DEFAULT_NAMESPACE
    name = ModelName(parts.netloc.lower(), namespace, stem.lower()[:80], DEFAULT_TAG)
    name.check(url)
    return name


def _partial_path(blobs: BlobStore, url: str) -> Path:
    return blobs.dir / f"url-{hashlib.sha256(url.encode()).hexdigest()[:32]}-partial"


async def _probe(http: aiohttp.ClientSession, url: str, settings: TransferSettings) -> tuple[int, str]:
    """The file's size and ETag (HEAD, following redirects)."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.stall_s)
    for attempt in range(settings.max_retries + 1):
        try:
            async with http.head(url, allow_redirects=True, headers={"User-Agent": USER_AGENT},
                                 timeout=timeout) as resp:
                if resp.status == 404:
                    raise RegistryError(f"pull {url}: file does not exist", 404)
                if resp.status >= 500 and attempt < settings.max_retries:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                if resp.status >= 400:
                    raise RegistryError(f"pull {url}: HTTP {resp.status} {resp.reason}", resp.status)
                if resp.content_length is None:
                    raise RegistryError(f"pull {url}: the server does not say how large the file is")
                return resp.content_length, resp.headers.get("ETag", "")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            if attempt >= settings.max_retries:
                raise RegistryError(f"pull {url}: {exc or type(exc).__name__}") from None
            await asyncio.sleep(settings.backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


async def _download_url(http: aiohttp.ClientSession, store: ModelStore, pin: Pin, url: str,
                        settings: TransferSettings, progress: LayerProgress, expected: str | None) -> str:
    """Downloads into the store (pinned); returns the blob's digest."""
    blobs = store.blobs
    size, etag = await _probe(http, url, settings)
    progress.total = size
    blobs.ensure()
    data_path = _partial_path(blobs, url)
    async with FileLock(data_path.with_name(data_path.name + ".lock"), remove_on_release=True):
        if expected:
            pin.add([expected])
            if blobs.exists(expected):
                return expected
        partial = PartialFile(data_path, size)
        source_file = data_path.with_name(data_path.name + ".source")
        identity = {"url": url, "size": size, "etag": etag}
        try:
            same = json.loads(source_file.read_text()) == identity
        except (OSError, ValueError):
            same = False
        if not same:
            partial.discard()
            source_file.write_text(json.dumps(identity))

        async def source() -> tuple[str, dict[str, str]]:
            return url, {}

        try:
            await download(http, source, partial, settings, progress.add)
        except BaseException:
            if not data_path.exists():  # the download gave its partial up (no space): its record goes too
                source_file.unlink(missing_ok=True)
            raise
        digest = await asyncio.to_thread(digests.sha256_file, data_path)
        if expected and digest != expected:
            partial.discard()
            source_file.unlink(missing_ok=True)
            raise DigestMismatch(expected, digest,
                                 f"digest mismatch, file must be downloaded again: want {expected}, got {digest}")
        try:
            await asyncio.to_thread(read_gguf, data_path, max_array=0)
        except GGUFError as exc:
            partial.discard()
            source_file.unlink(missing_ok=True)
            raise RegistryError(f"pull {url}: {exc}") from None
        pin.add([digest])
        blobs.adopt_file(data_path, digest)
        partial.discard_state()
        source_file.unlink(missing_ok=True)
        return digest


async def pull_url(store: ModelStore, url: str, http: aiohttp.ClientSession, settings: TransferSettings, *,
                   name: ModelName | None = None, entry: KnownModel | None = None) -> AsyncIterator[dict]:
    name = name or name_for_url(url)
    filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    progress = LayerProgress(f"pulling {filename}", "", 0, settings.progress_interval_s)
    result: list[str] = []
    with store.pin() as pin:

        async def work() -> None:
            result.append(await _download_url(http, store, pin, url, settings, progress,
                                               entry.sha256 if entry else None))

        async for line in while_running(work(), progress):
            line.pop("digest", None)
            yield line
        for line in write_model(store, pin, name, result[0], entry):
            yield line
    yield status("success")


def write_model(store: ModelStore, pin: Pin, name: ModelName, model_digest: str,
                entry: KnownModel | None) -> Iterator[dict]:
    """Makes a model of a GGUF blob already in the store (and pinned): the entry's template,
    system, license and parameters as layers, a config, the manifest; yields the status lines."""
    yield status("verifying sha256 digest")
    layers = [mf.Layer(mf.MODEL, model_digest, store.blobs.size(model_digest))]
    if entry is not None:
        texts = ((mf.TEMPLATE, entry.template), (mf.SYSTEM, entry.system), (mf.LICENSE, entry.license),
                 (mf.PARAMS, json.dumps(entry.parameters) if entry.parameters else None))
        layers += [store.add_layer(pin, media_type, text.encode()) for media_type, text in texts if text]
    header = read_gguf(store.blobs.path(model_digest), max_array=0)
    config = store.add_layer(pin, mf.CONFIG_MEDIA_TYPE, config_for(header, [layer.digest for layer in layers]))
    yield status("writing manifest")
    store.write_manifest(name, mf.Manifest.build(config, layers))
