"""A full disk (issue 16, item 13), simulated: the store's writes fail with ENOSPC after some bytes.

A pull, a copy, a create or a blob upload that runs out of space answers 507 "no space left on
device: <store folder>" (mid-stream: a final error line saying the same), leaves no partial
download and no temporary behind, and the store lists as it did before. Start-up cleaning drops
a partial download that the disk has no room left to finish, whatever its age.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from pathlib import Path

import aiohttp
import pytest

from a3s_power.registry import TransferSettings, download as download_module
from a3s_power.store import ModelStore, blobs as blobs_module, store as store_module
from a3s_power.store.create import import_gguf, prepare_create, run_create
from tests.model_server import ServerThread
from tests.registry_server import FakeRegistry
from tests.tiny_models import write_tiny_llama

MODEL = "application/vnd.ollama.image.model"
SYSTEM = "application/vnd.ollama.image.system"
FAST = TransferSettings(min_part=64 * 1024, parts=4, parallel=4, max_retries=1, backoff_s=0.01, stall_s=2.0,
                        progress_interval_s=0.0, state_interval_s=0.0)


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Disk:
    """How many more bytes the simulated disk takes; ``None``: as many as the real one."""

    def __init__(self) -> None:
        self.left: int | None = None
        self.refused = 0

    def take(self, n: int) -> int:
        """How many of ``n`` bytes fit; records a refusal when not all of them do."""
        if self.left is None:
            return n
        fit = min(n, self.left)
        self.left -= fit
        if fit < n:
            self.refused += 1
        return fit


class _FullFile:
    def __init__(self, f, disk: Disk) -> None:
        self._f, self._disk = f, disk

    def write(self, data) -> int:
        data = bytes(data)
        fit = self._disk.take(len(data))
        if fit:
            self._f.write(data[:fit])
        if fit < len(data):
            raise no_space()
        return fit

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class _FullOs:
    """The ``os`` module as the download code sees it: ``pwrite`` stops when the disk is full."""

    def __init__(self, disk: Disk) -> None:
        self._disk = disk

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        fit = self._disk.take(len(data))
        if fit:
            os.pwrite(fd, data[:fit], offset)
        if fit < len(data):
            raise no_space()
        return fit

    def __getattr__(self, name):
        return getattr(os, name)


@pytest.fixture
def disk(monkeypatch) -> Disk:
    """Every byte the store writes (blobs, manifests, downloads) goes through this disk."""
    disk = Disk()
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _FullFile(f, disk) if any(c in mode for c in "wa+") else f

    monkeypatch.setattr(blobs_module, "open", full_open, raising=False)
    monkeypatch.setattr(download_module, "os", _FullOs(disk))
    return disk


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory) -> bytes:
    # Not the server's base model: these bytes must be downloaded.
    return write_tiny_llama(tmp_path_factory.mktemp("full") / "tiny.gguf", seed=7).read_bytes()


@pytest.fixture
def server(tmp_path, tiny_path):
    with ServerThread(tmp_path / "home", FAST) as srv:
        weights = import_gguf(srv.store, Path(tiny_path))

        async def make():
            plan = prepare_create(srv.store, {"model": "base", "files": {"t.gguf": weights}})
            return [line async for line in run_create(srv.store, plan)]

        assert asyncio.run(make())[-1] == {"status": "success"}
        yield srv


def http(server, method: str, path: str, body=None, data: bytes | None = None) -> tuple[int, bytes]:
    async def go():
        async with aiohttp.ClientSession() as s:
            kwargs = {"json": body} if body is not None else {"data": data}
            async with s.request(method, server.url + path, **kwargs) as r:
                return r.status, await r.read()

    return asyncio.run(go())


def full_message(store: ModelStore) -> str:
    return f"no space left on device: {store.root}"


def leftovers(store: ModelStore) -> list[str]:
    """Anything in the store that is neither a blob nor a manifest nor a lock/pin of ours."""
    found = [p.name for p in store.blobs.dir.iterdir()
             if not (p.name.startswith("sha256-") and len(p.name) == 71)]
    found += [str(p.relative_to(store.manifests_dir)) for p in store.manifests_dir.rglob("*")
              if p.is_file() and p.name.startswith(".")]
    return found


def assert_lists_consistently(server, expected: list[str]) -> None:
    status, raw = http(server, "GET", "/api/tags")
    assert status == 200
    assert sorted(m["name"] for m in json.loads(raw)["models"]) == sorted(expected)
    for name, manifest in server.store.manifests():
        for digest in manifest.digests():
            assert server.store.blobs.exists(digest), f"{name.display} points at a missing blob"


def test_pull_out_of_space_frees_its_partial(server, disk, tiny_bytes):
    with FakeRegistry() as reg:
        reg.add_model("library/tiny", "1", [(MODEL, tiny_bytes), (SYSTEM, b"tiny")])
        name = f"{reg.host}/library/tiny:1"
        disk.left = len(tiny_bytes) // 3  # the download gets a third of the way
        status, raw = http(server, "POST", "/api/pull", {"model": name, "insecure": True, "stream": False})
        assert disk.refused > 0
        assert status == 507, raw
        assert json.loads(raw) == {"error": full_message(server.store)}
        assert leftovers(server.store) == [], "the partial download is removed"
        assert_lists_consistently(server, ["base:latest"])

        # Streaming, the same error ends the stream (Ollama's way: the status is already 200).
        disk.left = len(tiny_bytes) // 2
        status, raw = http(server, "POST", "/api/pull", {"model": name, "insecure": True})
        lines = [json.loads(line) for line in raw.splitlines()]
        assert status == 200 and lines[-1] == {"error": full_message(server.store)}
        assert leftovers(server.store) == []

        # Room again: the pull works, from scratch.
        disk.left = None
        status, raw = http(server, "POST", "/api/pull", {"model": name, "insecure": True, "stream": False})
        assert status == 200 and json.loads(raw) == {"status": "success"}
        assert leftovers(server.store) == []
        assert_lists_consistently(server, ["base:latest", f"{reg.host}/library/tiny:1"])


def test_copy_and_create_out_of_space(server, disk):
    disk.left = 10  # not even a manifest fits
    status, raw = http(server, "POST", "/api/copy", {"source": "base", "destination": "copied"})
    assert status == 507 and json.loads(raw) == {"error": full_message(server.store)}
    assert leftovers(server.store) == []
    assert_lists_consistently(server, ["base:latest"])

    for stream in (False, True):  # the system layer does not fit: before the first line, so a 507 both ways
        disk.left = 10
        status, raw = http(server, "POST", "/api/create",
                           {"model": "made", "from": "base", "system": "x" * 100, "stream": stream})
        assert status == 507 and json.loads(raw) == {"error": full_message(server.store)}
        assert leftovers(server.store) == []
        assert_lists_consistently(server, ["base:latest"])

    data = os.urandom(100_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    disk.left = 50_000
    status, raw = http(server, "POST", f"/api/blobs/{digest}", data=data)
    assert status == 507 and json.loads(raw) == {"error": full_message(server.store)}
    assert not server.store.blobs.exists(digest) and leftovers(server.store) == []

    disk.left = None
    assert http(server, "POST", "/api/copy", {"source": "base", "destination": "copied"})[0] == 200
    assert_lists_consistently(server, ["base:latest", "copied:latest"])


def test_error_names_the_store_folder_only(monkeypatch, tmp_path):
    from a3s_power.store.types import StoreFull

    monkeypatch.setenv("HOME", str(tmp_path))
    assert str(StoreFull(tmp_path / ".ollama" / "models")) == "no space left on device: ~/.ollama/models"
    assert str(StoreFull("/srv/models")) == "no space left on device: /srv/models"


def test_startup_drops_a_partial_the_disk_cannot_finish(tmp_path, monkeypatch):
    """A partial younger than the grace period stays for a resume only while it can finish."""
    store = ModelStore(tmp_path / "models")
    store.blobs.ensure()
    digest = "sha256:" + "ab" * 32
    partial = store.blobs.partial_path(digest)
    with open(partial, "wb") as f:
        f.write(b"x" * 4096)
        f.truncate(50 << 20)  # a 50 MB blob of which 4 KB came in
    state = partial.with_name(partial.name + "-0")
    state.write_text(json.dumps({"N": 0, "Offset": 0, "Size": 50 << 20, "Completed": 4096}))

    store.startup()
    assert partial.exists() and state.exists(), "room to finish: kept for the resume"

    class Usage:
        free = 1 << 20  # 1 MB left: the other 50 MB cannot come in

    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda path: Usage)
    store.startup()
    assert not partial.exists() and not state.exists()
    assert list(store.blobs.dir.iterdir()) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 4 MiB tmpfs, where this test may mount one (root with CAP_SYS_ADMIN, as in CI here)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or 'not permitted'}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_gives_a_clear_error_and_a_consistent_store(small_tmpfs, tmp_path):
    """Not a faked write: a pull bigger than the file system the store is on."""
    big = write_tiny_llama(tmp_path / "big.gguf", n_embd=256, n_ff=1024, n_layer=4, seed=5).read_bytes()
    assert len(big) > 4 << 20
    with FakeRegistry() as reg, ServerThread(small_tmpfs) as server:
        reg.add_model("library/big", "1", [(MODEL, big)])
        status, raw = http(server, "POST", "/api/pull", {"model": f"{reg.host}/library/big:1", "insecure": True,
                                                          "stream": False})
        assert status == 507, raw
        assert json.loads(raw) == {"error": full_message(server.store)}
        assert leftovers(server.store) == [], "the partial download is removed"
        assert_lists_consistently(server, [])
    free = os.statvfs(small_tmpfs)
    assert free.f_bfree * free.f_frsize > 3 << 20, "the space is given back"
