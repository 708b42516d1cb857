"""Signed checkpoints of each chain's Merkle tree, and proofs checkable without the database.

A checkpoint says "chain C had N events whose RFC 6962 tree head is R at time T", signed with
an Ed25519 key. The signed bytes are the UTF-8 text::

    guardrails-audit-checkpoint/v1
    <chain_id>
    <tree_size>
    <root hex>
    <created_at, UTC ISO-8601 with microseconds>

Publish checkpoints (or just their roots) somewhere the database's owner cannot rewrite; then
`inclusion_proof_for` gives anyone a document that `check_proof_document` verifies with
nothing but this module and the public key, and `consistency_between` proves that a later
checkpoint extends an earlier one (nothing was rewritten in between).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError

from audit.engine import create_audit_engine, safe_url
from audit.exceptions import AuditConfigError, AuditStoreError
from audit.merkle import (
    MerkleAccumulator,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from audit.schema import CHAINS, CHECKPOINTS, EVENTS
from audit.store import AuditStore

__all__ = [
    "Checkpoint",
    "chain_leaves",
    "check_proof_document",
    "consistency_between",
    "create_checkpoints",
    "generate_signing_key",
    "inclusion_proof_for",
    "key_id",
    "load_checkpoints",
    "load_public_key",
    "load_signing_key",
]

_MAGIC = "guardrails-audit-checkpoint/v1"


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable name for a public key: the first 16 hex of SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed tree head of one chain (see the module docstring for the signed bytes)."""

    chain_id: str
    tree_size: int
    root_hash: str
    created_at: datetime
    key_id: str
    public_key: str
    signature: str

    def message(self) -> bytes:
        """The exact bytes the signature covers."""
        return (
            f"{_MAGIC}\n{self.chain_id}\n{self.tree_size}\n{self.root_hash}\n"
            f"{_timestamp(self.created_at)}\n"
        ).encode()

    def signature_ok(self, trusted: Sequence[Ed25519PublicKey] = ()) -> bool:
        """Whether the signature verifies: with a trusted key of the same key id if any are
        given (a checkpoint signed by any other key fails), else with the key it carries."""
        if trusted:
            keys = [k for k in trusted if key_id(k) == self.key_id]
        else:
            try:
                keys = [Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))]
            except ValueError:
                return False
        for key in keys:
            try:
                key.verify(bytes.fromhex(self.signature), self.message())
            except (InvalidSignature, ValueError):
                continue
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the timestamp as in the signed message)."""
        doc = asdict(self)
        doc["created_at"] = _timestamp(self.created_at)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Checkpoint:
        """Inverse of `to_dict`.

        Raises:
            AuditConfigError: a field is missing or malformed.
        """
        try:
            return cls(
                chain_id=str(doc["chain_id"]),
                tree_size=int(doc["tree_size"]),
                root_hash=str(doc["root_hash"]),
                created_at=datetime.fromisoformat(str(doc["created_at"]).replace("Z", "+00:00")),
                key_id=str(doc["key_id"]),
                public_key=str(doc["public_key"]),
                signature=str(doc["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditConfigError(f"malformed checkpoint: {exc!r}") from exc


def generate_signing_key(path: str | os.PathLike[str]) -> Path:
    """Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) to ``path`` and its public
    key beside it (``<path>.pub``); return the public key's path.

    Raises:
        AuditConfigError: ``path`` exists already or cannot be written.
    """
    target = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = target.with_name(target.name + ".pub")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    except OSError as exc:
        raise AuditConfigError(f"cannot write signing key {target}: {exc}") from exc
    return public


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM).

    Raises:
        AuditConfigError: unreadable, or not an unencrypted Ed25519 private key.
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuditConfigError(f"cannot load signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM).

    Raises:
        AuditConfigError: unreadable, or not an Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise AuditConfigError(f"cannot load public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuditConfigError(f"{path} is not an Ed25519 public key")
    return key


def _engine(url_or_store: str | AuditStore) -> tuple[Engine, bool]:
    if isinstance(url_or_store, AuditStore):
        return url_or_store.engine, False
    return create_audit_engine(url_or_store, must_exist=True), True


def chain_leaves(conn: Connection, chain_id: str, upto: int | None = None) -> list[bytes]:
    """The leaf data of ``chain_id``'s tree: its event hashes (raw), seq 1..``upto``."""
    query = select(EVENTS.c.hash).where(EVENTS.c.chain_id == chain_id)
    if upto is not None:
        query = query.where(EVENTS.c.seq <= upto)
    return [bytes.fromhex(h) for h in conn.execute(query.order_by(EVENTS.c.seq)).scalars()]


