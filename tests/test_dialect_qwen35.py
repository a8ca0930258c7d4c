"""Qwen 3.5 in Ollama's dialect (store/dialect/qwen35.py): llama.cpp refuses the one blob; the
translated text model (dense and MoE) gives the llama.cpp-shaped model's greedy tokens with the
MTP head and vision tower hidden; the projector translation gives llama.cpp's mmproj tensor for
tensor, and an image through it gives the same embeddings and logits in mtmd; the engine places the
image on M-RoPE's grid as llama.cpp's own helper does (the same greedy tokens)."""

from __future__ import annotations

import ctypes

import gguf
import llama_cpp
import numpy as np
import pytest
from llama_cpp import mtmd_cpp

from a3s_power.store import dialect
from a3s_power.store.dialect import qwen35
from a3s_power.store.dialect.plan import Plan
from a3s_power.store.dialect.write import write
from a3s_power.store.gguf import read_gguf
from tests.conftest import THREADS
from tests.dialect_models_qwen35 import qwen35_pair
from tests.test_dialect import greedy_tokens, sha256, translate
from tests.tiny_projector import bmp_image


def _header(path):
    return read_gguf(path, max_array=0, check_size=False)


def tensors(path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("moe", [False, True], ids=["qwen35", "qwen35moe"])
def test_llama_cpp_refuses_the_blob_and_the_translation_gives_the_same_tokens(tmp_path, moe):
    text, _, blob = qwen35_pair(moe=moe)
    ref, blob = text.write(tmp_path / "upstream.gguf"), blob.write(tmp_path / "ollama.gguf")
    assert dialect.detect(_header(ref)) is None  # llama.cpp's own file loads as it is
    translation = dialect.detect(_header(blob))
    assert translation is not None and translation.has_projector
    with pytest.raises(Exception):  # three M-RoPE sections, per-layer KV heads, tensors it does not know
        greedy_tokens(blob)
    before = sha256(blob)
    out = translate(blob, tmp_path / "store")
    assert sha256(blob) == before and set(out) == {"model", "projector"}
    assert not any(t.name.startswith(("v.", "mm.", "mtp.")) for t in _header(out["model"]).tensors)
    expected = greedy_tokens(ref)
    assert len(expected) > 0
    assert greedy_tokens(out["model"]) == expected
    # Every key llama.cpp's converter writes is there with its value (tokens alone may not notice one).
    theirs, ours = read_gguf(ref).metadata, read_gguf(out["model"]).metadata
    assert {k: ours.get(k) for k in theirs if k != "general.name"} == {k: v for k, v in theirs.items() if k != "general.name"}


def test_projector_translation_matches_the_mmproj(tmp_path):
    text, mmproj, blob = qwen35_pair()
    ref, ref_clip = text.write(tmp_path / "upstream.gguf"), mmproj.write(tmp_path / "mmproj.gguf")
    blob = blob.write(tmp_path / "ollama.gguf")
    model = translate(blob, tmp_path / "store")["model"]
    plan = Plan(read_gguf(blob))
    clip = plan.copy()
    clip.keep_prefix("v.", "mm.")
    qwen35.projector(clip)
    ours = tmp_path / "projector.gguf"
    write(clip, ours)

    header, theirs_header = read_gguf(ours), read_gguf(ref_clip)
    for key, value in theirs_header.metadata.items():
        assert header.metadata.get(key) == pytest.approx(value), key
    mine, theirs = tensors(ours), tensors(ref_clip)
    assert sorted(mine) == sorted(theirs)
    for name, data in theirs.items():
        assert np.array_equal(mine[name].astype(np.float32), data.astype(np.float32)), name

    # An image through each pair in mtmd: the same embeddings, and the same logits after them.
    assert encode(model, ours) == encode(ref, ref_clip)


def encode(model_path, projector_path, n_greedy: int = 0) -> tuple[bytes, bytes, int] | list[int]:
    """The image's embeddings and the logits after a prompt holding it, as raw bytes; with
    ``n_greedy``, instead, that many greedy tokens after it (llama.cpp's own loop: its mtmd helper
    lays the image out, then one token a step)."""
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
    assert model
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch = 256, 64
    cparams.n_threads = cparams.n_threads_batch = THREADS
    lctx = llama_cpp.llama_init_from_model(model, cparams)
    mp = mtmd_cpp.mtmd_context_params_default()
    mp.use_gpu, mp.n_threads, mp.print_timings = False, THREADS, False
    ctx = mtmd_cpp.mtmd_init_from_file(str(projector_path).encode(), model, mp)
    assert ctx and mtmd_cpp.mtmd_support_vision(ctx)
    data = bmp_image(48, 40)
    bitmap = mtmd_cpp.mtmd_helper_bitmap_init_from_buf(ctx, (ctypes.c_ubyte * len(data)).from_buffer_copy(data),
                                                       len(data), False)
    chunks = mtmd_cpp.mtmd_input_chunks_init()
    try:
        raw = f"the cat sat on {mtmd_cpp.mtmd_default_marker().decode()} the mat".encode()
        text = mtmd_cpp.mtmd_input_text()
        text.text, text.text_len, text.add_special, text.parse_special = raw, len(raw), True, True
        bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd_cpp.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, 1) == 0
        image = next(mtmd_cpp.mtmd_input_chunks_get(chunks, i) for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks))
                     if mtmd_cpp.mtmd_input_chunk_get_type(mtmd_cpp.mtmd_input_chunks_get(chunks, i))
                     == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE)
        n_tokens = mtmd_cpp.mtmd_input_chunk_get_n_tokens(image)
        assert mtmd_cpp.mtmd_encode_chunk(ctx, image) == 0
        n_embd = llama_cpp.llama_model_n_embd_inp(model)
        embd = np.ctypeslib.as_array(mtmd_cpp.mtmd_get_output_embd(ctx), shape=(n_tokens, n_embd)).copy()
        assert np.isfinite(embd).all() and embd.std() > 1e-3
        n_past = llama_cpp.llama_pos(0)
        assert mtmd_cpp.mtmd_helper_eval_chunks(ctx, lctx, chunks, 0, 0, 64, True, ctypes.byref(n_past)) == 0
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx, -1), shape=(n_vocab,)).copy()
        if not n_greedy:
            return embd.tobytes(), logits.tobytes(), n_tokens
        out = []
        for _ in range(n_greedy):
            token = int(np.argmax(logits))
            if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(model), token):
                break
            top = logits.astype(np.float64).max()
            out.append((token, float(logits[token] - top - np.log(np.exp(logits - top).sum()))))
            one = (llama_cpp.llama_token * 1)(token)
            assert llama_cpp.llama_decode(lctx, llama_cpp.llama_batch_get_one(one, 1)) == 0
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx, -1), shape=(n_vocab,)).copy()
        return out
    finally:
        mtmd_cpp.mtmd_input_chunks_free(chunks)
        mtmd_cpp.mtmd_bitmap_free(bitmap)
        mtmd_cpp.mtmd_free(ctx)
        llama_cpp.llama_free(lctx)
        llama_cpp.llama_model_free(model)


