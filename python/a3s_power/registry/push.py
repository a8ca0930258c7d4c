"""Pushing a model over the registry upload protocol.

For each layer and the config: ``HEAD`` the blob (present: skip), ``POST`` an upload (with
``mount``/``from`` when the layer came from another repository: a 201 means it was mounted),
``PATCH`` the bytes in chunks (a 307 sends a chunk straight to storage with ``PUT``), then ``PUT``
with ``?digest=``. Last, ``PUT`` the manifest. Progress: ``retrieving manifest``,
``pushing <12 hex>`` with total and completed, ``pushing manifest``, ``success``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp

from ..store import digests
from ..store.manifest import MANIFEST_MEDIA_TYPE, Layer
from ..store.names import ModelName
from ..store.store import ModelStore
from .errors import RegistryError
from .progress import LayerProgress, status, while_running
from .pull import _session
from .settings import TransferSettings
from .transport import RegistryTransport, error_text


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _location(resp: aiohttp.ClientResponse, base: str) -> str:
    where = resp.headers.get("Docker-Upload-Location") or resp.headers.get("Location")
    if not where:
        raise RegistryError("registry gave no upload location")
    return urljoin(base, where)


async def _file_slice(path: Path, start: int, length: int, on_bytes: Callable[[int], None]):
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            block = f.read(min(1 << 20, left))
            if not block:
                break
            left -= len(block)
            on_bytes(len(block))
            yield block


def _md5_of(path: Path, start: int, length: int) -> bytes:
    """A chunk's MD5: the etag of the finished upload is built from them, as Ollama's is."""
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0 and (block := f.read(min(1 << 20, left))):
            md5.update(block)
            left -= len(block)
    return md5.digest()


async def upload_blob(transport: RegistryTransport, base: str, name: ModelName, layer: Layer, path: Path,
                      settings: TransferSettings, on_bytes: Callable[[int], None]) -> None:
    blob_url = f"{base}/v2/{name.repository}/blobs/{layer.digest}"
    resp = await transport.open("HEAD", blob_url)
    resp.release()
    if resp.status == 200:
        on_bytes(layer.size)
        return
    start_url = f"{base}/v2/{name.repository}/blobs/uploads/"
    if layer.from_:
        try:
            source_repo = ModelName.parse(layer.from_).repository
            start_url = _with_query(start_url, mount=layer.digest, **{"from": source_repo})
        except ValueError:
            pass
    resp = await transport.open("POST", start_url, headers={"Content-Length": "0"})
    async with resp:
        if resp.status == 201:  # mounted from another repository
            on_bytes(layer.size)
            return
        if resp.status not in (200, 202):
            raise RegistryError(f"upload {digests.short(layer.digest)}: {await error_text(resp)}", resp.status)
        location = _location(resp, start_url)
    md5s: list[bytes] = []
    offset = 0
    while offset < layer.size or (layer.size == 0 and offset == 0 and not md5s):
        length = min(settings.upload_chunk, layer.size - offset)
        md5 = _md5_of(path, offset, length)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                   "Content-Range": f"{offset}-{offset + length - 1}", "X-Redirect-Uploads": "1"}
        resp = await transport.open("PATCH", location, headers=headers, allow_redirects=False, retries=0,
                                    data=_file_slice(path, offset, length, on_bytes))
        async with resp:
            if resp.status == 307 and resp.headers.get("Location"):
                direct = urljoin(location, resp.headers["Location"])
                put = await transport.open("PUT", direct, auth=False, retries=0,
                                           headers={"Content-Length": str(length)},
                                           data=_file_slice(path, offset, length, lambda n: None))
                async with put:
                    if put.status >= 300:
                        raise RegistryError(f"upload {digests.short(layer.digest)}: {await error_text(put)}",
                                            put.status)
            elif resp.status not in (200, 201, 202, 204):
                raise RegistryError(f"upload {digests.short(layer.digest)}: {await error_text(resp)}", resp.status)
            else:
                location = _location(resp, location) if (resp.headers.get("Location") or
                                                         resp.headers.get("Docker-Upload-Location")) else location
        md5s.append(md5)
        offset += length
        if length == 0:
            break
    etag = f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(md5s)}"
    resp = await transport.open("PUT", _with_query(location, digest=layer.digest, etag=etag),
                                headers={"Content-Length": "0"})
    async with resp:
        if resp.status not in (200, 201, 204):
            raise RegistryError(f"upload {digests.short(layer.digest)}: {await error_text(resp)}", resp.status)


async def push_model(store: ModelStore, name_text: str, *, insecure: bool = False,
                     session: aiohttp.ClientSession | None = None,
                     settings: TransferSettings | None = None) -> AsyncIterator[dict]:
    settings = settings or TransferSettings()
    name = ModelName.parse(name_text)
    yield status("retrieving manifest")
    stored, manifest = store.read_manifest(name)
    base = name.base_url(insecure)
    async with _session(session) as http:
        transport = RegistryTransport(http, settings)
        with store.pinned(manifest.digests()):
            for layer in [*manifest.layers, manifest.config]:
                path = store.blobs.path(layer.digest)
                if not path.is_file():
                    raise RegistryError(f"blob {layer.digest} of {stored.display} is missing from the store")
                progress = LayerProgress(f"pushing {digests.short(layer.digest)}", layer.digest, layer.size,
                                         settings.progress_interval_s)
                async for line in while_running(upload_blob(transport, base, name, layer, path, settings,
                                                            progress.add), progress):
                    yield line
        yield status("pushing manifest")
        url = f"{base}/v2/{name.repository}/manifests/{name.tag}"
        resp = await transport.open("PUT", url, data=manifest.raw, headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        async with resp:
            if resp.status not in (200, 201, 202, 204):
                raise RegistryError(f"push manifest: {await error_text(resp)}", resp.status)
    yield status("success")
