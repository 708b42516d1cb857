"""Plug the guard into the frameworks teams build with.

- `guardrails.integrations.langchain`: `GuardedChatModel`, any LangChain chat model behind
  the guard (input, output, streaming, tool calls); needs ``langchain-core``.
- `guardrails.integrations.openai`: `guard_openai(client, guard)`, the OpenAI Python
  client's ``chat.completions.create`` guarded in process; needs ``openai``.
- `guardrails.integrations.otel`: `traced(guard)`, an OpenTelemetry span per guarded call
  with child spans for the checks, the generator and the audit write; needs
  ``opentelemetry-api`` (the ``otel`` extra).

Each module imports its framework when imported itself, never from here.
"""

from __future__ import annotations

__all__: list[str] = []
