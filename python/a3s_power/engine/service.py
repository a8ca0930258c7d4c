"""Chat, generate and embed as Ollama defines them, independent of HTTP.

Every wire API (server/: native, OpenAI, Responses, Anthropic) translates its JSON into the request
types of ``a3s_power.api`` and the answers back, and programs that embed A3S Power (``a3s_power.Power``)
call this service directly: resolve the model, merge options (defaults, Modelfile parameters,
request), hold the model through the scheduler, build the prompt (engine/prompt_fit.py), run the
engine and read its text as content, thinking and tool calls (engine/answer.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..api import (
    ChatRequest,
    Delta,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    Metrics,
    Options as RequestOptions,
    RerankRequest,
    RerankResponse,
    RerankResult,
    TokenizeRequest,
    TokenizeResponse,
    ToolChoice,
)
from ..errors import InvalidOptionError
from ..prompt.bounded import run_bounded
from ..prompt.render import PromptTemplate
from ..store.types import LocalModel, ModelNotFound
from .answer import AnswerReader, api_tool_calls, harmony_prefix, logprobs_of, prompt_opens_thinking
from .options import Options, defaults, parse_options, replace_load
from .prompt_fit import PROMPT_TOO_LONG, Conversation, cut_to_context, fit_tokens, render_conversation
from .scheduler import Runner, Scheduler, parse_keep_alive

__all__ = ["CapabilityError", "Delta", "EmbedResult", "InferenceService", "MAX_IMAGE_BYTES", "MAX_TOKENIZE_BYTES",
           "PROMPT_TOO_LONG", "decode_images", "grammar_for_format"]

EmbedResult = EmbedResponse  # the name before a3s_power.api

# The most text one tokenize request takes: tokenizing needs many times the text's size in memory.
MAX_TOKENIZE_BYTES = 8 << 20


class CapabilityError(InvalidOptionError):
    """The model cannot do what the request asks (chat on an embedding model, thinking, ...)."""


def _keep_alive(value: Any) -> float | None:
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise InvalidOptionError(str(exc)) from None


def _think_level(think: Any) -> tuple[bool | None, str]:
    if think is None:
        return None, ""
    if isinstance(think, bool):
        return think, ""
    if isinstance(think, str) and think in ("low", "medium", "high", "max"):
        return True, "high" if think == "max" else think
    raise InvalidOptionError(f"invalid think value {think!r}: expected true, false, \"low\", \"medium\" or \"high\"")


def grammar_for_format(fmt: Any) -> str:
    """Ollama's ``format``: "json", a JSON Schema object, or nothing."""
    if fmt in (None, "", "null"):
        return ""
    from ..prompt.json_schema import JSON_GRAMMAR, schema_to_gbnf

    if fmt == "json":
        return JSON_GRAMMAR
    if isinstance(fmt, dict):
        return schema_to_gbnf(fmt)
    raise InvalidOptionError(f'invalid format: {fmt!r}; expected "json" or a valid JSON Schema object')


@dataclass
class _Run:
    """How one run decodes and how its answer is read."""

    tokens: Any  # token ids, or a multimodal prompt
    template: PromptTemplate | None = None
    grammar: str = ""
    tools: list[dict] | None = None
    tool_format: str | None = None  # "json": a call forced by a grammar, bare JSON from the first token
    think_on: bool | None = None
    harmony: Any = None  # prompt.harmony.FunctionNames for a model that answers in harmony
    collect: list[int] | None = None  # generate: the answer's tokens, for ``context``


@dataclass
class _Clock:
    started: int  # perf_counter_ns when the request arrived
    loaded_ns: int = 0  # how long holding the model took


# Fields of a request that only this engine reads; a remote model's host is not sent them.
_LOCAL_ONLY = {"model", "options", "logprobs", "top_logprobs", "logit_bias", "tool_choice", "think_if_able"}


