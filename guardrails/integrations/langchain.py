"""Any LangChain chat model behind the guard: `GuardedChatModel`.

The prompt checked is every message the model will read (``role: text`` lines, tool results
included); the output checked is the answer's text followed by its tool calls (names and
arguments as JSON), so a rule sees what a model wants a tool to receive. A block raises
`guardrails.Blocked` (or, with a guard built ``on_block="refuse"``, answers the policy's
refusal); a redaction rewrites the text and the tool-call arguments. Each call is one audit
event of the guard.

Streaming (``.stream``) releases the answer's text through the guard's stream checker, so
nothing reaches the caller that the whole text would have stopped. Tool calls that arrive in
a stream are held back to the end and checked there with `Guard.check` (a block raises
`Blocked`, a redaction rewrites them); those arguments are not part of the stream's audit
record, whose output is the streamed text.

Needs ``langchain-core`` (``pip install 'guardrail-layer[langchain]'``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolCall,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from guardrails.decision import Stage
from guardrails.exceptions import Blocked
from guardrails.guard import Guard
from guardrails.integrations._text import join_output, render_messages, split_output, text_of

__all__ = ["GuardedChatModel", "messages_text"]


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant"}.get(message.type, message.type)


def messages_text(messages: list[BaseMessage]) -> str:
    """The prompt as the guard checks it: each message's text, and the tool calls an
    assistant message in the history made."""
    parts: list[tuple[str, str]] = []
    for message in messages:
        text = text_of(message.content)
        calls = getattr(message, "tool_calls", None) or []
        if calls:
            text = join_output(text, [{"name": c["name"], "args": c["args"]} for c in calls])
        parts.append((_role(message), text))
    return render_messages(parts)


def _calls_of(message: AIMessage) -> list[dict[str, Any]]:
    return [{"name": c["name"], "args": c["args"]} for c in message.tool_calls]


def _rebuild(message: AIMessage, checked: str) -> AIMessage:
    """``message`` with the checked text and tool calls (unchanged when nothing was)."""
    calls = _calls_of(message)
    if checked == join_output(text_of(message.content), calls):
        return message
    split = split_output(checked, len(calls))
    if split is None:  # a redaction broke the arguments: withhold the calls (fail closed)
        text = checked.rpartition("\n\n[tool calls] ")[0] or checked
        return AIMessage(
            content=text,
            response_metadata={**message.response_metadata, "guardrails": "tool calls withheld"},
            id=message.id,
        )
    text, new_calls = split
    tool_calls = [
        ToolCall(name=str(new["name"]), args=new["args"], id=old.get("id"))
        for old, new in zip(message.tool_calls, new_calls, strict=True)
    ]
    return AIMessage(
        content=text,
        tool_calls=tool_calls,
        response_metadata=message.response_metadata,
        id=message.id,
    )


class GuardedChatModel(BaseChatModel):
    """``model`` behind ``guard``: use it wherever the inner chat model was used.

    Example::

        guard = Guard.from_policy("default", audit="sqlite:///audit.db")
        chat = GuardedChatModel(model=ChatOpenAI(model="gpt-4o-mini"), guard=guard)
        chat.invoke("Summarise this ticket: ...")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel
    guard: Guard
    model_name: str | None = None
    """The model name audited (default: the inner model's type)."""

    @property
    def _llm_type(self) -> str:
        return f"guarded-{self.model._llm_type}"

    def _audited_name(self) -> str:
        return self.model_name or self.model._llm_type

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answers: list[AIMessage] = []

        def generate(_prompt: str) -> str:
            answer = self.model.invoke(messages, stop=stop, **kwargs)
            if not isinstance(answer, AIMessage):
                answer = AIMessage(content=text_of(answer.content))
            answers.append(answer)
            return join_output(text_of(answer.content), _calls_of(answer))

        checked = self.guard.wrap(generate, model=self._audited_name())(messages_text(messages))
        if not answers:  # the prompt was refused (on_block="refuse"): the refusal is the answer
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=checked))])
        return ChatResult(generations=[ChatGeneration(message=_rebuild(answers[0], checked))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        held: list[AIMessageChunk] = []

        def generate(_prompt: str) -> Iterator[str]:
            for chunk in self.model.stream(messages, stop=stop, **kwargs):
                if isinstance(chunk, AIMessageChunk) and chunk.tool_call_chunks:
                    held.append(chunk)
                text = text_of(chunk.content)
                if text:
                    yield text

        stream = self.guard.wrap(generate, model=self._audited_name())(messages_text(messages))
        for text in stream if not isinstance(stream, str) else [stream]:
            if not text:
                continue
            out = ChatGenerationChunk(message=AIMessageChunk(content=text))
            if run_manager is not None:
                run_manager.on_llm_new_token(text, chunk=out)
            yield out
        if held:
            yield self._checked_tool_chunk(held)

    def _checked_tool_chunk(self, held: list[AIMessageChunk]) -> ChatGenerationChunk:
        merged = held[0]
        for chunk in held[1:]:
            merged = merged + chunk
        calls = [{"name": c["name"], "args": c["args"]} for c in merged.tool_calls]
        text = json.dumps(calls, ensure_ascii=False, sort_keys=True)
        verdict = self.guard.check(text, Stage.OUTPUT)
        if verdict.blocked:
            raise Blocked(verdict, request_id="")
        if verdict.text != text:
            try:
                redacted = json.loads(verdict.text)
            except ValueError:
                redacted = None
            if not isinstance(redacted, list) or len(redacted) != len(calls):
                raise Blocked(verdict, request_id="")
            calls = redacted
        chunks = [
            {
                "name": c["name"],
                "args": json.dumps(c["args"], ensure_ascii=False),
                "id": old.get("id"),
                "index": i,
            }
            for i, (c, old) in enumerate(zip(calls, merged.tool_calls, strict=True))
        ]
        return ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=chunks))
