"""Gemma in Ollama's dialect (store/dialect/gemma3.py, gemma4.py): llama.cpp refuses the blob as
written; translated, the text model gives the greedy tokens of the same weights written as
llama.cpp writes them, and the projector made from the blob's vision tower gives the same tokens
for a prompt with an image as llama.cpp's own mmproj."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from a3s_power.core import _core
from a3s_power.store import dialect
from a3s_power.store.gguf import read_gguf
from tests.conftest import collect, context_params, greedy
from tests.dialect_models_gemma import (
    GEMMA4_VISIBLE,
    embeddinggemma_pair,
    gemma3_models,
    gemma3_pair,
    gemma4_models,
    gemma4_pair,
)
from tests.test_dialect import greedy_tokens, pull_and_chat_with_an_image, sha256, translate
from tests.tiny_projector import bmp_image

N_TOKENS = 12


def _header(path: Path):
    return read_gguf(path, max_array=0, check_size=False)


def image_greedy_tokens(model_path: Path, projector_path: Path, image: bytes, text: str) -> tuple[list[int], object]:
    """Greedy tokens for ``text`` (with the projector's marker where the image goes) and the prompt."""
    params = _core.ModelParams()
    params.n_gpu_layers = 0
    model = _core.Model(str(model_path), params)
    try:
        projector = _core.Projector(model, str(projector_path), 2, False)
        prompt = projector.tokenize(text.format(marker=projector.marker), [image], True)
        engine = _core.Engine(model, context_params(n_ctx=512), [], projector)
        try:
            rid = engine.submit_multimodal(prompt, _core.GenerateParams(sampling=greedy(), num_predict=N_TOKENS))
            return collect(engine, [rid])[rid].tokens, prompt
        finally:
            engine.close()
    finally:
        model.close()


# --- gemma3 ----------------------------------------------------------------------------------------

GEMMA3_CHAT = "<start_of_turn>user\n{marker}the cat sat on the mat<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.parametrize("vision,padded_rows", [(True, 0), (False, 0), (False, 64)],
                         ids=["4b-style", "1b-style", "1b-style, padded embedding"])
