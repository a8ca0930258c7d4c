"""Pulls from the test registry: progress as Ollama streams it, auth, redirects, parallel ranged
parts, resume after faults, verification, and the URL and built-in-registry paths."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from a3s_power.registry import TransferSettings, pull_model
from a3s_power.registry.builtin import BuiltinRegistry
from a3s_power.registry.errors import RegistryError
from a3s_power.store import ModelStore
from a3s_power.store.blobs import DigestMismatch
from a3s_power.store.names import ModelName
from tests.registry_server import FakeRegistry
from tests.tiny_models import write_tiny_llama

MODEL = "application/vnd.ollama.image.model"
SYSTEM = "application/vnd.ollama.image.system"
PARAMS = "application/vnd.ollama.image.params"

# Small parts so that a 0.4 MB model is fetched as several parallel ranges; fast retries.
FAST = TransferSettings(min_part=64 * 1024, parts=4, parallel=4, max_retries=3, backoff_s=0.01, stall_s=0.5,
                        progress_interval_s=0.0, state_interval_s=0.0)


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory) -> bytes:
    return write_tiny_llama(tmp_path_factory.mktemp("pull") / "tiny.gguf").read_bytes()


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pull(store: ModelStore, name: str, settings: TransferSettings = FAST, **kw) -> list[dict]:
    async def run() -> list[dict]:
        return [line async for line in pull_model(store, name, insecure=True, settings=settings, **kw)]

    return asyncio.run(run())


def publish(reg: FakeRegistry, tiny_bytes: bytes, tag: str = "1b") -> str:
    reg.add_model("library/tiny", tag, [(MODEL, tiny_bytes), (SYSTEM, b"You are tiny."),
                                        (PARAMS, json.dumps({"stop": ["<|im_end|>"], "temperature": 0.3}).encode())])
    return f"{reg.host}/library/tiny:{tag}"


def assert_store_consistent(store: ModelStore) -> None:
    """Every manifest's blobs exist and hash to their names (the store's invariant)."""
    from a3s_power.store.digests import sha256_file

    for name, manifest in store.manifests():
        for digest in manifest.digests():
            path = store.blobs.path(digest)
            assert path.is_file(), f"{name.display} points at a missing blob {digest}"
            assert sha256_file(path) == digest


def test_pull_streams_ollama_progress_and_stores_layout(store, tiny_bytes):
    with FakeRegistry() as reg:
        name = publish(reg, tiny_bytes)
        lines = pull(store, name)
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model_digest = sha(tiny_bytes)
    model_lines = [line for line in lines if line.get("digest") == model_digest]
    assert model_lines[0]["status"] == f"pulling {model_digest[7:19]}"
    assert model_lines[-1]["total"] == model_lines[-1]["completed"] == len(tiny_bytes)
    # Ollama's layout: the manifest byte for byte under host/namespace/model/tag, blobs by digest.
    manifest_path = store.root / "manifests" / reg.host / "library" / "tiny" / "1b"
    assert manifest_path.read_bytes() == reg.manifests[("library/tiny", "1b")]
    assert (store.root / "blobs" / ("sha256-" + model_digest[7:])).read_bytes() == tiny_bytes
    model = store.resolve(name)
    assert model.system == "You are tiny."
    assert model.parameters == {"stop": ["<|im_end|>"], "temperature": 0.3}
    assert model.name == f"{reg.host}/library/tiny:1b"
    assert model.details["family"] == "llama"
    assert not list(store.blobs.dir.glob("*partial*"))
    # A second pull is all cache hits: no blob is downloaded again.
    before = len([r for r in reg.log if "/blobs/" in r.path])
    with FakeRegistry() as reg2:
        reg2.manifests, reg2.blobs = reg.manifests, reg.blobs
        lines = pull(store, name.replace(reg.host, reg2.host))
        assert not [r for r in reg2.log if "/blobs/" in r.path]
    assert lines[-1] == {"status": "success"} and before > 0


def test_parallel_ranges_redirect_to_blob_host_without_credentials(store, tiny_bytes):
    with FakeRegistry(require_auth=True, redirect_blobs=True) as reg:
        name = publish(reg, tiny_bytes)
        pull(store, name)
        digest = sha(tiny_bytes)
        cdn = [r for r in reg.log if r.path.startswith("/cdn/" + digest)]
        assert reg.tokens_issued >= 1
        assert len(cdn) >= 4, "the blob should come in parallel ranged parts"
        assert all(r.range and r.range.startswith("bytes=") for r in cdn)
        assert all(r.authorization is None for r in cdn), "the blob host must not get the registry token"
        assert all(r.authorization == "Bearer test-token-123" for r in reg.log if r.path.startswith("/v2/")
                   and r is not reg.log[0])
    assert store.blobs.path(digest).read_bytes() == tiny_bytes


ONE_PART = TransferSettings(min_part=1 << 30, max_retries=3, backoff_s=0.01, stall_s=2, progress_interval_s=0)


def test_resumes_after_dropped_connection_with_range(store, tiny_bytes):
    settings = ONE_PART
    with FakeRegistry() as reg:
        name = publish(reg, tiny_bytes)
        digest = sha(tiny_bytes)
        reg.faults.drop_after[digest] = 150_000
        pull(store, name, settings)
        gets = [r for r in reg.requests_for(digest) if r.method == "GET" and r.range != "bytes=0-0"]
    assert len(gets) == 2
    assert gets[0].range == f"bytes=0-{len(tiny_bytes) - 1}"
    resumed_at = int(gets[1].range.split("=")[1].split("-")[0])
    assert resumed_at >= 100_000, "the retry should continue where the connection died"
    assert_store_consistent(store)


def test_retries_5xx_and_stalls(store, tiny_bytes):
    with FakeRegistry() as reg:
        name = publish(reg, tiny_bytes)
        digest = sha(tiny_bytes)
        reg.faults.fail_5xx[digest] = 2
        reg.faults.stall[digest] = (10_000, 1.5)  # longer than FAST's 0.5 s stall limit
        lines = pull(store, name)
        gets = [r for r in reg.requests_for(digest) if r.method == "GET" and r.range != "bytes=0-0"]
    assert lines[-1]["status"] == "success"
    assert len(gets) == 5, "four parts, one of them asked again after its stall"
    assert store.blobs.path(digest).read_bytes() == tiny_bytes


def test_wrong_digest_fails_and_leaves_nothing(store, tiny_bytes):
    with FakeRegistry() as reg:
        name = publish(reg, tiny_bytes)
        digest = sha(tiny_bytes)
        reg.faults.corrupt.add(digest)
        with pytest.raises(DigestMismatch, match="digest mismatch, file must be downloaded again"):
            pull(store, name)
        assert store.find(name) is None
        assert not store.blobs.exists(digest)
        assert not list(store.blobs.dir.glob("*partial*")), "a corrupt download must not be resumed"
        reg.faults.corrupt.clear()
        assert pull(store, name)[-1]["status"] == "success"
    assert_store_consistent(store)


def test_unknown_model_and_bad_manifest(store, tiny_bytes):
    with FakeRegistry() as reg:
        with pytest.raises(RegistryError, match="pull model manifest: file does not exist"):
            pull(store, f"{reg.host}/library/nothing:1b")
        reg.manifests[("library/broken", "latest")] = b"<html>not json</html>"
        with pytest.raises(RegistryError, match="not valid JSON"):
            pull(store, f"{reg.host}/library/broken")
    assert not (store.root / "manifests").exists() or not list(store.names())


def test_repull_removes_replaced_layers(store, tiny_bytes):
    with FakeRegistry() as reg:
        name = publish(reg, tiny_bytes)
        pull(store, name)
        old_system = store.resolve(name)
        reg.add_model("library/tiny", "1b", [(MODEL, tiny_bytes), (SYSTEM, b"You are new.")])
        statuses = [line["status"] for line in pull(store, name)]
    assert "removing unused layers" in statuses
    assert store.resolve(name).system == "You are new."
    assert old_system.system == "You are tiny."
    assert_store_consistent(store)
    assert len(store.blobs.digests()) == 3  # model, new system, new config


def test_direct_url_pull_resumes_and_names_model(store, tiny_bytes):
    with FakeRegistry() as reg:
        reg.files["SmolThing-Q8_0.gguf"] = tiny_bytes
        reg.faults.drop_after["SmolThing-Q8_0.gguf"] = 200_000
        url = f"{reg.url}/files/SmolThing-Q8_0.gguf"
        lines = pull(store, url, ONE_PART)
        ranges = [r.range for r in reg.log if r.path.startswith("/files/") and r.method == "GET"]
    assert lines[0]["status"] == "pulling SmolThing-Q8_0.gguf"
    assert lines[-1]["status"] == "success"
    assert len(ranges) == 2 and not ranges[1].startswith("bytes=0-")
    model = store.resolve(f"{reg.host}/files/smolthing-q8_0:latest")
    assert model.model_path.read_bytes() == tiny_bytes
    assert model.details["family"] == "llama"


def test_builtin_registry_fallback_checks_sha256(store, tiny_bytes, tmp_path):
    with FakeRegistry() as reg:
        reg.files["known.gguf"] = tiny_bytes
        index = tmp_path / "known_models.json"
        entry = {"name": f"{reg.host}/library/known:1b", "url": f"{reg.url}/files/known.gguf",
                 "sha256": hashlib.sha256(tiny_bytes).hexdigest(), "system": "Known.",
                 "parameters": {"temperature": 0.1}}
        index.write_text(json.dumps({"models": [entry]}))
        builtin = BuiltinRegistry.load(index)
        lines = pull(store, entry["name"], builtin=builtin)  # the registry has no such manifest
        assert lines[-1]["status"] == "success"
        model = store.resolve(entry["name"])
        assert model.system == "Known." and model.parameters == {"temperature": 0.1}
        entry.update(name=f"{reg.host}/library/wrong:1b", sha256="0" * 64)
        index.write_text(json.dumps({"models": [entry]}))
        with pytest.raises(DigestMismatch):
            pull(store, entry["name"], builtin=BuiltinRegistry.load(index))
    assert store.find(entry["name"]) is None
    assert BuiltinRegistry.load().lookup(ModelName.parse("qwen2.5:0.5b")) is not None  # the packaged index


def test_concurrent_pulls_of_one_model(store, tiny_bytes):
    with FakeRegistry() as reg:
        name = publish(reg, tiny_bytes)
        reg.faults.throttle_bps = 4_000_000

        async def both():
            async def one():
                return [line async for line in pull_model(store, name, insecure=True, settings=FAST)]
            return await asyncio.gather(one(), one())

        results = asyncio.run(both())
        digest = sha(tiny_bytes)
        full = [r for r in reg.requests_for(digest) if r.method == "GET" and r.range != "bytes=0-0"]
    assert all(r[-1]["status"] == "success" for r in results)
    assert len(full) == 4, "the second pull waits for the first download instead of repeating it"
    assert_store_consistent(store)


def test_delete_during_pull_keeps_shared_blobs(store, tiny_bytes):
    """A pull counts blobs it already has; deleting their model meanwhile must not remove them."""
    with FakeRegistry() as reg:
        first = publish(reg, tiny_bytes, tag="a")
        pull(store, first)
        big = bytes(range(256)) * 4000  # a new layer that takes a while
        reg.add_model("library/tiny", "b", [(MODEL, tiny_bytes), (SYSTEM, b"You are tiny."),
                                            ("application/vnd.ollama.image.license", big)])
        reg.faults.throttle_bps = 1_000_000
        second = f"{reg.host}/library/tiny:b"

        async def race() -> list[dict]:
            lines = []
            async for line in pull_model(store, second, insecure=True, settings=FAST):
                lines.append(line)
                if line.get("digest") == sha(big) and store.find(first) is not None:
                    await asyncio.to_thread(store.delete, first)  # while the pull is under way
            return lines

        lines = asyncio.run(race())
    assert lines[-1]["status"] == "success"
    assert store.find(first) is None
    model = store.resolve(second)
    assert model.model_path.read_bytes() == tiny_bytes and model.system == "You are tiny."
    assert_store_consistent(store)
