"""Request bodies of the OpenAI API as the proxy accepts them (pydantic, HTTP edge only).

The parameters the API defines are validated strictly, in the ranges the API documents
(``stream: "yes"``, a ``NaN`` temperature or ``max_tokens: -1`` are 400s, never forwarded);
fields the proxy does not know are kept as extras and forwarded untouched, so the proxy does
not lag behind the API. Response bodies are rebuilt from an allow-list
(`guardrails.proxy.responses`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

_Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
_Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_Penalty = Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)]
_Tokens = Annotated[StrictInt, Field(ge=1, le=10_000_000)]
_Stop = str | Annotated[list[str], Field(max_length=4)]


class _Passthrough(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Passthrough):
    """One part of a multi-part message; only ``text`` parts carry text the guard checks."""

    type: str = Field(max_length=64, description="'text', 'image_url', 'input_audio'...")
    text: str | None = Field(None, description="The text of a 'text' part.")


class FunctionDefinition(_Passthrough):
    """A function the model may call (``tools[].function`` or legacy ``functions[]``)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.-]+$")
    description: str | None = Field(None, max_length=100_000)
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Passthrough):
    """One tool definition; only functions exist in the API."""

    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(BaseModel):
    """``stream_options``."""

    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool | None = None


class _Sampling(_Passthrough):
    """Sampling parameters both completion endpoints share, in the API's documented ranges."""

    stream: StrictBool = False
    n: StrictInt | None = Field(None, ge=1, le=16, description="How many choices (each checked).")
    temperature: _Temperature | None = None
    top_p: _Probability | None = None
    max_tokens: _Tokens | None = None
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None
    seed: StrictInt | None = None
    stop: _Stop | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)


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


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: _Tokens | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[FunctionDefinition] | None = Field(None, max_length=128)
    function_call: Literal["none", "auto"] | dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    """``POST /v1/completions`` (legacy completions): one prompt per request."""

    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] = Field(description="A prompt, or a list holding one prompt.")
    logprobs: StrictInt | None = Field(None, ge=0, le=5)
    echo: StrictBool | None = None
    best_of: StrictInt | None = Field(None, ge=1, le=16)


class ModerationRequest(BaseModel):
    """``POST /v1/moderations``."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] = Field(description="Text, or a list of texts (at most 64).")
    model: str | None = Field(None, max_length=256)


__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "ContentPart",
    "FunctionDefinition",
    "ModerationRequest",
    "StreamOptions",
    "Tool",
]
