"""Loading models, reading their metadata, tokenizing, and refusing what cannot be loaded."""

from __future__ import annotations

import shutil

import pytest

from a3s_power.core import _core
from a3s_power.errors import A3SPowerError, InvalidOptionError, ModelLoadError
from tests.conftest import context_params
from tests.tiny_models import write_tiny_llama


def test_metadata_of_a_real_model(smollm2):
    assert smollm2.architecture == "llama"
    assert smollm2.n_ctx_train == 8192
    assert smollm2.n_embd == 576
    assert smollm2.n_layer == 30
    assert 130e6 < smollm2.n_params < 140e6
    assert 80e6 < smollm2.size < 100e6
    meta = smollm2.metadata()
    assert meta["general.architecture"] == "llama"
    assert meta["llama.context_length"] == "8192"
    assert smollm2.meta("llama.embedding_length") == "576"
    assert smollm2.meta("no.such.key") is None
    template = smollm2.chat_template()
    assert template is not None and "<|im_start|>" in template
    assert "Q4_1" in smollm2.description
    assert smollm2.load_duration_ns > 0


def test_tokenize_and_detokenize_round_trip(smollm2):
    text = "Hello, world! Ünïcödé 中文 😀"
    tokens = smollm2.tokenize(text, False, False)
    assert smollm2.detokenize(tokens) == text
    with_special = smollm2.tokenize("<|im_start|>user", False, True)
    as_text = smollm2.tokenize("<|im_start|>user", False, False)
    assert len(with_special) < len(as_text)
    assert smollm2.token_to_piece(with_special[0], True) == b"<|im_start|>"
    assert smollm2.token_to_piece(with_special[0], False) == b""
    assert smollm2.is_eog(smollm2.eos_token)


def test_detokenize_refuses_unknown_token_ids(smollm2):
    with pytest.raises(InvalidOptionError, match="outside the vocabulary"):
        smollm2.detokenize([5, -1])
    with pytest.raises(InvalidOptionError):
        smollm2.token_to_piece(10_000_000)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.gguf"
    with pytest.raises(ModelLoadError, match="nope.gguf.*no such file"):
        _core.Model(str(path))


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ModelLoadError, match="directory"):
        _core.Model(str(tmp_path))


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("these are not weights\n")
    with pytest.raises(ModelLoadError, match="notes.gguf.*not a GGUF file"):
        _core.Model(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        _core.Model(str(path))


def test_truncated_gguf(tmp_path, tiny_path):
    data = open(tiny_path, "rb").read()
    for cut in (6, 200, len(data) // 2, len(data) - 10):
        path = tmp_path / f"truncated-{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError, match=f"truncated-{cut}.gguf"):
            _core.Model(str(path))


def test_unknown_architecture(tmp_path):
    path = write_tiny_llama(tmp_path / "alien.gguf", architecture="alienformer")
    with pytest.raises(ModelLoadError, match="alien.gguf.*alienformer"):
        _core.Model(str(path))


def test_errors_are_the_package_exceptions(tmp_path):
    with pytest.raises(A3SPowerError):
        _core.Model(str(tmp_path / "missing.gguf"))


@pytest.mark.parametrize(
    "params, option",
    [
        ({"n_ctx": 0}, "num_ctx"),
        ({"n_ctx": -5}, "num_ctx"),
        ({"n_threads": -1}, "num_thread"),
        ({"n_threads_batch": -2}, "num_thread_batch"),
        ({"n_batch": 0}, "num_batch"),
        ({"n_parallel": 0}, "num_parallel"),
        ({"type_k": "q2_banana"}, "kv_cache_type"),
        ({"flash_attn": "sometimes"}, "flash_attention"),
    ],
)
def test_impossible_context_options(tiny, params, option):
    with pytest.raises(InvalidOptionError, match=option):
        _core.Engine(tiny, context_params(**params))


def test_impossible_model_options(tiny_path):
    p = _core.ModelParams()
    p.main_gpu = -1
    with pytest.raises(InvalidOptionError, match="main_gpu"):
        _core.Model(tiny_path, p)
    p = _core.ModelParams()
    p.split_mode = "diagonal"
    with pytest.raises(InvalidOptionError, match="split_mode"):
        _core.Model(tiny_path, p)


def test_load_options_are_accepted(tiny_path):
    for mmap, mlock in ((True, False), (False, False), (True, True)):
        p = _core.ModelParams()
        p.use_mmap, p.use_mlock, p.n_gpu_layers = mmap, mlock, 0
        model = _core.Model(tiny_path, p)
        engine = _core.Engine(model, context_params(n_ctx=128, type_k="q8_0", type_v="q8_0", flash_attn="on",
                                                    n_batch=32))
        engine.close()
        model.close()


def test_closed_model_refuses_work(tmp_path, tiny_path):
    copy = shutil.copy(tiny_path, tmp_path / "copy.gguf")
    model = _core.Model(str(copy))
    model.close()
    assert model.closed
    with pytest.raises(A3SPowerError, match="closed"):
        model.tokenize("hi")
    model.close()  # closing twice is fine


def test_embedding_engine_and_generation_engine_keep_to_their_kind(tiny):
    gen = _core.Engine(tiny, context_params(n_ctx=128))
    emb = _core.Engine(tiny, context_params(n_ctx=128, embeddings=True))
    try:
        with pytest.raises(InvalidOptionError, match="embeddings"):
            gen.submit_embedding([1, 2, 3], True)
        with pytest.raises(InvalidOptionError, match="embeddings"):
            emb.submit([1, 2, 3], _core.GenerateParams(sampling=_core.SamplingParams(), num_predict=5))
    finally:
        gen.close()
        emb.close()
