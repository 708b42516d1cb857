"""The guards a proxy worker serves: one per policy, hot-reloaded when the file changes.

Each policy in use (the server's default, and any a client key names) gets its own `Guard`,
and so its own audit writer chain. A watcher polls the files; a changed file is validated
into a new guard which is swapped in atomically (requests already running finish on the old
one, closed after a grace period). An invalid edit is rejected and the last good policy
stays in force. Both outcomes are written to the audit log (``metadata.event ==
"policy_reload"``) and logged.

`ReloadWatcher` is the poll loop: it can neither die nor hang. Keys and policies are polled
by two independent loops, every failure (an unreadable file, a ``PermissionError``, a bug) is
logged and the last good keys and policies stay in force, and a load that does not finish
within ``load_timeout_s`` is abandoned (rejected for a policy), so a key revocation always
takes effect within the reload interval whatever a policy file does.

`ObservingSink` sits between the guard and its audit writer: it hands the proxy each
call's `audit.AuditEvent` (for the response headers and the metrics) and times the commit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guardrails.exceptions import PolicyError
from guardrails.guard import AuditSink, Guard
from guardrails.logs import get_logger
from guardrails.policy import Policy, load_policy
from guardrails.proxy.keys import KeyRing, KeysFileError
from guardrails.proxy.metrics import Metrics

if TYPE_CHECKING:
    from audit import AuditEvent

log = get_logger("guardrails.proxy")

_GRACE_S = 30.0
#: How long a reload may take before it is abandoned: far more than the bounded loader needs
#: for the largest file it accepts (under 10 s of CPU), even on a busy machine.
LOAD_TIMEOUT_S = 120.0
_MAX_PENDING_EVENTS = 10_000


class ObservingSink:
    """An `AuditSink` that shows each event to the proxy before committing it.

    The guard builds exactly one event per call and writes it before it returns (or, for a
    stream, before the stream ends), so the event is the complete record of the verdicts.
    """

    def __init__(self, inner: AuditSink | None, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self._events: OrderedDict[str, AuditEvent] = OrderedDict()

    def take(self, request_id: str) -> AuditEvent | None:
        """The event of ``request_id``, once; ``None`` when the guard wrote none."""
        return self._events.pop(request_id, None)

    def _observe(self, event: AuditEvent) -> None:
        self._events[event.request_id] = event
        while len(self._events) > _MAX_PENDING_EVENTS:  # callers that never came back
            self._events.popitem(last=False)
        for stage in ("input", "output"):
            action = event.input_action if stage == "input" else event.output_action
            if action is not None:
                self.metrics.inc("guardrails_actions_total", (("stage", stage), ("action", action)))
            total = event.timings_ms.get(f"{stage}.total")
            if total is not None:
                self.metrics.observe("guardrails_stage_seconds", total / 1000, (("stage", stage),))
        for finding in event.findings:
            action = "shadow" if finding.get("shadow") else str(finding.get("action"))
            self.metrics.inc(
                "guardrails_rule_findings_total",
                (("rule", str(finding.get("rule_id"))), ("action", action)),
            )

    def write(self, event: AuditEvent, /, **options: Any) -> object:
        """Observe, then commit synchronously (the guard's sync paths)."""
        self._observe(event)
        if self.inner is None:
            return None
        started = time.perf_counter()
        try:
            return self.inner.write(event, **options)
        finally:
            self.metrics.observe("guardrails_audit_commit_seconds", time.perf_counter() - started)

    async def write_async(self, event: AuditEvent, /, **options: Any) -> object:
        """Observe, then commit without blocking the event loop."""
        self._observe(event)
        if self.inner is None:
            return None
        started = time.perf_counter()
        try:
            return await self.inner.write_async(event, **options)
        finally:
            self.metrics.observe("guardrails_audit_commit_seconds", time.perf_counter() - started)


@dataclass(slots=True)
class GuardSlot:
    """The guard currently in force for one policy spec, and what it was loaded from."""

    spec: str | None
    path: Path
    guard: Guard
    sink: ObservingSink
    stamp: tuple[int, int]
    #: The guard's wrappers around the proxy's upstream calls, built once per guard.
    wrapped: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one reload attempt did: ``applied``, ``unchanged`` or ``rejected``."""

    spec: str | None
    outcome: str
    digest: str
    previous_digest: str
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``/admin/policy/reload``."""
        return {
            "policy": self.spec or "default",
            "outcome": self.outcome,
            "digest": self.digest,
            "previous_digest": self.previous_digest,
            "errors": list(self.errors),
        }


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_mtime_ns, stat.st_size)


