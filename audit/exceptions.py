"""Every error the audit package raises, in one tree.

```
AuditError                      base: catch this to handle any audit failure
├── AuditStoreError             the store is unreachable, or a read or write failed there
│                               (an outage; the guard's ``on_error`` decides what happens)
├── AuditConfigError            a bad URL, an unsupported store, a missing migrations folder,
│                               an unknown revision: nothing was attempted
├── AuditEventError             this event cannot be recorded as given (not JSON-encodable,
│                               a naive datetime, a NUL character, an unrecorded policy digest)
├── AuditIntegrityError         the store holds data that contradicts the call (one policy
│                               digest with two different texts)
└── AuditClosedError            the writer or store was closed before the call
```

A failed hash-chain verification is not an exception: `audit.verify_chain` returns a
`VerifyReport` whose ``problems`` say which row is bad.
"""

from __future__ import annotations

__all__ = [
    "AuditClosedError",
    "AuditConfigError",
    "AuditError",
    "AuditEventError",
    "AuditIntegrityError",
    "AuditStoreError",
]


class AuditError(Exception):
    """Base class of every error raised by the audit package."""


class AuditStoreError(AuditError):
    """The audit store is unreachable, or a read or write against it failed."""


class AuditConfigError(AuditError):
    """The audit configuration is unusable (URL, store kind, migrations, revision)."""


class AuditEventError(AuditError, ValueError):
    """An event cannot be recorded as given; the message names the field and the problem."""


class AuditIntegrityError(AuditError):
    """The store already holds data that contradicts this call."""


class AuditClosedError(AuditError):
    """The writer or store was already closed."""
