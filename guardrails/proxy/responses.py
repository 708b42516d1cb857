"""What a caller can read, checked as one text, and responses rebuilt from an allow-list.

An upstream answer can carry text in many places: each choice's ``content``,
``reasoning_content``, ``refusal``, tool-call names and arguments, the legacy
``function_call``, and the tokens of ``logprobs``. `Readable` lists every such place (a
`Field`) of one answer and joins their texts, separated by blank lines, into the one output
text the guard checks and audits. The output verdict's findings carry spans in that joined
text, so `Readable.checked` maps each redaction back onto the field it covers (a span that
crosses a field's edge redacts both sides): nothing is released that the whole-text check
would have edited.

Responses are then built field by field from what is known (`build_chat`,
`build_completion`): anything else the upstream sent is dropped. ``logprobs`` are kept only
when no field of their choice was edited and their tokens spell exactly the released text;
otherwise they are dropped (``null``).

`StreamAssembler` turns an upstream's SSE chunks back into one answer, for streams whose
parts cannot be released before they are complete (tool calls, ``n > 1``, logprobs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from guardrails.decision import Finding, Span, Verdict, apply_redactions
from guardrails.proxy.upstream import UpstreamError

CHAT = "chat/completions"
COMPLETIONS = "completions"

#: Between two fields in the checked text: a blank line, so a phrase rule never joins them.
SEPARATOR = "\n\n"

_TEXT_KEYS = ("content", "reasoning_content", "refusal")
_MAX_CHOICES = 128


@dataclass(frozen=True, slots=True)
class Field:
    """One place of an answer a caller can read: ``choice`` and ``key`` say where."""

    choice: int
    key: tuple[str | int, ...]
    text: str


@dataclass(slots=True)
class Readable:
    """Every readable text of one answer, in a fixed order, and their joined form."""

    fields: list[Field] = field(default_factory=list)

    def add(self, choice: int, key: tuple[str | int, ...], text: object) -> None:
        """Add a field; ``None`` and ``""`` are skipped, anything else must be a string."""
        if text is None or text == "":
            return
        if not isinstance(text, str):
            raise UpstreamError(502, f"the upstream's {'.'.join(map(str, key))} is not text")
        self.fields.append(Field(choice, key, text))

    @property
    def joined(self) -> str:
        """The text the guard checks (and the audit log stores) for this answer."""
        return SEPARATOR.join(f.text for f in self.fields)

    def checked(self, verdict: Verdict) -> dict[tuple[int, tuple[str | int, ...]], str]:
        """Each field's text with the verdict's redactions applied to its own part."""
        findings = [f for f in verdict.findings if f.span is not None]
        out: dict[tuple[int, tuple[str | int, ...]], str] = {}
        start = 0
        for item in self.fields:
            end = start + len(item.text)
            clipped: list[Finding] = []
            for finding in findings:
                span = finding.span
                assert span is not None
                lo, hi = max(span.start, start), min(span.end, end)
                if lo < hi:
                    clipped.append(replace(finding, span=Span(lo - start, hi - start)))
            out[(item.choice, item.key)] = apply_redactions(item.text, clipped)
            start = end + len(SEPARATOR)
        return out

    def edited_choices(self, checked: Mapping[tuple[int, tuple[str | int, ...]], str]) -> set[int]:
        """The choices at least one of whose fields the check changed."""
        return {f.choice for f in self.fields if checked[(f.choice, f.key)] != f.text}


def _choices(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or len(choices) > _MAX_CHOICES:
        raise UpstreamError(502, "the upstream's answer has no choices")
    if not all(isinstance(c, dict) for c in choices):
        raise UpstreamError(502, "the upstream's choices are not objects")
    return choices


def _index(choice: Mapping[str, Any], position: int) -> int:
    index = choice.get("index", position)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < _MAX_CHOICES:
        raise UpstreamError(502, "the upstream sent a choice without a valid index")
    return index


def _tool_calls(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise UpstreamError(502, "the upstream's tool_calls are malformed")
    return calls


def _function(entry: Mapping[str, Any]) -> dict[str, Any]:
    function = entry.get("function")
    if not isinstance(function, dict):
        raise UpstreamError(502, "the upstream sent a tool call without a function")
    return function


def _chat_logprob_tokens(logprobs: object) -> tuple[dict[str, list[str]], list[str]]:
    """Chosen tokens per list (``content``, ``refusal``) and every alternative token."""
    chosen: dict[str, list[str]] = {}
    alternatives: list[str] = []
    if not isinstance(logprobs, dict):
        return chosen, alternatives
    for name in ("content", "refusal"):
        entries = logprobs.get(name)
        if not isinstance(entries, list):
            continue
        tokens = chosen.setdefault(name, [])
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
                raise UpstreamError(502, "the upstream's logprobs are malformed")
            tokens.append(entry["token"])
            for top in entry.get("top_logprobs") or []:
                if not isinstance(top, dict) or not isinstance(top.get("token"), str):
                    raise UpstreamError(502, "the upstream's logprobs are malformed")
                alternatives.append(top["token"])
    return chosen, alternatives


def _completion_logprob_tokens(logprobs: object) -> tuple[list[str], list[str]]:
    if not isinstance(logprobs, dict):
        return [], []
    tokens = logprobs.get("tokens") or []
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise UpstreamError(502, "the upstream's logprobs are malformed")
    alternatives: list[str] = []
    for top in logprobs.get("top_logprobs") or []:
        if isinstance(top, dict):
            alternatives.extend(str(k) for k in top)
    return list(tokens), alternatives


def readable(route: str, data: Mapping[str, Any]) -> Readable:
    """Every text a caller could read in the upstream answer ``data``.

    Raises:
        UpstreamError: 502 when the answer is not shaped like an OpenAI answer.
    """
    out = Readable()
    for position, choice in enumerate(_choices(data)):
        index = _index(choice, position)
        if route == CHAT:
            message = choice.get("message")
            if not isinstance(message, dict):
                raise UpstreamError(502, "the upstream's choice has no message")
            for key in _TEXT_KEYS:
                out.add(index, (key,), message.get(key))
            for i, call in enumerate(_tool_calls(message)):
                function = _function(call)
                out.add(index, ("tool_calls", i, "name"), function.get("name"))
                out.add(index, ("tool_calls", i, "arguments"), function.get("arguments"))
            legacy = message.get("function_call")
            if isinstance(legacy, dict):
                out.add(index, ("function_call", "name"), legacy.get("name"))
                out.add(index, ("function_call", "arguments"), legacy.get("arguments"))
            chosen, alternatives = _chat_logprob_tokens(choice.get("logprobs"))
            for name, tokens in chosen.items():
                spelled = "".join(tokens)
                if spelled != (message.get(name) or ""):
                    out.add(index, ("logprobs", name), spelled)
        else:
            out.add(index, ("text",), choice.get("text"))
            tokens, alternatives = _completion_logprob_tokens(choice.get("logprobs"))
            spelled = "".join(tokens)
            if spelled != (choice.get("text") or ""):
                out.add(index, ("logprobs", "tokens"), spelled)
        if alternatives:
            out.add(index, ("logprobs", "alternatives"), "\n".join(alternatives))
    return out


# --- building responses from the allow-list --------------------------------------------------


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def allowed_usage(value: object) -> dict[str, Any] | None:
    """Token counts only: integers, and one level of ``*_details`` objects of integers."""
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > 64:
            continue
        if isinstance(item, int) and not isinstance(item, bool):
            out[key] = item
        elif isinstance(item, dict) and key.endswith("_details"):
            inner = {
                k: v
                for k, v in item.items()
                if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            }
            out[key] = inner
    return out


def _short_str(value: object, default: str) -> str:
    return value if isinstance(value, str) and len(value) <= 256 else default


def _finish(value: object) -> str | None:
    allowed = ("stop", "length", "tool_calls", "content_filter", "function_call")
    return value if value in allowed else ("stop" if value is not None else None)


def envelope(data: Mapping[str, Any], *, kind: str, fallback_id: str, model: str) -> dict[str, Any]:
    """The top-level fields every answer keeps: id, object, created, model, fingerprint."""
    created = data.get("created")
    out: dict[str, Any] = {
        "id": _short_str(data.get("id"), fallback_id),
        "object": kind,
        "created": created if isinstance(created, int) and not isinstance(created, bool) else 0,
        "model": _short_str(data.get("model"), model),
    }
    fingerprint = data.get("system_fingerprint")
    if isinstance(fingerprint, str) and len(fingerprint) <= 256:
        out["system_fingerprint"] = fingerprint
    return out


def _chat_logprob_entries(entries: object) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for entry in entries if isinstance(entries, list) else []:
        token = entry["token"]
        tops = []
        for top in entry.get("top_logprobs") or []:
            tops.append(
                {
                    "token": top["token"],
                    "logprob": _number(top.get("logprob")),
                    "bytes": list(top["token"].encode()),
                }
            )
        out.append(
            {
                "token": token,
                "logprob": _number(entry.get("logprob")),
                "bytes": list(token.encode()),
                "top_logprobs": tops,
            }
        )
    return out


def _chat_logprobs(raw: object, released: Mapping[str, str]) -> dict[str, Any] | None:
    """The choice's logprobs rebuilt, or ``None`` unless their tokens spell the released text."""
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for name in ("content", "refusal"):
        entries = raw.get(name)
        if entries is None:
            out[name] = None
            continue
        rebuilt = _chat_logprob_entries(entries)
        if "".join(e["token"] for e in rebuilt) != released.get(name, ""):
            return None
        out[name] = rebuilt
    return out


