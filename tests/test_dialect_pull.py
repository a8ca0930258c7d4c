"""Every family of Ollama's GGUF dialect the way a user meets it: the one blob served by a registry,
pulled into the store (translated right after the pull), resolved by name and loaded as the
scheduler loads it. The text model must give the greedy tokens of the same weights written as
llama.cpp writes them, and a blob with a vision tower must come with a projector."""

from __future__ import annotations

import asyncio

import pytest

from a3s_power.registry import TransferSettings, pull_model
from a3s_power.store import ModelStore, dialect
from tests import (
    dialect_models,
    dialect_models_deepseekocr,
    dialect_models_gemma,
    dialect_models_mistral,
    dialect_models_nemotron,
    dialect_models_qwen35,
)
from tests.registry_server import FakeRegistry
from tests.test_dialect import greedy_tokens

FAST = TransferSettings(progress_interval_s=0.0, state_interval_s=0.0)


def _text_and_blob(made):
    """(llama.cpp's text model, Ollama's blob) from a fixture's return, whatever its shape."""
    if len(made) == 3:  # text, mmproj, blob
        return made[0], made[2]
    upstream, blob = made
    return getattr(upstream, "text", upstream), blob


FAMILIES = {
    "gemma3": (lambda: dialect_models_gemma.gemma3_pair(), True),
    "gemma4": (lambda: dialect_models_gemma.gemma4_pair(), True),
    "gptoss": (lambda: dialect_models.gptoss_pair(), False),
    "lfm2": (lambda: dialect_models.lfm2_pair(), False),
    "mistral3": (lambda: dialect_models_mistral.mistral3_pair(), True),
    "qwen35": (lambda: dialect_models_qwen35.qwen35_pair(), True),
    "qwen35moe": (lambda: dialect_models_qwen35.qwen35_pair(moe=True), True),
    "deepseekocr": (lambda: dialect_models_deepseekocr.deepseekocr_pair(), True),
    "nemotron_h_moe": (lambda: dialect_models_nemotron.nemotron_pair(), False),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pulled_from_a_registry_every_family_runs_as_llama_cpp_would(tmp_path, family):
    make, vision = FAMILIES[family]
    text, blob = _text_and_blob(make())
    expected = greedy_tokens(text.write(tmp_path / "upstream.gguf"))
    data = blob.write(tmp_path / "blob.gguf").read_bytes()
    store = ModelStore(tmp_path / "models")
    with FakeRegistry() as reg:
        reg.add_model(f"library/{family}", "tiny", [("application/vnd.ollama.image.model", data)])
        name = f"{reg.host}/library/{family}:tiny"

        async def pull() -> list[dict]:
            return [line async for line in pull_model(store, name, insecure=True, settings=FAST)]

        lines = asyncio.run(pull())
    assert lines[-1]["status"] == "success"
    assert any(line["status"].startswith("translating") for line in lines)
    spec = store.resolve(name)
    assert spec.translation is not None and spec.translation.dialect is not None
    assert ("vision" in spec.capabilities) == vision
    loadable = dialect.loadable(spec)  # what the scheduler loads
    assert loadable.model_path != spec.model_path and spec.model_path.read_bytes() == data
    assert (loadable.projector_path is not None) == vision
    assert greedy_tokens(loadable.model_path) == expected
