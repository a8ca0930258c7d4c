"""A tiny Qwen 3.5 (gated-delta-net and attention layers, dense or MoE, with a Qwen3-VL style vision
tower) written twice from the same random weights: as llama.cpp's converter writes it (a text
model without the MTP head, and an ``mmproj``) and as Ollama's converter wrote it (one blob with
the vision tower and the MTP head inside; store/dialect/qwen35.py translates it)."""

from __future__ import annotations

import numpy as np

from tests.dialect_models import GT, TinyModel, Weights, with_vocab


def qwen35_pair(moe: bool = False, n_embd: int = 64, n_layer: int = 4, n_head: int = 4, n_head_kv: int = 2,
                head_dim: int = 32, n_ff: int = 128, n_expert: int = 4, n_ff_exp: int = 32,
                k_heads: int = 2, v_heads: int = 4, head_k: int = 16, head_v: int = 16, d_conv: int = 4,
                v_embd: int = 32, v_layer: int = 2, v_head: int = 2, v_ff: int = 64, patch: int = 8,
                grid: int = 4, merge: int = 2, seed: int = 0) -> tuple[TinyModel, TinyModel, TinyModel]:
    """(llama.cpp text model, llama.cpp mmproj, Ollama's one blob). Every fourth layer is full
    attention, the others linear attention, as in Qwen 3.5."""
    w = Weights(seed)

    def f16(*shape: int, scale: float = 0.5) -> np.ndarray:  # values an F16 tensor holds exactly
        return w(*shape, scale=scale).astype(np.float16)

    arch = "qwen35moe" if moe else "qwen35"
    a = arch + "."
    m = TinyModel(arch)
    m.set("general.architecture", arch, GT.STRING)
    m.set("general.name", "tiny-" + arch, GT.STRING)
    recurrent = [(i + 1) % 4 != 0 for i in range(n_layer)]
    n_rot = head_dim // 4  # partial_rotary_factor 0.25
    keys = [("context_length", 1024), ("embedding_length", n_embd), ("block_count", n_layer),
            ("attention.head_count", n_head), ("attention.head_count_kv", n_head_kv),
            ("attention.key_length", head_dim), ("attention.value_length", head_dim), ("rope.dimension_count", n_rot),
            ("ssm.conv_kernel", d_conv), ("ssm.state_size", head_k), ("ssm.group_count", k_heads),
            ("ssm.time_step_rank", v_heads), ("ssm.inner_size", head_v * v_heads), ("full_attention_interval", 4)]
    keys += [("expert_count", n_expert), ("expert_used_count", 2), ("expert_feed_forward_length", n_ff_exp),
             ("expert_shared_feed_forward_length", n_ff_exp)] if moe else [("feed_forward_length", n_ff)]
    for key, value in keys:
        m.set(a + key, value, GT.UINT32)
    m.set(a + "attention.layer_norm_rms_epsilon", 1e-6, GT.FLOAT32)
    m.set(a + "rope.freq_base", 10000000.0, GT.FLOAT32)
    m.set(a + "rope.dimension_sections", [2, 1, 1, 0], GT.ARRAY, GT.INT32)
    m.set(a + "attention.recurrent_layers", recurrent, GT.ARRAY, GT.BOOL)
    vision_tokens = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
    n_vocab = with_vocab(m, pre="qwen35", extra_tokens=vision_tokens)
    tokens = m.kv["tokenizer.ggml.tokens"][0]
    t = m.tensors
    t["token_embd.weight"] = w(n_vocab, n_embd, scale=8.0)
    t["output_norm.weight"] = w.norm(n_embd)
    t["output.weight"] = w(n_vocab, n_embd, scale=8.0)
    key_dim, value_dim = head_k * k_heads, head_v * v_heads
    for i, linear in enumerate(recurrent):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"], t[b + "post_attention_norm.weight"] = w.norm(n_embd), w.norm(n_embd)
        if linear:
            t[b + "attn_qkv.weight"] = w(2 * key_dim + value_dim, n_embd)
            t[b + "attn_gate.weight"] = w(value_dim, n_embd)
            t[b + "ssm_conv1d.weight"] = w(2 * key_dim + value_dim, d_conv)
            t[b + "ssm_dt.bias"] = w(v_heads)
            t[b + "ssm_a"] = -np.exp(w(v_heads))  # -exp(A_log), as both converters store it
            t[b + "ssm_beta.weight"], t[b + "ssm_alpha.weight"] = w(v_heads, n_embd), w(v_heads, n_embd)
            t[b + "ssm_norm.weight"] = w.norm(head_v)
            t[b + "ssm_out.weight"] = w(n_embd, value_dim)
        else:
            t[b + "attn_q.weight"] = w(2 * n_head * head_dim, n_embd)  # queries and their gate
            t[b + "attn_k.weight"] = w(n_head_kv * head_dim, n_embd)
            t[b + "attn_v.weight"] = w(n_head_kv * head_dim, n_embd)
            t[b + "attn_output.weight"] = w(n_embd, n_head * head_dim)
            t[b + "attn_q_norm.weight"], t[b + "attn_k_norm.weight"] = w.norm(head_dim), w.norm(head_dim)
        if moe:
            t[b + "ffn_gate_inp.weight"] = w(n_expert, n_embd)
            t[b + "ffn_gate_exps.weight"] = w(n_expert, n_ff_exp, n_embd)
            t[b + "ffn_up_exps.weight"] = w(n_expert, n_ff_exp, n_embd)
            t[b + "ffn_down_exps.weight"] = w(n_expert, n_embd, n_ff_exp)
            t[b + "ffn_gate_inp_shexp.weight"] = w(n_embd)
            t[b + "ffn_gate_shexp.weight"], t[b + "ffn_up_shexp.weight"] = w(n_ff_exp, n_embd), w(n_ff_exp, n_embd)
            t[b + "ffn_down_shexp.weight"] = w(n_embd, n_ff_exp)
        else:
            t[b + "ffn_gate.weight"], t[b + "ffn_up.weight"] = w(n_ff, n_embd), w(n_ff, n_embd)
            t[b + "ffn_down.weight"] = w(n_embd, n_ff)

    # The vision tower in Hugging Face's layout.
    conv3d = f16(v_embd, 3, 2, patch, patch, scale=2.0)  # [out, in, frames, p, p]
    pos = f16(grid * grid, v_embd, scale=2.0)
    blocks = []
    for _ in range(v_layer):
        blocks.append({"norm1.weight": w.norm(v_embd), "norm1.bias": w(v_embd), "norm2.weight": w.norm(v_embd),
                       "norm2.bias": w(v_embd), "qkv.weight": f16(3 * v_embd, v_embd, scale=2.0), "qkv.bias": w(3 * v_embd),
                       "proj.weight": f16(v_embd, v_embd), "proj.bias": w(v_embd),
                       "fc1.weight": f16(v_ff, v_embd), "fc1.bias": w(v_ff), "fc2.weight": f16(v_embd, v_ff),
                       "fc2.bias": w(v_embd)})
    wide = v_embd * merge * merge
    merger = {"norm.weight": w.norm(v_embd), "norm.bias": w(v_embd), "fc1.weight": f16(wide, wide, scale=2.0),
              "fc1.bias": w(wide), "fc2.weight": f16(n_embd, wide, scale=4.0), "fc2.bias": w(n_embd)}
    patch_bias = w(v_embd)

    p = TinyModel("clip")
    p.set("general.architecture", "clip", GT.STRING)
    p.set("clip.projector_type", "qwen3vl_merger", GT.STRING)
    p.set("clip.has_vision_encoder", True, GT.BOOL)
    p.set("clip.use_gelu", True, GT.BOOL)
    for key, value in (("block_count", v_layer), ("embedding_length", v_embd), ("feed_forward_length", v_ff),
                       ("attention.head_count", v_head), ("image_size", grid * patch), ("patch_size", patch),
                       ("projection_dim", n_embd), ("spatial_merge_size", merge)):
        p.set("clip.vision." + key, value, GT.UINT32)
    p.set("clip.vision.attention.layer_norm_epsilon", 1e-6, GT.FLOAT32)
    p.set("clip.vision.image_mean", [0.5, 0.5, 0.5], GT.ARRAY, GT.FLOAT32)
    p.set("clip.vision.image_std", [0.5, 0.5, 0.5], GT.ARRAY, GT.FLOAT32)
    p.set("clip.vision.is_deepstack_layers", [False] * v_layer, GT.ARRAY, GT.BOOL)
    pt = p.tensors
    pt["v.patch_embd.weight"] = conv3d[:, :, 0].astype(np.float32)
    pt["v.patch_embd.weight.1"] = conv3d[:, :, 1].astype(np.float32)
    pt["v.patch_embd.bias"] = patch_bias
    pt["v.position_embd.weight"] = pos.astype(np.float32)
    for i, blk in enumerate(blocks):
        for ours, theirs in (("ln1", "norm1"), ("ln2", "norm2"), ("attn_qkv", "qkv"), ("attn_out", "proj"),
                             ("ffn_up", "fc1"), ("ffn_down", "fc2")):
            for part in ("weight", "bias"):
                pt[f"v.blk.{i}.{ours}.{part}"] = blk[f"{theirs}.{part}"]
    for ours, theirs in (("v.post_ln", "norm"), ("mm.0", "fc1"), ("mm.2", "fc2")):
        for part in ("weight", "bias"):
            pt[f"{ours}.{part}"] = merger[f"{theirs}.{part}"]

    # Ollama's blob: per-layer KV heads, three M-RoPE sections, ssm_dt, extra keys, and inside it
    # the vision tower (Q/K/V split, Conv3D flattened) and the MTP head under Hugging Face's names.
    d = m.copy()
    del d.kv[a + "attention.recurrent_layers"]
    d.set(a + "attention.head_count_kv", [0 if r else n_head_kv for r in recurrent], GT.ARRAY, GT.UINT32)
    for key in ("rope.dimension_sections", "mrope_sections", "rope.mrope_section"):
        d.set(a + key, [2, 1, 1], GT.ARRAY, GT.INT32)
    d.set(a + "rope.mrope_interleaved", True, GT.BOOL)
    d.set(a + "ssm.v_head_reordered", True, GT.BOOL)
    if moe:
        d.set(a + "feed_forward_length", 0, GT.UINT32)  # Ollama wrote the config's (absent) dense width
        d.set(a + "norm_top_k_prob", True, GT.BOOL)
    for key, value in (("vision.block_count", v_layer), ("vision.embedding_length", v_embd),
                       ("vision.attention.head_count", v_head), ("vision.num_channels", 3),
                       ("vision.patch_size", patch), ("vision.spatial_merge_size", merge),
                       ("vision.temporal_patch_size", 2), ("vision.shortest_edge", 4096),
                       ("vision.longest_edge", 1 << 20), ("image_token_id", tokens.index("<|image_pad|>")),
                       ("vision_start_token_id", tokens.index("<|vision_start|>")),
                       ("vision_end_token_id", tokens.index("<|vision_end|>"))):
        d.set(a + key, value, GT.UINT32)
    d.set(a + "vision.rope.freq_base", 10000.0, GT.FLOAT32)
    d.set(a + "vision.image_mean", [0.5, 0.5, 0.5], GT.ARRAY, GT.FLOAT32)
    d.set(a + "vision.image_std", [0.5, 0.5, 0.5], GT.ARRAY, GT.FLOAT32)
    d.rename_tensors(lambda n: n[:-len(".bias")] if n.endswith(".ssm_dt.bias") else n)
    dt = d.tensors
    dt["v.patch_embed.weight"] = conv3d.reshape(v_embd * 3, 2, patch, patch)
    dt["v.patch_embed.bias"] = patch_bias
    dt["v.pos_embed.weight"] = pos
    for i, blk in enumerate(blocks):
        for part in ("weight", "bias"):
            for x, chunk in zip("qkv", np.split(blk[f"qkv.{part}"], 3)):
                dt[f"v.blk.{i}.attn_{x}.{part}"] = chunk
            for ollama_name, theirs in (("norm1", "norm1"), ("norm2", "norm2"), ("attn_out", "proj"),
                                        ("mlp.linear_fc1", "fc1"), ("mlp.linear_fc2", "fc2")):
                dt[f"v.blk.{i}.{ollama_name}.{part}"] = blk[f"{theirs}.{part}"]
    for part in ("weight", "bias"):
        for x in ("norm", "linear_fc1", "linear_fc2"):
            dt[f"v.merger.{x}.{part}"] = merger[f"{x.replace('linear_', '')}.{part}"]
    dt["mtp.fc.weight"] = w(n_embd, 2 * n_embd)
    for name in ("mtp.pre_fc_norm_embedding.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.norm.weight",
                 "mtp.layers.0.attn_norm.weight", "mtp.layers.0.post_attention_norm.weight"):
        dt[name] = w.norm(n_embd)
    dt["mtp.layers.0.attn_q.weight"] = w(2 * n_head * head_dim, n_embd)
    dt["mtp.layers.0.attn_k.weight"] = w(n_head_kv * head_dim, n_embd)
    dt["mtp.layers.0.attn_v.weight"] = w(n_head_kv * head_dim, n_embd)
    dt["mtp.layers.0.attn_output.weight"] = w(n_embd, n_head * head_dim)
    return m, p, d
