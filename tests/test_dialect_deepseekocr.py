"""DeepSeek-OCR in Ollama's dialect (store/dialect/deepseekocr.py): llama.cpp refuses the one blob;
translated, its text model gives the greedy tokens of llama.cpp's text file, and its projector,
given an image, the greedy tokens of llama.cpp's text file with llama.cpp's projector."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from a3s_power.core import _core
from a3s_power.store import dialect
from a3s_power.store.gguf import read_gguf
from tests.conftest import THREADS, collect, context_params, greedy
from tests.dialect_models_deepseekocr import deepseekocr_pair
from tests.test_dialect import greedy_tokens, sha256, translate
from tests.tiny_projector import bmp_image

N_TOKENS = 8


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepseekocr")
    upstream, ollama = deepseekocr_pair()
    ref = upstream.text.write(root / "upstream.gguf")
    mmproj = upstream.mmproj.write(root / "mmproj.gguf")
    blob = ollama.write(root / "ollama.gguf")
    before = sha256(blob)
    derived = translate(blob, root / "store")
    assert sha256(blob) == before  # the blob is never touched
    return {"ref": ref, "mmproj": mmproj, "blob": blob, **derived}


def _header(path: Path):
    return read_gguf(path, max_array=0, check_size=False)


def test_llama_cpp_refuses_the_dialect_blob(files):
    assert dialect.detect(_header(files["ref"])) is None
    translation = dialect.detect(_header(files["blob"]))
    assert translation.dialect.arch == "deepseekocr" and translation.has_projector
    with pytest.raises(Exception, match="deepseekocr"):  # an architecture llama.cpp does not know
        greedy_tokens(files["blob"])


def test_translated_text_model_gives_the_same_greedy_tokens(files):
    text = _header(files["model"])
    assert text.architecture == "deepseek2-ocr"
    assert not any(t.name.startswith(("s.", "v.", "mm.")) for t in text.tensors)  # the encoders are hidden
    assert text.metadata["deepseek2-ocr.expert_feed_forward_length"] == 32
    assert text.metadata["deepseek2-ocr.expert_shared_count"] == 2
    assert_same_tensors(files["model"], files["ref"])
    expected = greedy_tokens(files["ref"])
    assert len(set(expected)) > 1
    assert greedy_tokens(files["model"]) == expected


def tensors(path: Path) -> dict[str, tuple[tuple[int, ...], int, np.ndarray]]:
    """Every tensor of a file: ggml shape, ggml type and raw bytes."""
    return {t.name: (tuple(int(n) for n in t.shape), int(t.tensor_type), np.asarray(t.data).view(np.uint8).copy())
            for t in gguf.GGUFReader(path).tensors}


def assert_same_tensors(got: Path, expected: Path) -> None:
    a, b = tensors(got), tensors(expected)
    assert sorted(a) == sorted(b)
    for name, (shape, type_, data) in b.items():
        assert a[name][:2] == (shape, type_), name
        assert np.array_equal(a[name][2], data), name


def image_tokens(model_path: Path, projector_path: Path) -> tuple[list[int], int]:
    """Greedy tokens for a prompt holding one image, and how many positions the image took."""
    params = _core.ModelParams()
    params.n_gpu_layers = 0
    model = _core.Model(str(model_path), params)
    try:
        projector = _core.Projector(model, str(projector_path), THREADS, False)
        prompt = projector.tokenize(f"{projector.marker}\nFree OCR.", [bmp_image(24, 16, seed=3)], True)
        engine = _core.Engine(model, context_params(n_ctx=512), [], projector)
        try:
            rid = engine.submit_multimodal(prompt, _core.GenerateParams(sampling=greedy(), num_predict=N_TOKENS))
            result = collect(engine, [rid], timeout_s=300)[rid]
            assert result.error == ""
            return result.tokens, prompt.image_tokens[0]
        finally:
            engine.close()
    finally:
        model.close()


def test_translated_projector_reads_an_image_as_llama_cpp_projector_does(files):
    clip = _header(files["projector"])
    assert clip.architecture == "clip"
    assert clip.metadata["clip.projector_type"] == "deepseekocr"
    assert not any(k.startswith(("tokenizer.", "deepseekocr.")) for k in clip.metadata)
    # llama.cpp's own projector, tensor for tensor: names, shapes, F32 where it keeps F32, bytes
    assert_same_tensors(files["projector"], files["mmproj"])
    expected, n_image = image_tokens(files["ref"], files["mmproj"])
    # a small image is the global view only: 16x16 features, a newline after each row, a separator
    assert n_image == 16 * 17 + 1
    assert len(set(expected)) > 1
    got, n_got = image_tokens(files["model"], files["projector"])
    assert (got, n_got) == (expected, n_image)
