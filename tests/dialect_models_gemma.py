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
                  patch_size: int = 4, tokens_per_image: int = 16, padded_rows: int = 0,
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
    if padded_rows:  # an embedding with rows past the vocabulary, as Hugging Face pads it
        d.tensors["token_embd.weight"] = np.concatenate([t["token_embd.weight"], w(padded_rows, n_embd, scale=0.25)])
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


# --- gemma4 ----------------------------------------------------------------------------------------

GEMMA4_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' + m['content'] + '<turn|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|turn>model\n' }}{% endif %}"
)
GEMMA4_VISIBLE = ("<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>")
_GEMMA4_CONTROL = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|turn>", "<turn|>", "<|image>", "<image|>",
                   "<|audio>", "<audio|>")
NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 3, 4, 6


def gemma4_vocab(m: TinyModel, *, llama_cpp: bool) -> int:
    """Gemma 4's kind of tokenizer, tiny: a BPE over raw UTF-8 with ``▁`` for spaces and byte
    fallback. llama.cpp's converter calls it ``gemma4`` and marks the chat parser's tokens
    user-defined; Ollama's called it ``llama`` and left them control tokens."""
    chars = ["▁", "\n"] + [chr(c) for c in range(33, 127)]
    merges = ["▁ t", "t h", "▁t h", "h e", "▁th e", "a t", "i n", "▁ c", "▁ s", "▁ m", "▁ a"]
    merged = []
    for merge in merges:
        left, right = merge.split(" ")
        merged.append(left + right)
    tokens = list(_GEMMA4_CONTROL) + list(GEMMA4_VISIBLE) + [f"<0x{b:02X}>" for b in range(256)] + chars + merged
    visible = USER_DEFINED if llama_cpp else CONTROL
    types = ([CONTROL] * len(_GEMMA4_CONTROL) + [visible] * len(GEMMA4_VISIBLE) + [BYTE] * 256
             + [NORMAL] * (len(chars) + len(merged)))
    m.set("tokenizer.ggml.model", "gemma4" if llama_cpp else "llama", GT.STRING)
    m.set("tokenizer.ggml.pre", "gemma4", GT.STRING)
    m.set("tokenizer.ggml.tokens", tokens, GT.ARRAY, GT.STRING)
    m.set("tokenizer.ggml.scores", [0.0] * len(tokens), GT.ARRAY, GT.FLOAT32)
    m.set("tokenizer.ggml.token_type", types, GT.ARRAY, GT.INT32)
    m.set("tokenizer.ggml.merges", merges, GT.ARRAY, GT.STRING)
    for key, token in (("bos", "<bos>"), ("eos", "<eos>"), ("unknown", "<unk>"), ("padding", "<pad>")):
        m.set(f"tokenizer.ggml.{key}_token_id", tokens.index(token), GT.UINT32)
    m.set("tokenizer.ggml.add_bos_token", True, GT.BOOL)
    m.set("tokenizer.chat_template", GEMMA4_TEMPLATE, GT.STRING)
    return len(tokens)


