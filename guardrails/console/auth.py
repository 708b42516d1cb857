"""Who is looking: console sessions signed for one admin API key, and the tenants it may see.

A reviewer logs in with an admin API key (the same keys file the proxy uses). The console
never stores the key: the session cookie holds ``key_id.expiry.signature``, an HMAC over the
key id, the stored hash of the key and the expiry under a server secret. Every request looks
the key up again, so a revoked or demoted key loses the console within the keys file's
reload interval, and a cookie for one key cannot be turned into another's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the proxy package imports the console: no import back at run time
    from guardrails.proxy.keys import ApiKey, KeyRing

__all__ = [
    "SECRET_ENV",
    "SESSION_COOKIE",
    "ConsoleUser",
    "SessionSigner",
    "console_secret",
    "may_use_console",
]

SESSION_COOKIE = "guardrails_console"
SECRET_ENV = "GUARDRAILS_CONSOLE_SECRET"
_SESSION_S = 8 * 3600


def console_secret() -> bytes:
    """The session secret: ``$GUARDRAILS_CONSOLE_SECRET``, else a fresh random one.

    A fresh secret is also put into the environment, so worker processes started after
    this call (``serve --workers N``) share it and a session works on every worker.
    """
    value = os.environ.get(SECRET_ENV)
    if not value:
        value = secrets.token_hex(32)
        os.environ[SECRET_ENV] = value
    return value.encode("utf-8")


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """A logged-in admin key: its id, and its tenant (``None``: every tenant)."""

    key_id: str
    tenant: str | None

    def may_see(self, tenant: str | None) -> bool:
        """Whether events of ``tenant`` are visible to this user."""
        return self.tenant is None or tenant == self.tenant

    @property
    def label(self) -> str:
        """How the page header names this user."""
        return f"key {self.key_id} · " + (
            "all tenants" if self.tenant is None else f"tenant {self.tenant}"
        )


def _role(key: ApiKey) -> str:
    return key.role_of  # from the key's role, or (older files) its admin flag and tenant


def may_use_console(key: ApiKey) -> bool:
    """Operators and tenant admins may use the console; client keys may not."""
    return _role(key) in ("operator", "tenant_admin")


def _user(key: ApiKey) -> ConsoleUser:
    """An operator sees every tenant; a tenant admin only its own."""
    return ConsoleUser(key.key_id, None if _role(key) == "operator" else key.tenant)


class SessionSigner:
    """Issues and checks session cookies against the keys of a `KeyRing`."""

    def __init__(self, secret: bytes, keys: Callable[[], KeyRing | None]) -> None:
        self._secret = secret
        self._keys = keys

    def _sign(self, key: ApiKey, expiry: int) -> str:
        message = f"{key.key_id}.{key.sha256}.{expiry}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def login(self, presented: str) -> tuple[ConsoleUser, str] | None:
        """The user and cookie value for an active admin key; None for anything else."""
        ring = self._keys()
        key = ring.lookup(presented.strip()) if ring is not None else None
        if key is None or not may_use_console(key):
            return None
        expiry = int(time.time()) + _SESSION_S
        return _user(key), f"{key.key_id}.{expiry}.{self._sign(key, expiry)}"

    def user(self, cookie: str | None) -> ConsoleUser | None:
        """The user a cookie stands for, or None (bad, expired, revoked or not admin)."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        key_id, expiry_text, signature = parts
        expiry = int(expiry_text)
        if expiry < time.time():
            return None
        ring = self._keys()
        if ring is None:
            return None
        for key in ring.keys:
            if key.key_id == key_id and key.active and may_use_console(key):
                if hmac.compare_digest(self._sign(key, expiry), signature):
                    return _user(key)
                return None
        return None

    def bearer(self, presented: str) -> ConsoleUser | None:
        """The user for an ``Authorization: Bearer`` admin key (scripts, exports)."""
        ring = self._keys()
        key = ring.lookup(presented.strip()) if ring is not None else None
        return _user(key) if key is not None and may_use_console(key) else None
