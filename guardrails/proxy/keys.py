"""Client API keys: a JSON file of key hashes, each mapping to a tenant and a policy.

A key is shown once when it is created (``guardrails keys add``); the file keeps only its
SHA-256, which is enough for keys of 256 random bits (no slow hash is needed against
guessing). The proxy re-reads the file when it changes, so a revoked key stops working
within the reload interval without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from guardrails.exceptions import GuardrailsError

KEY_PREFIX = "grk-"
ALL_TENANTS = "*"

#: A key's role: ``client`` calls the API; ``tenant_admin`` also reads and reloads what
#: belongs to its own tenant; ``operator`` (tenant ``*``) runs the server: every tenant,
#: server paths, all-tenant metrics.
ROLES = ("client", "tenant_admin", "operator")


class KeysFileError(GuardrailsError, ValueError):
    """The keys file cannot be read or does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One stored key: never the key itself, only its hash.

    ``policy`` is the policy this key's calls run under (``None``: the server's default).
    ``role`` is one of `ROLES`; files written before roles existed have only ``admin``,
    read as ``operator`` for tenant ``*`` and ``tenant_admin`` otherwise (see `role_of`).
    """

    key_id: str
    sha256: str
    tenant: str
    policy: str | None
    admin: bool
    created_at: str
    revoked_at: str | None = None
    role: str | None = None

    @property
    def role_of(self) -> str:
        """The key's role (`ROLES`), from ``role`` or, for old records, ``admin``/``tenant``."""
        if self.role in ROLES:
            return self.role
        if not self.admin:
            return "client"
        return "operator" if self.tenant == ALL_TENANTS else "tenant_admin"

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """The keys of one keys file, indexed by hash. Reload with `reload_if_changed`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._by_hash: dict[str, ApiKey] = {}
        self._keys: list[ApiKey] = []
        self._stamp: tuple[int, int] | None = None
        self.reload_if_changed()

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        """Every key in the file, revoked ones included."""
        return tuple(self._keys)

    def lookup(self, presented: str) -> ApiKey | None:
        """The active key matching ``presented``, or ``None``."""
        if not presented.startswith(KEY_PREFIX):
            return None
        found = self._by_hash.get(hash_key(presented))
        return found if found is not None and found.active else None

    def reload_if_changed(self) -> bool:
        """Re-read the file when its size or mtime changed; True when it was re-read.

        A file that no longer parses keeps the last good keys in force (and raises).
        """
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stamp = (-1, -1)
        else:
            stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        keys = read_keys(self.path)
        self._keys = keys
        self._by_hash = {k.sha256: k for k in keys}
        self._stamp = stamp
        return True


def read_keys(path: Path) -> list[ApiKey]:
    """Every key in ``path`` (an empty list when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeysFileError(f"cannot read keys file {path}: {exc}") from exc
    try:
        data = json.loads(text)
        return [ApiKey(**entry) for entry in data["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeysFileError(f"keys file {path} is malformed: {exc}") from exc


def write_keys(path: Path, keys: list[ApiKey]) -> None:
    """Replace ``path`` atomically with ``keys`` (mode 0600: hashes are still worth hiding)."""
    payload = json.dumps({"version": 1, "keys": [asdict(k) for k in keys]}, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_key(
    path: Path,
    *,
    tenant: str,
    policy: str | None = None,
    admin: bool = False,
    role: str | None = None,
) -> tuple[str, ApiKey]:
    """Create a key, store its hash in ``path`` and return ``(key, record)``.

    ``role`` is one of `ROLES`; without it, ``admin`` means ``operator`` for tenant ``*``
    and ``tenant_admin`` otherwise. The key is returned only here; it cannot be recovered
    from the file.
    """
    if not tenant.strip():
        raise KeysFileError("tenant must not be empty")
    if role is None:
        role = ("operator" if tenant == ALL_TENANTS else "tenant_admin") if admin else "client"
    if role not in ROLES:
        raise KeysFileError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if (role == "operator") != (tenant == ALL_TENANTS):
        raise KeysFileError(
            "an operator key has tenant '*', and a key of tenant '*' is an operator key"
        )
    admin = role != "client"
    keys = read_keys(path)
    key_id = secrets.token_hex(4)
    while any(k.key_id == key_id for k in keys):
        key_id = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
    record = ApiKey(
        key_id=key_id,
        sha256=hash_key(key),
        tenant=tenant,
        policy=policy,
        admin=admin,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        role=role,
    )
    write_keys(path, [*keys, record])
    return key, record


def revoke_key(path: Path, key_id: str) -> ApiKey:
    """Mark ``key_id`` revoked (kept in the file, for the record) and return it."""
    keys = read_keys(path)
    for index, key in enumerate(keys):
        if key.key_id == key_id:
            if not key.active:
                return key
            revoked = ApiKey(
                **{**asdict(key), "revoked_at": datetime.now(UTC).isoformat(timespec="seconds")}
            )
            keys[index] = revoked
            write_keys(path, keys)
            return revoked
    raise KeysFileError(f"no key with id {key_id!r} in {path}")


__all__ = [
    "ALL_TENANTS",
    "KEY_PREFIX",
    "ROLES",
    "ApiKey",
    "KeyRing",
    "KeysFileError",
    "add_key",
    "hash_key",
    "read_keys",
    "revoke_key",
    "write_keys",
]