class InferenceService:
    def __init__(self, scheduler: Scheduler, observer: Any = None) -> None:
        """``observer``, if given, hears of every finished request through
        ``on_request(model, kind, input_tokens, output_tokens, ttft_ns, total_ns)``."""
        self.scheduler = scheduler
        self.observer = observer
        self._templates: dict[tuple, PromptTemplate] = {}

    # --- shared steps ----------------------------------------------------------------------

    def resolve(self, name: str) -> LocalModel:
        if not name:
            raise InvalidOptionError("model is required")
        try:
            spec = self.scheduler.resolve(name)
        except ModelNotFound:
            from ..cloud import cloud_model

            spec = cloud_model(self.scheduler.config, name)  # "gpt-oss:120b-cloud": a model on ollama.com
            if spec is None:
                raise
            return spec
        if spec.unsupported:  # kept in the store, but its weights are not GGUF (store/tensor_model.py)
            raise CapabilityError(spec.unsupported)
        return spec

    def options_for(self, spec: LocalModel, options: RequestOptions | None) -> Options:
        base = parse_options(spec.parameters or {}, defaults(self.scheduler.config))
        return parse_options(options.as_dict() if options is not None else {}, base)

    def template_for(self, runner: Runner, override: str | None = None) -> PromptTemplate:
        go_source = override if override else runner.spec.template
        key = (id(runner.model), go_source)
        template = self._templates.get(key)
        if template is None:
            model = runner.model.model

            def special(token: int) -> str:
                return model.token_to_piece(token, True).decode("utf-8", "replace") if token >= 0 else ""

            template = PromptTemplate(go_source, runner.model.chat_template, special(model.bos_token),
                                      special(model.eos_token))
            if len(self._templates) > 64:
                self._templates.clear()
            self._templates[key] = template
        return template

    @staticmethod
    def _harmony(runner: Runner, template: PromptTemplate | None, tools: list[dict] | None):
        """For a model that answers in harmony (gpt-oss, prompt/harmony.py), the request's tools
        under the names its prompt declares; None for any other model, or a raw prompt."""
        if template is None:
            return None
        from ..prompt.harmony import FunctionNames, uses_harmony

        spec = runner.spec
        families = (runner.model.model.architecture, str(spec.details.get("family") or ""))
        if not any(uses_harmony(family, template.source, spec.parser) for family in families):
            return None
        return FunctionNames(tools)

    @staticmethod
    def _can(spec: LocalModel, capability: str) -> bool:
        return not spec.capabilities or capability in spec.capabilities

    def _thinking(self, spec: LocalModel, request: ChatRequest | GenerateRequest) -> tuple[bool | None, str]:
        """Whether the model thinks, and at which level; Ollama: a thinking model thinks unless told not to."""
        think_on, level = _think_level(request.think)
        if think_on and not self._can(spec, "thinking"):
            if not getattr(request, "think_if_able", False):
                raise CapabilityError(f'"{request.model}" does not support thinking')
            think_on = None
        if think_on is None and "thinking" in spec.capabilities:
            think_on = True
        return think_on, level

    @staticmethod
    def _history(spec: LocalModel, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The model's MESSAGE history, then the request's, with its SYSTEM first unless one leads."""
        history = list(spec.messages) + messages
        if spec.system and (not history or history[0].get("role") != "system"):
            history.insert(0, {"role": "system", "content": spec.system})
        return history

    # --- chat ------------------------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        clock = _Clock(time.perf_counter_ns())
        spec = self.resolve(request.model)
        if spec.remote_host:
            async for delta in self._remote(spec, "/api/chat", request, clock):
                yield delta
            return
        name = request.model
        if not self._can(spec, "completion"):
            raise CapabilityError(f'"{name}" does not support chat')
        if request.tools and not self._can(spec, "tools"):
            raise CapabilityError(f'"{name}" does not support tools')
        if any(m.images for m in request.messages) and not self._can(spec, "vision"):
            raise CapabilityError("this model is missing data required for image input")
        opts = self.options_for(spec, request.options)
        alive = _keep_alive(request.keep_alive)
        think = self._thinking(spec, request)
        grammar = grammar_for_format(request.format)
        if not request.messages:
            yield await self._load_only(spec, opts, alive, clock)
            return

        history = self._history(spec, [m.for_prompt() for m in request.messages])
        async with self.scheduler.use(spec, opts.load, alive) as runner:
            clock.loaded_ns = time.perf_counter_ns() - clock.started
            template = self.template_for(runner)
            tools = [t.for_prompt() for t in request.tools] if request.tools else None
            tool_grammar, tools = _apply_tool_choice(tools, request.tool_choice)
            # A call forced by a grammar is bare JSON from the first token, never harmony.
            harmony = None if tool_grammar else self._harmony(runner, template, tools)
            prompt_tools = harmony.for_prompt() if harmony else tools
            if any(m.get("images") for m in history):
                marked, images = _with_image_markers(history, runner.model.image_marker or "")
                conversation = Conversation(marked, prompt_tools, *think)
                text = await run_bounded(conversation.render, template)
                tokens = runner.model.tokenize_multimodal(text, images)
            else:
                # Templates are programs: rendering runs off the event loop, bounded (prompt/bounded.py).
                tokens = await run_bounded(self._chat_tokens, runner, template,
                                           Conversation(history, prompt_tools, *think), opts, request)
            run = _Run(tokens, template, grammar or tool_grammar, tools, "json" if tool_grammar else None,
                       think[0], harmony)
            async for delta in self._run(runner, run, opts, request, clock):
                yield delta

    @staticmethod
    def _chat_tokens(runner: Runner, template: PromptTemplate, conversation: Conversation, opts: Options,
                     request: ChatRequest) -> list[int]:
        _, tokens = render_conversation(runner.model, template, conversation, opts, request.truncate is not False)
        return fit_tokens(tokens, opts, request.shift is not False)

    @asynccontextmanager
    async def _vocabulary(self, spec: LocalModel, options: RequestOptions | None,
                          keep_alive: float | None) -> AsyncIterator[Runner]:
        """A runner of ``spec`` for its vocabulary alone (tokens, template): one loaded already,
        whatever its load-time options, unless the request's options ask for others, so that
        counting tokens never reloads a model; else the model loaded as a request would load it
        (an embedding-only model for embeddings)."""
        load = self.options_for(spec, options).load
        if load == self.options_for(spec, None).load:  # no load-time option of its own
            loaded = [r for r in self.scheduler.running() if r.name == spec.name]
            if loaded:
                load = min(loaded, key=lambda r: r.load_options.embedding).load_options  # generation's first
            elif not self._can(spec, "completion") and self._can(spec, "embedding"):
                load = replace(load, embedding=True)
        async with self.scheduler.use(spec, load, keep_alive) as runner:
            yield runner

    async def count_chat_tokens(self, request: ChatRequest) -> int:
        """How many tokens the rendered conversation takes (loads the model for its tokenizer,
        unless it is loaded)."""
        spec = self.resolve(request.model)
        history = self._history(spec, [m.for_prompt() for m in request.messages])
        tools = [t.for_prompt() for t in request.tools] if request.tools else None
        async with self._vocabulary(spec, request.options, _keep_alive(request.keep_alive)) as runner:
            template = self.template_for(runner)
            harmony = self._harmony(runner, template, tools)
            prompt_tools = harmony.for_prompt() if harmony else tools
            return len(await run_bounded(lambda: runner.model.tokenize_prompt(template.render_chat(
                history, tools=prompt_tools))))

    # --- tokens ----------------------------------------------------------------------------

    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        """The text as the model's tokens (and each token's bytes, with ``with_pieces``)."""
        spec = self.resolve(request.model)
        size = len(request.text.encode("utf-8", "surrogatepass"))
        if size > MAX_TOKENIZE_BYTES:  # tokenizing takes many times the text's size in memory
            raise InvalidOptionError(f"text is {size} bytes; at most {MAX_TOKENIZE_BYTES >> 20} MiB is tokenized "
                                     "at once")
        async with self._vocabulary(spec, request.options, _keep_alive(request.keep_alive)) as runner:
            vocab = runner.model
            tokens = await asyncio.to_thread(vocab.tokenize, request.text, request.add_special, request.parse_special)
            pieces = None
            if request.with_pieces:
                piece = vocab.model.token_to_piece
                pieces = await asyncio.to_thread(lambda: [piece(t, True) for t in tokens])
        return TokenizeResponse(model=request.model, tokens=tokens, pieces=pieces)

    async def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        """The text of the model's tokens, special tokens written out (as tokenize reads them)."""
        spec = self.resolve(request.model)
        async with self._vocabulary(spec, request.options, _keep_alive(request.keep_alive)) as runner:
            vocab = runner.model.model
            n_vocab = vocab.n_vocab
            for i, token in enumerate(request.tokens):
                if not 0 <= token < n_vocab:  # llama.cpp reads out of bounds past its vocabulary
                    raise InvalidOptionError(f"tokens[{i}] is {token}: not a token of this model "
                                             f"(0 to {n_vocab - 1})")
            text = await asyncio.to_thread(vocab.detokenize, list(request.tokens), False, True)
        return DetokenizeResponse(model=request.model, text=text)

    async def render_chat(self, request: ChatRequest) -> tuple[str, int]:
        """What chat would give the model, without running it (Ollama's ``_debug_render_only``):
        the rendered prompt and how many images it carries."""
        spec = self.resolve(request.model)
        opts = self.options_for(spec, request.options)
        think_on, level = _think_level(request.think)
        if think_on is None and "thinking" in spec.capabilities:
            think_on = True
        history = self._history(spec, [m.for_prompt() for m in request.messages])
        tools = [t.for_prompt() for t in request.tools] if request.tools else None
        async with self.scheduler.use(spec, opts.load, _keep_alive(request.keep_alive)) as runner:
            template = self.template_for(runner)
            harmony = self._harmony(runner, template, tools)
            marked, images = _with_image_markers(history, runner.model.image_marker or "")
            conversation = Conversation(marked, harmony.for_prompt() if harmony else tools, think_on, level)
            text, _ = await run_bounded(render_conversation, runner.model, template, conversation, opts,
                                        request.truncate is not False)
            return text, len(images)

    # --- generate --------------------------------------------------------------------------

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        clock = _Clock(time.perf_counter_ns())
        spec = self.resolve(request.model)
        if spec.remote_host:
            async for delta in self._remote(spec, "/api/generate", request, clock):
                yield delta
            return
        if request.raw and (request.template or request.system or request.context):
            raise InvalidOptionError("raw mode does not support template, system, or context")
        if not self._can(spec, "completion"):
            raise CapabilityError(f'"{request.model}" does not support generate')
        if request.images and not self._can(spec, "vision"):
            raise CapabilityError("this model is missing data required for image input")
        images = decode_images(request.images)
        opts = self.options_for(spec, request.options)
        alive = _keep_alive(request.keep_alive)
        think_on, level = self._thinking(spec, request)
        grammar = grammar_for_format(request.format)
        if not request.prompt and not request.suffix and not request.context:
            yield await self._load_only(spec, opts, alive, clock)
            return
        if images and (request.suffix or request.context):
            raise InvalidOptionError("images cannot be combined with suffix or context")

        shift = request.shift is not False
        async with self.scheduler.use(spec, opts.load, alive) as runner:
            clock.loaded_ns = time.perf_counter_ns() - clock.started
            model = runner.model
            template = None
            prompt = (model.image_marker or "") * len(images) + request.prompt
            if request.suffix:
                tokens = await run_bounded(self._fill_in_middle, runner, prompt, request.suffix, request.template)
            else:
                if request.raw:
                    text = prompt
                else:
                    template = self.template_for(runner, request.template)
                    system = request.system if request.system is not None else (spec.system or "")
                    text = await run_bounded(lambda: template.render_generate(prompt, system=system, think=think_on,
                                                                              think_level=level))
                if images:
                    tokens = model.tokenize_multimodal(text, images)
                else:
                    text = cut_to_context(model, text, opts, shift)
                    tokens = await asyncio.to_thread(
                        lambda: model.tokenize(text, True, True) if request.raw else model.tokenize_prompt(text))
            if request.context:
                bos = model.model.bos_token if model.model.add_bos else None
                tokens = list(request.context) + [t for t in tokens if t != bos]
            if not images:
                tokens = fit_tokens(tokens, opts, shift)
            # Ollama turns generated text into tool calls only with a model's own built-in parser:
            # here harmony (gpt-oss), which offers no tools on generate, so none become calls; text
            # that looks like a call (LiteLLM asks for one with format "json") stays text.
            run = _Run(tokens, template, grammar, None, None, think_on, self._harmony(runner, template, None),
                       collect=[])
            async for delta in self._run(runner, run, opts, request, clock):
                if delta.done and not request.raw:
                    delta.context = list(tokens.tokens if hasattr(tokens, "tokens") else tokens) + run.collect
                yield delta

    async def render_generate(self, request: GenerateRequest) -> tuple[str, int]:
        """What generate would give the model, without running it (``_debug_render_only``)."""
        spec = self.resolve(request.model)
        opts = self.options_for(spec, request.options)
        think_on, level = _think_level(request.think)
        if think_on is None and "thinking" in spec.capabilities:
            think_on = True
        n_images = len(request.images or [])
        async with self.scheduler.use(spec, opts.load, _keep_alive(request.keep_alive)) as runner:
            marker = (runner.model.image_marker or "") * n_images
            if request.suffix:
                tokens = await run_bounded(self._fill_in_middle, runner, request.prompt, request.suffix,
                                           request.template)
                return runner.model.detokenize(tokens), n_images
            if request.raw:
                return marker + request.prompt, n_images
            system = request.system if request.system is not None else (spec.system or "")
            template = self.template_for(runner, request.template)
            return await run_bounded(lambda: template.render_generate(marker + request.prompt, system=system,
                                                                      think=think_on, think_level=level)), n_images

    def _fill_in_middle(self, runner: Runner, prompt: str, suffix: str, template: str | None) -> list[int]:
        spec = runner.spec
        go = template or spec.template
        if go and ".Suffix" in go:
            return runner.model.tokenize_prompt(self.template_for(runner, template).render_generate(prompt,
                                                                                                   suffix=suffix))
        fim = runner.model.model.fim_tokens
        if min(fim.values()) < 0:
            raise CapabilityError(f'"{spec.name}" does not support insert')
        tok = runner.model.tokenize
        model = runner.model.model
        prefix_tokens = [fim["prefix"]] + tok(prompt, False, False)
        suffix_tokens = [fim["suffix"]] + tok(suffix, False, False)
        bos = [model.bos_token] if model.add_bos and model.bos_token >= 0 else []
        return bos + prefix_tokens + suffix_tokens + [fim["middle"]]

    # --- the run itself --------------------------------------------------------------------

    def _reader(self, runner: Runner, run: _Run) -> tuple[AnswerReader, str, list[str]]:
        """How the answer is read, and the grammar (and what sets it off) that shapes it."""
        model = runner.model
        grammar, triggers = run.grammar, []
        if run.harmony is not None:
            from ..prompt.harmony import HarmonyParser, format_after_reasoning

            prefix = harmony_prefix(model, run.tokens)
            if grammar and not run.tool_format:  # a format: after the reasoning, on the final answer
                grammar, triggers = format_after_reasoning(grammar, prefix)
            return AnswerReader(channels=HarmonyParser(run.harmony, prefix)), grammar, triggers
        thinker = tool_parser = None
        if run.think_on and run.template is not None:
            from ..prompt.thinking import ThinkingParser, thinking_tags_for

            tags = thinking_tags_for(run.template.source)
            if tags:
                opens = prompt_opens_thinking(model, run.tokens, tags[0])
                thinker = ThinkingParser(tags[0], tags[1], starts_in_thinking=opens)
        if run.tools or run.tool_format:
            from ..prompt.tools import ToolCallParser, tool_format_for

            fmt = run.tool_format or tool_format_for(run.template.source if run.template else None)
            names = {t.get("function", {}).get("name", "") for t in run.tools} if run.tools else None
            tool_parser = ToolCallParser(fmt, names)
        return AnswerReader(thinker=thinker, tool_parser=tool_parser), grammar, triggers

    async def _run(self, runner: Runner, run: _Run, opts: Options, request: ChatRequest | GenerateRequest,
                   clock: _Clock) -> AsyncIterator[Delta]:
        model = runner.model
        reader, grammar, triggers = self._reader(runner, run)
        if opts.num_predict < 0:
            opts = replace(opts, num_predict=10 * opts.load.num_ctx)  # Ollama's bound on open-ended runs
        first_token_ns = 0
        # The first piece says how long the prompt is: Anthropic's message_start reports it.
        n_prompt = len(run.tokens.tokens if hasattr(run.tokens, "tokens") else run.tokens)
        first_metrics: Metrics | None = Metrics(prompt_eval_count=n_prompt)
        async for chunk in model.generate(run.tokens, opts, grammar=grammar, logit_bias=request.logit_bias,
                                          logprobs=request.logprobs, top_logprobs=request.top_logprobs,
                                          shift=request.shift is not False, grammar_triggers=triggers):
            if chunk.tokens and not first_token_ns:
                first_token_ns = time.perf_counter_ns() - clock.started
            if run.collect is not None:
                run.collect.extend(chunk.tokens)
            thinking, content, calls = reader.feed(chunk.text)
            logprobs = logprobs_of(model, chunk.logprobs) if request.logprobs else []
            if chunk.done:
                more_thinking, more_content, more_calls = reader.finish()
                metrics = self._metrics(chunk.timings, clock)
                if self.observer is not None:
                    self.observer.on_request(runner.name, "generate" if run.collect is not None else "chat",
                                             metrics.prompt_eval_count, metrics.eval_count, first_token_ns,
                                             metrics.total_duration)
                yield Delta(content=content + more_content, thinking=thinking + more_thinking,
                            tool_calls=calls + more_calls, logprobs=logprobs, done=True,
                            done_reason=chunk.done_reason if chunk.done_reason in ("stop", "length") else "stop",
                            metrics=metrics, stop_sequence=chunk.stop_sequence)
                return
            if content or thinking or calls or logprobs:
                yield Delta(content=content, thinking=thinking, tool_calls=calls, logprobs=logprobs,
                            metrics=first_metrics or Metrics())
                first_metrics = None

    @staticmethod
    def _metrics(timings: dict[str, int], clock: _Clock) -> Metrics:
        return Metrics(total_duration=time.perf_counter_ns() - clock.started, load_duration=clock.loaded_ns,
                       prompt_eval_count=timings.get("prompt_tokens", 0),
                       prompt_eval_cached_count=timings.get("cached_tokens", 0),
                       prompt_eval_duration=timings.get("prompt_eval_duration", 0),
                       eval_count=timings.get("eval_count", 0), eval_duration=timings.get("eval_duration", 0))

    async def _remote(self, spec: LocalModel, path: str, request: ChatRequest | GenerateRequest,
                      clock: _Clock) -> AsyncIterator[Delta]:
        """A remote model's answer from its host (engine/remote.py): the request in Ollama's own
        wire form, which is these types' JSON, to that host's native API."""
        from . import remote

        body = request.model_dump(mode="json", exclude_none=True, exclude=_LOCAL_ONLY)
        if isinstance(request, ChatRequest):
            body["messages"] = self._history(spec, [m.model_dump(mode="json", exclude_unset=True, exclude_none=True)
                                                    for m in request.messages])
            if request.tools:
                body["tools"] = [t.for_prompt() for t in request.tools]
        else:
            if request.system is None and spec.system is not None:
                body["system"] = spec.system
            for unset in ("suffix", "raw"):  # Ollama's zero values: left out, as before
                if not body.get(unset):
                    body.pop(unset, None)
        body["model"] = spec.remote_model
        body["options"] = {**spec.parameters, **(request.options.as_dict() if request.options else {})}
        if request.logprobs:
            body.update(logprobs=True, top_logprobs=request.top_logprobs)
        first_ns = 0
        async for line in remote.stream(self.scheduler.config, spec, path, body):
            message = line.get("message") or {}
            delta = Delta(content=message.get("content") or line.get("response") or "",
                          thinking=message.get("thinking") or line.get("thinking") or "",
                          tool_calls=api_tool_calls(remote.tool_calls_of(message if message else line)),
                          logprobs=line.get("logprobs") or [], done=bool(line.get("done")),
                          remote_model=spec.remote_model, remote_host=spec.remote_host)
            first_ns = first_ns or time.perf_counter_ns() - clock.started
            if delta.done:
                delta.done_reason = line.get("done_reason") or "stop"
                delta.metrics = Metrics(**remote.metrics_of(line))
                if isinstance(line.get("context"), list):
                    delta.context = line["context"]
                if self.observer is not None:
                    self.observer.on_request(spec.name, "chat" if path == "/api/chat" else "generate",
                                             delta.metrics.prompt_eval_count, delta.metrics.eval_count, first_ns,
                                             time.perf_counter_ns() - clock.started)
            yield delta

    async def _load_only(self, spec: LocalModel, opts: Options, alive: float | None, clock: _Clock) -> Delta:
        if alive == 0:
            await self.scheduler.unload(spec.name)
            return Delta(done=True, done_reason="unload")
        await self.scheduler.load(spec, opts.load, alive)
        took = time.perf_counter_ns() - clock.started
        return Delta(done=True, done_reason="load", metrics=Metrics(total_duration=took, load_duration=took))

    # --- embeddings ------------------------------------------------------------------------

    async def embed(self, request: EmbedRequest) -> EmbedResponse:
        started = time.perf_counter_ns()
        spec = self.resolve(request.model)
        opts = replace_load(self.options_for(spec, request.options), embedding=True)
        alive = _keep_alive(request.keep_alive)
        if not request.input:
            await self.scheduler.load(spec, opts.load, alive)
            return EmbedResponse(model=request.model,
                                 metrics=Metrics(total_duration=time.perf_counter_ns() - started))
        async with self.scheduler.use(spec, opts.load, alive) as runner:
            loaded_ns = time.perf_counter_ns() - started
            n_ctx = opts.load.num_ctx

            def tokenize(text: str) -> list[int]:
                cut = runner.model.text_for_context(text, n_ctx, keep_end=False)  # never tokenized whole
                tokens = runner.model.tokenize(cut, True, True)
                if len(tokens) > n_ctx or cut is not text:
                    if request.truncate is False:
                        raise InvalidOptionError("the input length exceeds the context length")
                    tokens = tokens[:n_ctx]
                return tokens or runner.model.tokenize(" ", True, True)

            token_lists = await asyncio.to_thread(lambda: [tokenize(text) for text in request.input])
            vectors = await runner.model.embed(token_lists, normalize=request.normalize)
        out = [_shortened(v, request.dimensions, request.normalize) for v in vectors]
        count = sum(len(t) for t in token_lists)
        total = time.perf_counter_ns() - started
        if self.observer is not None:
            self.observer.on_request(spec.name, "embed", count, 0, 0, total)
        return EmbedResponse(model=request.model, embeddings=out, prompt_eval_count=count,
                             metrics=Metrics(total_duration=total, load_duration=loaded_ns, prompt_eval_count=count))


    # --- reranking -------------------------------------------------------------------------

    async def rerank(self, request: RerankRequest) -> RerankResponse:
        """The documents scored against the query in one batch (each pair is one sequence of the
        embedding engine, whose rank pooling gives the score), most relevant first."""
        started = time.perf_counter_ns()
        spec = self.resolve(request.model)
        if not self._can(spec, "rerank"):
            raise CapabilityError(f'"{request.model}" does not support rerank')
        opts = replace_load(self.options_for(spec, request.options), embedding=True)
        async with self.scheduler.use(spec, opts.load, _keep_alive(request.keep_alive)) as runner:
            loaded_ns = time.perf_counter_ns() - started
            n_ctx = opts.load.num_ctx

            def pair(index: int, document: str) -> list[int]:
                tokens = runner.model.rerank_tokens(request.query, document)
                if len(tokens) > n_ctx:
                    raise InvalidOptionError(f"documents[{index}] with the query is {len(tokens)} tokens, more than "
                                             f"the context length (num_ctx {n_ctx})")
                return tokens

            pairs = await asyncio.to_thread(lambda: [pair(i, d) for i, d in enumerate(request.documents)])
            scores = await runner.model.embed(pairs, normalize=False)
        results = [RerankResult(index=i, relevance_score=s[0],
                                document=request.documents[i] if request.return_documents else None)
                   for i, s in enumerate(scores)]
        results.sort(key=lambda r: -r.relevance_score)
        count = sum(len(p) for p in pairs)
        total = time.perf_counter_ns() - started
        if self.observer is not None:
            self.observer.on_request(spec.name, "rerank", count, 0, 0, total)
        return RerankResponse(model=request.model, results=results[:request.top_n], prompt_eval_count=count,
                              metrics=Metrics(total_duration=total, load_duration=loaded_ns, prompt_eval_count=count))