@pytest.mark.parametrize("moe", [False, True], ids=["qwen35", "qwen35moe"])
def test_the_engine_places_an_image_on_the_mrope_grid_as_llama_cpp_does(tmp_path, moe):
    """An image takes fewer positions than cells under M-RoPE: the text after it, and every token
    generated, must sit where llama.cpp's own helper puts them, or the tokens differ."""
    from a3s_power.core import _core
    from tests.conftest import collect, context_params, greedy

    _, _, blob = qwen35_pair(moe=moe)
    out = translate(blob.write(tmp_path / "ollama.gguf"), tmp_path / "store")
    expected = encode(out["model"], out["projector"], n_greedy=8)  # (token, its log-probability)
    assert len(expected) > 0
    params = _core.ModelParams()
    params.n_gpu_layers = 0
    model = _core.Model(str(out["model"]), params)
    try:
        projector = _core.Projector(model, str(out["projector"]), THREADS, False)
        prompt = projector.tokenize(f"the cat sat on {projector.marker} the mat", [bmp_image(48, 40)], True)
        engine = _core.Engine(model, context_params(n_ctx=256, n_batch=64), [], projector)
        try:
            for _ in range(2):  # the second time, the image is in the slot's cache already
                rid = engine.submit_multimodal(
                    prompt, _core.GenerateParams(sampling=greedy(), num_predict=len(expected), logprobs=True))
                result = collect(engine, [rid])[rid]
                assert result.error == "" and result.tokens == [t for t, _ in expected]
                # Log-probabilities see every position, even where the argmax would not change
                # (text placed as if the image took one position per cell is off by 1e-2 here).
                assert [lp.logprob for lp in result.logprobs] == pytest.approx([p for _, p in expected], abs=2e-3)
        finally:
            engine.close()
    finally:
        model.close()