@dataclass(frozen=True, slots=True)
class Checked:
    """The check's outcome for one answer: the fields to release, or a refusal."""

    texts: Mapping[tuple[int, tuple[str | int, ...]], str]
    edited: frozenset[int]
    refused: bool
    refusal: str


def check_result(readable_: Readable, verdict: Verdict | None, refusal: str) -> Checked:
    """Map an output verdict onto the fields (``verdict`` is ``None`` only for no output)."""
    if verdict is None:
        return Checked({}, frozenset(), False, refusal)
    if verdict.blocked:
        return Checked({}, frozenset(), True, refusal)
    texts = readable_.checked(verdict)
    return Checked(texts, frozenset(readable_.edited_choices(texts)), False, refusal)


def build_chat(
    data: Mapping[str, Any], checked: Checked, *, fallback_id: str, model: str
) -> dict[str, Any]:
    """A ``chat.completion`` built only from allowed fields and checked texts."""
    body = envelope(data, kind="chat.completion", fallback_id=fallback_id, model=model)
    choices = []
    for position, choice in enumerate(_choices(data)):
        index = _index(choice, position)
        raw = choice.get("message") or {}
        message: dict[str, Any] = {"role": "assistant"}
        if checked.refused:
            message["content"] = checked.refusal
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": "content_filter",
                    "logprobs": None,
                }
            )
            continue
        texts = checked.texts
        content = raw.get("content")
        message["content"] = texts.get((index, ("content",)), "") if content is not None else None
        for key in ("reasoning_content", "refusal"):
            if raw.get(key) is not None:
                message[key] = texts.get((index, (key,)), "")
        calls = []
        for i, call in enumerate(_tool_calls(raw)):
            _function(call)
            calls.append(
                {
                    "id": _short_str(call.get("id"), f"call_{index}_{i}"),
                    "type": "function",
                    "function": {
                        "name": texts.get((index, ("tool_calls", i, "name")), ""),
                        "arguments": texts.get((index, ("tool_calls", i, "arguments")), ""),
                    },
                }
            )
        if calls:
            message["tool_calls"] = calls
        if isinstance(raw.get("function_call"), dict):
            message["function_call"] = {
                "name": texts.get((index, ("function_call", "name")), ""),
                "arguments": texts.get((index, ("function_call", "arguments")), ""),
            }
        logprobs = None
        if index not in checked.edited:
            released = {
                "content": message.get("content") or "",
                "refusal": message.get("refusal") or "",
            }
            logprobs = _chat_logprobs(choice.get("logprobs"), released)
        choices.append(
            {
                "index": index,
                "message": message,
                "finish_reason": _finish(choice.get("finish_reason")),
                "logprobs": logprobs,
            }
        )
    body["choices"] = choices
    usage = allowed_usage(data.get("usage"))
    if usage is not None:
        body["usage"] = usage
    return body


