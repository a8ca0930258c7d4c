"""LFM2 as Ollama's converter wrote it: the same architecture name, but the norm before the
output projection is ``output_norm`` where llama.cpp reads ``token_embd_norm``, the pre-tokenizer
is not named, and some files state a feed-forward length their tensors do not have."""

from __future__ import annotations

from . import Dialect, has_tensor, register
from .plan import Plan


def _detect(h) -> bool:
    return has_tensor(h, "output_norm.weight") and not has_tensor(h, "token_embd_norm.weight")


def _text(plan: Plan) -> None:
    plan.rename_tensor("output_norm.weight", "token_embd_norm.weight")
    plan.set_str("tokenizer.ggml.pre", "lfm2")
    gate = plan.tensor("blk.0.ffn_gate.weight")
    if gate is not None and plan.get("lfm2.feed_forward_length") != gate.shape[1]:
        plan.set_u32("lfm2.feed_forward_length", gate.shape[1])


register(Dialect("lfm2", detect=_detect, text=_text))
