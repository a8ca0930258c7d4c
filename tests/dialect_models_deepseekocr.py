"""Tiny DeepSeek-OCR written as llama.cpp's converter writes it (a ``deepseek2-ocr`` text model and
a ``clip`` projector of type ``deepseekocr``: SAM encoder, CLIP encoder, linear projector) and as
Ollama's converter wrote it (``deepseekocr``: one blob, checkpoint tensor names, fewer keys).
store/dialect/deepseekocr.py translates the second."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tests.dialect_models import GT, TinyModel, Weights, with_vocab


class Upstream(NamedTuple):
    """llama.cpp's two files: the text model and its projector."""

    text: TinyModel
    mmproj: TinyModel


def _f16_exact(a: np.ndarray) -> np.ndarray:
    """Values an F16 tensor holds exactly: Ollama's file keeps these kernels in F16, llama.cpp's
    in F32, and the translation's promotion must give the same numbers."""
    return a.astype(np.float16).astype(np.float32)


def deepseekocr_pair(n_embd: int = 64, n_head: int = 4, n_ff: int = 96, n_expert: int = 4, n_ff_exp: int = 32,
                     n_shared: int = 2, sam_embd: int = 32, sam_head: int = 2, sam_layer: int = 3, sam_ff: int = 64,
                     neck: int = 16, clip_embd: int = 32, clip_head: int = 2, clip_layer: int = 2, clip_ff: int = 64,
                     seed: int = 0) -> tuple[Upstream, TinyModel]:
    """Two language layers (a dense one, then a MoE one with shared experts), a SAM encoder of
    ``sam_layer`` blocks (windowed, but blocks 2, 5, 8, 11 attend globally and mtmd needs one
    global block), a CLIP encoder whose input is SAM's output (``clip_embd`` channels after the two
    stride-2 convolutions) and the linear projector from CLIP and SAM features side by side to
    ``n_embd``."""
    w = Weights(seed)

    # --- the language model, as llama.cpp's converter writes it --------------------------------
    text = TinyModel("deepseek2-ocr")
    a = "deepseek2-ocr."
    text.set("general.architecture", "deepseek2-ocr", GT.STRING)
    text.set("general.name", "tiny-deepseek-ocr", GT.STRING)
    for key, value in (("context_length", 2048), ("embedding_length", n_embd), ("block_count", 2),
                       ("feed_forward_length", n_ff), ("attention.head_count", n_head),
                       ("attention.head_count_kv", n_head), ("leading_dense_block_count", 1),
                       ("expert_feed_forward_length", n_ff_exp), ("expert_count", n_expert),
                       ("expert_used_count", 2), ("expert_shared_count", n_shared), ("rope.dimension_count", 0)):
        text.set(a + key, value, GT.UINT32)
    text.set(a + "rope.freq_base", 10000.0, GT.FLOAT32)  # the only base its graph accepts
    text.set(a + "attention.layer_norm_rms_epsilon", 1e-6, GT.FLOAT32)
    n_vocab = with_vocab(text)
    text.set(a + "vocab_size", n_vocab, GT.UINT32)
    t = text.tensors
    t["token_embd.weight"] = w(n_vocab, n_embd, scale=8.0)
    t["output_norm.weight"] = w.norm(n_embd)
    t["output.weight"] = w(n_vocab, n_embd, scale=8.0)
    for i in range(2):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"], t[b + "ffn_norm.weight"] = w.norm(n_embd), w.norm(n_embd)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t[b + name + ".weight"] = w(n_embd, n_embd)
        if i == 0:
            t[b + "ffn_gate.weight"], t[b + "ffn_up.weight"] = w(n_ff, n_embd), w(n_ff, n_embd)
            t[b + "ffn_down.weight"] = w(n_embd, n_ff)
        else:
            t[b + "ffn_gate_inp.weight"] = w(n_expert, n_embd, scale=4.0)
            t[b + "ffn_gate_exps.weight"] = w(n_expert, n_ff_exp, n_embd)
            t[b + "ffn_up_exps.weight"] = w(n_expert, n_ff_exp, n_embd)
            t[b + "ffn_down_exps.weight"] = w(n_expert, n_embd, n_ff_exp)
            t[b + "ffn_gate_shexp.weight"] = w(n_shared * n_ff_exp, n_embd)
            t[b + "ffn_up_shexp.weight"] = w(n_shared * n_ff_exp, n_embd)
            t[b + "ffn_down_shexp.weight"] = w(n_embd, n_shared * n_ff_exp)

    # --- the projector, as llama.cpp's converter writes it --------------------------------------
    mm = TinyModel("clip")
    mm.set("general.architecture", "clip", GT.STRING)
    mm.set("clip.projector_type", "deepseekocr", GT.STRING)
    mm.set("clip.has_vision_encoder", True, GT.BOOL)
    mm.set("clip.use_gelu", True, GT.BOOL)
    v = "clip.vision."
    for key, value in (("projection_dim", n_embd), ("image_size", 224), ("patch_size", 14),
                       ("embedding_length", clip_embd), ("feed_forward_length", clip_head * 4),  # sic: heads * 4
                       ("block_count", clip_layer), ("attention.head_count", clip_head), ("window_size", 14),
                       ("preproc_min_tiles", 2), ("preproc_max_tiles", 9), ("sam.block_count", sam_layer),
                       ("sam.embedding_length", sam_embd), ("sam.head_count", sam_head)):
        mm.set(v + key, value, GT.UINT32)
    mm.set(v + "attention.layer_norm_epsilon", 1e-6, GT.FLOAT32)
    mm.set(v + "image_mean", [0.5, 0.5, 0.5], GT.ARRAY, GT.FLOAT32)
    mm.set(v + "image_std", [0.5, 0.5, 0.5], GT.ARRAY, GT.FLOAT32)
    t = mm.tensors
    # SAM: a 16x16 patch convolution, a learned position table (resized to the 64x64 grid)
    t["v.sam.patch_embd.weight"] = _f16_exact(w(sam_embd, 3, 16, 16, scale=4.0))
    t["v.sam.patch_embd.bias"] = w(sam_embd)
    t["v.sam.pos_embd.weight"] = w(1, 16, 16, sam_embd)
    head_dim = sam_embd // sam_head
    for i in range(sam_layer):
        b = f"v.sam.blk.{i}."
        t[b + "pre_ln.weight"], t[b + "pre_ln.bias"] = w.norm(sam_embd), w(sam_embd)
        t[b + "post_ln.weight"], t[b + "post_ln.bias"] = w.norm(sam_embd), w(sam_embd)
        t[b + "attn.qkv.weight"], t[b + "attn.qkv.bias"] = w(3 * sam_embd, sam_embd), w(3 * sam_embd)
        t[b + "attn.out.weight"], t[b + "attn.out.bias"] = w(sam_embd, sam_embd), w(sam_embd)
        # relative positions: within a 14x14 window, or across the 64x64 grid in a global block
        span = 2 * (64 if i in (2, 5, 8, 11) else 14) - 1
        t[b + "attn.pos_h.weight"], t[b + "attn.pos_w.weight"] = w(span, head_dim), w(span, head_dim)
        t[b + "mlp.lin1.weight"], t[b + "mlp.lin1.bias"] = w(sam_ff, sam_embd), w(sam_ff)
        t[b + "mlp.lin2.weight"], t[b + "mlp.lin2.bias"] = w(sam_embd, sam_ff), w(sam_embd)
    t["v.sam.neck.0.weight"] = w(neck, sam_embd, 1, 1, scale=2.0)
    t["v.sam.neck.1.weight"], t["v.sam.neck.1.bias"] = w.norm(neck), w(neck)
    t["v.sam.neck.2.weight"] = w(neck, neck, 3, 3, scale=2.0)
    t["v.sam.neck.3.weight"], t["v.sam.neck.3.bias"] = w.norm(neck), w(neck)
    t["v.sam.net_2.weight"] = w(2 * neck, neck, 3, 3, scale=2.0)
    t["v.sam.net_3.weight"] = w(clip_embd, 2 * neck, 3, 3, scale=2.0)
    # CLIP: its patch convolution is in the checkpoint but unused (its input is SAM's output)
    t["v.class_embd"] = w(clip_embd)
    t["v.patch_embd.weight"] = _f16_exact(w(clip_embd, 3, 14, 14))
    t["v.position_embd.weight"] = _f16_exact(w(16 * 16 + 1, clip_embd))
    t["v.pre_ln.weight"], t["v.pre_ln.bias"] = w.norm(clip_embd), w(clip_embd)
    for i in range(clip_layer):
        b = f"v.blk.{i}."
        t[b + "ln1.weight"], t[b + "ln1.bias"] = w.norm(clip_embd), w(clip_embd)
        t[b + "ln2.weight"], t[b + "ln2.bias"] = w.norm(clip_embd), w(clip_embd)
        t[b + "attn_qkv.weight"], t[b + "attn_qkv.bias"] = w(3 * clip_embd, clip_embd), w(3 * clip_embd)
        t[b + "attn_out.weight"], t[b + "attn_out.bias"] = w(clip_embd, clip_embd), w(clip_embd)
        t[b + "ffn_up.weight"], t[b + "ffn_up.bias"] = w(clip_ff, clip_embd), w(clip_ff)
        t[b + "ffn_down.weight"], t[b + "ffn_down.bias"] = w(clip_embd, clip_ff), w(clip_embd)
    t["mm.model.fc.weight"] = w(n_embd, 2 * clip_embd, scale=4.0)
    t["mm.model.fc.bias"] = w(n_embd)
    t["v.image_newline"] = w(n_embd, scale=8.0)
    t["v.view_seperator"] = w(1, n_embd, scale=8.0)  # one row, as llama.cpp's converter stores it

    # --- Ollama's one blob ---------------------------------------------------------------------
    d = TinyModel("deepseekocr")
    d.set("general.architecture", "deepseekocr", GT.STRING)
    d.set("general.name", "tiny-deepseek-ocr", GT.STRING)
    d.set("general.file_type", 1, GT.UINT32)
    o = "deepseekocr."
    for key in ("block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
                "attention.head_count_kv", "expert_count", "expert_used_count", "leading_dense_block_count"):
        d.kv[o + key] = text.kv[a + key]
    for key, value in (("vision.block_count", clip_layer), ("vision.embedding_length", clip_embd),
                       ("vision.head_count", clip_head), ("vision.image_size", 224), ("vision.patch_size", 14),
                       ("sam.block_count", sam_layer), ("sam.embedding_length", sam_embd),
                       ("sam.head_count", sam_head)):
        d.set(o + key, value, GT.UINT32)
    d.set(o + "sam.global_attention_indexes", [2, 5, 8, 11], GT.ARRAY, GT.INT32)
    for key, value in text.kv.items():
        if key.startswith("tokenizer."):
            d.kv[key] = value
    d.tensors.update(text.tensors)
    for name, data in mm.tensors.items():
        d.tensors[_ollama_name(name)] = _ollama_data(name, data)
    return Upstream(text, mm), d