def test_gemma3_text_gives_the_same_greedy_tokens(tmp_path, vision, padded_rows):
    upstream, ollama = gemma3_pair(vision=vision, padded_rows=padded_rows)
    ref = upstream.write(tmp_path / "upstream.gguf")
    blob = ollama.write(tmp_path / "ollama.gguf")
    assert dialect.detect(_header(ref)) is None  # llama.cpp's own file loads as it is
    expected = greedy_tokens(ref)
    assert len(expected) > 0
    if vision or padded_rows:
        with pytest.raises(Exception):  # no RMS epsilon, a vocabulary of another length, unclaimed v.*/mm.*
            greedy_tokens(blob)
    else:  # it loads, but the sliding-window layers run at the wrong RoPE base
        assert greedy_tokens(blob) != expected
    translation = dialect.detect(_header(blob))
    assert translation is not None and translation.has_projector is vision
    before = sha256(blob)
    files = translate(blob, tmp_path / "store")
    assert sha256(blob) == before
    assert greedy_tokens(files["model"]) == expected
    meta = read_gguf(files["model"]).metadata
    assert meta["gemma3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert len(meta["tokenizer.ggml.tokens"]) == len(upstream.kv["tokenizer.ggml.tokens"][0])
    assert "<start_of_turn>" in meta["tokenizer.chat_template"]
    assert not any(t.name.startswith(("v.", "mm.")) for t in read_gguf(files["model"]).tensors)


def test_gemma3_projector_gives_the_same_tokens_for_an_image(tmp_path):
    text, mmproj, ollama = gemma3_models()
    ref = text.write(tmp_path / "upstream.gguf")
    ref_proj = mmproj.write(tmp_path / "mmproj.gguf")
    blob = ollama.write(tmp_path / "ollama.gguf")
    files = translate(blob, tmp_path / "store")
    proj = read_gguf(files["projector"])
    assert proj.metadata["general.architecture"] == "clip"
    assert proj.metadata["clip.projector_type"] == "gemma3"
    assert proj.metadata["clip.vision.projector.scale_factor"] == 2
    assert not any(k.startswith(("tokenizer.", "gemma3.")) for k in proj.metadata)
    assert {t.name for t in proj.tensors} == set(mmproj.tensors)

    image = bmp_image(40, 24)
    expected, prompt = image_greedy_tokens(ref, ref_proj, image, GEMMA3_CHAT)
    assert prompt.n_images == 1 and prompt.image_tokens == [16]  # 8x8 patches pooled 2x2: the vision path ran
    assert len(expected) > 0
    got, _ = image_greedy_tokens(files["model"], files["projector"], image, GEMMA3_CHAT)
    assert got == expected
    other, _ = image_greedy_tokens(files["model"], files["projector"], bmp_image(40, 24, seed=1), GEMMA3_CHAT)
    assert other != expected  # the image's pixels reach the answer


def test_gemma3_translation_cost(tmp_path):
    """Seconds and extra disk per GB of blob, on the largest gemma3 fixture written here."""
    _, _, ollama = gemma3_models(n_embd=512, n_ff=2048, head_dim=64, n_head=8, n_head_kv=4, v_embd=256, v_ff=1024,
                                 v_layer=4, v_head=4)
    blob = ollama.write(tmp_path / "ollama.gguf")
    size = blob.stat().st_size
    start = time.perf_counter()
    files = translate(blob, tmp_path / "store")
    seconds = time.perf_counter() - start
    extra = sum(f.stat().st_size for f in files.values())
    print(f"\ngemma3 blob {size / 1e6:.1f} MB: translated in {seconds:.2f} s "
          f"({seconds / (size / 1e9):.1f} s/GB), extra disk {extra / 1e6:.1f} MB ({extra / size:.2f} x blob)")
    assert extra < size * 1.2


GEMMA3_GO_TEMPLATE = (
    "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}user{{ end }}\n"
    "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
)


def test_gemma3_blob_pulled_over_http_shows_vision_and_answers_with_an_image(tmp_path):
    """The whole path: the registry serves Ollama's one blob, the real server pulls it, translates
    it, reports vision, and answers a chat with an image through the translated projector."""
    _, _, ollama = gemma3_models()
    blob = ollama.write(tmp_path / "ollama.gguf").read_bytes()
    # 16 image embeddings and mtmd's <start_of_image>/<end_of_image> text go into the prompt
    pull_and_chat_with_an_image(tmp_path / "home", "library/gemma3", blob, "gemma3", GEMMA3_GO_TEMPLATE, 16)


def embeddings(path: Path, texts: list[str]) -> np.ndarray:
    params = _core.ModelParams()
    params.n_gpu_layers = 0
    model = _core.Model(str(path), params)
    try:
        engine = _core.Engine(model, context_params(n_ctx=256, embeddings=True))
        try:
            ids = [engine.submit_embedding(model.tokenize(t, True, True), True) for t in texts]
            done = collect(engine, ids)
            return np.array([done[i].embedding for i in ids])
        finally:
            engine.close()
    finally:
        model.close()


def test_embeddinggemma_gives_the_same_embeddings(tmp_path):
    upstream, ollama = embeddinggemma_pair()
    ref = upstream.write(tmp_path / "upstream.gguf")
    blob = ollama.write(tmp_path / "ollama.gguf")
    assert dialect.detect(_header(ref)) is None
    with pytest.raises(Exception):  # dense.0/dense.1 and norm are no gemma3 tensors
        greedy_tokens(blob)
    translation = dialect.detect(_header(blob))
    assert translation is not None and not translation.has_projector
    files = translate(blob, tmp_path / "store")
    assert read_gguf(files["model"]).metadata["general.architecture"] == "gemma-embedding"
    texts = ["the cat sat on the mat", "then"]
    expected = embeddings(ref, texts)
    assert expected.shape == (2, 64) and not np.allclose(expected[0], expected[1])
    np.testing.assert_allclose(embeddings(files["model"], texts), expected, atol=1e-5)


# --- gemma4 ----------------------------------------------------------------------------------------

GEMMA4_VARIANTS = {"dense+ple": dict(), "moe": dict(moe=True, ple=False),
                   "moe, older expert scale": dict(moe=True, ple=False, old_expert_scale=True)}
GEMMA4_CHAT = "<|turn>user\n{marker}the cat sat on the mat<turn|>\n<|turn>model\n"


@pytest.mark.parametrize("variant", sorted(GEMMA4_VARIANTS))
def test_gemma4_text_gives_the_same_greedy_tokens(tmp_path, variant):
    upstream, ollama = gemma4_pair(**GEMMA4_VARIANTS[variant])
    ref = upstream.write(tmp_path / "upstream.gguf")
    blob = ollama.write(tmp_path / "ollama.gguf")
    assert dialect.detect(_header(ref)) is None
    with pytest.raises(Exception):  # the embedded vision and audio tensors are not the text model's
        greedy_tokens(blob)
    translation = dialect.detect(_header(blob))
    assert translation is not None and translation.has_projector
    before = sha256(blob)
    files = translate(blob, tmp_path / "store")
    assert sha256(blob) == before
    expected = greedy_tokens(ref)
    assert len(expected) > 0
    assert greedy_tokens(files["model"]) == expected
    text = read_gguf(files["model"])
    assert text.metadata["tokenizer.ggml.model"] == "gemma4"
    types = dict(zip(text.metadata["tokenizer.ggml.tokens"], text.metadata["tokenizer.ggml.token_type"]))
    assert all(types[token] == 4 for token in GEMMA4_VISIBLE)  # user-defined: the reply parser sees them
    assert not any(t.name.startswith(("a.", "v.", "mm.")) for t in text.tensors)


def test_gemma4_tokenizer_reads_turn_tokens_whole(tmp_path):
    """As SentencePiece (Ollama's name) the turn markers would come apart; as ``gemma4`` they are one token."""
    upstream, ollama = gemma4_pair()
    files = translate(ollama.write(tmp_path / "ollama.gguf"), tmp_path / "store")
    for path in (upstream.write(tmp_path / "upstream.gguf"), files["model"]):
        params = _core.ModelParams()
        params.n_gpu_layers = 0
        model = _core.Model(str(path), params)
        try:
            ids = model.tokenize("<|turn>user\nthe cat<turn|>", False, True)
        finally:
            model.close()
        tokens = upstream.kv["tokenizer.ggml.tokens"][0]
        assert ids[0] == tokens.index("<|turn>") and ids[-1] == tokens.index("<turn|>")


def test_gemma4_projector_gives_the_same_tokens_for_an_image(tmp_path):
    text, mmproj, ollama = gemma4_models()
    ref = text.write(tmp_path / "upstream.gguf")
    ref_proj = mmproj.write(tmp_path / "mmproj.gguf")
    files = translate(ollama.write(tmp_path / "ollama.gguf"), tmp_path / "store")
    proj = read_gguf(files["projector"])
    assert proj.metadata["clip.vision.projector_type"] == "gemma4v"
    assert "clip.has_audio_encoder" not in proj.metadata  # the audio tower is dropped
    assert {t.name for t in proj.tensors} == set(mmproj.tensors)  # clamp ranges unpacked, one scalar each
    assert proj.metadata["clip.vision.image_mean"] == [0.0, 0.0, 0.0]

    image = bmp_image(40, 24)
    expected, prompt = image_greedy_tokens(ref, ref_proj, image, GEMMA4_CHAT)
    assert prompt.n_images == 1 and prompt.image_tokens[0] >= 70  # gemma4v's least tokens per image
    assert len(expected) > 0
    got, _ = image_greedy_tokens(files["model"], files["projector"], image, GEMMA4_CHAT)
    assert got == expected
    other, _ = image_greedy_tokens(files["model"], files["projector"], bmp_image(40, 24, seed=1), GEMMA4_CHAT)
    assert other != expected


def test_gemma4_clamp_ranges_reach_the_projector(tmp_path):
    """Without its clamp ranges the translated projector answers differently: they are not decoration."""
    text, mmproj, ollama = gemma4_models()
    ref = text.write(tmp_path / "upstream.gguf")
    unclamped = mmproj.copy()
    unclamped.tensors = {n: x for n, x in mmproj.tensors.items() if not n.endswith(("_min", "_max"))}
    image = bmp_image(40, 24)
    clamped_tokens, _ = image_greedy_tokens(ref, mmproj.write(tmp_path / "mmproj.gguf"), image, GEMMA4_CHAT)
    free_tokens, _ = image_greedy_tokens(ref, unclamped.write(tmp_path / "free.gguf"), image, GEMMA4_CHAT)
    assert clamped_tokens != free_tokens
