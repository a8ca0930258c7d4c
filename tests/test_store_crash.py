"""``kill -9`` in the middle of a pull, a create, a copy, a delete or a blob upload never leaves a
manifest that points at a missing or partial blob, and a killed pull resumes where it stopped."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from a3s_power.registry import TransferSettings, pull_model
from a3s_power.store import ModelStore
from a3s_power.store.digests import sha256_file
from tests.registry_server import FakeRegistry
from tests.tiny_models import write_tiny_llama

ROOT = Path(__file__).resolve().parent.parent


def assert_consistent(store: ModelStore) -> None:
    for name, manifest in store.manifests():
        for digest in manifest.digests():
            path = store.blobs.path(digest)
            assert path.is_file(), f"{name.display} points at missing {digest}"
            assert sha256_file(path) == digest, f"{name.display} points at a partial or wrong {digest}"


def spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_kill_during_pull_then_resume(tmp_path):
    data = write_tiny_llama(tmp_path / "t.gguf", n_embd=128, n_ff=512, n_layer=4).read_bytes()
    store = ModelStore(tmp_path / "models")
    with FakeRegistry() as reg:
        reg.add_model("library/tiny", "1", [("application/vnd.ollama.image.model", data)])
        digest = next(d for d, b in reg.blobs.items() if b == data)
        reg.faults.throttle_bps = 600_000
        name = f"{reg.host}/library/tiny:1"
        proc = spawn(f"""
            import asyncio
            from a3s_power.registry import TransferSettings, pull_model
            from a3s_power.store import ModelStore
            async def main():
                settings = TransferSettings(min_part=200_000, parts=4, parallel=4, state_interval_s=0.05)
                async for line in pull_model(ModelStore({str(store.root)!r}), {name!r}, insecure=True,
                                             settings=settings):
                    print(line, flush=True)
            asyncio.run(main())
        """)
        partial = store.blobs.partial_path(digest)
        deadline = time.monotonic() + 30
        done = 0
        while time.monotonic() < deadline:
            states = list(partial.parent.glob(partial.name + "-*")) if partial.parent.exists() else []
            done = sum(json.loads(p.read_text())["Completed"] for p in states
                       if p.name.rsplit("-", 1)[1].isdigit() and p.read_text())
            if done > len(data) // 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 0 < done < len(data), "the pull should have been killed half way"
        assert store.find(name) is None, "no manifest before every blob is in"
        assert not store.blobs.exists(digest)
        assert_consistent(store)

        reg.faults.throttle_bps = 0
        reg.log.clear()

        async def again() -> list[dict]:
            settings = TransferSettings(min_part=200_000, parts=4, parallel=4, backoff_s=0.01)
            return [line async for line in pull_model(store, name, insecure=True, settings=settings)]

        lines = asyncio.run(again())
        fetched = [r for r in reg.requests_for(digest) if r.method == "GET" and r.range != "bytes=0-0"]
    assert lines[-1]["status"] == "success"
    spans = [tuple(int(x) for x in r.range.split("=")[1].split("-")) for r in fetched]
    refetched = sum(end - start + 1 for start, end in spans)
    assert refetched <= len(data) - done, "only the bytes not yet on disk are fetched again"
    assert any(start % 200_000 for start, _ in spans), "some part resumed in its middle"
    assert store.blobs.path(digest).read_bytes() == data
    assert_consistent(store)


def test_kill_during_create_with_quantize(tmp_path):
    src = write_tiny_llama(tmp_path / "t.gguf", n_embd=256, n_ff=512, n_layer=4)
    store = ModelStore(tmp_path / "models")
    code = f"""
        import asyncio, sys
        from pathlib import Path
        from a3s_power.store import ModelStore
        from a3s_power.store.create import import_gguf, prepare_create, run_create
        store = ModelStore({str(store.root)!r})
        digest = import_gguf(store, Path({str(src)!r}))
        async def main():
            for i in range(50):
                plan = prepare_create(store, {{"model": f"made:{{i}}", "files": {{"t.gguf": digest}},
                                               "quantize": "q8_0" if i % 2 else "q4_0",
                                               "system": f"model {{i}}"}})
                async for line in run_create(store, plan, progress_interval_s=0.01):
                    pass
                print(i, flush=True)
        asyncio.run(main())
    """
    for delay in (0.2, 1.0):
        proc = spawn(code)
        time.sleep(delay + 1.0)  # interpreter and _core start-up, then some creates
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_consistent(store)
    made = [n for n in store.names() if n.model == "made"]
    assert made, "some creates should have finished"
    for name in made:
        model = store.resolve(name.display)
        assert model.details["quantization_level"] in ("Q8_0", "Q4_0")
    # Start-up pruning (grace 0 here) removes the killed create's leftovers, never a used blob.
    store.prune(grace_s=0)
    assert_consistent(store)
    leftovers = [p.name for p in store.blobs.dir.iterdir() if not p.name.startswith("sha256-") or "-" in p.name[7:]]
    assert leftovers == []


def test_kill_during_copy_delete_and_blob_upload_then_restart(tmp_path):
    """A process copying, deleting and receiving blobs (as /api/copy, /api/delete and /api/blobs do)
    killed at several moments: every manifest left points at whole blobs, no half-written file is
    visible as a blob or a manifest, and a restart (start-up cleaning) leaves only what is used."""
    src = write_tiny_llama(tmp_path / "t.gguf", n_embd=128, n_ff=256, n_layer=2)
    store = ModelStore(tmp_path / "models")
    code = f"""
        import asyncio, hashlib, os
        from pathlib import Path
        from a3s_power.store import ModelStore
        from a3s_power.store.create import import_gguf, prepare_create, run_create
        store = ModelStore({str(store.root)!r})
        digest = import_gguf(store, Path({str(src)!r}))
        async def main():
            plan = prepare_create(store, {{"model": "base", "files": {{"t.gguf": digest}}}})
            async for _ in run_create(store, plan):
                pass
            for i in range(10_000):
                store.copy("base", f"copy{{i}}")
                if i:
                    store.delete(f"copy{{i - 1}}")
                data = os.urandom(3 << 20)  # a blob as /api/blobs receives it, in chunks
                async def chunks():
                    for at in range(0, len(data), 1 << 18):
                        yield data[at:at + (1 << 18)]
                await store.blobs.receive(chunks(), "sha256:" + hashlib.sha256(data).hexdigest())
                print(i, flush=True)
        asyncio.run(main())
    """
    for delay in (0.5, 1.3, 2.1):
        proc = spawn(code)
        time.sleep(1.5 + delay)  # interpreter start-up, then some rounds
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_consistent(store)
    names = {n.display for n in store.names()}
    assert any(n.startswith("copy") for n in names), "some copies should have been made"
    # No temporary is visible as a blob: every sha256-named file holds what its name says.
    for blob in store.blobs.dir.glob("sha256-*"):
        if "-" not in blob.name[7:]:
            assert sha256_file(blob) == "sha256:" + blob.name[7:]
    restarted = ModelStore(tmp_path / "models")
    restarted.prune(grace_s=0)
    assert_consistent(restarted)
    used = {restarted.blobs.path(d).name for _, m in restarted.manifests() for d in m.digests()}
    assert {p.name for p in restarted.blobs.dir.iterdir()} == used
