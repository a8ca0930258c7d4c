"""Gemma 4 as Ollama's converter wrote it: one blob holding the text model, the vision tower
(``v.*``), its projector (``mm.input_projection``) and, for the sizes that hear, the audio
conformer (``a.*``, ``mm.a.*``), under the architecture name ``gemma4`` that llama.cpp uses too.

What differs from llama.cpp's converter:

* ``tokenizer.ggml.model`` is ``llama`` (SentencePiece) where Gemma 4's tokenizer is a BPE over
  raw UTF-8 that llama.cpp calls ``gemma4``; the merges and the ``gemma4`` pre-tokenizer are in the
  file already. Loaded as SentencePiece, the turn and channel tokens come apart into pieces;
* the tokens the chat parser must see (``<|channel>``, ``<|tool_call>``...) are control tokens,
  which llama.cpp leaves out of the text; its converter marks them user-defined;
* older files name the per-expert scale ``ffn_gate_inp.per_expert_scale`` where llama.cpp reads
  ``ffn_down_exps.scale`` (Ollama's loader also fuses the experts' gate and up into one tensor,
  which a newer llama.cpp wants; ours still takes them apart);
* the vision tower's names are llama.cpp's already, its sizes are under ``gemma4.vision.*``, the
  patch and position embeddings are 16-bit where llama.cpp's converter writes 32, and the clamping
  ranges of its clippable linears are packed into one ``v.clamp_data`` tensor (per layer: q, k, v,
  out, gate, up, down, each input min, input max, output min, output max; then the projector's
  four) where llama.cpp reads one scalar per range (``v.blk.N.attn_q.input_min`` ...).

The audio conformer is dropped: A3S Power's APIs take no audio, so a tower nothing can reach would
only cost disk and a projector that must load; the model does not report an audio capability.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import Dialect, has_prefix, register
from .plan import FLOAT32, UINT32, Plan

A = "gemma4."
EMBEDDED = ("a.", "v.", "mm.", "model.vision_tower.")
AUDIO = ("a.", "mm.a.")

# Tokens llama.cpp's converter keeps visible (user-defined) so that the reply parser can read them.
VISIBLE_TOKENS = frozenset({"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                            "<tool_response|>", '<|"|>'})
CONTROL, USER_DEFINED = 3, 4

CLAMPED = ("attn_q", "attn_k", "attn_v", "attn_out", "ffn_gate", "ffn_up", "ffn_down")
CLAMP_RANGES = ("input_min", "input_max", "output_min", "output_max")

_VISION_KEYS = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
                "attention.layer_norm_epsilon", "patch_size", "projector.scale_factor")


def _detect(h) -> bool:
    return has_prefix(h, *EMBEDDED) or h.metadata.get("tokenizer.ggml.model") == "llama"


def _text(plan: Plan) -> None:
    if plan.get("tokenizer.ggml.model") == "llama":
        plan.set_str("tokenizer.ggml.model", "gemma4")
    tokens, types = plan.get("tokenizer.ggml.tokens") or [], plan.get("tokenizer.ggml.token_type")
    if types:
        fixed = [USER_DEFINED if kind == CONTROL and tok in VISIBLE_TOKENS else kind
                 for tok, kind in zip(tokens, types)]
        if fixed != list(types[:len(fixed)]):
            plan.kv["tokenizer.ggml.token_type"].value = fixed + list(types[len(fixed):])
    plan.rename_regex(r"^(blk\.\d+)\.ffn_gate_inp\.per_expert_scale$", r"\1.ffn_down_exps.scale")
    plan.drop_prefix(*EMBEDDED)


def _projector(plan: Plan) -> None:
    embd = plan.get(A + "embedding_length")
    n_layer = int(plan.get(A + "vision.block_count", 0) or 0)
    for key in _VISION_KEYS:
        plan.copy_key(A + "vision." + key, "clip.vision." + key)
    plan.become_clip("gemma4v", "clip.vision.projector_type")
    plan.default("clip.vision.image_size", UINT32, 224)  # unused: images keep their aspect; the key is required
    if embd is not None:
        plan.set_u32("clip.vision.projection_dim", embd)
    # the tower normalises images itself (v.std_bias, v.std_scale): pixels go in as they are
    if not plan.has("clip.vision.image_mean"):
        plan.set_array("clip.vision.image_mean", FLOAT32, [0.0, 0.0, 0.0])
    if not plan.has("clip.vision.image_std"):
        plan.set_array("clip.vision.image_std", FLOAT32, [1.0, 1.0, 1.0])
    plan.drop_prefix(*AUDIO)
    _unpack_clamps(plan, n_layer)
    plan.promote_f32("v.patch_embd.weight")
    plan.promote_f32("v.position_embd.weight")


def _unpack_clamps(plan: Plan, n_layer: int) -> None:
    packed = plan.tensor("v.clamp_data")
    if packed is None:
        return
    plan.drop_prefix("v.clamp_data")
    linears = [f"v.blk.{i}.{name}" for i in range(n_layer) for name in CLAMPED] + ["mm.input_projection"]
    if packed.shape != [len(linears) * len(CLAMP_RANGES)]:
        return  # a layout we do not know: leave the linears unclamped rather than clamp them wrongly
    values = plan.array(packed).astype(np.float32)
    for j, linear in enumerate(linears):
        four = values[j * 4:(j + 1) * 4]
        if linear + ".weight" not in plan.tensors or not four.any():
            continue  # Ollama's converter wrote zeros for a linear without ranges
        for k, suffix in enumerate(CLAMP_RANGES):
            plan.add(plan.computed(f"{linear}.{suffix}", [1], _constant(float(four[k]))))


def _constant(value: float) -> Callable[[], np.ndarray]:
    return lambda: np.array([value])


register(Dialect("gemma4", detect=_detect, text=_text, projector=_projector,
                 notes="the audio conformer (a.*, mm.a.*) is dropped: no API here takes audio"))