def _completion_logprobs(raw: object, released: str) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    tokens = raw.get("tokens")
    if not isinstance(tokens, list) or "".join(tokens) != released:
        return None
    token_logprobs = raw.get("token_logprobs")
    offsets = raw.get("text_offset")
    tops = raw.get("top_logprobs")
    return {
        "tokens": list(tokens),
        "token_logprobs": [_number(v) for v in token_logprobs]
        if isinstance(token_logprobs, list)
        else None,
        "top_logprobs": [
            {str(k): _number(v) for k, v in top.items()} if isinstance(top, dict) else None
            for top in tops
        ]
        if isinstance(tops, list)
        else None,
        "text_offset": [int(v) for v in offsets if isinstance(v, int) and not isinstance(v, bool)]
        if isinstance(offsets, list)
        else None,
    }


def build_completion(
    data: Mapping[str, Any], checked: Checked, *, fallback_id: str, model: str
) -> dict[str, Any]:
    """A ``text_completion`` built only from allowed fields and checked texts."""
    body = envelope(data, kind="text_completion", fallback_id=fallback_id, model=model)
    choices = []
    for position, choice in enumerate(_choices(data)):
        index = _index(choice, position)
        if checked.refused:
            choices.append(
                {
                    "index": index,
                    "text": checked.refusal,
                    "finish_reason": "content_filter",
                    "logprobs": None,
                }
            )
            continue
        text = checked.texts.get((index, ("text",)), "")
        logprobs = (
            _completion_logprobs(choice.get("logprobs"), text)
            if index not in checked.edited
            else None
        )
        choices.append(
            {
                "index": index,
                "text": text,
                "finish_reason": _finish(choice.get("finish_reason")),
                "logprobs": logprobs,
            }
        )
    body["choices"] = choices
    usage = allowed_usage(data.get("usage"))
    if usage is not None:
        body["usage"] = usage
    return body


