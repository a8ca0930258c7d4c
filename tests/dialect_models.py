"""Tiny random-weight models written twice: as llama.cpp's converter writes them, and in Ollama's
own GGUF dialect as Ollama's converter wrote them (store/dialect translates the second).

A model is an architecture, its metadata and its tensors (numpy, slowest dimension first, as
``gguf.GGUFWriter`` takes them). Each family's ``*_pair`` returns both forms of the same weights,
so greedy tokens of the translated dialect file must equal those of the llama.cpp file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from tests.tiny_models import CHATML_TEMPLATE, _vocab

GT = gguf.GGUFValueType


@dataclass
class TinyModel:
    arch: str
    kv: dict[str, tuple[Any, GT, GT | None]] = field(default_factory=dict)  # key: (value, type, item type)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def set(self, key: str, value: Any, vtype: GT, item: GT | None = None) -> None:
        self.kv[key] = (value, vtype, item)

    def rename_keys(self, old_prefix: str, new_prefix: str) -> None:
        self.kv = {(new_prefix + k[len(old_prefix):] if k.startswith(old_prefix) else k): v for k, v in self.kv.items()}

    def rename_tensors(self, fn: Callable[[str], str]) -> None:
        self.tensors = {fn(k): v for k, v in self.tensors.items()}

    def copy(self) -> TinyModel:
        return TinyModel(self.arch, dict(self.kv), dict(self.tensors))

    def write(self, path: Path) -> Path:
        writer = gguf.GGUFWriter(str(path), self.arch)
        for key, (value, vtype, item) in self.kv.items():
            if key == "general.architecture":
                continue
            writer.add_key_value(key, value, vtype, sub_type=item)
        for name, data in self.tensors.items():
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path


def with_vocab(model: TinyModel, *, pre: str = "default", template: str = CHATML_TEMPLATE,
               extra_tokens: tuple[str, ...] = ()) -> int:
    """Adds the byte-level BPE vocabulary of ``tiny_models`` (plus ``extra_tokens`` as control
    tokens); returns its size."""
    tokens, types, merges = _vocab()
    tokens = tokens + list(extra_tokens)
    types = types + [int(gguf.TokenType.CONTROL)] * len(extra_tokens)
    model.set("tokenizer.ggml.model", "gpt2", GT.STRING)
    model.set("tokenizer.ggml.pre", pre, GT.STRING)
    model.set("tokenizer.ggml.tokens", tokens, GT.ARRAY, GT.STRING)
    model.set("tokenizer.ggml.token_type", types, GT.ARRAY, GT.INT32)
    model.set("tokenizer.ggml.merges", merges, GT.ARRAY, GT.STRING)
    model.set("tokenizer.ggml.bos_token_id", tokens.index("<|endoftext|>"), GT.UINT32)
    model.set("tokenizer.ggml.eos_token_id", tokens.index("<|im_end|>"), GT.UINT32)
    model.set("tokenizer.ggml.add_bos_token", False, GT.BOOL)
    model.set("tokenizer.chat_template", template, GT.STRING)
    return len(tokens)


class Weights:
    """Random tensors, drawn reproducibly."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int, scale: float = 0.5) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale / np.sqrt(shape[-1])).astype(np.float32)

    def norm(self, n: int) -> np.ndarray:
        return (1.0 + 0.1 * self.rng.standard_normal(n)).astype(np.float32)


# --- gpt-oss -----------------------------------------------------------------------------------

def gptoss_pair(n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_head_kv: int = 2, head_dim: int = 16,
                n_expert: int = 4, n_ff_exp: int = 32, seed: int = 0) -> tuple[TinyModel, TinyModel]:
    """gpt-oss as llama.cpp writes it (``gpt-oss``), and as Ollama's converter wrote it before
    v0.30 (``gptoss``: its own key prefix, no per-expert feed-forward length, a generic
    pre-tokenizer, and ``attn_out`` / ``attn_sinks`` / ``ffn_norm`` tensor names)."""
    w = Weights(seed)
    m = TinyModel("gpt-oss")
    a = "gpt-oss."
    m.set("general.architecture", "gpt-oss", GT.STRING)
    m.set("general.name", "tiny-gpt-oss", GT.STRING)
    for key, value in (("context_length", 1024), ("embedding_length", n_embd), ("block_count", n_layer),
                       ("feed_forward_length", n_ff_exp), ("expert_feed_forward_length", n_ff_exp),
                       ("expert_count", n_expert), ("expert_used_count", 2), ("attention.head_count", n_head),
                       ("attention.head_count_kv", n_head_kv), ("attention.key_length", head_dim),
                       ("attention.value_length", head_dim), ("attention.sliding_window", 128),
                       ("rope.scaling.original_context_length", 1024)):
        m.set(a + key, value, GT.UINT32)
    m.set(a + "attention.layer_norm_rms_epsilon", 1e-5, GT.FLOAT32)
    m.set(a + "rope.freq_base", 150000.0, GT.FLOAT32)
    m.set(a + "rope.scaling.type", "yarn", GT.STRING)
    m.set(a + "rope.scaling.factor", 32.0, GT.FLOAT32)
    n_vocab = with_vocab(m, pre="gpt-4o")
    t = m.tensors
    t["token_embd.weight"] = w(n_vocab, n_embd, scale=8.0)
    t["output_norm.weight"] = w.norm(n_embd)
    t["output.weight"] = w(n_vocab, n_embd, scale=8.0)
    q, kv = n_head * head_dim, n_head_kv * head_dim
    for i in range(n_layer):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"] = w.norm(n_embd)
        t[b + "post_attention_norm.weight"] = w.norm(n_embd)
        t[b + "attn_q.weight"], t[b + "attn_q.bias"] = w(q, n_embd), w(q)
        t[b + "attn_k.weight"], t[b + "attn_k.bias"] = w(kv, n_embd), w(kv)
        t[b + "attn_v.weight"], t[b + "attn_v.bias"] = w(kv, n_embd), w(kv)
        t[b + "attn_output.weight"], t[b + "attn_output.bias"] = w(n_embd, q), w(n_embd)
        t[b + "attn_sinks.weight"] = w(n_head)
        t[b + "ffn_gate_inp.weight"], t[b + "ffn_gate_inp.bias"] = w(n_expert, n_embd), w(n_expert)
        t[b + "ffn_gate_exps.weight"] = w(n_expert, n_ff_exp, n_embd)
        t[b + "ffn_up_exps.weight"] = w(n_expert, n_ff_exp, n_embd)
        t[b + "ffn_down_exps.weight"] = w(n_expert, n_embd, n_ff_exp)
        t[b + "ffn_gate_exps.bias"], t[b + "ffn_up_exps.bias"] = w(n_expert, n_ff_exp), w(n_expert, n_ff_exp)
        t[b + "ffn_down_exps.bias"] = w(n_expert, n_embd)

    return m, gptoss_as_ollama_dialect(m)


