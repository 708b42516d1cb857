"""OpenAI-style error bodies, and the exception the proxy raises to answer with one.

Every error the proxy sends has the shape the official clients parse::

    {"error": {"message": ..., "type": ..., "param": ..., "code": ..., "request_id": ...}}

so ``openai`` raises its usual ``BadRequestError``, ``AuthenticationError``... Tracebacks
never reach a response: unexpected exceptions become a 500 with the request id only.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from guardrails.exceptions import GuardrailsError

# OpenAI's error ``type`` for each status the proxy answers with.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


class ProxyHTTPError(GuardrailsError):
    """Answer the request with ``status`` and an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type or _TYPES.get(status, "api_error")
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        """The JSON body: ``{"error": {...}}``."""
        return error_body(
            self.message,
            error_type=self.error_type,
            code=self.code,
            param=self.param,
            request_id=request_id,
            extra=self.extra,
        )

    def response(self, request_id: str | None) -> JSONResponse:
        """A JSON response carrying this error."""
        return JSONResponse(self.body(request_id), status_code=self.status, headers=self.headers)


def error_body(
    message: str,
    *,
    error_type: str,
    code: str | None = None,
    param: str | None = None,
    request_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An OpenAI-style error body; ``extra`` adds fields (rule ids) beside the standard ones."""
    error: dict[str, Any] = {"message": message, "type": error_type, "param": param, "code": code}
    if request_id is not None:
        error["request_id"] = request_id
    if extra:
        error.update(extra)
    return {"error": error}


def error_type_for(status: int) -> str:
    """The OpenAI error ``type`` the proxy uses for ``status``."""
    return _TYPES.get(status, "api_error")


__all__ = [
    "ProxyHTTPError",
    "error_body",
    "error_type_for",
]
