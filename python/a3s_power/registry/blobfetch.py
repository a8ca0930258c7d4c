"""Getting one blob into the store: lock, download (resuming), verify, commit.

A per-digest lock file makes concurrent pulls of the same blob (in this process or another) wait
for one download instead of writing the same partial file twice. The blob's final name appears
only after its sha256 matched; a mismatch removes the partial data so the next try starts clean.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from ..store import digests
from ..store.blobs import BlobStore, DigestMismatch
from ..store.locks import FileLock
from .download import PartialFile, Source, download
from .settings import TransferSettings


def lock_for(blobs: BlobStore, digest: str) -> FileLock:
    return FileLock(blobs.dir / (digests.filename(digest) + "-partial.lock"), remove_on_release=True)


async def fetch_blob(session: aiohttp.ClientSession, blobs: BlobStore, digest: str, size: int, source: Source,
                     settings: TransferSettings, on_bytes: Callable[[int], None]) -> bool:
    """Makes sure the blob is in the store; returns False if it already was (a cache hit)."""
    digest = digests.normalize(digest)
    if blobs.exists(digest):
        return False
    blobs.ensure()
    async with lock_for(blobs, digest):
        if blobs.exists(digest):  # another pull finished it while we waited
            return False
        partial = PartialFile(blobs.partial_path(digest), size)
        await download(session, source, partial, settings, on_bytes)
        actual = await asyncio.to_thread(digests.sha256_file, partial.data_path)
        if actual != digest:
            partial.discard()
            raise DigestMismatch(digest, actual,
                                 f"digest mismatch, file must be downloaded again: want {digest}, got {actual}")
        blobs.adopt_file(partial.data_path, digest)
        partial.discard_state()
    return True
