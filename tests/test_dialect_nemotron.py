"""Nemotron-H MoE in Ollama's dialect (store/dialect/nemotron_h_moe.py): llama.cpp refuses the blob
as written; translated, it gives the greedy tokens of the same weights written as llama.cpp writes
them."""

from __future__ import annotations

import pytest

from a3s_power.store import dialect
from a3s_power.store.gguf import read_gguf
from tests.dialect_models_nemotron import nemotron_pair
from tests.test_dialect import greedy_tokens, sha256, translate
from tests.test_dialect_deepseekocr import assert_same_tensors

VARIANTS = {"latent+mtp": dict(latent=True, mtp=True), "latent": dict(latent=True, mtp=False),
            "mtp": dict(latent=False, mtp=True)}


def _header(path):
    return read_gguf(path, max_array=0, check_size=False)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_translated_nemotron_gives_the_same_greedy_tokens(tmp_path, variant):
    upstream, ollama = nemotron_pair(**VARIANTS[variant])
    ref = upstream.write(tmp_path / "upstream.gguf")
    blob = ollama.write(tmp_path / "ollama.gguf")
    assert dialect.detect(_header(ref)) is None  # llama.cpp's own file loads as it is
    with pytest.raises(Exception):  # llama.cpp refuses the dialect: latent shapes or unclaimed mtp.* tensors
        greedy_tokens(blob)
    before = sha256(blob)
    files = translate(blob, tmp_path / "store")
    assert sha256(blob) == before
    assert "projector" not in files  # text only
    translated = _header(files["model"])
    assert not any(t.name.startswith("mtp.") for t in translated.tensors)
    if VARIANTS[variant]["latent"]:
        assert translated.metadata["nemotron_h_moe.moe_latent_size"] == 32
    assert_same_tensors(files["model"], ref)  # llama.cpp's own file, tensor for tensor
    expected = greedy_tokens(ref)
    assert len(set(expected)) > 1
    assert greedy_tokens(files["model"]) == expected


def test_a_standard_nemotron_file_is_not_translated(tmp_path):
    # a file with neither latent tensors nor an MTP head is what llama.cpp loads: left alone
    _, ollama = nemotron_pair(latent=False, mtp=False)
    path = ollama.write(tmp_path / "plain.gguf")
    assert dialect.detect(_header(path)) is None
    assert len(greedy_tokens(path)) > 0
