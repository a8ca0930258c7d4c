"""Chat, generate and embed as Ollama defines them, independent of HTTP.

The HTTP routes (native, OpenAI, Anthropic) are thin translations over this module, and programs
that embed A3S Power call it directly: resolve the model, merge options (defaults, Modelfile
parameters, request), hold the model through the scheduler, build the prompt, run the engine and
turn its text into content, thinking and tool calls.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator

from ..errors import InvalidOptionError
from ..prompt.bounded import run_bounded
from ..prompt.render import PromptTemplate
from ..store.types import LocalModel, ModelNotFound
from .options import Options, defaults, parse_options, replace_load
from .scheduler import Runner, Scheduler, parse_keep_alive


class CapabilityError(InvalidOptionError):
    """The model cannot do what the request asks (chat on an embedding model, thinking, ...)."""


@dataclass
class Delta:
    """A piece of an answer; the last one has ``done`` and the metrics."""

    content: str = ""
    thinking: str = ""
    tool_calls: list = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    done: bool = False
    done_reason: str = ""
    metrics: dict[str, int] = field(default_factory=dict)
    context: list[int] | None = None
    stop_sequence: str = ""
    remote_model: str = ""  # set when a remote model's host answered (engine/remote.py)
    remote_host: str = ""


@dataclass
class EmbedResult:
    embeddings: list[list[float]]
    prompt_eval_count: int
    metrics: dict[str, int]


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

    def options_for(self, spec: LocalModel, raw: dict[str, Any] | None) -> Options:
        if raw is not None and not isinstance(raw, dict):
            raise InvalidOptionError("options must be an object")
        base = parse_options(spec.parameters or {}, defaults(self.scheduler.config))
        return parse_options(raw or {}, base)

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
        parser = spec.parser
        families = (runner.model.model.architecture, str(spec.details.get("family") or ""))
        if not any(uses_harmony(family, template.source, parser) for family in families):
            return None
        return FunctionNames(tools)

    @staticmethod
    def _can(spec: LocalModel, capability: str) -> bool:
        return not spec.capabilities or capability in spec.capabilities

    @staticmethod
    def _cut_to_context(runner: Runner, text: str, options: Options, shift: bool) -> str:
        """A prompt's text cut before tokenizing to what _fit_prompt can keep of it (see
        LoadedModel.text_for_context); refused at once, untokenized, when it cannot fit and
        truncation is off."""
        cut = runner.model.text_for_context(text, options.load.num_ctx)
        if cut is not text and not shift:
            raise InvalidOptionError(PROMPT_TOO_LONG)
        return cut

    def _fit_prompt(self, runner: Runner, tokens: list[int], options: Options, shift: bool) -> list[int]:
        """Ollama's context-shift truncation of a prompt that does not fit: keep num_keep tokens
        from the start and as much of the end as leaves room to answer."""
        n_ctx = options.load.num_ctx
        if len(tokens) < n_ctx:
            return tokens
        if not shift:
            raise InvalidOptionError(PROMPT_TOO_LONG)
        keep = 4
        limit = n_ctx - max((n_ctx - keep) // 2, 1)
        return tokens[:keep] + tokens[len(tokens) - (limit - keep):]

    # --- chat ------------------------------------------------------------------------------

    async def chat(self, model: str, messages: list[dict[str, Any]], *, tools: list[dict] | None = None,
                   think: Any = None, format: Any = None, options: dict | None = None, keep_alive: Any = None,
                   truncate: bool | None = None, shift: bool | None = None, logprobs: bool = False,
                   top_logprobs: int = 0, tool_choice: Any = None, relax_thinking: bool = False,
                   logit_bias: dict[int, float] | None = None) -> AsyncIterator[Delta]:
        started = time.perf_counter_ns()
        spec = self.resolve(model)
        if spec.remote_host:
            body = {"messages": self._with_system(spec, messages), "tools": tools, "think": think, "format": format,
                    "keep_alive": keep_alive, "truncate": truncate, "shift": shift}
            async for delta in self._remote(spec, "/api/chat", body, options, logprobs, top_logprobs, started):
                yield delta
            return
        if not self._can(spec, "completion"):
            raise CapabilityError(f'"{model}" does not support chat')
        if tools and not self._can(spec, "tools"):
            raise CapabilityError(f'"{model}" does not support tools')
        if any(m.get("images") for m in messages) and not self._can(spec, "vision"):
            raise CapabilityError("this model is missing data required for image input")
        opts = self.options_for(spec, options)
        alive = _keep_alive(keep_alive)
        think_on, level = _think_level(think)
        if think_on and not self._can(spec, "thinking"):
            if not relax_thinking:
                raise CapabilityError(f'"{model}" does not support thinking')
            think_on = None
        if think_on is None and "thinking" in spec.capabilities:
            think_on = True  # Ollama: a thinking model thinks unless told not to
        grammar = grammar_for_format(format)
        _check_logprobs(top_logprobs)

        if not messages:
            yield await self._load_only(spec, opts, alive, started)
            return

        history = self._with_system(spec, messages)

        async with self.scheduler.use(spec, opts.load, alive) as runner:
            loaded_ns = time.perf_counter_ns() - started
            template = self.template_for(runner)
            tool_grammar, tools = _apply_tool_choice(tools, tool_choice)
            # A call forced by a grammar is bare JSON from the first token, never harmony.
            harmony = None if tool_grammar else self._harmony(runner, template, tools)
            prompt_tools = harmony.for_prompt() if harmony else tools
            if any(m.get("images") for m in history):
                marked, images = _with_image_markers(history, runner.model.image_marker or "")
                prompt_tokens = runner.model.tokenize_multimodal(await run_bounded(
                    lambda: template.render_chat(marked, tools=prompt_tools, think=think_on, think_level=level)),
                    images)
            else:
                # Templates are programs: rendering runs off the event loop, bounded (prompt/bounded.py).
                prompt_tokens = await run_bounded(self._chat_tokens, runner, template, history, prompt_tools,
                                                  think_on, level, opts, truncate is not False, shift is not False)
            async for delta in self._run(runner, template, prompt_tokens, opts, grammar or tool_grammar, tools,
                                         think_on, logprobs, top_logprobs, logit_bias, started, loaded_ns,
                                         tool_format="json" if tool_grammar else None, shift=shift is not False,
                                         harmony=harmony):
                yield delta

    async def count_chat_tokens(self, model: str, messages: list[dict[str, Any]], *,
                                tools: list[dict] | None = None) -> int:
        """How many tokens the rendered conversation takes (loads the model for its tokenizer)."""
        spec = self.resolve(model)
        opts = self.options_for(spec, None)
        history = self._with_system(spec, messages)
        async with self.scheduler.use(spec, opts.load, None) as runner:
            template = self.template_for(runner)
            harmony = self._harmony(runner, template, tools)
            prompt_tools = harmony.for_prompt() if harmony else tools
            return len(await run_bounded(lambda: runner.model.tokenize_prompt(template.render_chat(
                history, tools=prompt_tools))))

    def _chat_tokens(self, runner: Runner, template: PromptTemplate, history: list[dict], tools, think_on, level,
                     opts: Options, truncate: bool, shift: bool) -> list[int]:
        _, tokens = self._chat_prompt(runner, template, history, tools, think_on, level, opts, truncate)
        return self._fit_prompt(runner, tokens, opts, shift)

    @staticmethod
    def _chat_prompt(runner: Runner, template: PromptTemplate, history: list[dict], tools, think_on, level,
                     opts: Options, truncate: bool) -> tuple[str, list[int]]:
        """The rendered conversation and its tokens, the oldest messages dropped until it fits."""
        model = runner.model
        text = template.render_chat(history, tools=tools, think=think_on, think_level=level)
        tokens = model.tokenize_prompt(InferenceService._cut_to_context(runner, text, opts, truncate))
        n_ctx = opts.load.num_ctx
        if len(tokens) >= n_ctx and truncate:
            # Drop the oldest messages that are not system messages, keeping the last one.
            kept = list(history)
            while len(tokens) >= n_ctx:
                droppable = [i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"]
                if not droppable:
                    break
                del kept[droppable[0]]
                text = template.render_chat(kept, tools=tools, think=think_on, think_level=level)
                tokens = model.tokenize_prompt(InferenceService._cut_to_context(runner, text, opts, truncate))
        elif len(tokens) >= n_ctx:
            raise InvalidOptionError("the prompt is longer than the context length currently available to the "
                                     "model (truncate is off); use a model with a longer context or shorten it")
        return text, tokens

    async def render_chat(self, model: str, messages: list[dict[str, Any]], *, tools: list[dict] | None = None,
                          think: Any = None, options: dict | None = None, keep_alive: Any = None,
                          truncate: bool | None = None) -> tuple[str, int]:
        """What chat would give the model, without running it (Ollama's ``_debug_render_only``):
        the rendered prompt and how many images it carries."""
        spec = self.resolve(model)
        opts = self.options_for(spec, options)
        think_on, level = _think_level(think)
        if think_on is None and "thinking" in spec.capabilities:
            think_on = True
        history = self._with_system(spec, messages)
        async with self.scheduler.use(spec, opts.load, _keep_alive(keep_alive)) as runner:
            template = self.template_for(runner)
            harmony = self._harmony(runner, template, tools)
            marked, images = _with_image_markers(history, runner.model.image_marker or "")
            text, _ = await run_bounded(self._chat_prompt, runner, template, marked,
                                        harmony.for_prompt() if harmony else tools, think_on, level, opts,
                                        truncate is not False)
            return text, len(images)

    # --- generate --------------------------------------------------------------------------

    async def generate(self, model: str, prompt: str = "", *, suffix: str = "", system: str | None = None,
                       template: str | None = None, context: list[int] | None = None, raw: bool = False,
                       format: Any = None, images: list | None = None, options: dict | None = None,
                       keep_alive: Any = None, think: Any = None, truncate: bool | None = None,
                       shift: bool | None = None, logprobs: bool = False, top_logprobs: int = 0,
                       logit_bias: dict[int, float] | None = None) -> AsyncIterator[Delta]:
        started = time.perf_counter_ns()
        spec = self.resolve(model)
        if spec.remote_host:
            body = {"prompt": prompt, "suffix": suffix or None, "system": system if system is not None else spec.system,
                    "template": template, "context": context, "raw": raw or None, "format": format, "images": images,
                    "keep_alive": keep_alive, "think": think, "truncate": truncate, "shift": shift}
            async for delta in self._remote(spec, "/api/generate", body, options, logprobs, top_logprobs, started):
                yield delta
            return
        if raw and (template or system or context):
            raise InvalidOptionError("raw mode does not support template, system, or context")
        if not self._can(spec, "completion"):
            raise CapabilityError(f'"{model}" does not support generate')
        if images and not self._can(spec, "vision"):
            raise CapabilityError("this model is missing data required for image input")
        image_bytes = decode_images(images)
        opts = self.options_for(spec, options)
        alive = _keep_alive(keep_alive)
        think_on, level = _think_level(think)
        if think_on and not self._can(spec, "thinking"):
            raise CapabilityError(f'"{model}" does not support thinking')
        if think_on is None and "thinking" in spec.capabilities:
            think_on = True
        grammar = grammar_for_format(format)
        _check_logprobs(top_logprobs)

        if not prompt and not suffix and not context:
            yield await self._load_only(spec, opts, alive, started)
            return

        async with self.scheduler.use(spec, opts.load, alive) as runner:
            loaded_ns = time.perf_counter_ns() - started
            model_ = runner.model
            tmpl = None
            if image_bytes and (suffix or context):
                raise InvalidOptionError("images cannot be combined with suffix or context")
            if image_bytes:
                prompt = (model_.image_marker or "") * len(image_bytes) + prompt
            if suffix:
                tokens = await run_bounded(self._fill_in_middle, runner, spec, prompt, suffix, template)
            else:
                if raw:
                    text = prompt
                else:
                    tmpl = self.template_for(runner, template)
                    sys_text = system if system is not None else (spec.system or "")
                    text = await run_bounded(lambda: tmpl.render_generate(prompt, system=sys_text, think=think_on,
                                                                          think_level=level))
                if image_bytes:
                    tokens = model_.tokenize_multimodal(text, image_bytes)
                else:
                    text = self._cut_to_context(runner, text, opts, shift is not False)
                    tokens = await asyncio.to_thread(
                        lambda: model_.tokenize(text, True, True) if raw else model_.tokenize_prompt(text))
            if context:
                tokens = list(context) + [t for t in tokens if t != model_.model.bos_token or not model_.model.add_bos]
            if not image_bytes:
                tokens = self._fit_prompt(runner, tokens, opts, shift is not False)
            generated: list[int] = []
            # Ollama turns generated text into tool calls only with a model's own built-in parser:
            # here harmony (gpt-oss), which offers no tools on generate, so none become calls; text
            # that looks like a call (LiteLLM asks for one with format "json") stays text.
            async for delta in self._run(runner, tmpl, tokens, opts, grammar, None, think_on, logprobs,
                                         top_logprobs, logit_bias, started, loaded_ns, collect=generated,
                                         shift=shift is not False, harmony=self._harmony(runner, tmpl, None)):
                if delta.done and not raw:
                    delta.context = list(tokens.tokens if hasattr(tokens, "tokens") else tokens) + generated
                yield delta

    async def render_generate(self, model: str, prompt: str = "", *, suffix: str = "", system: str | None = None,
                              template: str | None = None, raw: bool = False, images: list | None = None,
                              options: dict | None = None, keep_alive: Any = None,
                              think: Any = None) -> tuple[str, int]:
        """What generate would give the model, without running it (``_debug_render_only``)."""
        spec = self.resolve(model)
        opts = self.options_for(spec, options)
        think_on, level = _think_level(think)
        if think_on is None and "thinking" in spec.capabilities:
            think_on = True
        n_images = len(images or [])
        async with self.scheduler.use(spec, opts.load, _keep_alive(keep_alive)) as runner:
            marker = (runner.model.image_marker or "") * n_images
            if suffix:
                tokens = await run_bounded(self._fill_in_middle, runner, spec, prompt, suffix, template)
                return runner.model.detokenize(tokens), n_images
            if raw:
                return marker + prompt, n_images
            sys_text = system if system is not None else (spec.system or "")
            tmpl = self.template_for(runner, template)
            return await run_bounded(lambda: tmpl.render_generate(marker + prompt, system=sys_text, think=think_on,
                                                                  think_level=level)), n_images

    def _fill_in_middle(self, runner: Runner, spec: LocalModel, prompt: str, suffix: str,
                        template: str | None) -> list[int]:
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

    async def _run(self, runner: Runner, template: PromptTemplate | None, tokens: list[int], opts: Options,
                   grammar: str, tools: list[dict] | None, think_on: bool | None, logprobs: bool, top_logprobs: int,
                   logit_bias: dict[int, float] | None, started: int, loaded_ns: int,
                   collect: list[int] | None = None, tool_format: str | None = None,
                   shift: bool = True, harmony: Any = None) -> AsyncIterator[Delta]:
        model = runner.model
        thinker = None
        channels = None  # harmony: reasoning, answer and tool calls come apart by channel
        triggers: list[str] = []
        if harmony is not None:
            from ..prompt.harmony import HarmonyParser, format_after_reasoning

            prefix = _harmony_prefix(model, tokens)
            channels = HarmonyParser(harmony, prefix)
            if grammar and not tool_format:  # a format: after the reasoning, on the final answer
                grammar, triggers = format_after_reasoning(grammar, prefix)
        elif think_on and template is not None:
            from ..prompt.thinking import ThinkingParser, thinking_tags_for

            tags = thinking_tags_for(template.source)
            if tags:
                thinker = ThinkingParser(tags[0], tags[1], starts_in_thinking=_prompt_opens_thinking(model, tokens,
                                                                                                  tags[0]))
        tool_parser = None
        if channels is None and (tools or tool_format):
            from ..prompt.tools import ToolCallParser, tool_format_for

            fmt = tool_format or tool_format_for(template.source if template else None)
            names = {t.get("function", {}).get("name", "") for t in tools} if tools else None
            tool_parser = ToolCallParser(fmt, names)
        num_predict = opts.num_predict
        if num_predict < 0:
            opts = replace(opts, num_predict=10 * opts.load.num_ctx)  # Ollama's bound on open-ended runs

        def split(text: str) -> tuple[str, str, list]:
            if channels is not None:
                return channels.feed(text)
            thinking = ""
            if thinker is not None:
                thinking, text = thinker.feed(text)
            calls: list = []
            if tool_parser is not None:
                text, calls = tool_parser.feed(text)
            return thinking, text, calls

        first_token_ns = 0
        # The first piece says how long the prompt is: Anthropic's message_start reports it.
        prompt_count = {"prompt_eval_count": len(tokens.tokens if hasattr(tokens, "tokens") else tokens)}
        async for chunk in model.generate(tokens, opts, grammar=grammar, logit_bias=logit_bias, logprobs=logprobs,
                                          top_logprobs=top_logprobs, shift=shift, grammar_triggers=triggers):
            if chunk.tokens and not first_token_ns:
                first_token_ns = time.perf_counter_ns() - started
            if collect is not None:
                collect.extend(chunk.tokens)
            thinking, content, calls = split(chunk.text)
            lp = _logprobs(model, chunk.logprobs) if logprobs else []
            if chunk.done:
                if channels is not None:
                    t1, c1, more = channels.finish()
                    thinking, content, calls = thinking + t1, content + c1, calls + more
                if thinker is not None:
                    t2, c2 = thinker.finish()
                    thinking += t2
                    if tool_parser is not None:
                        c2, more = tool_parser.feed(c2)
                        calls += more
                    content += c2
                if tool_parser is not None:
                    c3, more = tool_parser.finish()
                    content += c3
                    calls += more
                timings = chunk.timings
                metrics = {
                    "total_duration": time.perf_counter_ns() - started,
                    "load_duration": loaded_ns,
                    "prompt_eval_count": timings.get("prompt_tokens", 0),
                    "prompt_eval_duration": timings.get("prompt_eval_duration", 0),
                    "eval_count": timings.get("eval_count", 0),
                    "eval_duration": timings.get("eval_duration", 0),
                }
                reason = chunk.done_reason if chunk.done_reason in ("stop", "length") else "stop"
                if self.observer is not None:
                    self.observer.on_request(runner.name, "generate" if collect is not None else "chat",
                                             metrics["prompt_eval_count"], metrics["eval_count"], first_token_ns,
                                             metrics["total_duration"])
                yield Delta(content, thinking, calls, lp, True, reason, metrics, stop_sequence=chunk.stop_sequence)
                return
            if content or thinking or calls or lp:
                yield Delta(content, thinking, calls, lp, metrics=prompt_count)
                prompt_count = {}

    @staticmethod
    def _with_system(spec: LocalModel, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The model's MESSAGE history, then the request's, with its SYSTEM first unless one leads."""
        history = list(spec.messages) + list(messages)
        if spec.system and (not history or history[0].get("role") != "system"):
            history.insert(0, {"role": "system", "content": spec.system})
        return history

    async def _remote(self, spec: LocalModel, path: str, body: dict[str, Any], options: dict | None,
                      logprobs: bool, top_logprobs: int, started: int) -> AsyncIterator[Delta]:
        """A remote model's answer from its host (engine/remote.py), as this service's Deltas."""
        from . import remote

        body = {k: v for k, v in body.items() if v is not None}
        body["model"] = spec.remote_model
        body["options"] = {**spec.parameters, **(options or {})}
        if logprobs:
            body.update(logprobs=True, top_logprobs=top_logprobs)
        first_ns = 0
        async for line in remote.stream(self.scheduler.config, spec, path, body):
            message = line.get("message") or {}
            delta = Delta(content=message.get("content") or line.get("response") or "",
                          thinking=message.get("thinking") or line.get("thinking") or "",
                          tool_calls=remote.tool_calls_of(message if message else line),
                          logprobs=line.get("logprobs") or [], done=bool(line.get("done")),
                          remote_model=spec.remote_model, remote_host=spec.remote_host)
            first_ns = first_ns or time.perf_counter_ns() - started
            if delta.done:
                delta.done_reason = line.get("done_reason") or "stop"
                delta.metrics = remote.metrics_of(line)
                if isinstance(line.get("context"), list):
                    delta.context = line["context"]
                if self.observer is not None:
                    self.observer.on_request(spec.name, "chat" if path == "/api/chat" else "generate",
                                             delta.metrics.get("prompt_eval_count", 0),
                                             delta.metrics.get("eval_count", 0), first_ns,
                                             time.perf_counter_ns() - started)
            yield delta

    async def _load_only(self, spec: LocalModel, opts: Options, alive: float | None, started: int) -> Delta:
        if alive == 0:
            await self.scheduler.unload(spec.name)
            return Delta(done=True, done_reason="unload")
        await self.scheduler.load(spec, opts.load, alive)
        return Delta(done=True, done_reason="load",
                     metrics={"total_duration": time.perf_counter_ns() - started,
                              "load_duration": time.perf_counter_ns() - started})

    # --- embeddings ------------------------------------------------------------------------

    async def embed(self, model: str, inputs: list[str], *, truncate: bool | None = None,
                    dimensions: int | None = None, options: dict | None = None, keep_alive: Any = None,
                    normalize: bool = True) -> EmbedResult:
        started = time.perf_counter_ns()
        spec = self.resolve(model)
        opts = self.options_for(spec, options)
        opts = replace_load(opts, embedding=True)
        alive = _keep_alive(keep_alive)
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions <= 0):
            raise InvalidOptionError("dimensions must be a positive integer")
        if not inputs:
            await self.scheduler.load(spec, opts.load, alive)
            return EmbedResult([], 0, {"total_duration": time.perf_counter_ns() - started})
        async with self.scheduler.use(spec, opts.load, alive) as runner:
            loaded_ns = time.perf_counter_ns() - started
            n_ctx = opts.load.num_ctx

            def tokenize(text: str) -> list[int]:
                cut = runner.model.text_for_context(text, n_ctx, keep_end=False)  # never tokenized whole
                tokens = runner.model.tokenize(cut, True, True)
                if len(tokens) > n_ctx or cut is not text:
                    if truncate is False:
                        raise InvalidOptionError("the input length exceeds the context length")
                    tokens = tokens[:n_ctx]
                return tokens or runner.model.tokenize(" ", True, True)

            token_lists = await asyncio.to_thread(lambda: [tokenize(text) for text in inputs])
            vectors = await runner.model.embed(token_lists, normalize=normalize)
        out = []
        for v in vectors:
            if any(math.isnan(x) or math.isinf(x) for x in v):
                raise InvalidOptionError("the model returned an embedding with NaN or infinite values")
            if dimensions is not None and dimensions < len(v):
                v = v[:dimensions]
                if normalize:
                    norm = math.sqrt(sum(x * x for x in v)) or 1.0
                    v = [x / norm for x in v]
            out.append(v)
        count = sum(len(t) for t in token_lists)
        if self.observer is not None:
            self.observer.on_request(spec.name, "embed", count, 0, 0, time.perf_counter_ns() - started)
        return EmbedResult(out, count, {"total_duration": time.perf_counter_ns() - started,
                                        "load_duration": loaded_ns, "prompt_eval_count": count})