def _shortened(vector: list[float], dimensions: int | None, normalize: bool) -> list[float]:
    """An embedding checked for NaN and infinities, cut to ``dimensions`` and renormalised."""
    if any(math.isnan(x) or math.isinf(x) for x in vector):
        raise InvalidOptionError("the model returned an embedding with NaN or infinite values")
    if dimensions is not None and dimensions < len(vector):
        vector = vector[:dimensions]
        if normalize:
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vector = [x / norm for x in vector]
    return vector


MAX_IMAGE_BYTES = 20 << 20


def decode_images(images: list | None) -> list[bytes]:
    """Images as Ollama's API carries them: base64 strings (or bytes already decoded)."""
    out = []
    for i, image in enumerate(images or [], start=1):
        if isinstance(image, (bytes, bytearray)):
            data = bytes(image)
        elif isinstance(image, str):
            text = image.split(",", 1)[1] if image.startswith("data:") else image
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidOptionError(f"image {i} is not valid base64 data") from None
        else:
            raise InvalidOptionError(f"image {i} must be a base64 string")
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidOptionError(f"image {i} is larger than {MAX_IMAGE_BYTES >> 20} MiB")
        if not data:
            raise InvalidOptionError(f"image {i} is empty")
        out.append(data)
    return out


def _with_image_markers(messages: list[dict], marker: str) -> tuple[list[dict], list[bytes]]:
    """Puts one marker per image at the start of its message, and gathers the images in order."""
    images: list[bytes] = []
    out = []
    for m in messages:
        decoded = decode_images(m.get("images"))
        if decoded:
            m = {**m, "content": marker * len(decoded) + (m.get("content") or "")}
            m.pop("images", None)
            images += decoded
        out.append(m)
    return out, images


def _apply_tool_choice(tools: list[dict] | None, tool_choice: ToolChoice) -> tuple[str, list[dict] | None]:
    """OpenAI's tool_choice: "none" hides the tools, "required" or a named function forces a call
    through a grammar over the tools' argument schemas; the model then writes the call as bare JSON."""
    if not tools or tool_choice in (None, "auto"):
        return "", tools
    if tool_choice == "none":
        return "", None
    if tool_choice == "required":
        chosen = tools
    else:
        name = tool_choice.function.name
        chosen = [t for t in tools if t.get("function", {}).get("name") == name]
        if not chosen:
            raise InvalidOptionError(f"tool_choice names an unknown function {name!r}")
    from ..prompt.json_schema import schema_to_gbnf

    schema = {"anyOf": [{"type": "object",
                         "properties": {"name": {"const": t["function"]["name"]},
                                        "arguments": t["function"].get("parameters") or {"type": "object"}},
                         "required": ["name", "arguments"], "additionalProperties": False}
                        for t in chosen]}
    return schema_to_gbnf(schema), tools
