"""Content-addressed blobs under ``<root>/blobs/sha256-<hex>``.

A blob's final name only ever appears through ``os.replace`` of a temporary file whose bytes were
hashed and matched, so a file named for a digest always holds exactly those bytes. Writing a blob
that exists already keeps the existing file (deduplication).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import A3SPowerError
from . import digests
from .locks import FileLock

_BLOB_FILE = re.compile(r"sha256-[0-9a-f]{64}")
TEMP_PREFIX = ".tmp-"


class DigestMismatch(A3SPowerError):
    def __init__(self, expected: str, actual: str, message: str | None = None) -> None:
        super().__init__(message or f'digest mismatch, expected "{expected}", got "{actual}"')
        self.expected = expected
        self.actual = actual


class BlobNotFound(A3SPowerError):
    def __init__(self, digest: str) -> None:
        super().__init__(f'blob "{digest}" not found')
        self.digest = digest


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(target: Path, data: bytes, mode: int | None = None) -> None:
    """Writes a small file whole or not at all: a temporary beside it, synced, then renamed over it."""
    for attempt in range(8):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{TEMP_PREFIX}", dir=target.parent)
            break
        except FileNotFoundError:  # a delete removed the (empty) folder between the two: again
            if attempt == 7:
                raise
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs"
        self.lock_path = root / ".a3s-store.lock"  # the store-wide lock (see ModelStore)

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    # --- names -------------------------------------------------------------------------------

    def path(self, digest: str) -> Path:
        return self.dir / digests.filename(digest)

    def partial_path(self, digest: str) -> Path:
        return self.dir / (digests.filename(digest) + "-partial")

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digests.normalize(digest)) from None

    def digests(self) -> list[str]:
        """Every complete blob on disk."""
        if not self.dir.is_dir():
            return []
        return ["sha256:" + p.name[7:] for p in self.dir.iterdir() if _BLOB_FILE.fullmatch(p.name)]

    # --- writing -----------------------------------------------------------------------------

    @contextmanager
    def temp_file(self) -> Iterator[Path]:
        """A fresh file in the blobs folder (same file system, so it can be renamed into place).

        It stays locked (``flock``) for as long as it is in use, so start-up cleaning removes a
        killed process's temporary at once, of any age, and never one that is being written. It
        is made under the store lock, which cleaning holds: it is never seen unlocked."""
        self.ensure()
        with FileLock(self.lock_path):
            fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.dir)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BaseException:
                os.close(fd)
                Path(name).unlink(missing_ok=True)
                raise
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)

    def commit(self, tmp: Path, digest: str, *, verify: bool = True) -> bool:
        """Moves a finished temporary file into place under ``digest``; True if it was new.

        With ``verify`` the bytes are hashed first and a mismatch raises DigestMismatch.
        """
        digest = digests.normalize(digest)
        if verify:
            actual = digests.sha256_file(tmp)
            if actual != digest:
                raise DigestMismatch(digest, actual)
        target = self.path(digest)
        if target.is_file():
            tmp.unlink(missing_ok=True)
            return False
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(self.dir)
        return True

    def write_bytes(self, data: bytes) -> str:
        """Stores small content (a config, a template, parameters); returns its digest."""
        digest = digests.sha256_bytes(data)
        if self.exists(digest):
            return digest
        with self.temp_file() as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
            self.commit(tmp, digest, verify=False)
        return digest

    def import_file(self, src: Path) -> tuple[str, int]:
        """Copies a file into the store, hashing as it copies; returns (digest, size)."""
        h = hashlib.sha256()
        size = 0
        with self.temp_file() as tmp:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while block := fin.read(digests.CHUNK):
                    h.update(block)
                    fout.write(block)
                    size += len(block)
            digest = "sha256:" + h.hexdigest()
            self.commit(tmp, digest, verify=False)
        return digest, size

    def adopt_file(self, src: Path, digest: str) -> bool:
        """Renames a file of ours (already hashed to ``digest``) into place, without copying."""
        return self.commit(src, digest, verify=False)

    async def receive(self, chunks: AsyncIterator[bytes], digest: str) -> bool:
        """Writes an uploaded stream as ``digest``; DigestMismatch (and nothing kept) if it differs."""
        digest = digests.normalize(digest)
        h = hashlib.sha256()
        with self.temp_file() as tmp:
            with open(tmp, "wb") as f:
                async for block in chunks:
                    h.update(block)
                    f.write(block)
            actual = "sha256:" + h.hexdigest()
            if actual != digest:
                raise DigestMismatch(digest, actual)
            return self.commit(tmp, digest, verify=False)

    def remove(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
            return True
        except FileNotFoundError:
            return False
