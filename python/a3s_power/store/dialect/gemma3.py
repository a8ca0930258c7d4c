"""Gemma 3 as Ollama's converter wrote it: one blob holding the text model, the SigLIP vision tower
(``v.*``) and the projector (``mm.*``), under the architecture name ``gemma3`` that llama.cpp uses too.

What differs from llama.cpp's converter:

* the multimodal sizes (4B, 12B, 27B) leave out the RMS norm epsilon and both RoPE bases, and the
  128K-context sizes leave out their linear RoPE scaling (factor 8); the 1B names its bases
  ``rope.global.freq_base`` / ``rope.local.freq_base`` where llama.cpp reads ``rope.freq_base`` /
  ``rope.freq_base_swa``. llama.cpp refuses a file without the epsilon, and would silently use the
  global base on the sliding-window layers without the SWA base;
* the tokenizer keeps the multimodal tokens past the embedding's last row (``<image_soft_token>``),
  so the vocabulary is longer than ``token_embd`` and llama.cpp refuses the shape; those tokens are
  never typed (images enter as embeddings), so the arrays are cut to the embedding's rows (and an
  embedding longer than the vocabulary is cut to it);
* some files carry no chat template;
* the vision tower keeps Hugging Face's names (``patch_embedding``, ``layer_norm1``, ``mlp.fc1``,
  ``post_layernorm``, ``mm.mm_input_projection``...) and its sizes under ``gemma3.vision.*``, and
  the patch and position embeddings in 16 bits where llama.cpp's converter forces 32.

An ``embeddinggemma`` blob is a third shape: architecture ``gemma3`` with the sentence-transformers
dense layers ``dense.0`` / ``dense.1`` and a final norm called ``norm``; llama.cpp loads it as
``gemma-embedding`` (bidirectional attention, ``dense_2`` / ``dense_3``).
"""

from __future__ import annotations

import math

from . import Dialect, has_prefix, has_tensor, register
from .plan import FLOAT32, STRING, Plan

A = "gemma3."

# Gemma's turn format: a system message is folded into the first user turn (Gemma has no system role).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' }}"
    "{{ (prefix if loop.first else '') + (m['content'] | trim) + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

_VISION_RENAMES = (
    ("v.patch_embedding", "v.patch_embd"),
    ("v.position_embedding", "v.position_embd"),
    ("v.post_layernorm", "v.post_ln"),
    (".layer_norm1", ".ln1"),
    (".layer_norm2", ".ln2"),
    (".attn_output", ".attn_out"),
    # SigLIP's fc1 widens and fc2 narrows: llama.cpp's converter calls them up and down.
    (".mlp.fc1", ".ffn_up"),
    (".mlp.fc2", ".ffn_down"),
    ("mm.mm_input_projection", "mm.input_projection"),
    ("mm.mm_soft_emb_norm", "mm.soft_emb_norm"),
)

_VISION_KEYS = ("block_count", "embedding_length", "feed_forward_length", "image_size", "patch_size",
                "attention.head_count", "attention.layer_norm_epsilon")


def _detect(h) -> bool:
    meta = h.metadata
    return (A + "mm.tokens_per_image" in meta or has_prefix(h, "v.", "mm.")
            or A + "rope.global.freq_base" in meta or A + "rope.local.freq_base" in meta
            or A + "attention.layer_norm_rms_epsilon" not in meta)