@dataclass
class PolicyRegistry:
    """Guards by policy spec (``None`` is the server's default policy)."""

    default_spec: str | None
    audit_url: str | None
    metrics: Metrics
    #: A reload that takes longer is abandoned and rejected; the last good policy stays.
    load_timeout_s: float = LOAD_TIMEOUT_S
    slots: dict[str | None, GuardSlot] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _retired: list[asyncio.Task[None]] = field(default_factory=list)
    #: The first guard built; it owns the worker's one audit writer (one chain per worker),
    #: which every later policy and reload shares through `Guard.with_policy`.
    _root: Guard | None = None

    def _build(self, spec: str | None, policy: Policy) -> GuardSlot:
        """A guard for ``policy`` (blocking: opens the audit store, or records the policy)."""
        # The guard imports `audit` when it builds its first event; do it here, off the loop.
        import audit  # noqa: F401

        if self._root is None:
            guard = Guard.from_policy(policy, audit=self.audit_url, on_block="raise")
            sink = ObservingSink(guard.audit, self.metrics)
            guard.audit = sink
            self._root = guard
        else:
            guard = self._root.with_policy(policy)
            assert isinstance(guard.audit, ObservingSink)
            sink = guard.audit
        # Load and run the classifier now, off the loop: the lifespan awaits this before the
        # proxy reports ready, so no request waits for a lazy load.
        guard.warm()
        path = Path(policy.path)
        return GuardSlot(spec, path, guard, sink, _stamp(path))

    def _load(self, spec: str | None) -> GuardSlot:
        return self._build(spec, load_policy(spec))

    async def get(self, spec: str | None) -> GuardSlot:
        """The slot for ``spec``, loading it on first use.

        Raises:
            PolicyError: the policy does not load (it is not cached; the next call retries).
        """
        slot = self.slots.get(spec)
        if slot is not None:
            return slot
        async with self._lock:
            slot = self.slots.get(spec)
            if slot is None:
                slot = await asyncio.to_thread(self._load, spec)
                self.slots[spec] = slot
                log.info(
                    "policy_loaded", policy=slot.guard.policy.ref.header(), path=str(slot.path)
                )
        return slot

    def default(self) -> GuardSlot:
        """The default slot (loaded at startup)."""
        return self.slots[self.default_spec]

    async def check_all(self, *, force: bool = False) -> list[ReloadOutcome]:
        """Reload every policy whose file changed (every policy when ``force``).

        A failure on one policy (other than a rejected edit, which is an outcome) is logged
        and the others are still checked.
        """
        outcomes = []
        for spec in list(self.slots):
            try:
                outcome = await self.check(spec, force=force)
            except Exception as exc:  # the last good policy stays; the next poll retries
                log.error("policy_reload_failed", policy=spec or "default", error=repr(exc))
                self.metrics.inc("guardrails_policy_reloads_total", (("outcome", "failed"),))
                continue
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def check(self, spec: str | None, *, force: bool = False) -> ReloadOutcome | None:
        """Reload ``spec`` if its file changed; ``None`` when nothing changed."""
        async with self._lock:
            slot = self.slots[spec]
            stamp = _stamp(slot.path)
            if stamp == slot.stamp and not force:
                return None
            previous = slot.guard.policy
            try:
                policy = await asyncio.wait_for(
                    asyncio.to_thread(load_policy, str(slot.path)), self.load_timeout_s
                )
            except (PolicyError, TimeoutError) as exc:
                slot.stamp = stamp  # do not re-report the same bad file every poll
                errors = (
                    tuple(str(p) for p in exc.problems)
                    if isinstance(exc, PolicyError)
                    else (f"{slot.path}: did not load within {self.load_timeout_s:g} s",)
                )
                outcome = ReloadOutcome(spec, "rejected", previous.digest, previous.digest, errors)
                log.error(
                    "policy_reload_rejected",
                    path=str(slot.path),
                    in_force=previous.ref.header(),
                    errors=list(errors),
                )
                await self._audit_reload(slot, outcome)
                self.metrics.inc("guardrails_policy_reloads_total", (("outcome", "rejected"),))
                return outcome
            if policy.digest == previous.digest:
                slot.stamp = stamp
                return ReloadOutcome(spec, "unchanged", policy.digest, previous.digest)
            fresh = await asyncio.to_thread(self._build, spec, policy)
            fresh.stamp = stamp
            self.slots[spec] = fresh  # the swap: new requests see the new guard
            outcome = ReloadOutcome(spec, "applied", policy.digest, previous.digest)
            log.warning(
                "policy_reloaded",
                path=str(slot.path),
                policy=policy.ref.header(),
                previous=previous.ref.header(),
            )
            await self._audit_reload(fresh, outcome)
            self.metrics.inc("guardrails_policy_reloads_total", (("outcome", "applied"),))
            self._retire(slot)
            return outcome

    async def _audit_reload(self, slot: GuardSlot, outcome: ReloadOutcome) -> None:
        """One audit event per applied or rejected reload, on the chain of the guard in force."""
        if slot.sink.inner is None:
            return
        from audit import AuditEvent

        policy = slot.guard.policy
        event = AuditEvent(
            request_id=f"policy-reload-{uuid.uuid4().hex}",
            policy_name=policy.name,
            policy_version=policy.version,
            policy_digest=policy.digest,
            action="allow" if outcome.outcome == "applied" else "block",
            error="; ".join(outcome.errors) or None,
            metadata={"event": "policy_reload", "path": str(slot.path), **outcome.to_dict()},
        )
        try:
            await slot.sink.inner.write_async(event)
        except Exception as exc:  # the reload itself stands; the log keeps the failure
            log.error("policy_reload_audit_failed", error=repr(exc), outcome=outcome.outcome)

    def _retire(self, slot: GuardSlot) -> None:
        if slot.guard is self._root:
            return  # it owns the shared audit writer: closed last, by `close`

        async def close_later() -> None:
            await asyncio.sleep(_GRACE_S)
            await asyncio.to_thread(slot.guard.close)

        self._retired.append(asyncio.get_running_loop().create_task(close_later()))

    async def close(self) -> None:
        """Close every guard; the root, which owns the worker's audit writer, last."""
        for task in self._retired:
            task.cancel()
        guards = [s.guard for s in self.slots.values() if s.guard is not self._root]
        self.slots.clear()
        if self._root is not None:
            guards.append(self._root)  # last: it owns the audit writer the others share
            self._root = None
        for guard in guards:
            await asyncio.to_thread(guard.close)


