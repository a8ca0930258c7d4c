"""Tiny random-weight GGUF models, generated with the ``gguf`` package, for fast tests.

Random weights prove plumbing, never quality: what such a model says is noise. The tokenizer is a
byte-level BPE over all 256 bytes plus a few merges and ChatML's special tokens, so any text
tokenizes and generation produces arbitrary bytes, which is just what UTF-8 handling needs.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _byte_symbols() -> list[str]:
    """GPT-2's reversible mapping of the 256 byte values onto printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    table = dict(zip(printable, codes))
    return [chr(table[b]) for b in range(256)]


def _vocab() -> tuple[list[str], list[int], list[str]]:
    symbols = _byte_symbols()
    space = symbols[ord(" ")]
    merges = [f"{space} t", f"{space} a", "h e", "i n", f"{space} th"]
    merged = [m.replace(" ", "") for m in merges]
    tokens = symbols + merged + list(SPECIAL_TOKENS)
    types = [gguf.TokenType.NORMAL] * (len(symbols) + len(merged)) + [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    return tokens, [int(t) for t in types], merges


def write_tiny_llama(
    path: Path,
    *,
    architecture: str = "llama",
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 2,
    n_head_kv: int = 1,
    n_ff: int = 128,
    n_ctx: int = 1024,
    seed: int = 0,
    chat_template: str | None = CHATML_TEMPLATE,
    add_bos: bool = False,
    n_vocab: int = 0,
    f16: bool = False,
    rerank_template: str | None = None,
) -> Path:
    """A llama-architecture model with random weights (f32), a few MB at the default sizes.
    ``n_vocab`` pads the vocabulary with user-defined tokens to a real model's size, for benchmarks
    where the cost of the output layer and of sampling must be a real model's. ``f16`` writes the
    matrices in f16, drawn faster (benchmark shapes of billions of weights, to be quantized).
    ``architecture="qwen3"`` adds its per-head Q and K norms. ``rerank_template`` makes a reranker
    in Qwen3-Reranker's shape: rank pooling, a "yes" and a "no" output and their head (``cls.output``;
    llama.cpp takes their softmax, and the score is "yes"'s),
    and that template (with ``{query}`` and ``{document}``) as the GGUF's "rerank" template."""
    rng = np.random.default_rng(seed)
    tokens, types, merges = _vocab()
    if n_vocab > len(tokens):
        tokens += [f"<|pad_{i}|>" for i in range(n_vocab - len(tokens))]
        types += [int(gguf.TokenType.USER_DEFINED)] * (n_vocab - len(types))
    n_vocab = len(tokens)
    head_dim = n_embd // n_head

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-random-llama")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(add_bos)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if rerank_template is not None:
        writer.add_pooling_type(gguf.PoolingType.RANK)
        writer.add_array(f"{architecture}.classifier.output_labels", ["yes", "no"])
        writer.add_string("tokenizer.chat_template.rerank", rerank_template)

    def weight(*shape: int, scale: float = 0.5) -> np.ndarray:
        if f16:
            w = rng.standard_normal(shape, dtype=np.float32)
            w *= scale / np.sqrt(shape[-1])
            return w.astype(np.float16)
        return (rng.standard_normal(shape) * scale / np.sqrt(shape[-1])).astype(np.float32)

    kv_dim = head_dim * n_head_kv
    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd, scale=8.0))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, n_embd, scale=8.0))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(n_embd, n_embd))
        if architecture == "qwen3":
            writer.add_tensor(f"blk.{i}.attn_q_norm.weight", np.ones(head_dim, dtype=np.float32))
            writer.add_tensor(f"blk.{i}.attn_k_norm.weight", np.ones(head_dim, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))

    if rerank_template is not None:
        writer.add_tensor("cls.output.weight", weight(2, n_embd, scale=4.0))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