def _text(plan: Plan) -> None:
    # the 1B's nested names first, so the defaults below fill only what is still missing
    for nested, flat in (("rope.global.freq_base", "rope.freq_base"), ("rope.local.freq_base", "rope.freq_base_swa")):
        if plan.has(A + nested):
            plan.rename_key(A + nested, A + flat)
    plan.default(A + "attention.layer_norm_rms_epsilon", FLOAT32, 1e-6)
    plan.default(A + "rope.freq_base", FLOAT32, 1_000_000.0)
    plan.default(A + "rope.freq_base_swa", FLOAT32, 10_000.0)
    if int(plan.get(A + "context_length", 0) or 0) >= 131072:  # the sizes trained to 16K, stretched 8x
        plan.default(A + "rope.scaling.type", STRING, "linear")
        plan.default(A + "rope.scaling.factor", FLOAT32, 8.0)
    plan.default("tokenizer.chat_template", STRING, CHAT_TEMPLATE)
    embd = plan.tensor("token_embd.weight")
    if embd is not None:
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            plan.truncate_array(key, embd.shape[1])
        # the other way round (Hugging Face's padded embedding, more rows than tokens): the rows past
        # the vocabulary are never looked up, and the first rows are a prefix of the tensor's bytes
        n_tokens = len(plan.get("tokenizer.ggml.tokens") or [])
        if embd.compute is None and 0 < n_tokens < embd.shape[1]:
            embd.shape[1] = n_tokens
    plan.drop_prefix("v.", "mm.")


def _projector(plan: Plan) -> None:
    embd = plan.get(A + "embedding_length")
    image_size, patch_size = plan.get(A + "vision.image_size"), plan.get(A + "vision.patch_size")
    tokens = plan.get(A + "mm.tokens_per_image")
    for key in _VISION_KEYS:
        plan.copy_key(A + "vision." + key, "clip.vision." + key)
    plan.become_clip("gemma3")
    plan.set_bool("clip.use_gelu", True)  # SigLIP's tanh GELU, not CLIP's quick GELU
    if embd is not None:
        plan.set_u32("clip.vision.projection_dim", embd)
    if not plan.has("clip.vision.image_mean"):
        plan.set_array("clip.vision.image_mean", FLOAT32, [0.5, 0.5, 0.5])
    if not plan.has("clip.vision.image_std"):
        plan.set_array("clip.vision.image_std", FLOAT32, [0.5, 0.5, 0.5])
    # mtmd pools the patch grid by 4 per side unless told otherwise; the file says how many tokens
    # an image becomes, and so what the pooling really is.
    if image_size and patch_size and tokens:
        side, per_side = image_size // patch_size, math.isqrt(int(tokens))
        if per_side and per_side * per_side == tokens and side % per_side == 0 and side // per_side != 4:
            plan.set_u32("clip.vision.projector.scale_factor", side // per_side)
    for needle, repl in _VISION_RENAMES:
        plan.rename_containing(needle, repl)
    plan.promote_f32("v.patch_embd.weight")
    plan.promote_f32("v.position_embd.weight")


# --- embeddinggemma -------------------------------------------------------------------------------

E = "gemma-embedding."


def _detect_embedding(h) -> bool:
    return has_tensor(h, "dense.0.weight")


def _embedding_text(plan: Plan) -> None:
    plan.set_str("general.architecture", "gemma-embedding")
    plan.rename_prefix(A, E)
    # Causality and the layer pattern are the architecture's own in llama.cpp (bidirectional,
    # every sixth layer global): the keys the blob carries would only contradict them.
    plan.delete(E + "attention.causal")
    plan.delete(E + "attention.sliding_window_pattern")
    plan.default(E + "rope.freq_base_swa", FLOAT32, 10_000.0)
    d0, d1 = plan.tensor("dense.0.weight"), plan.tensor("dense.1.weight")
    if d0 is not None and d1 is not None:
        plan.set_u32(E + "dense_2_feat_in", d0.shape[0])
        plan.set_u32(E + "dense_2_feat_out", d0.shape[1])
        plan.set_u32(E + "dense_3_feat_in", d1.shape[0])
        plan.set_u32(E + "dense_3_feat_out", d1.shape[1])
    plan.rename_tensor("dense.0.weight", "dense_2.weight")
    plan.rename_tensor("dense.1.weight", "dense_3.weight")
    plan.rename_tensor("norm.weight", "output_norm.weight")


# the embedding model first: its blobs would pass the chat model's test too
register(Dialect("gemma3", detect=_detect_embedding, text=_embedding_text,
                 notes="embeddinggemma: architecture gemma3 with dense.0/dense.1, loads as gemma-embedding"))
register(Dialect("gemma3", detect=_detect, text=_text, projector=_projector))