def _sign(
    key: Ed25519PrivateKey, chain_id: str, size: int, root: bytes, at: datetime
) -> Checkpoint:
    public = key.public_key()
    unsigned = Checkpoint(chain_id, size, root.hex(), at, key_id(public), _raw(public).hex(), "")
    signature = key.sign(unsigned.message()).hex()
    return Checkpoint(
        chain_id, size, root.hex(), at, unsigned.key_id, unsigned.public_key, signature
    )


def create_checkpoints(
    url_or_store: str | AuditStore, signing_key: Ed25519PrivateKey
) -> list[Checkpoint]:
    """Sign and store a checkpoint at the committed head of every chain that grew since its
    last checkpoint; return the new checkpoints.

    Raises:
        AuditConfigError: bad URL or no such SQLite file.
        AuditStoreError: the store is unreachable or a read or write failed.
    """
    engine, owned = _engine(url_or_store)
    made: list[Checkpoint] = []
    try:
        with engine.begin() as conn:
            heads = conn.execute(select(CHAINS.c.chain_id, CHAINS.c.head_seq)).all()
            latest: dict[str, int] = {}
            for chain_id, size in conn.execute(
                select(CHECKPOINTS.c.chain_id, CHECKPOINTS.c.tree_size)
            ):
                latest[chain_id] = max(size, latest.get(chain_id, 0))
            now = datetime.now(UTC)
            for chain_id, head_seq in sorted(heads):
                if head_seq < 1 or latest.get(chain_id) == head_seq:
                    continue
                leaves = chain_leaves(conn, chain_id, head_seq)
                if len(leaves) != head_seq:  # rows missing: verify reports it; sign nothing
                    continue
                acc = MerkleAccumulator()
                for leaf in leaves:
                    acc.append(leaf)
                made.append(_sign(signing_key, chain_id, head_seq, acc.root(), now))
            if made:
                conn.execute(
                    insert(CHECKPOINTS),
                    [
                        {
                            "chain_id": c.chain_id,
                            "tree_size": c.tree_size,
                            "root_hash": c.root_hash,
                            "created_at": c.created_at,
                            "key_id": c.key_id,
                            "public_key": c.public_key,
                            "signature": c.signature,
                        }
                        for c in made
                    ],
                )
    except SQLAlchemyError as exc:
        raise AuditStoreError(f"checkpointing {safe_url(engine.url)} failed: {exc}") from exc
    finally:
        if owned:
            engine.dispose()
    return made


def _checkpoint_from_row(row: Any) -> Checkpoint:
    return Checkpoint(
        chain_id=row.chain_id,
        tree_size=row.tree_size,
        root_hash=row.root_hash,
        created_at=row.created_at,
        key_id=row.key_id,
        public_key=row.public_key,
        signature=row.signature,
    )


def load_checkpoints(conn: Connection, chain_id: str | None = None) -> list[Checkpoint]:
    """Stored checkpoints (of one chain, or all), by chain then size."""
    query = select(CHECKPOINTS)
    if chain_id is not None:
        query = query.where(CHECKPOINTS.c.chain_id == chain_id)
    rows = conn.execute(query.order_by(CHECKPOINTS.c.chain_id, CHECKPOINTS.c.tree_size))
    return [_checkpoint_from_row(row) for row in rows]


