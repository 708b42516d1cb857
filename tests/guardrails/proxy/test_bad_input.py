"""Bad requests are 4xx with an OpenAI-style error body: never a 500, never a traceback."""

from __future__ import annotations

import httpx
import pytest

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "say: hi"}]}


@pytest.fixture
def post(proxy, keys):
    """POST raw bytes to a proxy path with tenant A's key."""

    def send(path, content, content_type="application/json", **headers):
        return httpx.post(
            f"{proxy.url}{path}",
            content=content,
            headers={
                "Authorization": f"Bearer {keys.tenant_a}",
                "Content-Type": content_type,
                **headers,
            },
            timeout=10,
        )

    return send


def _chat_with(field: bytes) -> bytes:
    return (
        b'{"model": "fake-model", "messages": [{"role": "user", "content": "x"}], ' + field + b"}"
    )


CASES = [
    ("malformed-json", "/chat/completions", b'{"model": "fake-model", "messages": [', 400),
    (
        "invalid-utf8",
        "/chat/completions",
        b'{"model": "fake-model", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        400,
    ),
    ("wrong-type", "/chat/completions", b'{"model": 3, "messages": "hi"}', 400),
    ("missing-field", "/chat/completions", b'{"model": "fake-model"}', 400),
    ("empty-messages", "/chat/completions", b'{"model": "fake-model", "messages": []}', 400),
    (
        "bad-role",
        "/chat/completions",
        b'{"model": "fake-model", "messages": [{"role": "god", "content": "x"}]}',
        400,
    ),
    (
        "unknown-model",
        "/chat/completions",
        b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}',
        400,
    ),
    (
        "tool-without-function",
        "/chat/completions",
        b'{"model": "fake-model", "tools": [{"type": "function"}],'
        b' "messages": [{"role": "user", "content": "x"}]}',
        400,
    ),
    ("stream-yes", "/chat/completions", _chat_with(b'"stream": "yes"'), 400),
    ("nan-temperature", "/chat/completions", _chat_with(b'"temperature": NaN'), 400),
    ("infinite-top-p", "/chat/completions", _chat_with(b'"top_p": Infinity'), 400),
    ("negative-max-tokens", "/chat/completions", _chat_with(b'"max_tokens": -1'), 400),
    ("string-n", "/chat/completions", _chat_with(b'"n": "2"'), 400),
    ("n-too-large", "/chat/completions", _chat_with(b'"n": 1000'), 400),
    ("top-logprobs-99", "/chat/completions", _chat_with(b'"top_logprobs": 99'), 400),
    ("bad-tool-choice", "/chat/completions", _chat_with(b'"tool_choice": "always"'), 400),
    (
        "completion-stream-yes",
        "/completions",
        b'{"model": "fake-model", "prompt": "x", "stream": "yes"}',
        400,
    ),
    ("not-an-object", "/chat/completions", b"[1, 2, 3]", 400),
    ("two-prompts", "/completions", b'{"model": "fake-model", "prompt": ["a", "b"]}', 400),
    ("moderation-empty", "/moderations", b'{"input": []}', 400),
    ("moderation-extra", "/moderations", b'{"input": "x", "bogus": 1}', 400),
]


@pytest.mark.parametrize(
    ("path", "body", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_is_clear_4xx(post, path, body, status):
    """Each malformed request gets the expected 4xx with an OpenAI-style error."""
    response = post(path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    assert error["type"]
    assert "Traceback" not in response.text


def test_too_many_messages(post):
    """More messages than the configured limit is a 400 naming the limit."""
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}] * 17}
    import json

    response = post("/chat/completions", json.dumps(body).encode())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_messages"


def test_huge_body_is_413(post):
    """A body over the limit is refused with 413 before it is parsed."""
    response = post("/chat/completions", b"x" * 300_000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_huge_chunked_body_is_413(proxy, keys):
    """A chunked body (no Content-Length) over the limit is refused too."""

    def body():
        for _ in range(40):
            yield b"x" * 10_000

    response = httpx.post(
        f"{proxy.url}/chat/completions",
        content=body(),
        headers={"Authorization": f"Bearer {keys.tenant_a}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413


def test_unknown_path_is_404_openai_style(proxy, keys):
    """An unknown path is a 404 with an OpenAI error body."""
    response = httpx.get(
        f"{proxy.url}/nothing", headers={"Authorization": f"Bearer {keys.tenant_a}"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_wrong_method_is_405(proxy, keys):
    """GET on a POST route is 405, not 500."""
    response = httpx.get(
        f"{proxy.url}/chat/completions", headers={"Authorization": f"Bearer {keys.tenant_a}"}
    )
    assert response.status_code == 405
