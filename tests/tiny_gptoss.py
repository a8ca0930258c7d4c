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


def write_tiny_gptoss(path: Path, answer: list[str], flag: str | None = None, *,
                      chat_template: str | None = JINJA) -> Path:
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

    writer = gguf.GGUFWriter(str(path), "gpt-oss")
    writer.add_name("tiny-crafted-gpt-oss")
    writer.add_context_length(4096)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(1)
    writer.add_feed_forward_length(N_FF_EXP)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(1e12)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_expert_count(N_EXPERT)
    writer.add_expert_used_count(1)
    writer.add_expert_feed_forward_length(N_FF_EXP)
    writer.add_sliding_window(4096)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-4o")
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids["<|startoftext|>"])
    writer.add_eos_token_id(ids["<|return|>"])
    writer.add_pad_token_id(ids["<|endoftext|>"])
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    writer.add_tensor("token_embd.weight", emb)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", out)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("blk.0.post_attention_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", zeros(HEAD_DIM, N_EMBD))
    writer.add_tensor("blk.0.attn_q.bias", q_bias)
    writer.add_tensor("blk.0.attn_k.weight", w_k)
    writer.add_tensor("blk.0.attn_k.bias", zeros(HEAD_DIM))
    writer.add_tensor("blk.0.attn_v.weight", w_v)
    writer.add_tensor("blk.0.attn_v.bias", zeros(HEAD_DIM))
    writer.add_tensor("blk.0.attn_output.weight", w_o)
    writer.add_tensor("blk.0.attn_output.bias", -f)
    writer.add_tensor("blk.0.attn_sinks.weight", zeros(1))
    writer.add_tensor("blk.0.ffn_gate_inp.weight", zeros(N_EXPERT, N_EMBD))
    writer.add_tensor("blk.0.ffn_gate_inp.bias", zeros(N_EXPERT))
    writer.add_tensor("blk.0.ffn_gate_exps.weight", zeros(N_EXPERT, N_FF_EXP, N_EMBD))
    writer.add_tensor("blk.0.ffn_gate_exps.bias", zeros(N_EXPERT, N_FF_EXP))
    writer.add_tensor("blk.0.ffn_up_exps.weight", zeros(N_EXPERT, N_FF_EXP, N_EMBD))
    writer.add_tensor("blk.0.ffn_up_exps.bias", zeros(N_EXPERT, N_FF_EXP))
    # The experts write nothing back: the residual stream stays the embedding and the phase.
    writer.add_tensor("blk.0.ffn_down_exps.weight", zeros(N_EXPERT, N_EMBD, N_FF_EXP))
    writer.add_tensor("blk.0.ffn_down_exps.bias", zeros(N_EXPERT, N_EMBD))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
