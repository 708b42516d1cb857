"""Hash-chain verification: walk every chain by seq and name the first bad row of each.

Detects an edited row (its hash no longer matches its content), a deleted row (a seq gap,
or a chain shorter than its recorded head), an inserted row (beyond the head, or in a chain
no writer registered), reordered rows (a ``prev_hash`` that does not link), a wrong HMAC key
(every hash mismatches), and a whole chain deleted where a checkpoint or purge record still
names it. Signed checkpoints are checked too: each one's signature (with the trusted public
keys when given) and its root against the Merkle tree recomputed from the chain's rows, so a
chain rewritten after a checkpoint fails even where the attacker could recompute every hash.
Given a folder of checkpoints published outside the database (`audit.published`), every
chain must still extend each of them (consistency proofs): truncation, rewrites and deletion
behind a published checkpoint fail even with the chain heads and checkpoint rows rewritten.

Rows written since migration 0004 hash their header plus a digest of their body, so a purged
row's header is still checked; a body-less row is accepted only below a purge record whose
chained (keyed) hash verifies, and a forged, edited, inserted or deleted purge record is
itself a problem (``chain_id`` `PURGE_LOG`). Older rows keep the older rules (a purged one
is checked by its links only). A stream opening with no closing is reported in
``VerifyReport.unclosed``, not as a problem. Without an HMAC key, someone who can rewrite
the database can also recompute every hash: use a key where that matters.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError

from audit.chain import (
    BODY_FIELDS,
    CONTENT_FIELDS,
    HEADER_FIELDS,
    body_digest_from_mapping,
    chain_hash,
    chain_hash_v2,
    content_json_from_mapping,
    header_json_from_mapping,
)
from audit.checkpoint import Checkpoint, chain_leaves
from audit.engine import create_audit_engine, safe_url
from audit.exceptions import AuditEventError, AuditStoreError
from audit.merkle import MerkleAccumulator
from audit.published import PublishedCheckpoint, check_published, load_published
from audit.query import require_schema
from audit.retention import purge_record_hash
from audit.schema import CHAINS, CHECKPOINTS, EVENTS, GENESIS_HASH, PURGES
from audit.store import AuditStore

__all__ = ["PURGE_LOG", "ChainProblem", "UnclosedStream", "VerifyReport", "verify_chain"]

_log = logging.getLogger(__name__)

PURGE_LOG = "audit_purges"
"""The ``chain_id`` of a `ChainProblem` about the chain of purge records."""


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """The first bad row of one chain: where it is and what is wrong with it.

    ``event_id`` is None when the bad row is missing (deleted).
    """

    chain_id: str
    seq: int
    event_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class UnclosedStream:
    """A stream's ``open`` event with no ``close`` event of the same request anywhere in the
    log: its process died mid-stream (or the stream is still running). Not tampering: a
    finding of its own."""

    chain_id: str
    seq: int
    event_id: str
    request_id: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of `verify_chain`: ``ok`` only if no chain has a problem.

    ``unclosed`` lists stream openings without a closing; they do not make ``ok`` false.
    """

    ok: bool
    events_checked: int
    chains_checked: int
    problems: tuple[ChainProblem, ...]
    checkpoints_checked: int = 0
    unclosed: tuple[UnclosedStream, ...] = ()
    published_checked: int = 0
    """Checkpoints published outside the database (``--checkpoints DIR``) checked."""

    @property
    def first_problem(self) -> ChainProblem | None:
        """The first problem found (chains in chain-id order), or None if intact."""
        return self.problems[0] if self.problems else None


@dataclass(slots=True)
class _ChainContext:
    """What verify knows about one chain besides its rows."""

    checkpoints: list[Any]
    purged_upto: int
    trusted: tuple[Ed25519PublicKey, ...]
    authenticated_purged_upto: int = 0


def _check_checkpoints(
    chain_id: str, context: _ChainContext, roots: dict[int, bytes], length: int
) -> ChainProblem | None:
    for row in context.checkpoints:
        checkpoint = Checkpoint(
            row.chain_id,
            row.tree_size,
            row.root_hash,
            row.created_at,
            row.key_id,
            row.public_key,
            row.signature,
        )
        where = f"checkpoint at tree size {row.tree_size}"
        if not checkpoint.signature_ok(context.trusted):
            trust = " with the trusted key(s)" if context.trusted else ""
            return ChainProblem(chain_id, row.tree_size, None, f"{where}: bad signature{trust}")
        if row.tree_size > length:
            return ChainProblem(
                chain_id,
                row.tree_size,
                None,
                f"{where}: chain has only {length} rows (rows deleted)",
            )
        if roots.get(row.tree_size, b"").hex() != row.root_hash:
            return ChainProblem(
                chain_id,
                row.tree_size,
                None,
                f"{where}: Merkle root does not match the rows (chain rewritten)",
            )
    return None


