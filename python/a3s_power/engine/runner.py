"""A loaded model: its weights, its engine (context, slots, inference thread) and the bridge
that carries the engine's output into asyncio.

The engine signals a file descriptor when output is ready; the event loop watches it and drains
everything pending at once, so Python wakes per batch of tokens, never per token, and no thread
is spent per request.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterable, Sequence

from ..core import _core
from ..errors import InferenceError, InvalidOptionError
from .options import LoadOptions, Options


@dataclass
class Chunk:
    """What a request produced since its last chunk."""

    text: str
    tokens: list[int]
    logprobs: list = field(default_factory=list)
    done: bool = False
    done_reason: str = ""
    stop_sequence: str = ""  # the stop string that ended the answer, if one did
    timings: dict = field(default_factory=dict)


def chunk_of(event) -> Chunk:
    """A generation event (``_core.Event`` or its plain copy from a worker) as a Chunk; an error
    event raises its error."""
    if event.done and event.done_reason == "error":
        raise InferenceError(event.error)
    return Chunk(text=event.text, tokens=list(event.tokens), logprobs=list(event.logprobs), done=event.done,
                 done_reason=event.done_reason, stop_sequence=event.stop_sequence,
                 timings=event.timings if event.done else {})


class Inbox:
    """Events for one request, and the consumer waiting for them, if it is waiting."""

    __slots__ = ("events", "waiter")

    def __init__(self) -> None:
        self.events: deque = deque()
        self.waiter: asyncio.Future | None = None

    async def get(self):
        while not self.events:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.events.popleft()


class _EventPump:
    """Routes the engine's events to per-request inboxes on one event loop."""

    def __init__(self, engine: _core.Engine) -> None:
        self._engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inboxes: dict[int, Inbox] = {}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        self.detach()
        loop.add_reader(self._engine.notify_fd, self._on_ready)
        self._loop = loop

    def detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._engine.notify_fd)
        self._loop = None
        self._inboxes.clear()

    def flush_and_detach(self) -> None:
        """After the engine closed: hand its last events (every unfinished request ends with
        "cancel") to their consumers, then stop watching. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.detach()
            return

        def flush() -> None:
            self._on_ready()
            self.detach()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            flush()
        else:
            loop.call_soon_threadsafe(flush)

    def register(self, request_id: int) -> Inbox:
        inbox = Inbox()
        self._inboxes[request_id] = inbox
        return inbox

    def unregister(self, request_id: int) -> None:
        self._inboxes.pop(request_id, None)

    def _on_ready(self) -> None:
        for event in self._engine.drain(0):
            inbox = self._inboxes.get(event.id)
            if inbox is not None:
                inbox.events.append(event)
                if inbox.waiter is not None and not inbox.waiter.done():
                    inbox.waiter.set_result(None)


class Vocabulary:
    """Text and tokens over a model's vocabulary (``self.model``): what a request needs before and
    after the engine runs. A worker's proxy (isolated.py) serves these from a vocabulary-only copy
    of the model in the server, so they never cross to the worker."""

    model: _core.Model

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_special, parse_special)

    def rerank_tokens(self, query: str, document: str) -> list[int]:
        """A reranker's input for one pair (_core.Model.rerank_tokens)."""
        return self.model.rerank_tokens(query, document)

    def _needs_bos(self, prompt: str) -> bool:
        bos = self.model.bos_token
        if not self.model.add_bos or bos < 0:
            return False
        bos_text = self.model.token_to_piece(bos, True).decode("utf-8", "replace")
        return not (bos_text and prompt.startswith(bos_text))

    def tokenize_prompt(self, prompt: str) -> list[int]:
        """Tokens of a rendered prompt: BOS is added only where the template did not write it."""
        return self.model.tokenize(prompt, self._needs_bos(prompt), True)

    @functools.cached_property
    def longest_piece(self) -> int:
        """The most bytes one token of this vocabulary stands for (read once, on first need)."""
        m = self.model
        return max(1, max(len(m.token_to_piece(t, True)) for t in range(m.n_vocab)))

    def text_for_context(self, text: str, n_ctx: int, keep_end: bool = True) -> str:
        """``text`` cut, before tokenizing, to what a context of ``n_ctx`` tokens can still use, so
        that a prompt of megabytes is never tokenized whole (tokenizing costs about 130 times the
        text's size in memory). No token stands for more than ``longest_piece`` bytes, so any
        ``(n_ctx + 16) * longest_piece`` characters hold more tokens than the context: that much
        is kept from the end (and a few tokens' worth from the start, which truncation keeps too),
        or from the start with ``keep_end`` off. The text itself when it is short enough."""
        if len(text) <= 16 * n_ctx:  # too short to matter: no need to read the vocabulary
            return text
        span = (n_ctx + 16) * self.longest_piece
        head = 8 * self.longest_piece if keep_end else span
        if len(text) <= head + (span if keep_end else 0):
            return text
        return text[:head] + text[len(text) - span:] if keep_end else text[:head]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.model.detokenize(list(tokens))

    @property
    def chat_template(self) -> str | None:
        return self.model.chat_template()