# --- streams that must be complete before anything is released -------------------------------


@dataclass(slots=True)
class _ChoiceParts:
    texts: dict[str, list[str]] = field(default_factory=dict)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    legacy: dict[str, list[str]] | None = None
    logprobs: dict[str, list[Any]] = field(default_factory=dict)
    completion_logprobs: dict[str, list[Any]] | None = None
    finish_reason: object = None


@dataclass(slots=True)
class StreamAssembler:
    """Rebuilds one plain answer from an upstream's stream chunks."""

    route: str
    meta: dict[str, Any] = field(default_factory=dict)
    usage: object = None
    choices: dict[int, _ChoiceParts] = field(default_factory=dict)

    def feed(self, event: Mapping[str, Any]) -> None:
        """Take one SSE ``data`` object."""
        if not self.meta:
            self.meta = {
                k: event[k] for k in ("id", "created", "model", "system_fingerprint") if k in event
            }
        if event.get("usage") is not None:
            self.usage = event["usage"]
        choices = event.get("choices")
        if not isinstance(choices, list):
            return
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise UpstreamError(502, "the upstream sent a malformed stream chunk")
            parts = self.choices.setdefault(_index(choice, position), _ChoiceParts())
            if choice.get("finish_reason") is not None:
                parts.finish_reason = choice["finish_reason"]
            if self.route == CHAT:
                self._feed_chat(parts, choice)
            else:
                self._feed_completion(parts, choice)

    @staticmethod
    def _piece(value: object) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise UpstreamError(502, "the upstream sent a non-text stream delta")
        return value

    def _feed_chat(self, parts: _ChoiceParts, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        for key in _TEXT_KEYS:
            piece = self._piece(delta.get(key))
            if piece or (key in delta and delta[key] is not None):
                parts.texts.setdefault(key, []).append(piece)
        for position, call in enumerate(_tool_calls(delta)):
            slot = call.get("index", position)
            if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < 128:
                raise UpstreamError(502, "the upstream sent a tool call without a valid index")
            entry = parts.calls.setdefault(slot, {"id": None, "name": [], "arguments": []})
            if isinstance(call.get("id"), str):
                entry["id"] = call["id"]
            function = call.get("function")
            if isinstance(function, dict):
                entry["name"].append(self._piece(function.get("name")))
                entry["arguments"].append(self._piece(function.get("arguments")))
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            parts.legacy = parts.legacy or {"name": [], "arguments": []}
            parts.legacy["name"].append(self._piece(legacy.get("name")))
            parts.legacy["arguments"].append(self._piece(legacy.get("arguments")))
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            for name in ("content", "refusal"):
                entries = logprobs.get(name)
                if isinstance(entries, list):
                    parts.logprobs.setdefault(name, []).extend(entries)

    def _feed_completion(self, parts: _ChoiceParts, choice: Mapping[str, Any]) -> None:
        parts.texts.setdefault("text", []).append(self._piece(choice.get("text")))
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            acc = parts.completion_logprobs = parts.completion_logprobs or {
                "tokens": [],
                "token_logprobs": [],
                "top_logprobs": [],
                "text_offset": [],
            }
            for key, values in acc.items():
                more = logprobs.get(key)
                if isinstance(more, list):
                    values.extend(more)

    def answer(self) -> dict[str, Any]:
        """The assembled answer, shaped like a plain (non-streaming) one."""
        choices: list[dict[str, Any]] = []
        for index in sorted(self.choices):
            parts = self.choices[index]
            texts = {k: "".join(v) for k, v in parts.texts.items()}
            if self.route == CHAT:
                message: dict[str, Any] = {"role": "assistant", **texts}
                message.setdefault("content", None)
                if parts.calls:
                    message["tool_calls"] = [
                        {
                            "id": entry["id"],
                            "type": "function",
                            "function": {
                                "name": "".join(entry["name"]),
                                "arguments": "".join(entry["arguments"]),
                            },
                        }
                        for _, entry in sorted(parts.calls.items())
                    ]
                if parts.legacy is not None:
                    message["function_call"] = {k: "".join(v) for k, v in parts.legacy.items()}
                choice: dict[str, Any] = {
                    "index": index,
                    "message": message,
                    "finish_reason": parts.finish_reason,
                    "logprobs": dict(parts.logprobs) if parts.logprobs else None,
                }
            else:
                choice = {
                    "index": index,
                    "text": texts.get("text", ""),
                    "finish_reason": parts.finish_reason,
                    "logprobs": parts.completion_logprobs,
                }
            choices.append(choice)
        if not choices:
            raise UpstreamError(502, "the upstream's stream has no choices")
        return {**self.meta, "choices": choices, "usage": self.usage}


def chunks_of(route: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A checked plain answer as stream chunks: per choice one chunk with every part, then
    one with its finish reason."""
    meta = {k: body[k] for k in ("id", "created", "model", "system_fingerprint") if k in body}
    kind = "chat.completion.chunk" if route == CHAT else "text_completion"
    out: list[dict[str, Any]] = []
    for choice in body["choices"]:
        if route == CHAT:
            message = choice["message"]
            delta: dict[str, Any] = {"role": "assistant"}
            for key in ("content", "reasoning_content", "refusal"):
                if message.get(key) is not None:
                    delta[key] = message[key]
            if message.get("tool_calls"):
                delta["tool_calls"] = [
                    {"index": i, **call} for i, call in enumerate(message["tool_calls"])
                ]
            if message.get("function_call"):
                delta["function_call"] = message["function_call"]
            first: dict[str, Any] = {
                "index": choice["index"],
                "delta": delta,
                "finish_reason": None,
                "logprobs": choice.get("logprobs"),
            }
            last: dict[str, Any] = {
                "index": choice["index"],
                "delta": {},
                "finish_reason": choice["finish_reason"],
            }
        else:
            first = {
                "index": choice["index"],
                "text": choice["text"],
                "finish_reason": None,
                "logprobs": choice.get("logprobs"),
            }
            last = {
                "index": choice["index"],
                "text": "",
                "finish_reason": choice["finish_reason"],
                "logprobs": None,
            }
        out.append({**meta, "object": kind, "choices": [first]})
        out.append({**meta, "object": kind, "choices": [last]})
    return out


__all__: list[str] = [
    "CHAT",
    "COMPLETIONS",
    "SEPARATOR",
    "Checked",
    "Field",
    "Readable",
    "StreamAssembler",
    "allowed_usage",
    "build_chat",
    "build_completion",
    "check_result",
    "chunks_of",
    "envelope",
    "readable",
]