def gptoss_as_ollama_dialect(model: TinyModel) -> TinyModel:
    """A llama.cpp-shaped gpt-oss as Ollama's converter wrote it before v0.30 (the facts
    store/dialect/gptoss.py undoes)."""
    d = model.copy()
    d.arch = "gptoss"
    d.rename_keys("gpt-oss.", "gptoss.")
    d.set("general.architecture", "gptoss", GT.STRING)
    del d.kv["gptoss.expert_feed_forward_length"]
    d.set("tokenizer.ggml.pre", "default", GT.STRING)
    d.rename_tensors(lambda n: n.replace(".attn_output", ".attn_out").replace(".attn_sinks.weight", ".attn_sinks")
                     .replace(".post_attention_norm", ".ffn_norm"))
    return d


# --- lfm2 --------------------------------------------------------------------------------------

def lfm2_pair(n_embd: int = 64, n_layer: int = 3, n_head: int = 4, n_head_kv: int = 2, n_ff: int = 96,
              seed: int = 0) -> tuple[TinyModel, TinyModel]:
    """LFM2 (short convolutions and attention layers) as llama.cpp writes it, and as Ollama's
    converter did: ``output_norm`` for ``token_embd_norm``, an unnamed pre-tokenizer and a
    feed-forward length that does not match the tensors."""
    w = Weights(seed)
    m = TinyModel("lfm2")
    a = "lfm2."
    m.set("general.architecture", "lfm2", GT.STRING)
    m.set("general.name", "tiny-lfm2", GT.STRING)
    for key, value in (("context_length", 1024), ("embedding_length", n_embd), ("block_count", n_layer),
                       ("feed_forward_length", n_ff), ("attention.head_count", n_head), ("shortconv.l_cache", 3)):
        m.set(a + key, value, GT.UINT32)
    attention_layers = [i % 2 == 1 for i in range(n_layer)]
    m.set(a + "attention.head_count_kv", [n_head_kv if x else 0 for x in attention_layers], GT.ARRAY, GT.UINT32)
    m.set(a + "attention.layer_norm_rms_epsilon", 1e-5, GT.FLOAT32)
    m.set(a + "rope.freq_base", 1000000.0, GT.FLOAT32)
    n_vocab = with_vocab(m, pre="lfm2")
    t = m.tensors
    t["token_embd.weight"] = w(n_vocab, n_embd, scale=8.0)
    t["token_embd_norm.weight"] = w.norm(n_embd)
    head_dim = n_embd // n_head
    for i, attention in enumerate(attention_layers):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"] = w.norm(n_embd)
        t[b + "ffn_norm.weight"] = w.norm(n_embd)
        t[b + "ffn_gate.weight"], t[b + "ffn_up.weight"] = w(n_ff, n_embd), w(n_ff, n_embd)
        t[b + "ffn_down.weight"] = w(n_embd, n_ff)
        if attention:
            t[b + "attn_q.weight"] = w(n_embd, n_embd)
            t[b + "attn_k.weight"] = w(n_head_kv * head_dim, n_embd)
            t[b + "attn_v.weight"] = w(n_head_kv * head_dim, n_embd)
            t[b + "attn_output.weight"] = w(n_embd, n_embd)
            t[b + "attn_q_norm.weight"], t[b + "attn_k_norm.weight"] = w.norm(head_dim), w.norm(head_dim)
        else:
            t[b + "shortconv.conv.weight"] = w(n_embd, 3)
            t[b + "shortconv.in_proj.weight"] = w(3 * n_embd, n_embd)
            t[b + "shortconv.out_proj.weight"] = w(n_embd, n_embd)

    d = m.copy()
    d.set("tokenizer.ggml.pre", "default", GT.STRING)
    d.set(a + "feed_forward_length", n_ff * 4, GT.UINT32)
    d.rename_tensors(lambda n: "output_norm.weight" if n == "token_embd_norm.weight" else n)
    return m, d