def _check_v2(
    row: Any, chain_id: str, hmac_key: bytes | None, context: _ChainContext, keyed_hint: str
) -> str | None:
    """Why a header + body-digest row does not verify, or None."""
    fields = row._mapping
    try:
        header = header_json_from_mapping({name: fields[name] for name in HEADER_FIELDS})
        if row.purged_at is None:
            body = body_digest_from_mapping(
                {name: fields[name] for name in (*BODY_FIELDS, "event_id")}, hmac_key
            )
            if body != row.body_digest:
                return f"hash mismatch (row edited{keyed_hint})"  # the body digest
        elif row.seq > context.authenticated_purged_upto:
            return "row marked purged but no recorded purge covers it (with a valid hash)"
    except AuditEventError as exc:
        return f"hash mismatch (row edited): {exc}"
    recomputed = chain_hash_v2(
        header,
        row.body_digest,
        chain_id=chain_id,
        seq=row.seq,
        prev_hash=row.prev_hash,
        hmac_key=hmac_key,
    )
    if recomputed != row.hash:
        return f"hash mismatch (row edited{keyed_hint})"
    return None


def _walk(
    chain_id: str,
    head: Any | None,
    rows: Iterator[Any],
    hmac_key: bytes | None,
    context: _ChainContext | None = None,
) -> tuple[int, ChainProblem | None]:
    """Check one chain; return (rows seen, its first problem or None)."""
    checked = 0
    problem: ChainProblem | None = None
    context = context or _ChainContext([], 0, ())
    sizes = {row.tree_size for row in context.checkpoints}
    tree = MerkleAccumulator()
    roots: dict[int, bytes] = {}

    def found(seq: int, event_id: str | None, reason: str) -> None:
        nonlocal problem
        if problem is None:
            problem = ChainProblem(chain_id, seq, event_id, reason)

    if head is None:
        first = next(rows)
        found(first.seq, first.event_id, "unexpected row (inserted): no writer registered chain")
        return 1 + sum(1 for _ in rows), problem
    if head.hash_algorithm != "sha256" and hmac_key is None:
        found(0, None, f"chain is keyed ({head.hash_algorithm}): verify needs the HMAC key")
    keyed_hint = " or wrong HMAC key" if hmac_key is not None else ""
    expected_seq, prev_hash, last_event = 1, GENESIS_HASH, None
    for row in rows:
        checked += 1
        if sizes:
            tree.append(bytes.fromhex(row.hash))
            if tree.size in sizes:
                roots[tree.size] = tree.root()
        if problem is not None:
            continue
        if row.seq > head.head_seq:
            found(
                row.seq, row.event_id, f"unexpected row (inserted) beyond head seq {head.head_seq}"
            )
        elif row.seq != expected_seq:
            if row.seq > expected_seq:
                found(expected_seq, None, f"sequence gap: seq {expected_seq} missing (row deleted)")
            else:
                found(row.seq, row.event_id, "unexpected row (inserted)")
        elif row.prev_hash != prev_hash:
            found(row.seq, row.event_id, "prev_hash does not link (rows reordered)")
        elif row.body_digest is not None:
            reason = _check_v2(row, chain_id, hmac_key, context, keyed_hint)
            if reason is not None:
                found(row.seq, row.event_id, reason)
        elif row.purged_at is not None:
            if row.seq > context.purged_upto:
                found(row.seq, row.event_id, "row marked purged but no recorded purge covers it")
        else:
            try:
                content = content_json_from_mapping(
                    {name: row._mapping[name] for name in CONTENT_FIELDS}
                )
            except AuditEventError as exc:
                found(row.seq, row.event_id, f"hash mismatch (row edited): {exc}")
                continue
            recomputed = chain_hash(
                content, chain_id=chain_id, seq=row.seq, prev_hash=row.prev_hash, hmac_key=hmac_key
            )
            if recomputed != row.hash:
                found(row.seq, row.event_id, f"hash mismatch (row edited{keyed_hint})")
        expected_seq, prev_hash, last_event = row.seq + 1, row.hash, row.event_id
    if problem is None:
        if expected_seq - 1 < head.head_seq:
            found(
                expected_seq,
                None,
                f"chain head mismatch (last rows deleted): head is seq {head.head_seq}, "
                f"last row is seq {expected_seq - 1}",
            )
        elif prev_hash != head.head_hash:
            found(head.head_seq, last_event, "chain head mismatch (last row replaced)")
    if problem is None and context.checkpoints:
        problem = _check_checkpoints(chain_id, context, roots, checked)
    return checked, problem


