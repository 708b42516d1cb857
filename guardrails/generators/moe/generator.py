"""The text-level generator the guard wraps: `MoEGenerator` (a `ModelGenerator`).

Streaming decodes the growing token list and emits only text that can no longer change: a
trailing cut UTF-8 sequence (U+FFFD) and any tail that could still grow into a stop
sequence are held back, so a stop string never leaks into the stream.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from guardrails.generators.moe.errors import GenerationError
from guardrails.generators.moe.generation import (
    SamplingParams,
    check_prompts,
    generate_ids,
    iter_tokens,
)
from guardrails.generators.moe.model import MoEForCausalLM
from guardrails.generators.moe.tokenizer import BPETokenizer, ChatTemplate, render_plain_chat
from guardrails.generators.protocol import Completion, usage_dict

__all__ = ["CompletionStream", "MoEGenerator", "TextAssembler", "params_from_options"]

# OpenAI request fields that reach a generator but do not change how it samples.
_IGNORED_OPTIONS = frozenset({"model", "user", "stream", "n", "request_id"})


def params_from_options(defaults: SamplingParams, options: dict[str, Any]) -> SamplingParams:
    """Merge OpenAI-style options into ``defaults``.

    Accepted: ``max_tokens``/``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``,
    ``stop`` (a string or a list), ``seed``. ``model``, ``user``, ``stream`` and ``n=1`` are
    ignored. Anything else raises `GenerationError` so a typo never passes silently.
    """
    known = {"max_tokens", "max_new_tokens", "temperature", "top_p", "top_k", "stop", "seed"}
    unknown = sorted(set(options) - known - _IGNORED_OPTIONS)
    if unknown:
        raise GenerationError(f"unknown generation options {unknown}; accepted: {sorted(known)}")
    if options.get("n", 1) != 1:
        raise GenerationError(f"n={options['n']!r}: this generator returns one completion")
    changes: dict[str, Any] = {}
    for key in ("temperature", "top_p", "top_k", "seed"):
        if options.get(key) is not None:
            changes[key] = options[key]
    for key in ("max_tokens", "max_new_tokens"):
        if options.get(key) is not None:
            changes["max_new_tokens"] = options[key]
    stop = options.get("stop")
    if stop is not None:
        changes["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    return replace(defaults, **changes)


class TextAssembler:
    """Turns a stream of token ids into safe text chunks, honouring stop sequences."""

    def __init__(self, tokenizer: BPETokenizer, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.emitted = 0
        self.stopped = False

    def _holdback(self, text: str) -> int:
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        if text.endswith("\ufffd"):
            hold = max(hold, len(text) - len(text.rstrip("\ufffd")))
        return hold

    def feed(self, token: int) -> str:
        """Add a token; returns the text that became final (may be empty)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        cut = min(
            (i for i in (text.find(s, max(0, self.emitted - len(s))) for s in self.stop) if i >= 0),
            default=-1,
        )
        if cut >= 0:
            self.stopped = True
            chunk = text[self.emitted : cut]
            self.emitted = max(self.emitted, cut)
            return chunk
        safe = len(text) - self._holdback(text)
        if safe <= self.emitted:
            return ""
        chunk = text[self.emitted : safe]
        self.emitted = safe
        return chunk

    def finish(self) -> str:
        """The held-back tail once generation ended without a stop sequence."""
        if self.stopped:
            return ""
        text = self.tokenizer.decode(self.ids)
        chunk = text[self.emitted :]
        self.emitted = len(text)
        return chunk


class CompletionStream:
    """An iterator of text chunks that reports its token usage and why it ended.

    ``finish_reason`` is None until the stream is exhausted, then ``"stop"`` (end of text or
    a stop sequence) or ``"length"`` (``max_tokens`` or the context window ran out).
    ``completion_tokens`` counts the tokens sampled so far, the end-of-text token excluded.
    """

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self._chunks: Generator[str, None, None] | None = None

    def __iter__(self) -> CompletionStream:
        return self

    def __next__(self) -> str:
        if self._chunks is None:
            raise StopIteration
        return next(self._chunks)

    def close(self) -> None:
        """Stop generating (frees the batching row, if any)."""
        if self._chunks is not None:
            self._chunks.close()

    @property
    def usage(self) -> dict[str, int]:
        """OpenAI's ``usage`` object for the tokens so far."""
        return usage_dict(self.prompt_tokens, self.completion_tokens)


