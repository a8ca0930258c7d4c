"""Resumable, parallel, ranged downloads into a partial file.

The data goes to ``<blob>-partial`` (sized to the whole blob up front, sparse) and each part's
progress to ``<blob>-partial-<N>`` as ``{"N","Offset","Size","Completed"}`` (Ollama's layout), so
an interrupted download, even a killed process's, resumes with HTTP ``Range`` where it stopped.
A part that receives nothing for ``stall_s`` is dropped and re-requested; other failures are
retried with exponential backoff. Verifying and committing the bytes is the caller's business.

A download that fails keeps its partial file for the next pull to resume, unless the disk ran out
of space or has no room left to finish it: then the partial is removed, giving the space back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ..store.types import is_no_space
from .errors import RegistryError
from .settings import TransferSettings
from .transport import RETRY_STATUSES, USER_AGENT

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16

# (url, extra headers) for a request; called again after a failure so auth can be renewed.
Source = Callable[[], Awaitable[tuple[str, dict[str, str]]]]


@dataclass
class Part:
    n: int
    offset: int
    size: int
    completed: int = 0

    def to_json(self) -> dict:
        return {"N": self.n, "Offset": self.offset, "Size": self.size, "Completed": self.completed}


class _Retry(Exception):
    pass


class _Stalled(Exception):
    pass


class PartialFile:
    """The on-disk state of one download."""

    def __init__(self, data_path: Path, total: int) -> None:
        self.data_path = data_path
        self.total = total

    def state_path(self, n: int) -> Path:
        return self.data_path.with_name(f"{self.data_path.name}-{n}")

    def state_files(self, *, temporaries: bool = False) -> list[Path]:
        """``<data>-<N>``, and with ``temporaries`` the ``<data>-<N>.tmp`` a save leaves when it fails."""
        prefix = self.data_path.name + "-"
        try:
            names = [p for p in self.data_path.parent.iterdir() if p.name.startswith(prefix)]
        except FileNotFoundError:
            return []
        out = []
        for p in names:
            rest = p.name[len(prefix):]
            if rest.isdigit() or (temporaries and rest.endswith(".tmp") and rest[:-4].isdigit()):
                out.append(p)
        return out

    def load(self) -> list[Part] | None:
        """The saved parts, if they describe this download completely; else None."""
        if not self.data_path.is_file() or self.data_path.stat().st_size != self.total:
            return None
        parts = []
        for path in self.state_files():
            try:
                d = json.loads(path.read_text())
                parts.append(Part(int(d["N"]), int(d["Offset"]), int(d["Size"]), int(d["Completed"])))
            except (OSError, ValueError, KeyError, TypeError):
                return None
        parts.sort(key=lambda p: p.offset)
        position = 0
        for p in parts:
            if p.offset != position or not 0 <= p.completed <= p.size:
                return None
            position += p.size
        return parts if parts and position == self.total else None

    def plan(self, part_size: int) -> list[Part]:
        self.discard()
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.data_path, "wb") as f:
            f.truncate(self.total)
        parts = [Part(n, offset, min(part_size, self.total - offset))
                 for n, offset in enumerate(range(0, self.total, part_size))] or [Part(0, 0, 0)]
        for p in parts:
            self.save(p)
        return parts

    def save(self, part: Part) -> None:
        path = self.state_path(part.n)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(part.to_json()))
        os.replace(tmp, path)

    def discard_state(self) -> None:
        for path in self.state_files(temporaries=True):
            path.unlink(missing_ok=True)

    def can_finish(self) -> bool:
        """Whether the disk has room for the bytes still missing (the data file is sparse)."""
        try:
            st = self.data_path.stat()
            free = shutil.disk_usage(self.data_path.parent).free
        except OSError:
            return False
        return free > max(0, st.st_size - getattr(st, "st_blocks", 0) * 512)

    def discard(self) -> None:
        self.discard_state()
        self.data_path.unlink(missing_ok=True)


async def download(session: aiohttp.ClientSession, source: Source, partial: PartialFile,
                   settings: TransferSettings, on_bytes: Callable[[int], None]) -> None:
    """Fills ``partial`` from ``source``, resuming what an earlier attempt left; ``on_bytes``
    hears about every byte, including those already on disk (once, at the start). On failure the
    partial stays for a resume only if the disk has room to finish it."""
    try:
        await _download(session, source, partial, settings, on_bytes)
    except BaseException as exc:
        if is_no_space(exc) or not partial.can_finish():
            log.info("%s: removing the partial download (%s)", partial.data_path.name,
                     "no space left on device" if is_no_space(exc) else "no room to finish it")
            partial.discard()
        raise


async def _download(session: aiohttp.ClientSession, source: Source, partial: PartialFile,
                    settings: TransferSettings, on_bytes: Callable[[int], None]) -> None:
    parts = partial.load()
    if parts is None:
        parts = partial.plan(settings.part_size(partial.total))
    else:
        log.info("resuming %s at %d of %d bytes", partial.data_path.name, sum(p.completed for p in parts),
                 partial.total)
    already = sum(p.completed for p in parts)
    if already:
        on_bytes(already)
    fd = os.open(partial.data_path, os.O_WRONLY)
    try:
        limit = asyncio.Semaphore(settings.parallel)

        async def run(part: Part) -> None:
            async with limit:
                await _fetch_part(session, source, part, fd, partial, settings, on_bytes)

        tasks = [asyncio.ensure_future(run(p)) for p in parts if p.completed < p.size]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for p in parts:
                partial.save(p)
    finally:
        os.close(fd)


async def _fetch_part(session: aiohttp.ClientSession, source: Source, part: Part, fd: int, partial: PartialFile,
                      settings: TransferSettings, on_bytes: Callable[[int], None]) -> None:
    failures = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.stall_s)
    while part.completed < part.size:
        start = part.offset + part.completed
        end = part.offset + part.size - 1
        received = 0
        try:
            url, headers = await source()
            headers = {"User-Agent": USER_AGENT, **headers, "Range": f"bytes={start}-{end}"}
            async with session.get(url, headers=headers, timeout=timeout) as resp:
                if resp.status == 206:
                    skip = 0
                    content_range = resp.headers.get("Content-Range", "")
                    if content_range and not content_range.replace("bytes ", "").startswith(f"{start}-"):
                        raise _Retry(f"server answered range {content_range!r} to a request for {start}-{end}")
                elif resp.status == 200:
                    skip = start  # the server ignored Range and sent the whole blob
                elif resp.status in RETRY_STATUSES:
                    raise _Retry(f"HTTP {resp.status}")
                else:
                    raise RegistryError(f"download failed: HTTP {resp.status} {resp.reason}", resp.status)
                last_save = time.monotonic()
                while part.completed < part.size:
                    try:
                        chunk = await resp.content.read(READ_CHUNK)
                    except asyncio.TimeoutError:
                        raise _Stalled() from None
                    if not chunk:
                        raise _Retry("connection closed before the part was complete")
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk = chunk[dropped:]
                        skip -= dropped
                        if not chunk:
                            continue
                    chunk = chunk[:part.size - part.completed]
                    os.pwrite(fd, chunk, part.offset + part.completed)
                    part.completed += len(chunk)
                    received += len(chunk)
                    on_bytes(len(chunk))
                    if time.monotonic() - last_save >= settings.state_interval_s:
                        partial.save(part)
                        last_save = time.monotonic()
        except _Stalled:
            log.info("part %d of %s stalled, retrying", part.n, partial.data_path.name)
            partial.save(part)
            if received == 0:
                failures += 1  # a stall that got nothing at all counts, so a dead source ends
                if failures > settings.max_retries:
                    raise RegistryError(f"download stalled: no data for {settings.stall_s:g}s") from None
            continue
        except (_Retry, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            partial.save(part)
            failures += 1
            if failures > settings.max_retries:
                raise RegistryError(f"download failed after {settings.max_retries} retries: {exc}") from None
            log.info("part %d of %s: %s; retry %d", part.n, partial.data_path.name, exc or type(exc).__name__,
                     failures)
            await asyncio.sleep(settings.backoff_s * 2 ** (failures - 1))
    partial.save(part)
