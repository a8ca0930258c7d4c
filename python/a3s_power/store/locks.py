"""Advisory file locks, so that several servers (or a server and a CLI) can share one store.

``flock`` locks belong to an open file description, so two opens in the same process exclude
each other just as two processes do, and a killed process's locks vanish with it. A lock file is
removed by its holder on release; whoever opens it checks afterwards that the path still names
the file it locked, so a lock taken on an already-unlinked file is never trusted.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path


class FileLock:
    def __init__(self, path: Path, *, remove_on_release: bool = False) -> None:
        self.path = path
        self._remove = remove_on_release
        self._fd: int | None = None

    def _try_once(self, blocking: bool) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # the previous holder removed it between our open and our lock: again

    def acquire(self) -> None:
        self._try_once(blocking=True)

    def try_acquire(self) -> bool:
        return self._try_once(blocking=False)

    async def acquire_async(self, poll_s: float = 0.05) -> None:
        """Waits without blocking the event loop."""
        while not self._try_once(blocking=False):
            await asyncio.sleep(poll_s)

    def release(self) -> None:
        if self._fd is None:
            return
        if self._remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    async def __aenter__(self) -> FileLock:
        await self.acquire_async()
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """Whether some live holder has ``path`` locked (a file nobody holds is free)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
