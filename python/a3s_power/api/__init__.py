"""The types of A3S Power's requests and answers, free of the engine, the configuration and I/O.

The engine (engine/service.py) takes and gives these; every wire API (server/) translates its own
JSON to and from them; programs that run models in process (``a3s_power.Power``) use them directly.
"""

from .messages import Image, Message, Tool, ToolCall, ToolCallFunction, ToolFunction
from .requests import (
    MAX_RERANK_DOCUMENTS,
    ChatRequest,
    DetokenizeRequest,
    EmbedRequest,
    Format,
    FunctionName,
    GenerateRequest,
    KeepAlive,
    NamedToolChoice,
    Options,
    RerankRequest,
    Think,
    TokenizeRequest,
    ToolChoice,
)
from .responses import (
    ChatResponse,
    Delta,
    DetokenizeResponse,
    EmbedResponse,
    GenerateResponse,
    Logprob,
    Metrics,
    ModelInfo,
    RerankResponse,
    RerankResult,
    TokenizeResponse,
    TopLogprob,
)

__all__ = ["ChatRequest", "ChatResponse", "Delta", "DetokenizeRequest", "DetokenizeResponse", "EmbedRequest",
           "EmbedResponse", "Format", "FunctionName", "GenerateRequest", "GenerateResponse", "Image", "KeepAlive",
           "Logprob", "MAX_RERANK_DOCUMENTS", "Message", "Metrics", "ModelInfo", "NamedToolChoice", "Options",
           "RerankRequest", "RerankResponse", "RerankResult", "Think", "TokenizeRequest", "TokenizeResponse", "Tool",
           "ToolCall", "ToolCallFunction", "ToolChoice", "ToolFunction", "TopLogprob"]