@dataclass
class ReloadWatcher:
    """Polls the keys file and the policy files every ``interval_s`` and reloads what changed.

    It never dies and never hangs: the keys and the policies have loops of their own, each
    step is bounded by ``load_timeout_s`` (a step still running is not started again), and
    every failure is logged and retried at the next poll while the last good keys and
    policies stay in force. ``keys`` returns the worker's key ring (``None``: no keys file).
    """

    registry: PolicyRegistry
    keys: Callable[[], KeyRing | None]
    interval_s: float
    load_timeout_s: float = LOAD_TIMEOUT_S
    _pending: dict[str, asyncio.Future[bool]] = field(default_factory=dict)

    async def run(self) -> None:
        """Poll until cancelled."""
        await asyncio.gather(
            self._loop("keys", self.reload_keys), self._loop("policy", self.reload_policies)
        )

    async def reload_keys(self) -> None:
        """Re-read the keys file if it changed (in a thread, bounded by ``load_timeout_s``)."""
        ring = self.keys()
        if ring is None:
            return
        pending = self._pending.get("keys")
        if pending is not None and not pending.done():
            log.error("keys_reload_still_running", path=str(ring.path))
            return
        future = asyncio.ensure_future(asyncio.to_thread(ring.reload_if_changed))
        self._pending["keys"] = future
        done, _ = await asyncio.wait({future}, timeout=self.load_timeout_s)
        if not done:  # left running; its outcome is collected by the next call
            future.add_done_callback(_consume)
            log.error("keys_reload_timed_out", path=str(ring.path), after_s=self.load_timeout_s)
            return
        try:
            if future.result():
                log.warning("keys_reloaded", keys=len(ring.keys))
        except KeysFileError as exc:
            log.error("keys_reload_rejected", error=str(exc))

    async def reload_policies(self) -> None:
        """Reload every policy whose file changed (each load bounded by the registry)."""
        await self.registry.check_all()

    async def _loop(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await step()
            except Exception as exc:  # keep watching; the last good keys and policies stay
                log.error(f"{what}_watch_failed", error=repr(exc))


def _consume(future: asyncio.Future[bool]) -> None:
    """Retrieve an abandoned reload's outcome so asyncio does not report it as never read."""
    if not future.cancelled() and future.exception() is not None:
        log.error("keys_reload_failed_late", error=repr(future.exception()))


__all__ = [
    "LOAD_TIMEOUT_S",
    "GuardSlot",
    "ObservingSink",
    "PolicyRegistry",
    "ReloadOutcome",
    "ReloadWatcher",
]
