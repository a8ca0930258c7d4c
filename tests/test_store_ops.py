"""The store itself: creating, resolving, listing, copying, deleting, pinning and pruning."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from a3s_power.config import Config
from a3s_power.store import ModelStore, manifest as mf
from a3s_power.store.create import CreateError, import_gguf, prepare_create, run_create
from a3s_power.store.types import ModelNotFound


def create(store: ModelStore, body: dict) -> list[dict]:
    async def run():
        return [line async for line in run_create(store, prepare_create(store, body))]

    return asyncio.run(run())


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def weights(store, tiny_path) -> str:
    return import_gguf(store, Path(tiny_path))


def test_create_resolve_list(store, weights):
    lines = create(store, {"model": "Tiny:1", "files": {"t.gguf": weights}, "template": "{{ .Prompt }}",
                           "parameters": {"num_ctx": 2048}})
    assert lines[-1] == {"status": "success"}
    model = store.resolve("tiny:1")  # case-insensitive, like Ollama's lookups
    assert model.name == "Tiny:1"
    assert model.template == "{{ .Prompt }}" and model.parameters == {"num_ctx": 2048}
    assert model.model_path == store.blobs.path(weights)
    config = json.loads(store.blobs.path(store.read_manifest("tiny:1")[1].config.digest).read_bytes())
    assert config["model_format"] == "gguf" and config["model_family"] == "llama"
    assert config["file_type"] == "F32" and config["rootfs"]["type"] == "layers"
    [listed] = store.list_models()
    assert listed.digest == model.digest and listed.size == model.size
    assert listed.details["family"] == "llama"


def test_copy_delete_and_shared_blobs(store, weights):
    create(store, {"model": "a", "files": {"t.gguf": weights}, "system": "A"})
    store.copy("a", "b:2")
    create(store, {"model": "c", "from": "a", "system": "C"})
    system_a = store.read_manifest("a")[1].layers_of(mf.SYSTEM)[0].digest
    store.delete("a")
    assert store.blobs.exists(weights) and store.blobs.exists(system_a)  # b still uses both
    store.delete("b:2")
    assert store.blobs.exists(weights) and not store.blobs.exists(system_a)
    store.delete("c")
    assert store.blobs.digests() == []
    with pytest.raises(ModelNotFound):
        store.delete("c")
    assert not (store.manifests_dir / "registry.ollama.ai").exists()


def test_manifest_never_names_a_missing_blob(store, weights):
    manifest = mf.Manifest.build(mf.Layer(mf.CONFIG_MEDIA_TYPE, "sha256:" + "1" * 64, 2),
                                 [mf.Layer(mf.MODEL, weights, 1)])
    with pytest.raises(FileNotFoundError):
        store.write_manifest("broken", manifest)
    assert store.find("broken") is None


def test_bad_create_requests_write_nothing(store, weights):
    before = sorted(p.name for p in store.blobs.dir.iterdir())
    for body in ({"model": "x"}, {"model": "x", "files": {"t": "sha256:" + "2" * 64}},
                 {"model": "x", "files": {"t": weights}, "template": "{{ .Prompt "},
                 {"model": "x", "files": {"t": weights}, "messages": [{"role": "robot", "content": "x"}]},
                 {"model": "x", "files": {"t": weights}, "quantize": "q4_k_m", "from": "y"}):
        with pytest.raises(CreateError):
            create(store, body)
    assert sorted(p.name for p in store.blobs.dir.iterdir()) == before
    assert list(store.names()) == []


def test_quantizing_a_quantized_model_is_refused(store, weights):
    create(store, {"model": "q", "files": {"t": weights}, "quantize": "q8_0"})
    with pytest.raises(CreateError, match="only supported for F16 and F32"):
        create(store, {"model": "qq", "from": "q", "quantize": "q4_0"})
    assert store.find("qq") is None


def test_prune_respects_manifests_pins_and_grace(store, weights, tmp_path):
    create(store, {"model": "kept", "files": {"t": weights}})
    orphan = store.blobs.write_bytes(b"orphan")
    pinned = store.blobs.write_bytes(b"pinned")
    assert store.prune() == []  # everything is younger than the grace period
    with store.pinned([pinned]):
        removed = store.prune(grace_s=0)
    assert removed == ["sha256-" + orphan[7:]]
    assert store.blobs.exists(pinned) and store.blobs.exists(weights)
    # A pin whose owner was killed does not protect anything.
    code = ("import os, sys; from a3s_power.store import ModelStore; s = ModelStore(sys.argv[1]); "
            "p = s.pin([sys.argv[2]]); print('pinned', flush=True); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code, str(store.root), pinned], capture_output=True)
    assert len(list((store.root / ".a3s-pins").iterdir())) == 1
    assert store.prune(grace_s=0) == ["sha256-" + pinned[7:]]
    assert list((store.root / ".a3s-pins").iterdir()) == []
    assert [n.display for n in store.names()] == ["kept:latest"]


def test_startup_fixes_legacy_names_and_honours_noprune(tmp_path, monkeypatch):
    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path))
    monkeypatch.setenv("OLLAMA_NOPRUNE", "1")
    config = Config.from_env()
    assert config.noprune and config.models_root == tmp_path / "models"
    store = ModelStore.from_config(config)
    store.blobs.ensure()
    legacy = store.blobs.dir / ("sha256:" + "ab" * 32)
    legacy.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(legacy, (old, old))
    store.startup()
    assert (store.blobs.dir / ("sha256-" + "ab" * 32)).exists()  # renamed, and not pruned (NOPRUNE)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "elsewhere"))
    assert Config.from_env().models_root == tmp_path / "elsewhere"
    ModelStore(store.root).startup()
    assert store.blobs.digests() == []  # without NOPRUNE, the old unreferenced blob goes


def test_reads_a_store_written_by_ollama(tmp_path, tiny_path):
    """A manifest as Ollama writes it (its own key order and spacing) works unchanged."""
    import hashlib

    root = tmp_path / "ollama-models"
    data = open(tiny_path, "rb").read()
    config = b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"1.2M",' \
             b'"file_type":"F32","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    params = b'{"stop":["<|im_end|>"]}'
    blobs = {}
    for content in (data, config, params):
        digest = hashlib.sha256(content).hexdigest()
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / f"sha256-{digest}").write_bytes(content)
        blobs[content] = digest
    raw = json.dumps({"schemaVersion": 2, "mediaType": mf.MANIFEST_MEDIA_TYPE,
                      "config": {"mediaType": mf.CONFIG_MEDIA_TYPE, "digest": f"sha256:{blobs[config]}",
                                 "size": len(config)},
                      "layers": [{"mediaType": mf.MODEL, "digest": f"sha256:{blobs[data]}", "size": len(data)},
                                 {"mediaType": mf.PARAMS, "digest": f"sha256:{blobs[params]}",
                                  "size": len(params)}]}, indent=3).encode()
    path = root / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    path.parent.mkdir(parents=True)
    path.write_bytes(raw)
    model = ModelStore(root).resolve("tiny")
    assert model.digest == hashlib.sha256(raw).hexdigest()
    assert model.parameters == {"stop": ["<|im_end|>"]}
    assert model.details["parameter_size"] == "1.2M"


def test_resolve_sees_a_model_created_again_under_its_name(store, weights):
    # resolve() keeps its answer per manifest file; a new create replaces that file.
    create(store, {"model": "m", "files": {"t.gguf": weights}, "system": "first"})
    first = store.resolve("m")
    first.parameters["mutated"] = True  # a caller's change stays with the caller's copy
    assert store.resolve("m").system == "first" and "mutated" not in store.resolve("m").parameters
    create(store, {"model": "m", "files": {"t.gguf": weights}, "system": "second"})
    assert store.resolve("m").system == "second"
    store.delete("m")
    with pytest.raises(ModelNotFound):
        store.resolve("m")
