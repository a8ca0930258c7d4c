"""Mistral 3 (Mistral Small 3.x, Ministral 3, Devstral) as Ollama's converter wrote it.

The text model has llama.cpp's architecture and tensor names, but Ollama named the YaRN keys
after Hugging Face's config (``rope.scaling.beta_fast`` / ``beta_slow`` / ``mscale_all_dim``, and
``rope.scaling_beta`` for the attention temperature), left the pre-tokenizer unnamed where these
models need ``tekken``, and could write an empty RoPE scaling type (llama.cpp aborts on one).

The Pixtral vision tower and projector sit in the same blob under ``v.`` / ``mm.`` with
Hugging Face's names (``patch_conv``, ``encoder_norm``, ``attn_norm``, ``mm.linear_1`` ...), their
settings under ``mistral3.vision.*``. Ollama permuted only the text model's Q/K rows for RoPE;
the vision Q/K rows are in Hugging Face's order, where llama.cpp's converter permutes them too
(its Pixtral graph rotates adjacent pairs). The projector also needs the ``[IMG_BREAK]`` token's
embedding as a tensor of its own, which llama.cpp's converter copies out of the token embeddings.
"""

from __future__ import annotations

import numpy as np

from . import Dialect, has_prefix, register
from .plan import FLOAT32, Plan

A = "mistral3."

# Ollama's name -> llama.cpp's, under mistral3.
_KEY_RENAMES = (
    ("rope.scaling.beta_fast", "rope.scaling.yarn_beta_fast"),
    ("rope.scaling.beta_slow", "rope.scaling.yarn_beta_slow"),
    ("rope.scaling.mscale_all_dim", "rope.scaling.yarn_log_multiplier"),  # the same value llama.cpp writes
    ("rope.scaling_beta", "attention.temperature_scale"),  # Llama 4 style attention temperature
)

# Vision tower and projector tensors: Ollama's (Hugging Face's) names -> llama.cpp's.
_CLIP_RENAMES = (
    ("v.patch_conv", "v.patch_embd"),
    ("v.encoder_norm", "v.pre_ln"),
    (".attn_output", ".attn_out"),
    (".attn_norm", ".ln1"),
    (".ffn_norm", ".ln2"),
    ("mm.linear_1", "mm.1"),
    ("mm.linear_2", "mm.2"),
    ("mm.patch_merger.merging_layer", "mm.patch_merger"),
    ("mm.norm", "mm.input_norm"),
)

# Pixtral's image statistics (CLIP's), which the preprocessor config carries and the blob does not.
_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def _detect(h) -> bool:
    m = h.metadata
    return has_prefix(h, "v.", "mm.") or any(
        A + k in m for k in ("rope.scaling.beta_fast", "rope.scaling.mscale_all_dim", "rope.scaling_beta"))


def _text(plan: Plan) -> None:
    for old, new in _KEY_RENAMES:
        plan.rename_key(A + old, A + new)
    if plan.get(A + "rope.scaling.type") in ("", "default"):  # no scaling: llama.cpp asserts on an unknown type
        plan.delete(A + "rope.scaling.type")
    if plan.get(A + "rope.scaling.factor") == 0:
        plan.delete(A + "rope.scaling.factor")
    if plan.get("tokenizer.ggml.pre") in (None, "", "default"):
        plan.set_str("tokenizer.ggml.pre", "tekken")
    plan.drop_prefix("v.", "mm.")  # the vision tower becomes the projector


def _projector(plan: Plan) -> None:
    get = plan.get
    n_head = int(get(A + "vision.attention.head_count"))
    n_layer = int(get(A + "vision.block_count"))
    clip = {
        "clip.vision.block_count": n_layer,
        "clip.vision.embedding_length": get(A + "vision.embedding_length"),
        "clip.vision.feed_forward_length": get(A + "vision.feed_forward_length"),
        "clip.vision.attention.head_count": n_head,
        "clip.vision.image_size": get(A + "vision.image_size"),
        "clip.vision.patch_size": get(A + "vision.patch_size"),
        # Pixtral reads the projector's width from mm.2; llama.cpp still wants the key.
        "clip.vision.projection_dim": get(A + "embedding_length"),
    }
    if get(A + "spatial_merge_size"):
        clip["clip.vision.spatial_merge_size"] = get(A + "spatial_merge_size")
    img_break = _img_break_row(plan)

    plan.become_clip("pixtral")
    for key, value in clip.items():
        plan.set_u32(key, int(value))
    plan.set_f32("clip.vision.attention.layer_norm_epsilon", 1e-5)  # Pixtral's, which Ollama left out
    plan.set_array("clip.vision.image_mean", FLOAT32, _IMAGE_MEAN)
    plan.set_array("clip.vision.image_std", FLOAT32, _IMAGE_STD)
    plan.set_bool("clip.use_silu", True)  # Pixtral's feed-forward activation

    for i in range(n_layer):
        for part in ("attn_q", "attn_k"):
            t = plan.tensor(f"v.blk.{i}.{part}.weight")
            if t is not None:
                plan.reorder_rows(t.name, _rope_pairs(t.shape[-1], n_head))
    for old, new in _CLIP_RENAMES:
        plan.rename_containing(old, new)
    plan.promote_f32("v.patch_embd.weight")  # convolution kernels in F32, as some backends need
    plan.add(plan.computed("v.token_embd.img_break", [img_break.size], lambda: img_break))


def _rope_pairs(n_rows: int, n_head: int) -> list[int]:
    """The rows of a Q/K projection from Hugging Face's order (per head: the first halves of the
    rotated pairs, then the second halves) to llama.cpp's (per head: pairs side by side)."""
    head_dim = n_rows // n_head
    half = head_dim // 2
    return [h * head_dim + j * half + d for h in range(n_head) for d in range(half) for j in range(2)]


def _img_break_row(plan: Plan) -> np.ndarray:
    """The embedding of the ``[IMG_BREAK]`` token, which Pixtral puts after each row of patches.
    Zeros where the vocabulary has no such token (the break then adds nothing)."""
    n_embd = int(plan.get(A + "embedding_length"))
    tokens = plan.get("tokenizer.ggml.tokens") or []
    embd = plan.source("token_embd.weight")
    try:
        index = tokens.index("[IMG_BREAK]")
    except ValueError:
        index = -1
    if embd is None or index < 0 or index >= embd.shape[-1]:
        return np.zeros(n_embd, dtype=np.float32)
    return plan.row(embd, index)


register(Dialect("mistral3", detect=_detect, text=_text, projector=_projector))
