"""Request bodies of the OpenAI API as the proxy accepts them (pydantic, HTTP edge only).

Fields the guard does not need (``temperature``, ``stop``, ``seed``...) are kept as extras
and forwarded to the upstream untouched, so the proxy does not lag behind the API. Response
bodies are built as plain dicts from the upstream's own JSON.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Passthrough(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Passthrough):
    """One part of a multi-part message; only ``text`` parts carry text the guard checks."""

    type: str = Field(max_length=64, description="'text', 'image_url', 'input_audio'...")
    text: str | None = Field(None, description="The text of a 'text' part.")


class ChatMessage(_Passthrough):
    """One chat message."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = Field(
        None, description="Text, or a list of content parts."
    )
    name: str | None = Field(None, max_length=256)

    def text(self) -> str:
        """The text the guard checks: the content, or its text parts joined by newlines."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if part.text is not None)


class ChatCompletionRequest(_Passthrough):
    """``POST /v1/chat/completions``."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    n: int | None = Field(None, ge=1, le=128, description="Only 1 is supported.")
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=256)


class CompletionRequest(_Passthrough):
    """``POST /v1/completions`` (legacy completions): one prompt per request."""

    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] = Field(description="A prompt, or a list holding one prompt.")
    stream: bool = False
    n: int | None = Field(None, ge=1, le=128, description="Only 1 is supported.")
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=256)


class ModerationRequest(BaseModel):
    """``POST /v1/moderations``."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] = Field(description="Text, or a list of texts (at most 64).")
    model: str | None = Field(None, max_length=256)
