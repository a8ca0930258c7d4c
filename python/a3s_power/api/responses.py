"""What the engine answers: streamed deltas, whole chat and generate responses, embeddings."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from .messages import Message, ToolCall


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class Logprob(TopLogprob):
    """The chosen token's log probability, and the most likely alternatives (``top_logprobs``)."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class Metrics(BaseModel):
    """Ollama's timings, in nanoseconds, and token counts."""

    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0  # the whole prompt
    prompt_eval_cached_count: int = 0  # of those, reused from the KV cache (a slot's or the prompt cache's)
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0

    def reported(self) -> dict[str, int]:
        """The measures that were taken (non-zero), as Ollama's answers carry them."""
        return {k: v for k, v in self.model_dump().items() if v}


class Delta(BaseModel):
    """A piece of an answer, as it streams. The last one has ``done`` and the metrics; the first
    carries the prompt's token count (Anthropic's message_start reports it)."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    logprobs: list[Logprob] = Field(default_factory=list)
    done: bool = False
    done_reason: str = ""  # stop, length; load or unload for a request with nothing to answer
    metrics: Metrics = Field(default_factory=Metrics)
    context: list[int] | None = None  # generate: the tokens to continue from
    stop_sequence: str = ""  # the stop string that ended the answer, if one did
    remote_model: str = ""  # set when a remote model's host answered (engine/remote.py)
    remote_host: str = ""


    @classmethod
    def merge(cls, deltas: Iterable[Delta]) -> Delta:
        """A whole answer as one delta: the text, thinking, tool calls and log probabilities of
        every piece, and the last piece's ending (what Ollama's ``stream: false`` answers)."""
        content, thinking, calls, logprobs, last = _gather(deltas)
        return last.model_copy(update={"content": content, "thinking": thinking, "tool_calls": calls,
                                       "logprobs": logprobs})


class _Whole(BaseModel):
    model: str = ""
    done_reason: str = ""
    metrics: Metrics = Field(default_factory=Metrics)
    logprobs: list[Logprob] = Field(default_factory=list)
    stop_sequence: str = ""
    remote_model: str = ""
    remote_host: str = ""


def _gather(deltas: Iterable[Delta]) -> tuple[str, str, list[ToolCall], list[Logprob], Delta]:
    content, thinking, calls, logprobs = [], [], [], []
    last = Delta()
    for d in deltas:
        content.append(d.content)
        thinking.append(d.thinking)
        calls += d.tool_calls
        logprobs += d.logprobs
        last = d
    return "".join(content), "".join(thinking), calls, logprobs, last


def _ending(last: Delta) -> dict[str, Any]:
    return {"done_reason": last.done_reason, "metrics": last.metrics, "stop_sequence": last.stop_sequence,
            "remote_model": last.remote_model, "remote_host": last.remote_host}


class ChatResponse(_Whole):
    """A whole chat answer: the assistant's message, with its thinking and tool calls."""

    message: Message

    @classmethod
    def from_deltas(cls, model: str, deltas: Iterable[Delta]) -> ChatResponse:
        content, thinking, calls, logprobs, last = _gather(deltas)
        message = Message(role="assistant", content=content, thinking=thinking or None, tool_calls=calls or None)
        return cls(model=model, message=message, logprobs=logprobs, **_ending(last))


class GenerateResponse(_Whole):
    """A whole generate answer; ``context`` continues it in a later request."""

    response: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    context: list[int] | None = None

    @classmethod
    def from_deltas(cls, model: str, deltas: Iterable[Delta]) -> GenerateResponse:
        content, thinking, calls, logprobs, last = _gather(deltas)
        return cls(model=model, response=content, thinking=thinking, tool_calls=calls, logprobs=logprobs,
                   context=last.context, **_ending(last))


class EmbedResponse(BaseModel):
    model: str = ""
    embeddings: list[list[float]] = Field(default_factory=list)
    prompt_eval_count: int = 0
    metrics: Metrics = Field(default_factory=Metrics)


class RerankResult(BaseModel):
    index: int  # the document's place in the request
    relevance_score: float  # the reranker's score: higher is more relevant
    document: str | None = None  # with return_documents


class RerankResponse(BaseModel):
    model: str = ""
    results: list[RerankResult] = Field(default_factory=list)  # most relevant first
    prompt_eval_count: int = 0
    metrics: Metrics = Field(default_factory=Metrics)


class TokenizeResponse(BaseModel):
    model: str = ""
    tokens: list[int] = Field(default_factory=list)
    pieces: list[bytes] | None = None  # each token's bytes, with ``with_pieces``


class DetokenizeResponse(BaseModel):
    model: str = ""
    text: str = ""


class ModelInfo(BaseModel):
    """A model the engine can run: one in the store, or a GGUF file loaded by its path."""

    name: str
    size: int = 0
    digest: str = ""
    modified_at: datetime | None = None
    details: dict[str, Any] = Field(default_factory=dict)  # format, family, parameter_size, quantization_level
    capabilities: list[str] = Field(default_factory=list)  # completion or embedding, tools, thinking, vision, ...
