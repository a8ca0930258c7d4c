"""A tiny Mistral 3 (text + Pixtral vision) written twice from the same random weights: as
llama.cpp's converter writes it (a text model and an ``mmproj`` beside it) and as Ollama's
converter wrote it (one blob; store/dialect/mistral3.py translates it)."""

from __future__ import annotations

import numpy as np

from tests.dialect_models import GT, TinyModel, Weights, with_vocab

IMAGE_TOKENS = ("[IMG]", "[IMG_BREAK]", "[IMG_END]")


def _hf_to_llama_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter's Q/K permutation (Hugging Face's half-split rotation to adjacent pairs)."""
    out = w.shape[0]
    return w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def mistral3_pair(n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_head_kv: int = 2, head_dim: int = 16,
                  n_ff: int = 128, v_embd: int = 32, v_layer: int = 2, v_head: int = 2, v_ff: int = 64,
                  image_size: int = 64, patch: int = 8, merge: int = 2,
                  seed: int = 0) -> tuple[TinyModel, TinyModel, TinyModel]:
    """(llama.cpp text model, llama.cpp mmproj, Ollama's one blob). The YaRN settings are not
    llama.cpp's defaults and the original context is short, so a key the translation missed
    changes the tokens of a short prompt."""
    w = Weights(seed)

    def f16(*shape: int, scale: float = 0.5) -> np.ndarray:  # values an F16 tensor holds exactly
        return w(*shape, scale=scale).astype(np.float16)

    m = TinyModel("mistral3")
    a = "mistral3."
    m.set("general.architecture", "mistral3", GT.STRING)
    m.set("general.name", "tiny-mistral3", GT.STRING)
    for key, value in (("context_length", 1024), ("embedding_length", n_embd), ("block_count", n_layer),
                       ("feed_forward_length", n_ff), ("attention.head_count", n_head),
                       ("attention.head_count_kv", n_head_kv), ("attention.key_length", head_dim),
                       ("attention.value_length", head_dim), ("rope.dimension_count", head_dim),
                       ("rope.scaling.original_context_length", 8)):
        m.set(a + key, value, GT.UINT32)
    m.set(a + "attention.layer_norm_rms_epsilon", 1e-5, GT.FLOAT32)
    m.set(a + "rope.freq_base", 1000000.0, GT.FLOAT32)
    m.set(a + "rope.scaling.type", "yarn", GT.STRING)
    m.set(a + "rope.scaling.factor", 4.0, GT.FLOAT32)
    m.set(a + "rope.scaling.yarn_beta_fast", 8.0, GT.FLOAT32)
    m.set(a + "rope.scaling.yarn_beta_slow", 2.0, GT.FLOAT32)
    m.set(a + "rope.scaling.yarn_log_multiplier", 1.0, GT.FLOAT32)
    m.set(a + "attention.temperature_scale", 0.5, GT.FLOAT32)
    n_vocab = with_vocab(m, pre="tekken", extra_tokens=IMAGE_TOKENS)
    tokens = m.kv["tokenizer.ggml.tokens"][0]
    t = m.tensors
    t["token_embd.weight"] = w(n_vocab, n_embd, scale=8.0)
    t["output_norm.weight"] = w.norm(n_embd)
    t["output.weight"] = w(n_vocab, n_embd, scale=8.0)
    for i in range(n_layer):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"], t[b + "ffn_norm.weight"] = w.norm(n_embd), w.norm(n_embd)
        t[b + "attn_q.weight"] = w(n_head * head_dim, n_embd)  # permuted alike in both forms
        t[b + "attn_k.weight"] = w(n_head_kv * head_dim, n_embd)
        t[b + "attn_v.weight"] = w(n_head_kv * head_dim, n_embd)
        t[b + "attn_output.weight"] = w(n_embd, n_head * head_dim)
        t[b + "ffn_gate.weight"], t[b + "ffn_up.weight"] = w(n_ff, n_embd), w(n_ff, n_embd)
        t[b + "ffn_down.weight"] = w(n_embd, n_ff)

    # The vision tower in Hugging Face's layout, named as Ollama's converter named it.
    hf: dict[str, np.ndarray] = {
        "v.patch_conv.weight": f16(v_embd, 3, patch, patch, scale=2.0),
        "v.encoder_norm.weight": w.norm(v_embd),
        "mm.norm.weight": w.norm(v_embd),
        "mm.patch_merger.merging_layer.weight": f16(v_embd, v_embd * merge * merge),
        "mm.linear_1.weight": f16(n_embd, v_embd, scale=4.0), "mm.linear_1.bias": w(n_embd),
        "mm.linear_2.weight": f16(n_embd, n_embd, scale=4.0), "mm.linear_2.bias": w(n_embd),
    }
    for i in range(v_layer):
        b = f"v.blk.{i}."
        hf[b + "attn_norm.weight"], hf[b + "ffn_norm.weight"] = w.norm(v_embd), w.norm(v_embd)
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            hf[b + part + ".weight"] = f16(v_embd, v_embd, scale=2.0)
        hf[b + "ffn_gate.weight"], hf[b + "ffn_up.weight"] = f16(v_ff, v_embd), f16(v_ff, v_embd)
        hf[b + "ffn_down.weight"] = f16(v_embd, v_ff)

    # llama.cpp's mmproj: its names, vision Q/K permuted, the [IMG_BREAK] row copied out.
    p = TinyModel("clip")
    p.set("general.architecture", "clip", GT.STRING)
    p.set("clip.projector_type", "pixtral", GT.STRING)
    p.set("clip.has_vision_encoder", True, GT.BOOL)
    p.set("clip.use_silu", True, GT.BOOL)
    for key, value in (("block_count", v_layer), ("embedding_length", v_embd), ("feed_forward_length", v_ff),
                       ("attention.head_count", v_head), ("image_size", image_size), ("patch_size", patch),
                       ("projection_dim", n_embd), ("spatial_merge_size", merge)):
        p.set("clip.vision." + key, value, GT.UINT32)
    p.set("clip.vision.attention.layer_norm_epsilon", 1e-5, GT.FLOAT32)
    p.set("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073], GT.ARRAY, GT.FLOAT32)
    p.set("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711], GT.ARRAY, GT.FLOAT32)
    renames = (("v.patch_conv", "v.patch_embd"), ("v.encoder_norm", "v.pre_ln"), (".attn_output", ".attn_out"),
               (".attn_norm", ".ln1"), (".ffn_norm", ".ln2"), ("mm.linear_1", "mm.1"), ("mm.linear_2", "mm.2"),
               ("mm.patch_merger.merging_layer", "mm.patch_merger"), ("mm.norm", "mm.input_norm"))
    for name, data in hf.items():
        if name.endswith((".attn_q.weight", ".attn_k.weight")):
            data = _hf_to_llama_rope(data, v_head)
        if name == "v.patch_conv.weight":
            data = data.astype(np.float32)  # the F32 kernel the translation makes
        for old, new in renames:
            name = name.replace(old, new, 1)
        p.tensors[name] = data
    p.tensors["v.token_embd.img_break"] = t["token_embd.weight"][tokens.index("[IMG_BREAK]")].copy()

    # Ollama's blob: its key names, an unnamed pre-tokenizer, the vision tower inside.
    d = m.copy()
    for new, old in (("rope.scaling.yarn_beta_fast", "rope.scaling.beta_fast"),
                     ("rope.scaling.yarn_beta_slow", "rope.scaling.beta_slow"),
                     ("rope.scaling.yarn_log_multiplier", "rope.scaling.mscale_all_dim"),
                     ("attention.temperature_scale", "rope.scaling_beta")):
        d.kv[a + old] = d.kv.pop(a + new)
    d.set(a + "rope.scaling.mscale", 1.0, GT.FLOAT32)
    d.set("tokenizer.ggml.pre", "default", GT.STRING)
    for key, value in (("vision.block_count", v_layer), ("vision.embedding_length", v_embd),
                       ("vision.feed_forward_length", v_ff), ("vision.attention.head_count", v_head),
                       ("vision.attention.key_length", v_embd // v_head), ("vision.image_size", image_size),
                       ("vision.patch_size", patch), ("vision.num_channels", 3), ("spatial_merge_size", merge),
                       ("image_token_index", tokens.index("[IMG]")), ("vocab_size", n_vocab)):
        d.set(a + key, value, GT.UINT32)
    d.set(a + "vision.rope.freq_base", 10000.0, GT.FLOAT32)
    d.set(a + "mm.projector_bias", True, GT.BOOL)
    d.set(a + "mm.projector_hidden_act", "gelu", GT.STRING)
    d.tensors.update(hf)
    return m, p, d
