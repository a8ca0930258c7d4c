"""gpt-oss as Ollama's converter once wrote it: architecture ``gptoss``.

llama.cpp calls it ``gpt-oss``; the key prefix follows. The files leave out the per-expert
feed-forward length (it is the gate experts' middle dimension), use a generic pre-tokenizer name
where gpt-oss needs ``gpt-4o`` (without it prompts tokenize differently and the harmony headers
come out malformed), and name three tensors differently.
"""

from __future__ import annotations

from . import Dialect, register
from .plan import Plan

_TENSOR_RENAMES = (
    (".attn_out", ".attn_output"),
    (".attn_sinks", ".attn_sinks.weight"),  # the suffix was left off
    (".ffn_norm", ".post_attention_norm"),  # the block's second norm
)


def _text(plan: Plan) -> None:
    plan.set_str("general.architecture", "gpt-oss")
    plan.rename_prefix("gptoss.", "gpt-oss.")
    gate = plan.tensor("blk.0.ffn_gate_exps.weight")
    if not plan.has("gpt-oss.expert_feed_forward_length") and gate is not None:
        plan.set_u32("gpt-oss.expert_feed_forward_length", gate.shape[1])
    if not plan.has("gpt-oss.rope.scaling.type"):
        plan.set_str("gpt-oss.rope.scaling.type", "yarn")
    plan.set_str("tokenizer.ggml.pre", "gpt-4o")
    for needle, repl in _TENSOR_RENAMES:
        plan.rename_containing(needle, repl)


register(Dialect("gptoss", detect=lambda h: True, text=_text))
