"""Tiny gpt-oss models (llama.cpp's ``gpt-oss`` architecture) whose weights are crafted, not random,
so that greedy decoding writes a chosen harmony answer on any CPU.

How: the attention output and the experts' down projections carry nothing of the token, so the
residual stream is the token's embedding (orthonormal rows) plus one "phase" direction ``f``. The
output layer maps each (token, phase) to its chosen successor: a successor machine. Harmony reuses
``<|channel|>`` and ``<|message|>`` in every message, with different words after them, so one
attention head remembers whether a chosen *flag* token has been written yet: its key and value are
non-zero only for the flag, its query is a constant (the query bias), and it adds ``2f`` once the
flag is in the context; the output bias ``-f`` makes the phase -f before and +f after. Query and key
sit on the slowest RoPE pair under a huge frequency base, so position does not disturb them.

The prompt's text tokenizes to single bytes (the vocabulary has no merges that build the words),
so a chat prompt ends with the byte ``t`` of ``<|start|>assistant``: the chain starts there, and
the whole-word tokens of the chain never occur in a prompt.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from tests.dialect_models import GT, TinyModel, gptoss_as_ollama_dialect
from tests.gpt_oss_templates import JINJA
from tests.tiny_models import _byte_symbols

SPECIALS = ("<|startoftext|>", "<|endoftext|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>",
            "<|constrain|>", "<|return|>", "<|call|>")
PROMPT_END = "t"  # the last byte of "<|start|>assistant"
N_EMBD, HEAD_DIM, N_FF_EXP, N_EXPERT = 384, 64, 16, 2

# The answers the fixtures write (whole words are single tokens).
THINK_THEN_ANSWER = ["<|channel|>", "analysis", "<|message|>", "Let me think about France.", "<|end|>",
                     "<|start|>", "assistant", "<|channel|>", "final", "<|message|>",
                     "Paris is the capital of France.", "<|return|>"]
THINK_THEN_CALL = ["<|channel|>", "analysis", "<|message|>", "Need the weather.", "<|end|>",
                   "<|start|>", "assistant", "<|channel|>", "commentary", " to=functions.get_weather",
                   "<|constrain|>", "json", "<|message|>", '{"city":"Paris"}', "<|call|>"]


def _encode(word: str) -> str:
    """A word as a byte-level BPE vocabulary spells it (GPT-2's bytes-to-characters table)."""
    table = _byte_symbols()
    return "".join(table[b] for b in word.encode("utf-8"))


def tiny_gptoss(answer: list[str], flag: str | None = None, *, chat_template: str | None = JINJA) -> TinyModel:
    """A gpt-oss that answers any chat prompt with ``answer`` (token texts; special tokens by
    name). ``flag`` is a token of the answer that occurs once: tokens repeated with different
    successors take the one before the flag until it is written and the other after."""
    symbols = _byte_symbols()
    merges = [f"{symbols[ord(' ')]} {symbols[ord('t')]}"]
    words = [w for w in dict.fromkeys(answer) if w not in SPECIALS]
    tokens = symbols + ["".join(m.split()) for m in merges] + [_encode(w) for w in words] + list(SPECIALS)
    types = ([gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIALS)) + [gguf.TokenType.CONTROL] * len(SPECIALS))
    assert len(set(tokens)) == len(tokens), "a word of the answer is already a token"
    n_vocab = len(tokens)
    assert n_vocab + 1 <= N_EMBD
    ids = {w: tokens.index(_encode(w)) for w in words} | {s: tokens.index(s) for s in SPECIALS}
    start = symbols.index(PROMPT_END)

    # (token, phase) -> successor, phase 1 from the flag on.
    chain = [start] + [ids[w] for w in answer]
    flag_id = ids[flag] if flag is not None else -1
    assert flag is None or answer.count(flag) == 1
    successor: dict[tuple[int, int], int] = {}
    phase = 0
    for here, nxt in zip(chain, chain[1:]):
        phase = phase or int(here == flag_id)
        assert successor.setdefault((here, phase), nxt) == nxt, "one token, two successors in one phase"

    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((N_EMBD, N_EMBD)))
    emb = basis[:n_vocab].astype(np.float32)  # orthonormal rows
    f = basis[n_vocab].astype(np.float32)  # the phase direction

    # Output rows: an unambiguous successor scores 3 on its token; a phase-dependent one 1.5 in
    # its phase and 0.5 in the other; every stray phase term is worth at most 0.5.
    out = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    for (token, ph), nxt in successor.items():
        if (token, 1 - ph) in successor and successor[(token, 1 - ph)] != nxt:
            out[nxt] += emb[token] + (0.5 if ph else -0.5) * f
        else:
            out[nxt] += 3.0 * emb[token]
    out *= 8.0
    for (token, ph), nxt in successor.items():  # the design holds, with room to spare
        x = emb[token] + (1.0 if ph else -1.0) * f
        logits = out @ (x / np.sqrt(np.mean(x * x)))
        best = np.sort(logits)[-2:]
        assert int(np.argmax(logits)) == nxt and best[1] - best[0] > 10.0, (token, ph)

    # The flag head. Attention scores are q.k / sqrt(HEAD_DIM); 30 makes the flag take it all.
    slow = HEAD_DIM - 1  # the slowest-turning RoPE dimension (NEOX and normal pairing alike)
    norm_scale = np.sqrt(N_EMBD)  # an orthonormal embedding after RMS norm
    q_bias = np.zeros(HEAD_DIM, dtype=np.float32)
    q_bias[slow] = 16.0
    w_k = np.zeros((HEAD_DIM, N_EMBD), dtype=np.float32)
    w_v = np.zeros((HEAD_DIM, N_EMBD), dtype=np.float32)
    w_o = np.zeros((N_EMBD, HEAD_DIM), dtype=np.float32)
    if flag_id >= 0:
        w_k[slow] = emb[flag_id] * (30.0 * np.sqrt(HEAD_DIM) / 16.0 / norm_scale)
        w_v[0] = emb[flag_id]
        w_o[:, 0] = f * (2.0 / norm_scale)

    m = TinyModel("gpt-oss")
    a = "gpt-oss."
    m.set("general.architecture", "gpt-oss", GT.STRING)
    m.set("general.name", "tiny-crafted-gpt-oss", GT.STRING)
    m.set("general.file_type", int(gguf.LlamaFileType.ALL_F32), GT.UINT32)
    for key, value in (("context_length", 4096), ("embedding_length", N_EMBD), ("block_count", 1),
                       ("feed_forward_length", N_FF_EXP), ("expert_feed_forward_length", N_FF_EXP),
                       ("expert_count", N_EXPERT), ("expert_used_count", 1), ("attention.head_count", 1),
                       ("attention.head_count_kv", 1), ("attention.key_length", HEAD_DIM),
                       ("attention.value_length", HEAD_DIM), ("rope.dimension_count", HEAD_DIM),
                       ("attention.sliding_window", 4096), ("rope.scaling.original_context_length", 4096)):
        m.set(a + key, value, GT.UINT32)
    m.set(a + "attention.layer_norm_rms_epsilon", 1e-5, GT.FLOAT32)
    m.set(a + "rope.freq_base", 1e12, GT.FLOAT32)
    m.set(a + "rope.scaling.type", "yarn", GT.STRING)  # as gpt-oss's own files have it
    m.set(a + "rope.scaling.factor", 32.0, GT.FLOAT32)
    m.set("tokenizer.ggml.model", "gpt2", GT.STRING)
    m.set("tokenizer.ggml.pre", "gpt-4o", GT.STRING)
    m.set("tokenizer.ggml.tokens", tokens, GT.ARRAY, GT.STRING)
    m.set("tokenizer.ggml.token_type", [int(t) for t in types], GT.ARRAY, GT.INT32)
    m.set("tokenizer.ggml.merges", merges, GT.ARRAY, GT.STRING)
    m.set("tokenizer.ggml.bos_token_id", ids["<|startoftext|>"], GT.UINT32)
    m.set("tokenizer.ggml.eos_token_id", ids["<|return|>"], GT.UINT32)
    m.set("tokenizer.ggml.padding_token_id", ids["<|endoftext|>"], GT.UINT32)
    m.set("tokenizer.ggml.add_bos_token", False, GT.BOOL)
    if chat_template is not None:
        m.set("tokenizer.chat_template", chat_template, GT.STRING)

    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    t = m.tensors
    t["token_embd.weight"] = emb
    t["output_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    t["output.weight"] = out
    t["blk.0.attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    t["blk.0.post_attention_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    t["blk.0.attn_q.weight"], t["blk.0.attn_q.bias"] = zeros(HEAD_DIM, N_EMBD), q_bias
    t["blk.0.attn_k.weight"], t["blk.0.attn_k.bias"] = w_k, zeros(HEAD_DIM)
    t["blk.0.attn_v.weight"], t["blk.0.attn_v.bias"] = w_v, zeros(HEAD_DIM)
    t["blk.0.attn_output.weight"], t["blk.0.attn_output.bias"] = w_o, -f
    t["blk.0.attn_sinks.weight"] = zeros(1)
    t["blk.0.ffn_gate_inp.weight"], t["blk.0.ffn_gate_inp.bias"] = zeros(N_EXPERT, N_EMBD), zeros(N_EXPERT)
    t["blk.0.ffn_gate_exps.weight"] = zeros(N_EXPERT, N_FF_EXP, N_EMBD)
    t["blk.0.ffn_gate_exps.bias"] = zeros(N_EXPERT, N_FF_EXP)
    t["blk.0.ffn_up_exps.weight"] = zeros(N_EXPERT, N_FF_EXP, N_EMBD)
    t["blk.0.ffn_up_exps.bias"] = zeros(N_EXPERT, N_FF_EXP)
    # The experts write nothing back: the residual stream stays the embedding and the phase.
    t["blk.0.ffn_down_exps.weight"] = zeros(N_EXPERT, N_EMBD, N_FF_EXP)
    t["blk.0.ffn_down_exps.bias"] = zeros(N_EXPERT, N_EMBD)
    return m


# The same model as Ollama's converter wrote gpt-oss before v0.30.
as_ollama_dialect = gptoss_as_ollama_dialect


def write_tiny_gptoss(path: Path, answer: list[str], flag: str | None = None, *,
                      chat_template: str | None = JINJA) -> Path:
    """:func:`tiny_gptoss` written as llama.cpp writes gpt-oss."""
    return tiny_gptoss(answer, flag, chat_template=chat_template).write(path)