class MoEGenerator:
    """A loaded MoE model plus tokenizer, served through `generate`/`stream`.

    Implements `guardrails.generators.ModelGenerator`. Concurrent calls are safe (each has
    its own KV cache) but compete for the CPU side by side; `enable_batching` funnels them
    into one decode loop instead, which is what a server should do.
    """

    def __init__(
        self,
        model: MoEForCausalLM,
        tokenizer: BPETokenizer | None,
        *,
        name: str,
        defaults: SamplingParams | None = None,
        chat_template: ChatTemplate | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.defaults = defaults or SamplingParams()
        self.chat_template = chat_template
        self._engine: Any = None
        eos = None if tokenizer is None else tokenizer.eos_token_id
        if model.config.eos_token_id is None and eos is not None:
            model.config = replace(model.config, eos_token_id=eos)

    def enable_batching(self, *, max_batch: int = 16) -> None:
        """Route `stream`/`generate` through a shared dynamic-batching decode loop."""
        from guardrails.generators.moe.batching import BatchingEngine

        if self._engine is None:
            self._engine = BatchingEngine(self.model, max_batch=max_batch)

    def close(self) -> None:
        """Stop the batching thread, if one runs."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _tokenizer(self) -> BPETokenizer:
        if self.tokenizer is None:
            raise GenerationError(
                "this generator was loaded without a tokenizer: use generate_ids (token ids "
                "in, token ids out) or load it with tokenizer=..."
            )
        return self.tokenizer

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt; empty or over-long prompts raise `GenerationError`."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise GenerationError("prompt is empty")
        ids = self._tokenizer().encode(prompt)
        check_prompts(self.model, [ids])
        return ids

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt for chat ``messages``: the checkpoint's chat template when it has one
        (from ``tokenizer_config.json``), else ``role: text`` lines ending in ``assistant:``."""
        if self.chat_template is not None:
            return self.chat_template.render(messages)
        return render_plain_chat(messages)

    def chat(self, messages: Sequence[Mapping[str, Any]], /, **options: Any) -> Completion:
        """The assistant's reply to ``messages`` (rendered with `render_chat`)."""
        return self.complete(self.render_chat(messages), **options)

    def generate_ids(self, ids: Sequence[int], /, **options: Any) -> list[int]:
        """New token ids for a prompt of token ids (no tokenizer needed; eos excluded).

        Stop strings need text, so ``stop`` is refused here.
        """
        params = params_from_options(self.defaults, options)
        if params.stop:
            raise GenerationError("stop sequences need a tokenizer; generate_ids takes none")
        return generate_ids(self.model, [list(ids)], params)[0]

    def stream(self, prompt: str, /, **options: Any) -> CompletionStream:
        """Yield the completion as text chunks (see the module docstring for holding back).

        The returned iterator reports ``usage`` and ``finish_reason`` once exhausted.
        """
        params = params_from_options(self.defaults, options)
        ids = self.encode_prompt(prompt)
        report = CompletionStream(len(ids))
        report._chunks = self._stream(ids, params, report)
        return report

    def _stream(
        self, ids: list[int], params: SamplingParams, report: CompletionStream
    ) -> Generator[str, None, None]:
        eos = None if params.ignore_eos else self.model.config.eos_token_id
        assembler = TextAssembler(self._tokenizer(), params.stop)
        tokens: Generator[int, None, None]
        if self._engine is not None:
            tokens = self._engine.submit(ids, params)
        else:
            tokens = (
                step[0] for step in iter_tokens(self.model, [ids], params) if step[0] is not None
            )
        finish = "length"  # unless the model ends the text or a stop sequence appears
        try:
            for tok in tokens:
                if tok == eos:
                    finish = "stop"
                    break
                report.completion_tokens += 1
                chunk = assembler.feed(tok)
                if chunk:
                    yield chunk
                if assembler.stopped:
                    finish = "stop"
                    break
        finally:
            tokens.close()  # frees a batching row at once when the caller stops early
        report.finish_reason = finish
        tail = assembler.finish()
        if tail:
            yield tail

    def complete(self, prompt: str, /, **options: Any) -> Completion:
        """The whole completion (stop sequence excluded) with its usage and finish reason."""
        chunks = self.stream(prompt, **options)
        text = "".join(chunks)
        return Completion(
            text,
            prompt_tokens=chunks.prompt_tokens,
            completion_tokens=chunks.completion_tokens,
            finish_reason=chunks.finish_reason or "stop",
        )

    def generate(self, prompt: str, /, **options: Any) -> str:
        """The whole completion (stop sequence excluded): a `Completion`, which is a str."""
        return self.complete(prompt, **options)

    def generate_batch(self, prompts: Sequence[str], /, **options: Any) -> list[str]:
        """Completions for several prompts decoded together in one left-padded batch."""
        params = params_from_options(self.defaults, options)
        encoded = [self.encode_prompt(p) for p in prompts]
        eos = None if params.ignore_eos else self.model.config.eos_token_id
        assemblers = [TextAssembler(self._tokenizer(), params.stop) for _ in prompts]
        outputs = ["" for _ in prompts]
        finished = [False for _ in prompts]
        for step in iter_tokens(self.model, encoded, params):
            for i, tok in enumerate(step):
                if finished[i] or tok is None:
                    continue
                if tok == eos:
                    finished[i] = True
                    continue
                outputs[i] += assemblers[i].feed(tok)
                finished[i] = assemblers[i].stopped
            if all(finished):
                break
        return [out + a.finish() for out, a in zip(outputs, assemblers, strict=True)]
