"""Tiny Nemotron-H MoE (``nemotron_h_moe``) written as llama.cpp's converter writes it and as
Ollama's converter wrote it (store/dialect/nemotron_h_moe.py translates the second)."""

from __future__ import annotations

import numpy as np

from tests.dialect_models import GT, TinyModel, Weights, with_vocab


def nemotron_pair(latent: bool = True, mtp: bool = True, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2,
                  head_dim: int = 16, pattern: str = "ME*E", n_expert: int = 4, n_ff_exp: int = 32,
                  n_ff_shexp: int = 48, latent_size: int = 32, ssm_heads: int = 4, ssm_head_dim: int = 16,
                  d_state: int = 16, n_group: int = 2, d_conv: int = 4,
                  seed: int = 0) -> tuple[TinyModel, TinyModel]:
    """Mamba-2, attention and MoE layers (``pattern``: M, *, E). ``latent``: the experts run at a
    latent width (Nemotron 3 Super); ``mtp``: Ollama's file keeps the MTP head's checkpoint
    tensors. Ollama's form renames ``ffn_latent_down/up`` to ``ffn_latent_in/out``, leaves out
    ``moe_latent_size`` and carries ``mtp.*``; llama.cpp's form is written without the MTP head."""
    w = Weights(seed)
    m = TinyModel("nemotron_h_moe")
    a = "nemotron_h_moe."
    n_layer = len(pattern)
    d_inner = ssm_heads * ssm_head_dim
    m.set("general.architecture", "nemotron_h_moe", GT.STRING)
    m.set("general.name", "tiny-nemotron-h-moe", GT.STRING)
    for key, value in (("context_length", 1024), ("embedding_length", n_embd), ("block_count", n_layer),
                       ("attention.head_count", n_head), ("attention.key_length", head_dim),
                       ("attention.value_length", head_dim), ("ssm.conv_kernel", d_conv),
                       ("ssm.inner_size", d_inner), ("ssm.state_size", d_state), ("ssm.time_step_rank", ssm_heads),
                       ("ssm.group_count", n_group), ("expert_count", n_expert), ("expert_used_count", 2),
                       ("expert_feed_forward_length", n_ff_exp), ("expert_shared_feed_forward_length", n_ff_shexp),
                       ("expert_shared_count", 1), ("expert_group_count", 1)):
        m.set(a + key, value, GT.UINT32)
    m.set(a + "attention.head_count_kv", [n_head_kv if c == "*" else 0 for c in pattern], GT.ARRAY, GT.UINT32)
    m.set(a + "feed_forward_length", [n_ff_exp if c == "E" else 0 for c in pattern], GT.ARRAY, GT.UINT32)
    m.set(a + "attention.layer_norm_epsilon", 1e-5, GT.FLOAT32)
    m.set(a + "attention.layer_norm_rms_epsilon", 1e-5, GT.FLOAT32)
    m.set(a + "rope.freq_base", 10000.0, GT.FLOAT32)
    m.set(a + "expert_weights_norm", True, GT.BOOL)
    m.set(a + "expert_weights_scale", 2.5, GT.FLOAT32)
    if latent:
        m.set(a + "moe_latent_size", latent_size, GT.UINT32)
    n_vocab = with_vocab(m)
    t = m.tensors
    t["token_embd.weight"] = w(n_vocab, n_embd, scale=8.0)
    t["output_norm.weight"] = w.norm(n_embd)
    t["output.weight"] = w(n_vocab, n_embd, scale=8.0)
    moe_width = latent_size if latent else n_embd
    conv_dim = d_inner + 2 * n_group * d_state
    for i, kind in enumerate(pattern):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"] = w.norm(n_embd)
        if kind == "M":
            t[b + "ssm_in.weight"] = w(2 * d_inner + 2 * n_group * d_state + ssm_heads, n_embd)
            t[b + "ssm_conv1d.weight"] = w(conv_dim, d_conv)
            t[b + "ssm_conv1d.bias"] = w(conv_dim)
            t[b + "ssm_dt.bias"] = w(ssm_heads)
            # A is stored as -exp(A_log) by both converters: negative, so the state decays
            t[b + "ssm_a"] = -np.exp(w(ssm_heads, 1, scale=1.0))
            t[b + "ssm_d"] = w(ssm_heads, 1, scale=1.0)
            t[b + "ssm_norm.weight"] = np.stack([w.norm(d_inner // n_group) for _ in range(n_group)])
            t[b + "ssm_out.weight"] = w(n_embd, d_inner)
        elif kind == "*":
            t[b + "attn_q.weight"] = w(n_head * head_dim, n_embd)
            t[b + "attn_k.weight"] = w(n_head_kv * head_dim, n_embd)
            t[b + "attn_v.weight"] = w(n_head_kv * head_dim, n_embd)
            t[b + "attn_output.weight"] = w(n_embd, n_head * head_dim)
        else:
            t[b + "ffn_gate_inp.weight"] = w(n_expert, n_embd, scale=4.0)
            t[b + "exp_probs_b.bias"] = w(n_expert)
            if latent:
                t[b + "ffn_latent_down.weight"] = w(latent_size, n_embd)
                t[b + "ffn_latent_up.weight"] = w(n_embd, latent_size)
            t[b + "ffn_up_exps.weight"] = w(n_expert, n_ff_exp, moe_width)
            t[b + "ffn_down_exps.weight"] = w(n_expert, moe_width, n_ff_exp)
            t[b + "ffn_up_shexp.weight"] = w(n_ff_shexp, n_embd)
            t[b + "ffn_down_shexp.weight"] = w(n_embd, n_ff_shexp)

    d = m.copy()
    if latent:
        del d.kv[a + "moe_latent_size"]
        d.rename_tensors(lambda n: n.replace(".ffn_latent_down.", ".ffn_latent_in.")
                         .replace(".ffn_latent_up.", ".ffn_latent_out."))
    if mtp:
        # the head as the checkpoint names it: input fusion, attention, then one tensor per expert
        d.tensors["mtp.layers.0.enorm.weight"] = w.norm(n_embd)
        d.tensors["mtp.layers.0.hnorm.weight"] = w.norm(n_embd)
        d.tensors["mtp.layers.0.eh_proj.weight"] = w(n_embd, 2 * n_embd)
        d.tensors["mtp.layers.0.mixer.q_proj.weight"] = w(n_head * head_dim, n_embd)
        for x in range(n_expert):
            d.tensors[f"mtp.layers.1.mixer.experts.{x}.up_proj.weight"] = w(n_ff_exp, moe_width)
            d.tensors[f"mtp.layers.1.mixer.experts.{x}.down_proj.weight"] = w(moe_width, n_ff_exp)
        d.tensors["mtp.layers.1.final_layernorm.weight"] = w.norm(n_embd)
    return m, d