def _counted(rows: Iterator[Any], progress: Callable[[int], None] | None) -> Iterator[Any]:
    """``rows``, telling ``progress`` how many were read (every 1000, and the rest at the end)."""
    if progress is None:
        yield from rows
        return
    pending = 0
    for row in rows:
        pending += 1
        if pending == 1000:
            progress(pending)
            pending = 0
        yield row
    if pending:
        progress(pending)


def _verify(
    conn: Connection,
    hmac_key: bytes | None,
    trusted: tuple[Ed25519PublicKey, ...],
    progress: Callable[[int], None] | None = None,
    notes: Sequence[PublishedCheckpoint] = (),
) -> VerifyReport:
    require_schema(conn)
    heads = {row.chain_id: row for row in conn.execute(select(CHAINS))}
    contexts: dict[str, _ChainContext] = {}

    def context(chain_id: str) -> _ChainContext:
        return contexts.setdefault(chain_id, _ChainContext([], 0, trusted))

    for row in conn.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.tree_size)):
        context(row.chain_id).checkpoints.append(row)
    purge_problem: ChainProblem | None = None
    prev_purge, authenticated_seen = GENESIS_HASH, False
    for purge in conn.execute(select(PURGES).order_by(PURGES.c.id)):
        authentic = False
        if purge.hash is None:
            if authenticated_seen and purge_problem is None:
                purge_problem = ChainProblem(
                    PURGE_LOG,
                    purge.id,
                    None,
                    f"purge record {purge.id} is unauthenticated (no hash) but follows "
                    "authenticated ones (inserted)",
                )
        elif purge_problem is None:
            recomputed = purge_record_hash(
                purged_at=purge.purged_at,
                cutoff=purge.cutoff,
                events_purged=purge.events_purged,
                chains=dict(purge.chains),
                prev_hash=purge.prev_hash or "",
                hmac_key=hmac_key,
            )
            if purge.prev_hash != prev_purge:
                purge_problem = ChainProblem(
                    PURGE_LOG,
                    purge.id,
                    None,
                    f"purge record {purge.id}: prev_hash does not link "
                    "(a purge record deleted, inserted or reordered)",
                )
            elif recomputed != purge.hash:
                purge_problem = ChainProblem(
                    PURGE_LOG,
                    purge.id,
                    None,
                    f"purge record {purge.id}: hash mismatch (forged or edited"
                    + (" or wrong HMAC key)" if hmac_key is not None else ")"),
                )
            else:
                authentic, authenticated_seen, prev_purge = True, True, purge.hash
        for chain_id, upto in dict(purge.chains).items():
            ctx = context(chain_id)
            ctx.purged_upto = max(ctx.purged_upto, int(upto))
            if authentic:
                ctx.authenticated_purged_upto = max(ctx.authenticated_purged_upto, int(upto))
    events = conn.execution_options(yield_per=2000).execute(
        select(EVENTS).order_by(EVENTS.c.chain_id, EVENTS.c.seq)
    )
    problems: dict[str, ChainProblem] = {}
    events_checked = 0
    seen: set[str] = set()
    opens: dict[str, UnclosedStream] = {}
    closed: set[str] = set()

    def streams(rows: Iterator[Any]) -> Iterator[Any]:
        for row in rows:
            if row.phase == "open":
                opens[row.request_id] = UnclosedStream(
                    row.chain_id, row.seq, row.event_id, row.request_id
                )
            elif row.phase == "close":
                closed.add(row.request_id)
            yield row

    for chain_id, rows in itertools.groupby(streams(events), key=lambda r: r.chain_id):
        seen.add(chain_id)
        checked, problem = _walk(
            chain_id,
            heads.get(chain_id),
            _counted(iter(rows), progress),
            hmac_key,
            context(chain_id),
        )
        events_checked += checked
        if problem is not None:
            problems[chain_id] = problem
    for chain_id in heads.keys() - seen:  # registered chains whose every row is gone
        _, problem = _walk(chain_id, heads[chain_id], iter(()), hmac_key, context(chain_id))
        if problem is not None:
            problems[chain_id] = problem
    # Chains known only from their checkpoints or purge records: rows and chain row deleted.
    for chain_id in sorted(contexts.keys() - heads.keys() - seen):
        ctx = contexts[chain_id]
        if ctx.checkpoints:
            top = max(row.tree_size for row in ctx.checkpoints)
            problems[chain_id] = ChainProblem(
                chain_id,
                top,
                None,
                f"whole chain deleted: {len(ctx.checkpoints)} signed checkpoint(s) up to tree "
                f"size {top} name it, but it has no chain row and no events",
            )
        elif ctx.purged_upto:
            problems[chain_id] = ChainProblem(
                chain_id,
                ctx.purged_upto,
                None,
                f"whole chain deleted: a recorded purge covers it up to seq {ctx.purged_upto}, "
                "but it has no chain row and no events",
            )
    by_chain: dict[str, list[PublishedCheckpoint]] = {}
    for note in notes:
        by_chain.setdefault(note.chain_id, []).append(note)
    for chain_id, chain_notes in sorted(by_chain.items()):
        reason = check_published(chain_id, chain_leaves(conn, chain_id), chain_notes)
        if reason is not None and chain_id not in problems:
            top = max(n.tree_size for n in chain_notes)
            problems[chain_id] = ChainProblem(chain_id, top, None, reason)
    if purge_problem is not None:
        problems[PURGE_LOG] = purge_problem
    ordered = tuple(problems[c] for c in sorted(problems))
    known = seen | heads.keys() | {c for c, x in contexts.items() if x.checkpoints or x.purged_upto}
    known |= by_chain.keys()
    return VerifyReport(
        ok=not ordered,
        events_checked=events_checked,
        chains_checked=len(known),
        problems=ordered,
        checkpoints_checked=sum(len(c.checkpoints) for c in contexts.values()),
        published_checked=len(notes),
        unclosed=tuple(
            sorted(
                (u for rid, u in opens.items() if rid not in closed),
                key=lambda u: (u.chain_id, u.seq),
            )
        ),
    )