MAX_IMAGE_BYTES = 20 << 20
PROMPT_TOO_LONG = ("the prompt is longer than the context length currently available to the model; use a model "
                   "with a longer context or shorten the prompt")


def decode_images(images: list | None) -> list[bytes]:
    """Images as Ollama's API carries them: base64 strings (or bytes already decoded)."""
    import base64
    import binascii

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


def _check_logprobs(top_logprobs: int) -> None:
    if not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= 20:
        raise InvalidOptionError("top_logprobs must be between 0 and 20")


def _harmony_prefix(model, tokens) -> str:
    """The prompt from its last ``<|start|>`` on: the header (or the prefilled message) that the
    answer continues, read back with the special tokens written out."""
    from ..prompt.harmony import DEFAULT_PREFIX, START

    ids = [t for t in (tokens.tokens if hasattr(tokens, "tokens") else tokens)[-64:] if t >= 0]
    tail = model.model.detokenize(ids, False, True) if ids else ""
    at = tail.rfind(START)
    return tail[at:] if at >= 0 else DEFAULT_PREFIX


def _prompt_opens_thinking(model, tokens, open_tag: str) -> bool:
    """Some templates end the prompt inside an opened <think>: the answer then starts thinking."""
    ids = [t for t in (tokens.tokens if hasattr(tokens, "tokens") else tokens)[-8:] if t >= 0]
    tail = model.detokenize(ids) if ids else ""
    return tail.rstrip().endswith(open_tag)


