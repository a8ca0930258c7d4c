"""The generated tiny vision projector loads in llama.cpp's libmtmd and encodes images for SmolLM2.

These tests prove plumbing, not answers: the projector's weights are random, so its embeddings carry
no meaning. What they show is that the file is a projector mtmd accepts, that an image becomes the
expected number of embeddings of the text model's width, and that those embeddings go through the
text model. They call llama-cpp-python's ctypes bindings (``llama_cpp`` and ``llama_cpp.mtmd_cpp``)
directly, the same libllama/libmtmd that ``a3s_power._core`` builds against.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from llama_cpp import mtmd_cpp

from tests.conftest import THREADS
from tests.tiny_projector import image_token_count, write_tiny_projector

SMOLLM2_N_EMBD = 576


@pytest.fixture(scope="module")
def text_model(smollm2_path):
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(smollm2_path.encode(), params)
    assert model, "SmolLM2 failed to load"
    assert llama_cpp.llama_model_n_embd_inp(model) == SMOLLM2_N_EMBD
    yield model
    llama_cpp.llama_model_free(model)


@pytest.fixture(scope="module")
def projector(tmp_path_factory) -> Path:
    return write_tiny_projector(tmp_path_factory.mktemp("mmproj") / "mmproj-576.gguf", text_n_embd=SMOLLM2_N_EMBD)


def mtmd_params() -> mtmd_cpp.mtmd_context_params:
    params = mtmd_cpp.mtmd_context_params_default()
    params.use_gpu = False
    params.n_threads = THREADS
    params.print_timings = False
    return params


class Mtmd:
    """An mtmd context over the text model, freed on exit."""

    def __init__(self, path: Path, model) -> None:
        self.ctx = mtmd_cpp.mtmd_init_from_file(str(path).encode(), model, mtmd_params())

    def __enter__(self):
        assert self.ctx, "mtmd_init_from_file returned NULL"
        return self.ctx

    def __exit__(self, *exc) -> None:
        mtmd_cpp.mtmd_free(self.ctx)


def make_bitmap(nx: int, ny: int):
    """An RGB gradient, nx x ny, row-major RGBRGB... bytes as mtmd_bitmap_init takes them."""
    y, x = np.mgrid[0:ny, 0:nx]
    rgb = np.stack([x * 255 // max(nx - 1, 1), y * 255 // max(ny - 1, 1), (x + y) % 256], axis=-1)
    data = (ctypes.c_uint8 * (nx * ny * 3)).from_buffer_copy(rgb.astype(np.uint8).tobytes())
    bitmap = mtmd_cpp.mtmd_bitmap_init(nx, ny, data)
    assert bitmap
    return bitmap


def tokenize(ctx, text: str, bitmaps: list):
    """mtmd_tokenize the text with one bitmap per media marker; returns the chunks (caller frees)."""
    chunks = mtmd_cpp.mtmd_input_chunks_init()
    raw = text.encode()
    inp = mtmd_cpp.mtmd_input_text()
    inp.text = raw
    inp.text_len = len(raw)
    inp.add_special = True
    inp.parse_special = True
    array = (mtmd_cpp.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
    rc = mtmd_cpp.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), array, len(bitmaps))
    if rc != 0:
        mtmd_cpp.mtmd_input_chunks_free(chunks)
        raise AssertionError(f"mtmd_tokenize returned {rc}")
    return chunks


def chunk_list(chunks) -> list:
    return [mtmd_cpp.mtmd_input_chunks_get(chunks, i) for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks))]


def test_projector_file_is_tiny_and_carries_the_preprocessing_metadata(projector):
    assert projector.stat().st_size < 4 * 1024 * 1024
    reader = gguf.GGUFReader(projector)
    fields = reader.fields

    def scalar(key):
        return fields[key].contents()

    assert scalar("general.architecture") == "clip"
    assert scalar("clip.projector_type") == "mlp"
    assert scalar("clip.has_vision_encoder") is True
    assert scalar("clip.vision.image_size") == 32
    assert scalar("clip.vision.patch_size") == 8
    assert scalar("clip.vision.projection_dim") == SMOLLM2_N_EMBD
    assert len(scalar("clip.vision.image_mean")) == 3
    assert len(scalar("clip.vision.image_std")) == 3
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml order: (in, out)
    assert shapes["mm.0.weight"] == (64, SMOLLM2_N_EMBD)
    assert shapes["mm.2.weight"] == (SMOLLM2_N_EMBD, SMOLLM2_N_EMBD)


@pytest.mark.parametrize(
    ("image_size", "patch_size", "nx", "ny"),
    [(32, 8, 20, 12), (48, 16, 64, 64)],
    ids=["default-32px-nonsquare-input", "48px-patch16"],
)
def test_projector_encodes_an_image_into_text_width_embeddings(
    tmp_path, text_model, image_size, patch_size, nx, ny
):
    """Plumbing, not answers: random weights, so only shapes, counts and finiteness are checked.

    mtmd loads the projector against SmolLM2, reports vision support, splits a prompt holding the
    default media marker into text / image / text chunks, and encodes the image (any size is
    stretched to image_size square) into (image_size / patch_size)^2 embeddings of 576 floats.
    """
    path = write_tiny_projector(
        tmp_path / "mmproj.gguf", text_n_embd=SMOLLM2_N_EMBD, image_size=image_size, patch_size=patch_size
    )
    expected_tokens = image_token_count(image_size, patch_size)
    with Mtmd(path, text_model) as ctx:
        assert mtmd_cpp.mtmd_support_vision(ctx)
        assert not mtmd_cpp.mtmd_support_audio(ctx)
        assert not mtmd_cpp.mtmd_decode_use_mrope(ctx)  # SmolLM2 uses plain RoPE
        marker = mtmd_cpp.mtmd_default_marker().decode()
        assert mtmd_cpp.mtmd_get_marker(ctx).decode() == marker

        bitmap = make_bitmap(nx, ny)
        chunks = tokenize(ctx, f"Describe this picture: {marker} in one word.", [bitmap])
        try:
            items = chunk_list(chunks)
            types = [mtmd_cpp.mtmd_input_chunk_get_type(c) for c in items]
            assert types == [
                mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT,
                mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE,
                mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT,
            ]
            image = items[1]
            n_tokens = mtmd_cpp.mtmd_input_chunk_get_n_tokens(image)
            assert n_tokens == expected_tokens
            assert mtmd_cpp.mtmd_input_chunk_get_n_pos(image) == expected_tokens
            assert not mtmd_cpp.mtmd_decode_use_non_causal(ctx, image)  # decode it causally

            assert mtmd_cpp.mtmd_encode_chunk(ctx, image) == 0
            ptr = mtmd_cpp.mtmd_get_output_embd(ctx)
            assert ptr
            embd = np.ctypeslib.as_array(ptr, shape=(n_tokens, SMOLLM2_N_EMBD)).copy()
            assert np.isfinite(embd).all()
            assert embd.std() > 1e-3  # not all zeros or constant
            assert not np.allclose(embd[0], embd[-1])  # position embeddings make tokens differ
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            mtmd_cpp.mtmd_bitmap_free(bitmap)


def test_image_embeddings_decode_through_the_text_model(text_model, projector):
    """Plumbing, not answers: the text / image / text chunks decode into SmolLM2's KV cache and the
    last position yields finite logits; what the model would say is noise."""
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = 256
    cparams.n_batch = 64
    cparams.n_threads = THREADS
    cparams.n_threads_batch = THREADS
    lctx = llama_cpp.llama_init_from_model(text_model, cparams)
    assert lctx
    try:
        with Mtmd(projector, text_model) as ctx:
            marker = mtmd_cpp.mtmd_default_marker().decode()
            bitmap = make_bitmap(32, 32)
            chunks = tokenize(ctx, f"Look: {marker} What is it?", [bitmap])
            try:
                n_pos = mtmd_cpp.mtmd_helper_get_n_pos(chunks)
                assert n_pos == mtmd_cpp.mtmd_helper_get_n_tokens(chunks)  # no M-RoPE: one position a token
                new_n_past = llama_cpp.llama_pos(0)
                rc = mtmd_cpp.mtmd_helper_eval_chunks(ctx, lctx, chunks, 0, 0, 64, True, ctypes.byref(new_n_past))
                assert rc == 0
                assert new_n_past.value == n_pos
                n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(text_model))
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx, -1), shape=(n_vocab,))
                assert np.isfinite(logits).all()
            finally:
                mtmd_cpp.mtmd_input_chunks_free(chunks)
                mtmd_cpp.mtmd_bitmap_free(bitmap)
    finally:
        llama_cpp.llama_free(lctx)


def test_projector_for_the_wrong_width_is_rejected(tmp_path, text_model):
    """A projector built for n_embd 100 is refused by mtmd_init_from_file (it returns NULL and logs
    "mismatch between text model (n_embd = 576) and mmproj (n_embd = 100)"): mtmd checks the width
    against the text model at load time, so a wrong-width projector never produces embeddings."""
    path = write_tiny_projector(tmp_path / "mmproj-100.gguf", text_n_embd=100)
    messages: list[bytes] = []

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):
        if text:
            messages.append(text)

    mtmd_cpp.mtmd_log_set(capture, None)
    try:
        ctx = mtmd_cpp.mtmd_init_from_file(str(path).encode(), text_model, mtmd_params())
    finally:
        mtmd_cpp.mtmd_log_set(ctypes.cast(None, llama_cpp.llama_log_callback), None)
    if ctx:
        mtmd_cpp.mtmd_free(ctx)
    assert not ctx
    log = b"".join(messages).decode(errors="replace")
    assert "mismatch between text model (n_embd = 576) and mmproj (n_embd = 100)" in log
