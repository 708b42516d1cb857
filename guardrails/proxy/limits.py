"""Per-key and per-tenant limits: requests and tokens per minute, and the largest prompt.

Limits come from ``ProxyConfig.limits``: a mapping from tenant (``"*"`` for every tenant
not named) to `Limits`. Counters live in fixed one-minute windows. With ``redis_url`` they
live in Redis, so every worker and every replica behind a load balancer shares them;
without it each worker counts on its own (the limits are then per worker).

A request over a limit is answered 429 in the OpenAI error shape with ``Retry-After`` (the
seconds until the window ends). Requests are counted when admitted; tokens are counted as
the prompt is admitted (an estimate: characters / 4) and the completion when it is done
(the upstream's ``usage`` when it reports one), so a tenant over its token budget is
refused from its next request on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from guardrails.logs import get_logger
from guardrails.proxy.errors import ProxyHTTPError

if TYPE_CHECKING:
    from guardrails.proxy.pipeline import Caller

log = get_logger("guardrails.proxy")

WINDOW_S = 60
_FIELDS = ("key_rpm", "key_tpm", "tenant_rpm", "tenant_tpm", "max_prompt_chars")


@dataclass(frozen=True, slots=True)
class Limits:
    """One tenant's limits; ``None`` means unlimited."""

    key_rpm: int | None = None
    key_tpm: int | None = None
    tenant_rpm: int | None = None
    tenant_tpm: int | None = None
    max_prompt_chars: int | None = None

    @classmethod
    def parse(cls, where: str, raw: object) -> Limits:
        """Limits from a JSON object; raises ``ValueError`` naming ``where`` and the field."""
        if not isinstance(raw, dict):
            raise ValueError(f"limits[{where!r}] must be an object")
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise ValueError(f"limits[{where!r}]: unknown field(s) {', '.join(unknown)}")
        for name, value in raw.items():
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value <= 0
            ):
                raise ValueError(f"limits[{where!r}].{name} must be a positive integer")
        return cls(**raw)


def parse_limits(raw: object) -> dict[str, Limits]:
    """``{tenant: Limits}`` from the JSON form (``{"*": {...}, "acme": {...}}``)."""
    if not isinstance(raw, dict):
        raise ValueError("limits must be an object of tenant -> limits")
    return {str(tenant): Limits.parse(str(tenant), value) for tenant, value in raw.items()}


def estimate_tokens(chars: int) -> int:
    """A token estimate for ``chars`` characters (about four per token in English)."""
    return chars // 4 + 1


class Counters(Protocol):
    """**Protocol:** windowed counters (`MemoryCounters`, `RedisCounters`)."""

    async def add(self, key: str, amount: int) -> int: ...

    async def get(self, key: str) -> int: ...

    async def close(self) -> None: ...