def inclusion_proof_for(
    url_or_store: str | AuditStore, event_id: str, *, tree_size: int | None = None
) -> dict[str, Any]:
    """A self-contained JSON-ready document proving ``event_id`` is in its chain's tree at
    the latest checkpoint covering it (or the checkpoint of ``tree_size``).

    Raises:
        LookupError: no such event, or no checkpoint covers it yet.
        AuditConfigError: bad URL.
        AuditStoreError: the store is unreachable.
    """
    engine, owned = _engine(url_or_store)
    try:
        with engine.connect() as conn:
            event = conn.execute(
                select(EVENTS.c.chain_id, EVENTS.c.seq, EVENTS.c.hash).where(
                    EVENTS.c.event_id == event_id
                )
            ).first()
            if event is None:
                raise LookupError(f"no event with id {event_id!r}")
            candidates = [
                c
                for c in load_checkpoints(conn, event.chain_id)
                if c.tree_size >= event.seq and (tree_size is None or c.tree_size == tree_size)
            ]
            if not candidates:
                raise LookupError(
                    f"no checkpoint of chain {event.chain_id} covers seq {event.seq}"
                    + (f" at size {tree_size}" if tree_size is not None else "")
                    + "; run `guardrails audit checkpoint` first"
                )
            checkpoint = candidates[-1]
            leaves = chain_leaves(conn, event.chain_id, checkpoint.tree_size)
    except SQLAlchemyError as exc:
        raise AuditStoreError(f"reading {safe_url(engine.url)} failed: {exc}") from exc
    finally:
        if owned:
            engine.dispose()
    proof = inclusion_proof(event.seq - 1, leaves)
    return {
        "format": "guardrails-audit-inclusion/v1",
        "event_id": event_id,
        "chain_id": event.chain_id,
        "seq": event.seq,
        "leaf_index": event.seq - 1,
        "event_hash": event.hash,
        "tree_size": checkpoint.tree_size,
        "proof": [p.hex() for p in proof],
        "checkpoint": checkpoint.to_dict(),
    }


def check_proof_document(
    doc: dict[str, Any], trusted: Sequence[Ed25519PublicKey] = ()
) -> tuple[bool, str]:
    """Check an inclusion-proof document offline: the path leads to the checkpoint's root,
    and the checkpoint's signature verifies (with a trusted key if given). Returns
    (ok, reason)."""
    try:
        checkpoint = Checkpoint.from_dict(doc["checkpoint"])
        index, size = int(doc["leaf_index"]), int(doc["tree_size"])
        leaf = bytes.fromhex(str(doc["event_hash"]))
        proof = [bytes.fromhex(p) for p in doc["proof"]]
        root = bytes.fromhex(checkpoint.root_hash)
    except (AuditConfigError, KeyError, TypeError, ValueError) as exc:
        return False, f"malformed proof document: {exc}"
    if size != checkpoint.tree_size or checkpoint.chain_id != doc.get("chain_id"):
        return False, "the proof is not for this checkpoint"
    if not checkpoint.signature_ok(trusted):
        return False, "checkpoint signature does not verify" + (
            " with the trusted key(s)" if trusted else ""
        )
    if not verify_inclusion(leaf, index, size, proof, root):
        return False, "inclusion proof does not lead to the checkpoint root"
    return True, f"event {doc.get('event_id')} is leaf {index} of {size} under a valid checkpoint"


def consistency_between(
    url_or_store: str | AuditStore, chain_id: str, old_size: int, new_size: int
) -> dict[str, Any]:
    """A document proving the chain's tree at ``new_size`` extends the one at ``old_size``
    (both must be checkpoints), checked before it is returned.

    Raises:
        LookupError: either size has no checkpoint.
        AuditStoreError: the store is unreachable, or the proof does not verify (tampering).
    """
    engine, owned = _engine(url_or_store)
    try:
        with engine.connect() as conn:
            by_size = {c.tree_size: c for c in load_checkpoints(conn, chain_id)}
            missing = [s for s in (old_size, new_size) if s not in by_size]
            if missing:
                raise LookupError(
                    f"chain {chain_id} has no checkpoint at size {missing[0]} "
                    f"(checkpoints: {sorted(by_size) or 'none'})"
                )
            leaves = chain_leaves(conn, chain_id, new_size)
    except SQLAlchemyError as exc:
        raise AuditStoreError(f"reading {safe_url(engine.url)} failed: {exc}") from exc
    finally:
        if owned:
            engine.dispose()
    if not 0 < old_size <= new_size <= len(leaves):
        raise LookupError(f"sizes must satisfy 0 < {old_size} <= {new_size} <= {len(leaves)}")
    old, new = by_size[old_size], by_size[new_size]
    proof = consistency_proof(old_size, leaves)
    ok = verify_consistency(
        old_size, new_size, bytes.fromhex(old.root_hash), bytes.fromhex(new.root_hash), proof
    )
    if not ok:
        raise AuditStoreError(
            f"chain {chain_id}: the checkpoints at {old_size} and {new_size} are not consistent"
        )
    return {
        "format": "guardrails-audit-consistency/v1",
        "chain_id": chain_id,
        "old": old.to_dict(),
        "new": new.to_dict(),
        "proof": [p.hex() for p in proof],
    }
