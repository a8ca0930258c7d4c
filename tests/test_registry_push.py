"""Push over the registry upload protocol, then pull back: the real SmolLM2 model survives the
round trip byte for byte and loads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from a3s_power.core import _core
from a3s_power.registry import TransferSettings, pull_model, push_model
from a3s_power.store import ModelStore
from a3s_power.store.create import import_gguf, prepare_create, run_create
from tests.registry_server import FakeRegistry

SETTINGS = TransferSettings(min_part=16 * 1000 * 1000, upload_chunk=32 * 1000 * 1000, backoff_s=0.01,
                            progress_interval_s=0.0)


def collect(lines) -> list[dict]:
    async def run() -> list[dict]:
        return [line async for line in lines]

    return asyncio.run(run())


def test_push_then_pull_real_model_and_load(tmp_path, smollm2_path):
    source = ModelStore(tmp_path / "a")
    digest = import_gguf(source, Path(smollm2_path))
    plan = prepare_create(source, {"model": "smollm2:135m", "files": {"smollm2.gguf": digest},
                                   "system": "You are small.", "parameters": {"stop": ["<|im_end|>"]}})
    assert collect(run_create(source, plan))[-1] == {"status": "success"}

    with FakeRegistry(require_auth=True) as reg:
        name = f"{reg.host}/library/smollm2:135m"
        source.copy("smollm2:135m", name)
        lines = collect(push_model(source, name, insecure=True, settings=SETTINGS))
        statuses = [line["status"] for line in lines]
        assert statuses[0] == "retrieving manifest"
        assert statuses[-2:] == ["pushing manifest", "success"]
        assert f"pushing {digest[7:19]}" in statuses
        patches = [r for r in reg.log if r.method == "PATCH"]
        assert len(patches) >= 4, "a 98 MB blob goes up in several PATCH chunks"
        assert reg.tokens_issued >= 1
        assert reg.blobs[digest] == open(smollm2_path, "rb").read()
        assert reg.manifests[("library/smollm2", "135m")] == source.read_manifest(name)[1].raw

        # Pushing again skips every blob (HEAD says they are there).
        before = len([r for r in reg.log if r.method == "PATCH"])
        collect(push_model(source, name, insecure=True, settings=SETTINGS))
        assert len([r for r in reg.log if r.method == "PATCH"]) == before

        target = ModelStore(tmp_path / "b")
        assert collect(pull_model(target, name, insecure=True, settings=SETTINGS))[-1]["status"] == "success"

    model = target.resolve(name)
    assert model.system == "You are small."
    assert model.parameters == {"stop": ["<|im_end|>"]}
    assert model.details["parameter_size"] == "134.52M" and model.details["quantization_level"] == "Q4_1"
    assert "completion" in model.capabilities
    loaded = _core.Model(str(model.model_path))
    try:
        assert loaded.architecture == "llama"
        assert len(loaded.tokenize("Hello, world!")) > 2
    finally:
        loaded.close()


def test_push_missing_model_fails(tmp_path):
    from a3s_power.store.types import ModelNotFound

    with pytest.raises(ModelNotFound):
        collect(push_model(ModelStore(tmp_path), "127.0.0.1:1/library/none:1", insecure=True))


def test_push_rejected_manifest_is_an_error(tmp_path, tiny_path):
    from a3s_power.registry.errors import RegistryError

    store = ModelStore(tmp_path)
    digest = import_gguf(store, Path(tiny_path))
    with FakeRegistry() as reg:
        name = f"{reg.host}/library/tiny:1"
        collect(run_create(store, prepare_create(store, {"model": name, "files": {"t.gguf": digest}})))
        reg.faults.deny_manifests = True
        with pytest.raises(RegistryError, match="push manifest: requested access is denied"):
            collect(push_model(store, name, insecure=True, settings=SETTINGS))
        assert digest in reg.blobs and not reg.manifests
