"""Tiny Gemma models written as llama.cpp's converter writes them and as Ollama's converter wrote
them (store/dialect/gemma3.py and gemma4.py translate the second).

Gemma 3 with vision is two files for llama.cpp (the text model and an ``mmproj``) and one blob for
Ollama (text, SigLIP tower ``v.*`` and projector ``mm.*`` together, with Hugging Face's tensor names).
"""

from __future__ import annotations

import numpy as np

from a3s_power.store.dialect.gemma3 import CHAT_TEMPLATE as GEMMA3_TEMPLATE
from tests.dialect_models import GT, TinyModel, Weights, with_vocab

GEMMA_TOKENS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>")

# llama.cpp's name for a SigLIP tensor -> the name Ollama's converter gave it
_GEMMA3_VISION_NAMES = (
    ("v.patch_embd", "v.patch_embedding"),
    ("v.position_embd", "v.position_embedding"),
    ("v.post_ln", "v.post_layernorm"),
    (".ln1", ".layer_norm1"),
    (".ln2", ".layer_norm2"),
    (".attn_out", ".attn_output"),
    (".ffn_up", ".mlp.fc1"),
    (".ffn_down", ".mlp.fc2"),
    ("mm.input_projection", "mm.mm_input_projection"),
    ("mm.soft_emb_norm", "mm.mm_soft_emb_norm"),
)


def _ollama_vision_name(name: str) -> str:
    for ours, theirs in _GEMMA3_VISION_NAMES:
        name = name.replace(ours, theirs, 1)
    return name


