"""What a caller asks of the engine: chat, generate and embed requests and their options.

Names and meanings are Ollama's (``api.ChatRequest``, ``api.GenerateRequest``, ``api.EmbedRequest``,
``api.Options``); the engine (engine/service.py) takes these, whichever API a request came through.
Types are checked here; the rules that need the model or the engine's defaults (option ranges,
whether a JSON Schema compiles, the context length) are checked where those are known."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..timefmt import parse_keep_alive
from .messages import Image, Message, Tool

# Thinking: on, off, or a level (gpt-oss's reasoning effort; "max" is read as "high").
Think = bool | Literal["low", "medium", "high", "max"]
# Structured output: "json", a JSON Schema object, or (in process) a pydantic model class.
Format = Literal["json"] | dict[str, Any] | None
# How long the model stays loaded after the request: seconds, or a Go duration ("5m"); negative
# is forever, 0 unloads at once; None is the server's default.
KeepAlive = int | float | str | None


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    """A call to this one function is forced."""

    type: Literal["function"] = "function"
    function: FunctionName


# OpenAI's tool_choice: "auto" (the model decides), "none" (tools hidden), "required" (some call is
# forced), or a named function.
ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice | None

_INTEGER_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "seed",
                    "num_predict", "top_k", "repeat_last_n", "mirostat")
_NUMBER_OPTIONS = ("top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                   "frequency_penalty", "mirostat_tau", "mirostat_eta")


class Options(BaseModel):
    """Ollama's model options; unset ones take the Modelfile's value, then the server's default.
    Other option names Ollama knows (``kv_cache_type``, ``flash_attention``, ...) pass as extra
    fields; the engine checks every value's range (engine/options.py)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    # Fixed when the model loads: a change reloads it.
    num_ctx: int | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    num_thread: int | None = None
    # Per request.
    num_keep: int | None = None
    seed: int | None = None
    num_predict: int | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_last_n: int | None = None
    temperature: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    penalize_newline: bool | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    stop: list[str] | None = None

    @field_validator(*_INTEGER_OPTIONS, *_NUMBER_OPTIONS, mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # true is no number here, as in Ollama
            raise ValueError("expected a number, got a boolean")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def as_dict(self) -> dict[str, Any]:
        """The options that were set, as the engine's parse_options reads them."""
        return self.model_dump(exclude_none=True)


def _schema_of(value: Any) -> Any:
    """"" and "null" mean no format; a pydantic model class means its JSON Schema."""
    if value in ("", "null"):
        return None
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    return value


def _keep_alive(value: Any) -> Any:
    parse_keep_alive(value)  # ValueError for anything that is no duration; the value stays as given
    return value


class _Inference(BaseModel):
    """What chat and generate share."""

    model_config = ConfigDict(extra="forbid")

    model: str
    format: Format = None
    options: Options | None = None
    keep_alive: KeepAlive = None
    think: Think | None = None
    truncate: bool | None = None  # chat: drop the oldest messages to fit; generate: keep the prompt's end
    shift: bool | None = None  # at the context's end: shift it (default) or stop with done_reason "length"
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    logit_bias: dict[int, float] | None = None  # token id to a bias added to its logit

    _format = field_validator("format", mode="before")(classmethod(lambda cls, v: _schema_of(v)))
    _alive = field_validator("keep_alive")(classmethod(lambda cls, v: _keep_alive(v)))


class ChatRequest(_Inference):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice = None
    # Ask for thinking only where the model can think (Anthropic's clients ask on every request);
    # otherwise a request to think on a model that cannot is refused.
    think_if_able: bool = False

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [Tool.from_function(t) if callable(t) and not isinstance(t, (dict, BaseModel)) else t
                    for t in value] or None
        return value


class GenerateRequest(_Inference):
    prompt: str = ""
    suffix: str = ""  # fill in the middle: the text after the gap
    system: str | None = None  # None: the model's own SYSTEM
    template: str | None = None  # a Go template instead of the model's
    context: list[int] | None = None  # the tokens an earlier answer returned, to continue from
    raw: bool = False  # the prompt as it is, no template
    images: list[Image] | None = None


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: list[str] = Field(default_factory=list)
    truncate: bool | None = None  # False: an input longer than the context is an error
    dimensions: int | None = Field(None, gt=0)  # keep the first N (renormalised)
    options: Options | None = None
    keep_alive: KeepAlive = None
    normalize: bool = True  # unit length (/api/embed); the legacy /api/embeddings is raw

    @field_validator("input", mode="before")
    @classmethod
    def _one_input(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    _alive = field_validator("keep_alive")(classmethod(lambda cls, v: _keep_alive(v)))


# Cohere's limit: more documents than this in one rerank request is a 400.
MAX_RERANK_DOCUMENTS = 1000


class RerankRequest(BaseModel):
    """Documents ordered by relevance to a query, by a reranker (llama.cpp's rank pooling). The
    fields are those llama-server, Jina and Cohere take; a document is text."""

    model_config = ConfigDict(extra="forbid")

    model: str
    query: str
    documents: list[str] = Field(min_length=1, max_length=MAX_RERANK_DOCUMENTS)
    top_n: int | None = Field(None, gt=0)  # the best N; all of them when None
    return_documents: bool = False
    options: Options | None = None
    keep_alive: KeepAlive = None

    _alive = field_validator("keep_alive")(classmethod(lambda cls, v: _keep_alive(v)))


class TokenizeRequest(BaseModel):
    """Text as the model's tokens, through its vocabulary (the model is loaded for it, as for a
    request that runs it)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    text: str
    add_special: bool = True  # BOS (and EOS) where the model's vocabulary adds them
    parse_special: bool = True  # special tokens written as text (``<|im_start|>``) are those tokens
    with_pieces: bool = False  # also each token's bytes
    options: Options | None = None
    keep_alive: KeepAlive = None

    _alive = field_validator("keep_alive")(classmethod(lambda cls, v: _keep_alive(v)))


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    tokens: list[int]
    options: Options | None = None
    keep_alive: KeepAlive = None

    _alive = field_validator("keep_alive")(classmethod(lambda cls, v: _keep_alive(v)))