def _logprobs(model, entries) -> list[dict]:
    piece = model.model.token_to_piece

    def one(token: int, logprob: float) -> dict:
        raw = piece(token, True)
        return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}

    out = []
    for e in entries:
        item = one(e.token, e.logprob)
        item["top_logprobs"] = [one(c.token, c.logprob) for c in e.top]
        out.append(item)
    return out


def _apply_tool_choice(tools: list[dict] | None, tool_choice: Any) -> tuple[str, list[dict] | None]:
    """OpenAI's tool_choice: "none" hides the tools, "required" or a named function forces a call
    through a grammar over the tools' argument schemas; the model then writes the call as bare JSON."""
    if not tools or tool_choice in (None, "auto"):
        return "", tools
    if tool_choice == "none":
        return "", None
    if tool_choice == "required":
        chosen = tools
    elif isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        chosen = [t for t in tools if t.get("function", {}).get("name") == name]
        if not chosen:
            raise InvalidOptionError(f"tool_choice names an unknown function {name!r}")
    else:
        raise InvalidOptionError(f"invalid tool_choice {tool_choice!r}")
    from ..prompt.json_schema import schema_to_gbnf

    schema = {"anyOf": [{"type": "object",
                         "properties": {"name": {"const": t["function"]["name"]},
                                        "arguments": t["function"].get("parameters") or {"type": "object"}},
                         "required": ["name", "arguments"], "additionalProperties": False}
                        for t in chosen]}
    return schema_to_gbnf(schema), tools
