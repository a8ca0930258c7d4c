"""Mistral 3 in Ollama's dialect (store/dialect/mistral3.py): llama.cpp refuses the one blob; the
translated text model gives the llama.cpp-shaped model's greedy tokens, and the translated Pixtral
projector gives the llama.cpp mmproj's tokens for a prompt with an image, in the engine and
through the real server after a pull."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from a3s_power.core import _core
from a3s_power.store import dialect
from a3s_power.store.gguf import read_gguf
from tests.conftest import THREADS, collect, context_params, greedy
from tests.dialect_models_mistral import mistral3_pair
from tests.test_dialect import greedy_tokens, pull_and_chat_with_an_image, sha256, translate
from tests.tiny_projector import bmp_image

IMAGE_PROMPT = "the cat sat on {marker} the mat and then"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistral3")
    text, mmproj, blob = mistral3_pair()
    return {"text": text.write(root / "upstream.gguf"), "mmproj": mmproj.write(root / "mmproj.gguf"),
            "blob": blob.write(root / "ollama.gguf"), "store": root / "store"}


def tensors(path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


def _header(path):
    return read_gguf(path, max_array=0, check_size=False)


def test_llama_cpp_refuses_the_blob_and_the_translation_gives_the_same_tokens(files):
    assert dialect.detect(_header(files["text"])) is None  # llama.cpp's own file loads as it is
    with pytest.raises(Exception):  # the vision tensors inside are more than the text model claims
        greedy_tokens(files["blob"])
    before = sha256(files["blob"])
    out = translate(files["blob"], files["store"])
    assert sha256(files["blob"]) == before
    assert set(out) == {"model", "projector"}
    expected = greedy_tokens(files["text"])
    assert len(expected) > 0
    assert greedy_tokens(out["model"]) == expected
    # Every key llama.cpp's converter writes is there with its value (tokens alone may not notice one).
    theirs, ours = read_gguf(files["text"]).metadata, read_gguf(out["model"]).metadata
    assert {k: ours.get(k) for k in theirs if k != "general.name"} == {k: v for k, v in theirs.items() if k != "general.name"}


def image_tokens(model_path, projector_path) -> tuple[list[int], int]:
    """Greedy tokens for a prompt holding one image, and how many positions the image took."""
    params = _core.ModelParams()
    params.n_gpu_layers = 0
    model = _core.Model(str(model_path), params)
    try:
        projector = _core.Projector(model, str(projector_path), THREADS, False)
        prompt = projector.tokenize(IMAGE_PROMPT.format(marker=projector.marker), [bmp_image(40, 24)], True)
        engine = _core.Engine(model, context_params(n_ctx=512), [], projector)
        try:
            rid = engine.submit_multimodal(prompt, _core.GenerateParams(sampling=greedy(), num_predict=8))
            result = collect(engine, [rid])[rid]
            assert result.error == ""
            return result.tokens, sum(prompt.image_tokens)
        finally:
            engine.close()
    finally:
        model.close()


def test_translated_projector_gives_the_mmproj_tokens_for_an_image(files):
    out = translate(files["blob"], files["store"])
    clip = read_gguf(out["projector"], max_array=0, check_size=False)
    assert clip.metadata["clip.projector_type"] == "pixtral" and clip.architecture == "clip"
    assert not any(t.name.startswith(("blk.", "token_embd", "output")) for t in clip.tensors)
    # Tensor for tensor what llama.cpp's converter writes: names, Q/K rows permuted, [IMG_BREAK] row.
    ours, theirs = tensors(out["projector"]), tensors(files["mmproj"])
    assert sorted(ours) == sorted(theirs)
    for name, data in theirs.items():
        assert np.array_equal(ours[name].astype(np.float32), data.astype(np.float32)), name
    expected, n_image = image_tokens(files["text"], files["mmproj"])
    assert n_image > 4 and len(expected) > 0
    assert image_tokens(out["model"], out["projector"]) == (expected, n_image)


def test_mistral3_blob_pulled_over_http_shows_vision_and_answers_with_an_image(tmp_path):
    """The whole path: the registry serves Ollama's one blob, the real server pulls and translates
    it, reports vision, and answers a chat with an image through the translated projector."""
    _, _, ollama_form = mistral3_pair()
    blob = ollama_form.write(tmp_path / "ollama.gguf").read_bytes()
    template = "{{ range .Messages }}[INST]{{ .Content }}[/INST]{{ end }}"
    # 12 patch embeddings and 2 [IMG_BREAK] rows go into the prompt
    pull_and_chat_with_an_image(tmp_path / "home", "library/mistral-small3.1", blob, "mistral3", template, 14)