def verify_chain(
    url_or_store: str | AuditStore,
    *,
    hmac_key: bytes | None = None,
    public_keys: Sequence[Ed25519PublicKey] = (),
    progress: Callable[[int], None] | None = None,
    published: str | os.PathLike[str] | None = None,
) -> VerifyReport:
    """Verify every chain in the audit store; a broken chain is a report, not an exception.

    Args:
        url_or_store: a database URL or an open `AuditStore`.
        hmac_key: the key the chains were written with; defaults to the store's own key
            when a store is passed. Given a key, every chain is checked with it, whatever
            ``audit_chains.hash_algorithm`` says (that column is not trusted).
        public_keys: the checkpoint signers to trust; a checkpoint signed by any other key
            is a problem. Empty: each signature is checked against the key stored with it,
            which catches damage but not a forger who re-signs with a key of their own.
        progress: called with the number of rows walked since its last call (every 1000
            rows and at the end of each chain), for progress bars.
        published: a folder of checkpoints published by `audit.published.publish_checkpoints`
            (``audit checkpoint --publish DIR``): every chain must still extend each of them
            (see `audit.published.check_published`); their signatures are checked with
            ``public_keys``, else with the verifier keys stored in that folder.

    Raises:
        AuditConfigError: bad URL, no such SQLite file, no audit schema there, or a
            ``published`` folder that is missing or has no key to check it with.
        AuditStoreError: the store is unreachable or a read failed.
    """
    if isinstance(url_or_store, AuditStore):
        engine, owned = url_or_store.engine, False
        if hmac_key is None:
            hmac_key = url_or_store.hmac_key
    else:
        engine, owned = create_audit_engine(url_or_store, must_exist=True), True
    try:
        notes = () if published is None else tuple(load_published(published, public_keys))
        with engine.connect() as conn:
            report = _verify(conn, hmac_key, tuple(public_keys), progress, notes)
        log = _log.info if report.ok else _log.warning
        log(
            "audit_verified",
            extra={
                "ok": report.ok,
                "events": report.events_checked,
                "chains": report.chains_checked,
                "problems": len(report.problems),
                "unclosed": len(report.unclosed),
            },
        )
        return report
    except SQLAlchemyError as exc:
        raise AuditStoreError(
            f"verifying the audit log at {safe_url(engine.url)} failed: {exc}"
        ) from exc
    finally:
        if owned:
            engine.dispose()