class MemoryCounters:
    """Counters of this worker only."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}
        self._window = -1

    def _roll(self) -> None:
        window = int(time.time()) // WINDOW_S
        if window != self._window:  # old windows are never read again
            self._values = {k: v for k, v in self._values.items() if k.endswith(f":{window}")}
            self._window = window

    async def add(self, key: str, amount: int) -> int:
        self._roll()
        self._values[key] = self._values.get(key, 0) + amount
        return self._values[key]

    async def get(self, key: str) -> int:
        self._roll()
        return self._values.get(key, 0)

    async def close(self) -> None:
        return None


class RedisCounters:
    """Counters in Redis, shared by every worker and replica using the same server."""

    def __init__(self, url: str, *, prefix: str = "guardrails:limits") -> None:
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix

    async def add(self, key: str, amount: int) -> int:
        name = f"{self._prefix}:{key}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(name, amount)
            pipe.expire(name, WINDOW_S * 2)
            value, _ = await pipe.execute()
        return int(value)

    async def get(self, key: str) -> int:
        value = await self._redis.get(f"{self._prefix}:{key}")
        return int(value) if value is not None else 0

    async def close(self) -> None:
        await self._redis.aclose()


def _retry_after() -> int:
    return WINDOW_S - int(time.time()) % WINDOW_S


class RateLimiter:
    """Admits or refuses requests against the limits of the caller's key and tenant."""

    def __init__(self, limits: dict[str, Limits], counters: Counters) -> None:
        self.limits = limits
        self.counters = counters

    def limits_for(self, tenant: str | None) -> Limits:
        """The tenant's limits, else the ``"*"`` entry, else none."""
        return self.limits.get(tenant or "", self.limits.get("*", Limits()))

    @staticmethod
    def _keys(caller: Caller) -> tuple[str, str]:
        window = int(time.time()) // WINDOW_S
        return (
            f"key:{caller.key_id or 'anonymous'}:{window}",
            f"tenant:{caller.tenant or 'anonymous'}:{window}",
        )

    def _refuse(self, what: str, limit: int) -> ProxyHTTPError:
        return ProxyHTTPError(
            429,
            f"Rate limit reached: {limit} {what} per minute. Retry after the window ends.",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(_retry_after())},
        )

    async def admit(self, caller: Caller, prompt_chars: int) -> None:
        """Count one request (and its prompt's tokens) or raise 429/400.

        Raises:
            ProxyHTTPError: 400 ``prompt_too_large``; 429 ``rate_limit_exceeded``.
        """
        limits = self.limits_for(caller.tenant)
        if limits.max_prompt_chars is not None and prompt_chars > limits.max_prompt_chars:
            raise ProxyHTTPError(
                400,
                f"The prompt has {prompt_chars} characters; this tenant may send at most "
                f"{limits.max_prompt_chars}.",
                code="prompt_too_large",
                param="messages",
            )
        if limits == Limits():
            return
        key, tenant = self._keys(caller)
        tokens = estimate_tokens(prompt_chars)
        try:
            for name, limit, what in (
                (key, limits.key_tpm, "tokens (this key)"),
                (tenant, limits.tenant_tpm, "tokens (this tenant)"),
            ):
                if limit is not None and await self.counters.get(f"t:{name}") >= limit:
                    raise self._refuse(what, limit)
            for name, limit, what in (
                (key, limits.key_rpm, "requests (this key)"),
                (tenant, limits.tenant_rpm, "requests (this tenant)"),
            ):
                if limit is not None and await self.counters.add(f"r:{name}", 1) > limit:
                    raise self._refuse(what, limit)
            if limits.key_tpm is not None or limits.tenant_tpm is not None:
                await self.counters.add(f"t:{key}", tokens)
                await self.counters.add(f"t:{tenant}", tokens)
        except ProxyHTTPError:
            raise
        except Exception as exc:  # a counter store that is down must not stop every call
            log.error("rate_limit_store_failed", error=repr(exc))
            raise ProxyHTTPError(
                503, "The rate-limit store is unavailable.", code="rate_limit_unavailable"
            ) from exc

    async def charge(self, caller: Caller, tokens: int) -> None:
        """Count a finished completion's tokens (best effort: a failure is logged)."""
        limits = self.limits_for(caller.tenant)
        if tokens <= 0 or (limits.key_tpm is None and limits.tenant_tpm is None):
            return
        key, tenant = self._keys(caller)
        try:
            await asyncio.gather(
                self.counters.add(f"t:{key}", tokens), self.counters.add(f"t:{tenant}", tokens)
            )
        except Exception as exc:
            log.error("rate_limit_store_failed", error=repr(exc))

    async def close(self) -> None:
        """Close the counter store."""
        await self.counters.close()


def limiter_for(
    limits: dict[str, Limits], redis_url: str | None, *, prefix: str = "guardrails:limits"
) -> RateLimiter:
    """A limiter on Redis when ``redis_url`` is given, else in this worker's memory."""
    counters: Counters = RedisCounters(redis_url, prefix=prefix) if redis_url else MemoryCounters()
    return RateLimiter(limits, counters)


__all__: list[str] = [
    "WINDOW_S",
    "Counters",
    "Limits",
    "MemoryCounters",
    "RateLimiter",
    "RedisCounters",
    "estimate_tokens",
    "limiter_for",
    "parse_limits",
]
