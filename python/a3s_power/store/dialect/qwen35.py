"""Qwen 3.5 (``qwen35``) and Qwen 3.5 MoE (``qwen35moe``) as Ollama's converter wrote them.

The text tensors hold what llama.cpp's converter writes (norms shifted by one, ``A_log`` made
``-exp``, value heads reordered alike), but the metadata differs: the KV head count is an array
with one entry per layer (zero for the linear-attention layers) where llama.cpp reads one number
and the layer kinds, the M-RoPE sections have three entries where llama.cpp wants four, and the
time-step bias is ``ssm_dt`` where llama.cpp reads ``ssm_dt.bias``.

The blob also holds the multi-token-prediction head (``mtp.*``, Hugging Face's names) and the
vision tower with its merger (``v.*``). The MTP head is hidden: our engine never runs it, so
translating it would only cost disk. The vision tower becomes a ``qwen3vl_merger`` projector:
Ollama split each block's fused QKV into ``attn_q/k/v`` (llama.cpp wants them fused again),
flattened the Conv3D patch embedding's two input dimensions into one (llama.cpp wants one Conv2D
kernel per temporal slice), and kept Hugging Face's names. That projector places an image on
M-RoPE's grid of positions, which the engine follows (Slot::squeezed in cpp/engine.h).
"""

from __future__ import annotations

import math

import numpy as np

from . import Dialect, has_prefix, register
from .plan import ARRAY, BOOL, F32, FLOAT32, INT32, Plan

# Keys only Ollama's converter wrote (llama.cpp's keeps vision settings in the mmproj).
_MARKER_KEYS = ("vision.block_count", "image_token_id", "ssm.v_head_reordered", "rope.mrope_interleaved")

_CLIP_RENAMES = (
    ("v.pos_embed", "v.position_embd"),
    ("v.patch_embed", "v.patch_embd"),
    ("v.merger.norm", "v.post_ln"),
    ("v.merger.linear_fc1", "mm.0"),
    ("v.merger.linear_fc2", "mm.2"),
    (".mlp.linear_fc1", ".ffn_up"),
    (".mlp.linear_fc2", ".ffn_down"),
    (".norm1", ".ln1"),
    (".norm2", ".ln2"),
)


def _detect(h) -> bool:
    a = h.architecture + "."
    per_layer_kv = h.types.get(a + "attention.head_count_kv", (None, None))[0] == ARRAY
    return per_layer_kv or any(a + k in h.metadata for k in _MARKER_KEYS) or has_prefix(h, "v.", "mm.", "mtp.")


def _text(plan: Plan) -> None:
    a = plan.arch + "."
    kv_heads = plan.get(a + "attention.head_count_kv")
    if isinstance(kv_heads, list):
        # Zero KV heads marks a linear-attention layer: say so as llama.cpp's converter does,
        # which also holds where the layers do not follow full_attention_interval.
        if 0 in kv_heads and not plan.has(a + "attention.recurrent_layers"):
            plan.set_array(a + "attention.recurrent_layers", BOOL, [n == 0 for n in kv_heads])
        plan.collapse_to_max(a + "attention.head_count_kv")
    sections = plan.get(a + "rope.dimension_sections")
    if sections is None:  # llama.cpp requires them; its converter writes Qwen 3.5's default then
        plan.set_array(a + "rope.dimension_sections", INT32, [11, 11, 10, 0])
    elif isinstance(sections, list) and len(sections) < 4:
        item = plan.kv[a + "rope.dimension_sections"].item_type or INT32
        plan.set_array(a + "rope.dimension_sections", item, list(sections) + [0] * (4 - len(sections)))
    plan.rename_regex(r"\.ssm_dt$", ".ssm_dt.bias")
    plan.drop_prefix("v.", "mm.", "mtp.")


def projector(plan: Plan) -> None:
    """The embedded vision tower and merger as llama.cpp's ``qwen3vl_merger`` mmproj."""
    a = plan.arch + "."
    get = plan.get
    n_layer = int(get(a + "vision.block_count"))
    patch = int(get(a + "vision.patch_size"))
    channels = int(get(a + "vision.num_channels") or 3)
    n_pos = plan.tensors["v.pos_embed.weight"].shape[-1]
    n_ff = plan.tensors["v.blk.0.mlp.linear_fc1.weight"].shape[-1]
    eps = get(a + "vision.attention.layer_norm_epsilon") or get(a + "attention.layer_norm_rms_epsilon") or 1e-6
    deepstack = set(get(a + "vision.deepstack_visual_indexes") or [])
    mean = get(a + "vision.image_mean") or [0.5, 0.5, 0.5]
    std = get(a + "vision.image_std") or [0.5, 0.5, 0.5]
    clip = {
        "clip.vision.block_count": n_layer,
        "clip.vision.embedding_length": get(a + "vision.embedding_length"),
        "clip.vision.feed_forward_length": n_ff,  # Ollama did not write it: the tensors say it
        "clip.vision.attention.head_count": get(a + "vision.attention.head_count"),
        "clip.vision.patch_size": patch,
        # The learned position grid is square: its side in patches times the patch size.
        "clip.vision.image_size": math.isqrt(n_pos) * patch,
        "clip.vision.projection_dim": get(a + "embedding_length"),
        "clip.vision.spatial_merge_size": get(a + "vision.spatial_merge_size") or 2,
    }

    plan.become_clip("qwen3vl_merger")
    for key, value in clip.items():
        plan.set_u32(key, int(value))
    plan.set_f32("clip.vision.attention.layer_norm_epsilon", float(eps))
    plan.set_array("clip.vision.image_mean", FLOAT32, mean)
    plan.set_array("clip.vision.image_std", FLOAT32, std)
    plan.set_array("clip.vision.is_deepstack_layers", BOOL, [i in deepstack for i in range(n_layer)])
    plan.set_bool("clip.use_gelu", True)

    for i in range(n_layer):  # Q, K and V fused again, weights and biases
        for part in ("weight", "bias"):
            names = [f"v.blk.{i}.attn_{x}.{part}" for x in "qkv"]
            if all(plan.tensor(n) is not None for n in names):
                fused = plan.concat_slowest(names, f"v.blk.{i}.attn_qkv.{part}")
                for n in names:
                    plan.tensors.pop(n)
                plan.add(fused)
    _split_patch_embedding(plan, channels)
    for old, new in _CLIP_RENAMES:
        plan.rename_containing(old, new)
    plan.promote_f32("v.position_embd.weight")


def _split_patch_embedding(plan: Plan, channels: int) -> None:
    """Ollama's Conv3D kernel (ggml shape [p, p, frames, out*in]) as llama.cpp's two Conv2D
    kernels [p, p, in, out], one per frame, in F32."""
    src = plan.tensors.pop("v.patch_embed.weight", None)
    if src is None:
        return
    p1, p0, frames, packed = src.shape
    if frames != 2 or packed % channels:
        raise ValueError(f"unexpected Qwen 3.5 patch embedding shape {src.shape}")
    out = packed // channels

    def frame(k: int):
        return lambda: plan.array(src)[:, k].reshape(out, channels, p0, p1).astype(np.float32)

    for k, name in enumerate(("v.patch_embd.weight", "v.patch_embd.weight.1")):
        plan.add(plan.computed(name, [p1, p0, channels, out], frame(k), F32))


register(Dialect("qwen35", detect=_detect, text=_text, projector=projector))
register(Dialect("qwen35moe", detect=_detect, text=_text, projector=projector))