# llama.cpp's vision names back to what Ollama's converter made of the checkpoint's
_TO_OLLAMA = (
    (".attn_qkv.", ".self_attn.qkv_proj."), (".attn_out.", ".self_attn.out_proj."), (".ln1.", ".layer_norm1."),
    (".ln2.", ".layer_norm2."), (".ffn_up.", ".mlp.fc1."), (".ffn_down.", ".mlp.fc2."),
    ("v.pre_ln.", "v.pre_layrnorm."), (".attn.out.", ".attn.proj."), (".pre_ln.", ".norm1."),
    (".post_ln.", ".norm2."), ("mm.model.fc.", "mm.layers."),
)


def _ollama_name(name: str) -> str:
    exact = {"v.sam.pos_embd.weight": "s.position_embd", "v.image_newline": "mm.image_newline",
             "v.view_seperator": "mm.view_seperator"}
    if name in exact:
        return exact[name]
    if name.startswith("v.sam."):
        name = "s." + name[len("v.sam."):]
        name = name.replace(".attn.pos_h.weight", ".attn.rel_pos_h").replace(".attn.pos_w.weight", ".attn.rel_pos_w")
    for new, old in _TO_OLLAMA:
        name = name.replace(new, old)
    return name


def _ollama_data(name: str, data: np.ndarray) -> np.ndarray:
    if name in ("v.sam.patch_embd.weight", "v.patch_embd.weight", "v.position_embd.weight"):
        return data.astype(np.float16)  # kernels and the CLIP position table: F16
    if name == "v.view_seperator":
        return data.reshape(-1)  # the checkpoint's vector, not unsqueezed
    return data