class LoadedModel(Vocabulary):
    """A model loaded for generation or for embeddings, shared by concurrent requests."""

    def __init__(self, path: str, load: LoadOptions, adapters: Sequence[tuple[str, float]] = (),
                 model: _core.Model | None = None, projector: str | None = None) -> None:
        """Loads ``path`` (or uses ``model``, already loaded from it and shared with others) and
        makes an engine over it with the given LoRA adapters (path, scale)."""
        started = time.perf_counter_ns()
        self.path = str(path)
        self.load_options = load
        self._owns_model = model is None
        self.model = model if model is not None else _core.Model(self.path, load.model_params())
        try:
            self.adapters = [(_core.LoraAdapter(self.model, str(p)), float(scale)) for p, scale in adapters]
            params = load.context_params()
            self.projector = (_core.Projector(self.model, str(projector), params.n_threads, load.num_gpu != 0)
                              if projector else None)
            self.engine = _core.Engine(self.model, params, self.adapters, self.projector)
        except BaseException:
            if self._owns_model:
                self.model.close()
            raise
        self.load_duration_ns = time.perf_counter_ns() - started
        self._pump = _EventPump(self.engine)
        self._closed = False

    # --- images --------------------------------------------------------------------------

    @property
    def image_marker(self) -> str | None:
        return self.projector.marker if self.projector is not None else None

    def tokenize_multimodal(self, prompt: str, images: Sequence[bytes]) -> _core.MultimodalPrompt:
        """A rendered prompt with one image marker per image, images as encoded files."""
        if self.projector is None:
            raise InvalidOptionError("this model is missing data required for image input")
        return self.projector.tokenize(prompt, list(images), self._needs_bos(prompt))

    # --- generation ------------------------------------------------------------------------

    async def generate(
        self,
        tokens: Sequence[int] | _core.MultimodalPrompt,
        options: Options,
        *,
        grammar: str = "",
        logit_bias: dict[int, float] | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        shift: bool | None = None,
        grammar_triggers: Sequence[str] = (),
    ) -> AsyncIterator[Chunk]:
        """Streams a completion of ``tokens``. Closing the iterator early cancels the request.
        With ``shift`` (the core's default when None: on), a full context drops older tokens
        (keeping ``num_keep``) and goes on."""
        self._check_open()
        self._pump.attach(asyncio.get_running_loop())
        params = options.generate_params(grammar, logit_bias, logprobs=logprobs, top_logprobs=top_logprobs, shift=shift,
                                         grammar_triggers=grammar_triggers)
        if isinstance(tokens, _core.MultimodalPrompt):
            request_id = self.engine.submit_multimodal(tokens, params)
        else:
            request_id = self.engine.submit(list(tokens), params)
        inbox = self._pump.register(request_id)
        finished = False
        try:
            while True:
                event = await inbox.get()
                finished = event.done
                chunk = chunk_of(event)
                yield chunk
                if finished:
                    return
        finally:
            self._pump.unregister(request_id)
            if not finished:
                self.engine.cancel(request_id)

    async def embed(self, inputs: Iterable[Sequence[int]], normalize: bool = True) -> list[list[float]]:
        """Embeds each token list; all of them go to the engine at once and batch together."""
        self._check_open()
        self._pump.attach(asyncio.get_running_loop())
        ids = [self.engine.submit_embedding(list(tokens), normalize) for tokens in inputs]
        inboxes = [self._pump.register(i) for i in ids]
        try:
            results = []
            for inbox in inboxes:
                event = await inbox.get()
                if event.done_reason == "error":
                    raise InferenceError(event.error)
                results.append(list(event.embedding))
            return results
        finally:
            for i in ids:
                self._pump.unregister(i)
                self.engine.cancel(i)

    def release_prompt_cache(self) -> int:
        """Empties the host memory kept for conversations pushed out of their slots; the bytes freed."""
        return 0 if self._closed else self.engine.release_prompt_cache()

    # --- lifetime --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InferenceError(f"model {self.path} has been unloaded")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.engine.close()
        self._pump.flush_and_detach()
        self.adapters.clear()
        self.projector = None
        if self._owns_model:
            self.model.close()

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
