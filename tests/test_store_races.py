"""Deletes racing everything else (issue 16, item 12): files and folders of the store vanish while
others list, read, copy, delete and clean it. Nothing may answer 500; a model deleted by someone
else is a 404, as Ollama answers; the start-up cleanup never fails because a file went away."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from a3s_power.store import ModelStore
from a3s_power.store.create import import_gguf, prepare_create, run_create
from a3s_power.store.types import ModelNotFound
from tests.model_server import ServerThread

CHURN_S = 3.0  # how long the threads churn; every race below shows within this on two cores


def create(store: ModelStore, body: dict) -> None:
    async def run():
        return [line async for line in run_create(store, prepare_create(store, body))]

    assert asyncio.run(run())[-1] == {"status": "success"}


def assert_consistent(store: ModelStore) -> None:
    for name, manifest in store.manifests():
        for digest in manifest.digests():
            assert store.blobs.exists(digest), f"{name.display} points at a missing blob {digest}"


class Http:
    """One keep-alive connection per thread."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def __call__(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def server(tmp_path, tiny_path):
    with ServerThread(tmp_path / "home") as srv:
        weights = import_gguf(srv.store, Path(tiny_path))
        create(srv.store, {"model": "base", "files": {"t.gguf": weights}, "system": "base"})
        yield srv


def run_threads(targets: list) -> list[BaseException]:
    errors: list[BaseException] = []

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
        return run

    threads = [threading.Thread(target=guard(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_copy_delete_churn_answers_no_500_and_404_to_the_second_delete(server):
    deadline = time.monotonic() + CHURN_S
    seen: Counter = Counter()  # (what, status)
    bodies: list[str] = []
    lock = threading.Lock()

    def record(what: str, status: int, body: bytes) -> None:
        with lock:
            seen[(what, status)] += 1
            if status >= 500 and len(bodies) < 5:
                bodies.append(f"{what}: {status} {body[:200]!r}")

    def churn(k: int):
        def run():
            call = Http(server.port)
            i = 0
            while time.monotonic() < deadline:
                name = f"cp{k}-{i % 3}"
                record("copy", *call("POST", "/api/copy", {"source": "base", "destination": name}))
                record("churn delete", *call("DELETE", "/api/delete", {"model": name}))
                i += 1
            call.close()
        return run

    def lister(path: str, method: str = "GET", body: dict | None = None):
        def run():
            call = Http(server.port)
            while time.monotonic() < deadline:
                record(path, *call(method, path, body))
            call.close()
        return run

    def double_delete():
        # Two clients delete the same model at once: one 200, the other 404.
        a, b = Http(server.port), Http(server.port)
        i = 0
        while time.monotonic() < deadline:
            name = f"twice-{i}"
            status, _ = a("POST", "/api/copy", {"source": "base", "destination": name})
            assert status == 200
            barrier = threading.Barrier(2)
            results: list[tuple[int, bytes]] = []

            def delete(call):
                barrier.wait()
                results.append(call("DELETE", "/api/delete", {"model": name}))

            run_threads([lambda: delete(a), lambda: delete(b)])
            statuses = sorted(s for s, _ in results)
            for s, body in results:
                record("double delete", s, body)
            assert statuses == [200, 404], (name, results)
            assert json.loads(next(body for s, body in results if s == 404)) == \
                {"error": f"model '{name}' not found"}
            i += 1
        a.close()
        b.close()

    errors = run_threads([churn(0), churn(1), lister("/api/tags"), lister("/v1/models"),
                          lister("/api/show", "POST", {"model": "base"}), double_delete])
    assert not errors, errors
    failures = {k: v for k, v in seen.items() if k[1] >= 500}
    assert not failures, (failures, bodies)
    # The churners' own copies and deletes always succeed: nobody else touches their names.
    assert all(status == 200 for (what, status) in seen if what in ("copy", "churn delete", "/api/tags",
                                                                     "/v1/models", "/api/show"))
    assert seen[("double delete", 404)] > 0
    status, body = Http(server.port)("GET", "/api/tags")
    assert status == 200 and [m["name"] for m in json.loads(body)["models"]] == ["base:latest"]
    assert_consistent(server.store)


def test_startup_cleanup_while_another_thread_deletes(tmp_path, tiny_path):
    store = ModelStore(tmp_path / "models")
    weights = import_gguf(store, Path(tiny_path))
    create(store, {"model": "base", "files": {"t.gguf": weights}, "system": "base"})
    deadline = time.monotonic() + CHURN_S
    runs = Counter()

    def churn(k: int):
        def run():
            other = ModelStore(store.root)  # as another server on the same folder would
            i = 0
            while time.monotonic() < deadline:
                name = f"library/cp{k}-{i % 4}"
                other.copy("base", name)
                other.delete(name)
                i += 1
        return run

    def cleanup():
        while time.monotonic() < deadline:
            ModelStore(store.root).startup()
            ModelStore(store.root).prune(grace_s=0)
            runs["cleanup"] += 1

    def reader():
        other = ModelStore(store.root)
        while time.monotonic() < deadline:
            other.list_models()
            for name in list(other.names()):
                try:
                    other.resolve(name.display)
                except ModelNotFound:
                    pass  # deleted since it was listed
            runs["reader"] += 1

    errors = run_threads([churn(0), churn(1), cleanup, reader])
    assert not errors, errors
    assert runs["cleanup"] > 0 and runs["reader"] > 0
    assert [n.display for n in store.names()] == ["base:latest"]
    assert_consistent(store)
    store.prune(grace_s=0)
    assert store.resolve("base").system == "base"
    assert sorted(p.name for p in store.blobs.dir.iterdir()) == sorted(
        p.name for p in store.blobs.dir.iterdir() if p.name.startswith("sha256-") and "-" not in p.name[7:])


def test_a_model_deleted_between_listing_and_reading(tmp_path, tiny_path, monkeypatch):
    """The exact interleavings, made to happen: a manifest that vanishes after it was listed,
    and a delete whose manifest another delete removed first."""
    store = ModelStore(tmp_path / "models")
    weights = import_gguf(store, Path(tiny_path))
    create(store, {"model": "base", "files": {"t.gguf": weights}})
    store.copy("base", "gone")
    real_config = ModelStore.config_of
    calls = []

    def config_then_delete(self, manifest):
        calls.append(manifest)
        if len(calls) == 2:  # "gone" was listed and read; it vanishes before the rest is read
            ModelStore(self.root).delete("gone")
        return real_config(self, manifest)

    monkeypatch.setattr(ModelStore, "config_of", config_then_delete)
    assert [m.name for m in store.list_models()] in (["base:latest"], ["gone:latest", "base:latest"],
                                                     ["base:latest", "gone:latest"])
    monkeypatch.setattr(ModelStore, "config_of", real_config)
    assert len(calls) >= 2 and [n.display for n in store.names()] == ["base:latest"]
    once = []

    store.copy("base", "twice")
    real_read = ModelStore.read_manifest

    def read_then_lose(self, name):
        found = real_read(self, name)
        if "twice" in str(name) and not once:
            once.append(name)
            # Another delete wins: one that does not take this store's lock (Ollama's, on the
            # same folder), since ours excludes each other.
            self.manifest_path(found[0]).unlink()
        return found

    monkeypatch.setattr(ModelStore, "read_manifest", read_then_lose)
    with pytest.raises(ModelNotFound):
        store.delete("twice")
    monkeypatch.setattr(ModelStore, "read_manifest", real_read)
    assert [n.display for n in store.names()] == ["base:latest"]
    assert_consistent(store)