def gemma3_models(vision: bool = True, nested_rope: bool = False, n_embd: int = 64, n_layer: int = 6,
                  n_head: int = 4, n_head_kv: int = 2, head_dim: int = 16, n_ff: int = 128, sliding_window: int = 8,
                  v_embd: int = 32, v_layer: int = 2, v_head: int = 2, v_ff: int = 64, image_size: int = 32,
                  patch_size: int = 4, tokens_per_image: int = 16,
                  seed: int = 0) -> tuple[TinyModel, TinyModel | None, TinyModel]:
    """(llama.cpp's text model, llama.cpp's mmproj or None, Ollama's blob), same weights.

    ``vision``: the multimodal sizes (4B and up): Ollama's blob has no RMS epsilon, no RoPE keys
    and no RoPE scaling, a vocabulary one token longer than the embedding, no chat template, and
    the vision tower inside. Without it, the 1B's quirk: ``rope.global`` / ``rope.local`` bases
    (non-default values here, so a translation that only filled in defaults would show)."""
    w = Weights(seed)
    m = TinyModel("gemma3")
    a = "gemma3."
    m.set("general.architecture", "gemma3", GT.STRING)
    m.set("general.name", "tiny-gemma3", GT.STRING)
    context = 131072 if vision else 32768
    for key, value in (("context_length", context), ("embedding_length", n_embd), ("block_count", n_layer),
                       ("feed_forward_length", n_ff), ("attention.head_count", n_head),
                       ("attention.head_count_kv", n_head_kv), ("attention.key_length", head_dim),
                       ("attention.value_length", head_dim), ("attention.sliding_window", sliding_window)):
        m.set(a + key, value, GT.UINT32)
    m.set(a + "attention.layer_norm_rms_epsilon", 1e-6, GT.FLOAT32)
    base, base_swa = (1_000_000.0, 10_000.0) if vision else (200_000.0, 5_000.0)
    m.set(a + "rope.freq_base", base, GT.FLOAT32)
    m.set(a + "rope.freq_base_swa", base_swa, GT.FLOAT32)
    if vision:
        m.set(a + "rope.scaling.type", "linear", GT.STRING)
        m.set(a + "rope.scaling.factor", 8.0, GT.FLOAT32)
    n_vocab = with_vocab(m, template=GEMMA3_TEMPLATE, extra_tokens=GEMMA_TOKENS)
    t = m.tensors
    # small embeddings and strong post-norms: Gemma scales the embeddings by sqrt(n_embd), and a
    # residual much larger than what each (normed) block adds makes a model repeat one token
    t["token_embd.weight"] = w(n_vocab, n_embd, scale=0.25)
    t["output_norm.weight"] = w.norm(n_embd)
    q, kv = n_head * head_dim, n_head_kv * head_dim
    for i in range(n_layer):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"] = w.norm(n_embd)
        t[b + "attn_q.weight"], t[b + "attn_k.weight"], t[b + "attn_v.weight"] = w(q, n_embd), w(kv, n_embd), w(kv, n_embd)
        t[b + "attn_output.weight"] = w(n_embd, q)
        t[b + "attn_q_norm.weight"], t[b + "attn_k_norm.weight"] = w.norm(head_dim), w.norm(head_dim)
        t[b + "post_attention_norm.weight"] = 4 * w.norm(n_embd)
        t[b + "ffn_norm.weight"] = w.norm(n_embd)
        t[b + "ffn_gate.weight"], t[b + "ffn_up.weight"] = w(n_ff, n_embd), w(n_ff, n_embd)
        t[b + "ffn_down.weight"] = w(n_embd, n_ff)
        t[b + "post_ffw_norm.weight"] = 4 * w.norm(n_embd)

    d = m.copy()
    if not vision:
        d.kv = {(a + "rope.global.freq_base" if k == a + "rope.freq_base" else
                 a + "rope.local.freq_base" if k == a + "rope.freq_base_swa" else k): v for k, v in d.kv.items()}
        return m, None, d

    for key in ("attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.freq_base_swa", "rope.scaling.type",
                "rope.scaling.factor"):
        del d.kv[a + key]
    del d.kv["tokenizer.chat_template"]
    tokens, types = d.kv["tokenizer.ggml.tokens"], d.kv["tokenizer.ggml.token_type"]
    d.set("tokenizer.ggml.tokens", tokens[0] + ["<image_soft_token>"], GT.ARRAY, GT.STRING)
    d.set("tokenizer.ggml.token_type", types[0] + [3], GT.ARRAY, GT.INT32)
    d.set(a + "mm.tokens_per_image", tokens_per_image, GT.UINT32)

    p = TinyModel("clip")
    p.set("general.architecture", "clip", GT.STRING)
    p.set("general.name", "tiny-gemma3-mmproj", GT.STRING)
    p.set("clip.projector_type", "gemma3", GT.STRING)
    p.set("clip.has_vision_encoder", True, GT.BOOL)
    p.set("clip.use_gelu", True, GT.BOOL)
    v = "clip.vision."
    sizes = (("block_count", v_layer), ("embedding_length", v_embd), ("feed_forward_length", v_ff),
             ("image_size", image_size), ("patch_size", patch_size), ("attention.head_count", v_head))
    for key, value in sizes + (("projection_dim", n_embd),):
        p.set(v + key, value, GT.UINT32)
    p.set(v + "attention.layer_norm_epsilon", 1e-6, GT.FLOAT32)
    p.set(v + "image_mean", [0.5, 0.5, 0.5], GT.ARRAY, GT.FLOAT32)
    p.set(v + "image_std", [0.5, 0.5, 0.5], GT.ARRAY, GT.FLOAT32)
    scale = (image_size // patch_size) // int(np.sqrt(tokens_per_image))
    if scale != 4:  # as llama.cpp's converter writes it: only when not the default
        p.set(v + "projector.scale_factor", scale, GT.UINT32)
    for key, value in sizes:
        d.set(a + "vision." + key, value, GT.UINT32)
    d.set(a + "vision.num_channels", 3, GT.UINT32)
    d.set(a + "vision.attention.layer_norm_epsilon", 1e-6, GT.FLOAT32)

    # Ollama's blob keeps the embeddings in 16 bits, llama.cpp's converter forces 32 (the same values)
    half = lambda x: x.astype(np.float16)  # noqa: E731
    n_patches = (image_size // patch_size) ** 2
    vt: dict[str, np.ndarray] = {}
    vt["v.patch_embd.weight"] = half(w(v_embd, 3, patch_size, patch_size, scale=4.0))
    vt["v.patch_embd.bias"] = w(v_embd)
    vt["v.position_embd.weight"] = half(w(n_patches, v_embd, scale=2.0))
    for i in range(v_layer):
        b = f"v.blk.{i}."
        for norm in ("ln1", "ln2"):
            vt[b + norm + ".weight"], vt[b + norm + ".bias"] = w.norm(v_embd), w(v_embd)
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            vt[b + proj + ".weight"], vt[b + proj + ".bias"] = w(v_embd, v_embd), w(v_embd)
        vt[b + "ffn_up.weight"], vt[b + "ffn_up.bias"] = w(v_ff, v_embd), w(v_ff)
        vt[b + "ffn_down.weight"], vt[b + "ffn_down.bias"] = w(v_embd, v_ff), w(v_embd)
    vt["v.post_ln.weight"], vt["v.post_ln.bias"] = w.norm(v_embd), w(v_embd)
    vt["mm.input_projection.weight"] = half(w(v_embd, n_embd, scale=8.0))  # F16 in both, as llama.cpp forces
    vt["mm.soft_emb_norm.weight"] = w.norm(v_embd)
    for name, data in vt.items():
        forced_f32 = name in ("v.patch_embd.weight", "v.position_embd.weight")
        p.tensors[name] = data.astype(np.float32) if forced_f32 else data
        d.tensors[_ollama_vision_name(name)] = data
    return m, p, d


def gemma3_pair(vision: bool = True, **kw) -> tuple[TinyModel, TinyModel]:
    """(llama.cpp's text model, Ollama's blob)."""
    text, _, blob = gemma3_models(vision=vision, **kw)
    return text, blob
