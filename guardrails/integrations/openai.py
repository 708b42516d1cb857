"""The OpenAI Python client used in process, behind the guard: `guard_openai`.

``guard_openai(client, guard)`` returns an object shaped like the client for
``.chat.completions.create(...)`` (everything else passes through to the real client). The
prompt checked is every message's text (tool results included); the output checked is each
choice's text followed by its tool calls' names and arguments (as JSON). A block raises
`guardrails.Blocked` (or answers the policy's refusal, with a guard built
``on_block="refuse"``); a redaction rewrites the text and the arguments. ``stream=True``
releases the text through the guard's stream checker, chunk by chunk. One audit event per
call (with ``n > 1``, each choice is checked and audited as its own call).

Needs ``openai``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from guardrails.guard import Guard
from guardrails.integrations._text import join_output, render_messages, split_output, text_of

__all__ = ["GuardedOpenAI", "guard_openai", "openai_messages_text"]


def openai_messages_text(messages: Any) -> str:
    """The prompt as checked: ``role: text`` for every message (tool calls as JSON)."""
    parts: list[tuple[str, str]] = []
    for message in messages or ():
        data = message if isinstance(message, dict) else dict(message)
        text = text_of(data.get("content"))
        calls = data.get("tool_calls") or []
        if calls:
            text = join_output(text, [_call_dict(c) for c in calls])
        parts.append((str(data.get("role", "user")), text))
    return render_messages(parts)


def _call_dict(call: Any) -> dict[str, Any]:
    data = call if isinstance(call, dict) else call.model_dump()
    function = data.get("function") or {}
    raw = function.get("arguments") or "{}"
    try:
        args = json.loads(raw)
    except ValueError:
        args = {"arguments": raw}
    if not isinstance(args, dict):
        args = {"arguments": args}
    return {"name": function.get("name", ""), "args": args}


def _checked_message(message: Any, checked: str) -> Any:
    calls = [_call_dict(c) for c in message.tool_calls or ()]
    if checked == join_output(message.content or "", calls):
        return message
    split = split_output(checked, len(calls))
    if split is None:  # a redaction broke the arguments: withhold the calls (fail closed)
        return message.model_copy(
            update={"content": checked.rpartition("\n\n[tool calls] ")[0], "tool_calls": None}
        )
    text, new_calls = split
    tool_calls = [
        old.model_copy(
            update={
                "function": old.function.model_copy(
                    update={"arguments": json.dumps(new["args"], ensure_ascii=False)}
                )
            }
        )
        for old, new in zip(message.tool_calls or (), new_calls, strict=True)
    ]
    return message.model_copy(
        update={
            "content": text if message.content is not None or text else None,
            "tool_calls": tool_calls or message.tool_calls,
        }
    )


class _Completions:
    def __init__(self, inner: Any, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create(self, **kwargs: Any) -> Any:
        """``client.chat.completions.create(**kwargs)``, guarded."""
        prompt = openai_messages_text(kwargs.get("messages"))
        model = str(kwargs.get("model") or "") or None
        if kwargs.get("stream"):
            return self._stream(prompt, model, kwargs)
        answers: list[ChatCompletion] = []

        def generate(_prompt: str) -> str:
            completion = self._inner.create(**kwargs)
            answers.append(completion)
            message = completion.choices[0].message  # further choices: checked below
            return join_output(
                message.content or "", [_call_dict(t) for t in message.tool_calls or ()]
            )

        checked = self._guard.wrap(generate, model=model)(prompt)
        if not answers:  # refused prompt: the refusal is the answer
            return ChatCompletion.model_validate(
                {
                    "id": "guardrails-refusal",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model or "",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": checked},
                        }
                    ],
                }
            )
        completion = answers[0]
        choices = [
            completion.choices[0].model_copy(
                update={"message": _checked_message(completion.choices[0].message, checked)}
            )
        ]
        for extra in completion.choices[1:]:  # n > 1: each further choice as its own call
            message = extra.message
            text = join_output(
                message.content or "", [_call_dict(t) for t in message.tool_calls or ()]
            )
            redone = self._guard.wrap(lambda _p, t=text: t, model=model)(prompt)
            choices.append(extra.model_copy(update={"message": _checked_message(message, redone)}))
        return completion.model_copy(update={"choices": choices})

    def _stream(self, prompt: str, model: str | None, kwargs: dict[str, Any]) -> Iterator[Any]:
        first: list[ChatCompletionChunk] = []
        finish: list[str | None] = [None]

        def generate(_prompt: str) -> Iterator[str]:
            for chunk in self._inner.create(**kwargs):
                if not first:
                    first.append(chunk)
                for choice in chunk.choices:
                    if choice.index == 0:
                        if choice.finish_reason:
                            finish[0] = choice.finish_reason
                        if choice.delta.content:
                            yield choice.delta.content

        released = self._guard.wrap(generate, model=model)(prompt)

        def chunk(delta: dict[str, Any], reason: str | None) -> ChatCompletionChunk:
            base = first[0] if first else None
            return ChatCompletionChunk.model_validate(
                {
                    "id": base.id if base else "guardrails-refusal",
                    "object": "chat.completion.chunk",
                    "created": base.created if base else 0,
                    "model": base.model if base else (model or ""),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                }
            )

        def chunks() -> Iterator[ChatCompletionChunk]:
            texts = [released] if isinstance(released, str) else released
            for text in texts:
                if text:
                    yield chunk({"role": "assistant", "content": text}, None)
            yield chunk({}, finish[0] or "stop")

        return chunks()


class _Chat:
    def __init__(self, inner: Any, guard: Guard) -> None:
        self._inner = inner
        self.completions = _Completions(inner.completions, guard)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class GuardedOpenAI:
    """An OpenAI client whose ``chat.completions.create`` runs behind a guard."""

    def __init__(self, client: Any, guard: Guard) -> None:
        self._client = client
        self.chat = _Chat(client.chat, guard)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def guard_openai(client: Any, guard: Guard) -> GuardedOpenAI:
    """Wrap an ``openai.OpenAI`` client so its chat completions are guarded and audited.

    Example::

        client = guard_openai(openai.OpenAI(), Guard.from_policy("default", audit=url))
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
    """
    return GuardedOpenAI(client, guard)