def gemma4_models(moe: bool = False, ple: bool = True, old_expert_scale: bool = False, n_embd: int = 64,
                  n_layer: int = 6, n_head: int = 4, n_head_kv: int = 2, n_head_kv_global: int = 1,
                  head_dim: int = 16, head_dim_global: int = 32, n_ff: int = 128, sliding_window: int = 8,
                  n_pl: int = 8, n_expert: int = 4, n_ff_exp: int = 32, v_embd: int = 32, v_layer: int = 2,
                  v_head: int = 2, v_ff: int = 64, patch_size: int = 4, pos_size: int = 128,
                  seed: int = 0) -> tuple[TinyModel, TinyModel, TinyModel]:
    """(llama.cpp's text model, llama.cpp's mmproj, Ollama's blob), same weights: the last layer
    of ``n_layer`` attends globally (wider heads, proportional RoPE), the others in a window.
    ``ple``: per-layer embeddings (the E2B/E4B sizes); ``moe``: experts beside the dense MLP (the
    26B-A4B); ``old_expert_scale``: the per-expert scale under its older Ollama name. Ollama's blob
    also carries a stub audio tower (``a.*``, ``mm.a.*``), which translation drops."""
    w = Weights(seed)
    m = TinyModel("gemma4")
    a = "gemma4."
    m.set("general.architecture", "gemma4", GT.STRING)
    m.set("general.name", "tiny-gemma4", GT.STRING)
    swa = [i != n_layer - 1 for i in range(n_layer)]
    for key, value in (("context_length", 131072), ("embedding_length", n_embd), ("block_count", n_layer),
                       ("feed_forward_length", n_ff), ("attention.head_count", n_head),
                       ("attention.key_length", head_dim_global), ("attention.value_length", head_dim_global),
                       ("attention.key_length_swa", head_dim), ("attention.value_length_swa", head_dim),
                       ("attention.sliding_window", sliding_window), ("attention.shared_kv_layers", 0),
                       ("rope.dimension_count", head_dim_global), ("rope.dimension_count_swa", head_dim),
                       ("embedding_length_per_layer_input", n_pl if ple else 0)):
        m.set(a + key, value, GT.UINT32)
    m.set(a + "attention.head_count_kv", [n_head_kv if s else n_head_kv_global for s in swa], GT.ARRAY, GT.INT32)
    m.set(a + "attention.sliding_window_pattern", swa, GT.ARRAY, GT.BOOL)
    m.set(a + "attention.layer_norm_rms_epsilon", 1e-6, GT.FLOAT32)
    m.set(a + "rope.freq_base", 1_000_000.0, GT.FLOAT32)
    m.set(a + "rope.freq_base_swa", 10_000.0, GT.FLOAT32)
    m.set(a + "final_logit_softcapping", 30.0, GT.FLOAT32)
    if moe:
        m.set(a + "expert_count", n_expert, GT.UINT32)
        m.set(a + "expert_used_count", 2, GT.UINT32)
        m.set(a + "expert_feed_forward_length", n_ff_exp, GT.UINT32)
    d = m.copy()
    n_vocab = gemma4_vocab(m, llama_cpp=True)
    gemma4_vocab(d, llama_cpp=False)

    t: dict[str, np.ndarray] = {}
    t["token_embd.weight"] = w(n_vocab, n_embd, scale=0.25)
    t["output_norm.weight"] = w.norm(n_embd)
    n_rot = head_dim_global // 4 // 2  # proportional RoPE: a quarter of the global heads' pairs rotate
    t["rope_freqs.weight"] = np.array([1.0] * n_rot + [1e30] * (head_dim_global // 2 - n_rot), dtype=np.float32)
    if ple:
        t["per_layer_token_embd.weight"] = w(n_vocab, n_pl * n_layer)
        t["per_layer_model_proj.weight"] = w(n_pl * n_layer, n_embd)
        t["per_layer_proj_norm.weight"] = w.norm(n_pl)
    for i, is_swa in enumerate(swa):
        b = f"blk.{i}."
        hd, kv = (head_dim, n_head_kv) if is_swa else (head_dim_global, n_head_kv_global)
        t[b + "attn_norm.weight"] = w.norm(n_embd)
        t[b + "attn_q.weight"] = w(n_head * hd, n_embd)
        t[b + "attn_k.weight"], t[b + "attn_v.weight"] = w(kv * hd, n_embd), w(kv * hd, n_embd)
        t[b + "attn_output.weight"] = w(n_embd, n_head * hd)
        t[b + "attn_q_norm.weight"], t[b + "attn_k_norm.weight"] = w.norm(hd), w.norm(hd)
        t[b + "post_attention_norm.weight"] = 4 * w.norm(n_embd)
        t[b + "ffn_norm.weight"] = w.norm(n_embd)
        t[b + "ffn_gate.weight"], t[b + "ffn_up.weight"] = w(n_ff, n_embd), w(n_ff, n_embd)
        t[b + "ffn_down.weight"] = w(n_embd, n_ff)
        t[b + "post_ffw_norm.weight"] = 4 * w.norm(n_embd)
        t[b + "layer_output_scale.weight"] = np.array([0.9], dtype=np.float32)
        if ple:
            t[b + "inp_gate.weight"], t[b + "proj.weight"] = w(n_pl, n_embd), w(n_embd, n_pl)
            t[b + "post_norm.weight"] = w.norm(n_embd)
        if moe:
            t[b + "ffn_gate_inp.weight"], t[b + "ffn_gate_inp.scale"] = w(n_expert, n_embd, scale=8.0), w.norm(n_embd)
            t[b + "pre_ffw_norm_2.weight"] = w.norm(n_embd)
            t[b + "post_ffw_norm_1.weight"], t[b + "post_ffw_norm_2.weight"] = w.norm(n_embd), w.norm(n_embd)
            t[b + "ffn_gate_exps.weight"] = w(n_expert, n_ff_exp, n_embd)
            t[b + "ffn_up_exps.weight"] = w(n_expert, n_ff_exp, n_embd)
            t[b + "ffn_down_exps.weight"] = w(n_expert, n_embd, n_ff_exp)
            t[b + "ffn_down_exps.scale"] = w.norm(n_expert)
    m.tensors = dict(t)
    d.tensors = {(n.replace("ffn_down_exps.scale", "ffn_gate_inp.per_expert_scale") if old_expert_scale else n): x
                 for n, x in t.items()}

    # the vision tower and projector: llama.cpp's mmproj, and the same tensors inside Ollama's blob
    p = TinyModel("clip")
    p.set("general.architecture", "clip", GT.STRING)
    p.set("general.name", "tiny-gemma4-mmproj", GT.STRING)
    p.set("clip.has_vision_encoder", True, GT.BOOL)
    p.set("clip.vision.projector_type", "gemma4v", GT.STRING)
    v = "clip.vision."
    sizes = (("block_count", v_layer), ("embedding_length", v_embd), ("feed_forward_length", v_ff),
             ("attention.head_count", v_head), ("patch_size", patch_size))
    for key, value in sizes + (("projection_dim", n_embd), ("image_size", 224)):
        p.set(v + key, value, GT.UINT32)
    p.set(v + "attention.layer_norm_epsilon", 1e-6, GT.FLOAT32)
    p.set(v + "image_mean", [0.0, 0.0, 0.0], GT.ARRAY, GT.FLOAT32)
    p.set(v + "image_std", [1.0, 1.0, 1.0], GT.ARRAY, GT.FLOAT32)
    for key, value in sizes + (("num_channels", 3), ("projector.scale_factor", 3)):
        d.set(a + "vision." + key, value, GT.UINT32)
    d.set(a + "vision.attention.layer_norm_epsilon", 1e-6, GT.FLOAT32)

    half = lambda x: x.astype(np.float16)  # noqa: E731
    v_hd = v_embd // v_head
    vt: dict[str, np.ndarray] = {}
    vt["v.patch_embd.weight"] = half(w(v_embd, 3, patch_size, patch_size, scale=4.0))
    vt["v.position_embd.weight"] = half(w(2, pos_size, v_embd, scale=2.0))
    linears = []
    for i in range(v_layer):
        b = f"v.blk.{i}."
        vt[b + "ln1.weight"], vt[b + "ln2.weight"] = w.norm(v_embd), w.norm(v_embd)
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            vt[b + proj + ".weight"] = w(v_embd, v_embd)
        vt[b + "attn_q_norm.weight"], vt[b + "attn_k_norm.weight"] = w.norm(v_hd), w.norm(v_hd)
        vt[b + "attn_post_norm.weight"], vt[b + "ffn_post_norm.weight"] = w.norm(v_embd), w.norm(v_embd)
        vt[b + "ffn_gate.weight"], vt[b + "ffn_up.weight"] = w(v_ff, v_embd), w(v_ff, v_embd)
        vt[b + "ffn_down.weight"] = w(v_embd, v_ff)
        vt[b + "out_scale.weight"] = np.array([1.1], dtype=np.float32)
        linears += [b + name for name in ("attn_q", "attn_k", "attn_v", "attn_out", "ffn_gate", "ffn_up", "ffn_down")]
    vt["v.std_bias"] = w(v_embd)
    vt["v.std_scale"] = w.norm(v_embd)
    vt["mm.input_projection.weight"] = w(n_embd, v_embd, scale=8.0)
    linears.append("mm.input_projection")
    # clamping ranges tight enough to bite on random activations
    clamps = np.abs(w.rng.standard_normal((len(linears), 4))).astype(np.float32) + 0.5
    clamps[:, 0] *= -1  # input min
    clamps[:, 2] *= -1  # output min
    for name, data in vt.items():
        forced_f32 = name in ("v.patch_embd.weight", "v.position_embd.weight")
        p.tensors[name] = data.astype(np.float32) if forced_f32 else data
        d.tensors[name] = data
    for j, linear in enumerate(linears):
        for k, suffix in enumerate(("input_min", "input_max", "output_min", "output_max")):
            p.tensors[f"{linear}.{suffix}"] = clamps[j, k:k + 1].copy()
    d.tensors["v.clamp_data"] = clamps.reshape(-1).copy()

    # a stub audio conformer, as the E2B/E4B blobs carry one: translation drops it
    for key, value in (("block_count", 1), ("embedding_length", 16), ("feed_forward_length", 64),
                       ("attention.head_count", 2)):
        d.set(a + "audio." + key, value, GT.UINT32)
    d.tensors["a.conv1d.0.weight"] = w(16, 1, 3, 3)
    d.tensors["a.blk.0.ln1.weight"] = w.norm(16)
    d.tensors["a.blk.0.linear_pos.weight"] = w(16, 16)
    d.tensors["mm.a.input_projection.weight"] = w(n_embd, 16)
    d.tensors["mm.a.fc.weight"], d.tensors["mm.a.fc.bias"] = w(16, 16), w(16)
    return m, p, d


def gemma4_pair(**kw) -> tuple[TinyModel, TinyModel]:
    """(llama.cpp's text model, Ollama's blob)."""
    text, _, blob = gemma4_models(**kw)
    return text, blob


# --- embeddinggemma --------------------------------------------------------------------------------

def embeddinggemma_pair(n_embd: int = 64, n_layer: int = 6, n_head: int = 4, n_head_kv: int = 2, head_dim: int = 16,
                        n_ff: int = 128, n_dense: int = 96, seed: int = 0) -> tuple[TinyModel, TinyModel]:
    """EmbeddingGemma as llama.cpp writes it (``gemma-embedding``, ``dense_2`` / ``dense_3`` and
    their sizes) and as Ollama's older blobs have it: ``gemma3`` with ``dense.0`` / ``dense.1``,
    the final norm called ``norm``, a causal flag and a layer pattern, and no SWA RoPE base."""
    text, _, _ = gemma3_models(vision=False, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
                               head_dim=head_dim, n_ff=n_ff, seed=seed)
    w = Weights(seed + 1)
    m = text.copy()
    m.arch = "gemma-embedding"
    m.rename_keys("gemma3.", "gemma-embedding.")
    e = "gemma-embedding."
    m.set("general.architecture", "gemma-embedding", GT.STRING)
    m.set(e + "rope.freq_base", 1_000_000.0, GT.FLOAT32)
    m.set(e + "rope.freq_base_swa", 10_000.0, GT.FLOAT32)
    m.set(e + "pooling_type", 1, GT.UINT32)  # mean
    for key, value in (("dense_2_feat_in", n_embd), ("dense_2_feat_out", n_dense), ("dense_3_feat_in", n_dense),
                       ("dense_3_feat_out", n_embd)):
        m.set(e + key, value, GT.UINT32)
    m.tensors["dense_2.weight"] = w(n_dense, n_embd)
    m.tensors["dense_3.weight"] = w(n_embd, n_dense)

    d = m.copy()
    d.arch = "gemma3"
    d.rename_keys(e, "gemma3.")
    d.set("general.architecture", "gemma3", GT.STRING)
    for key in ("dense_2_feat_in", "dense_2_feat_out", "dense_3_feat_in", "dense_3_feat_out", "rope.freq_base_swa"):
        del d.kv["gemma3." + key]
    d.set("gemma3.attention.causal", False, GT.BOOL)
    d.set("gemma3.attention.sliding_window_pattern", [False] * n_layer, GT.ARRAY, GT.BOOL)
    names = {"dense_2.weight": "dense.0.weight", "dense_3.weight": "dense.1.weight", "output_norm.weight": "norm.weight"}
    d.rename_tensors(lambda n: names.get(n, n))
    return m, d
