"""Merkle trees, signed checkpoints, inclusion and consistency proofs, and verify with them."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from audit import (
    AuditStore,
    check_proof_document,
    consistency_between,
    create_checkpoints,
    generate_signing_key,
    inclusion_proof_for,
    load_public_key,
    load_signing_key,
    verify_chain,
)
from audit.chain import CONTENT_FIELDS
from audit.exceptions import AuditConfigError
from audit.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from audit.schema import CHAINS, CHECKPOINTS, EVENTS

leaves_strategy = st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=40)


def test_rfc6962_known_shape():
    """Three leaves hash as node(node(l0, l1), l2), the RFC 6962 split."""
    a, b, c = b"a", b"b", b"c"
    expected = node_hash(node_hash(leaf_hash(a), leaf_hash(b)), leaf_hash(c))
    assert root([a, b, c]) == expected
    assert root([]) == hashlib.sha256(b"").digest()


@settings(max_examples=40, deadline=None)
@given(leaves=leaves_strategy, data=st.data())
def test_inclusion_proofs_verify_and_reject_other_leaves(leaves, data):
    """Every leaf's audit path leads to the root; a different leaf does not."""
    index = data.draw(st.integers(0, len(leaves) - 1))
    head = root(leaves)
    proof = inclusion_proof(index, leaves)
    assert verify_inclusion(leaves[index], index, len(leaves), proof, head)
    assert not verify_inclusion(leaves[index] + b"x", index, len(leaves), proof, head)


@settings(max_examples=40, deadline=None)
@given(leaves=leaves_strategy, data=st.data())
def test_consistency_proofs_verify_and_reject_rewrites(leaves, data):
    """A prefix tree is consistent with the whole; a rewritten prefix is not."""
    old = data.draw(st.integers(1, len(leaves)))
    proof = consistency_proof(old, leaves)
    assert verify_consistency(old, len(leaves), root(leaves[:old]), root(leaves), proof)
    forged = [b"forged", *leaves[1:]]
    if old < len(leaves):
        assert not verify_consistency(old, len(leaves), root(leaves[:old]), root(forged), proof)


def _log(store: AuditStore, make_event, n: int) -> list[str]:
    with store.writer() as writer:
        return [writer.write(make_event(request_id=f"r{i}")).event_id for i in range(n)]


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key."""
    return Ed25519PrivateKey.generate()


def test_checkpoint_prove_and_check_offline(store, make_event, signing_key):
    """A proof exported from the store checks offline against the signed checkpoint."""
    ids = _log(store, make_event, 7)
    (checkpoint,) = create_checkpoints(store, signing_key)
    assert checkpoint.tree_size == 7
    assert create_checkpoints(store, signing_key) == []  # nothing new to sign
    doc = json.loads(json.dumps(inclusion_proof_for(store, ids[4])))
    ok, reason = check_proof_document(doc, [signing_key.public_key()])
    assert ok, reason
    doc["event_hash"] = "00" * 32
    assert check_proof_document(doc)[0] is False
    stranger = Ed25519PrivateKey.generate().public_key()
    assert check_proof_document(inclusion_proof_for(store, ids[0]), [stranger])[0] is False
    report = verify_chain(store, public_keys=[signing_key.public_key()])
    assert (report.ok, report.checkpoints_checked) == (True, 1)


def test_consistency_between_two_checkpoints(sqlite_url, make_event, policy_digest, signing_key):
    """A later checkpoint provably extends an earlier one of the same chain."""
    with AuditStore(sqlite_url) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        with store.writer() as writer:
            for _ in range(3):
                writer.write(make_event())
            (first,) = create_checkpoints(store, signing_key)
            for _ in range(5):
                writer.write(make_event())
        (second,) = create_checkpoints(store, signing_key)
        doc = consistency_between(store, first.chain_id, 3, 8)
    proof = [bytes.fromhex(p) for p in doc["proof"]]
    old, new = bytes.fromhex(first.root_hash), bytes.fromhex(second.root_hash)
    assert verify_consistency(3, 8, old, new, proof)
    with pytest.raises(LookupError, match="no checkpoint at size 4"):
        consistency_between(sqlite_url, first.chain_id, 4, 8)


def test_rewritten_and_rehashed_chain_fails_its_checkpoint(
    sqlite_url, make_event, policy_digest, signing_key, rehash
):
    """Recomputing every hash after an edit still breaks the signed Merkle root."""
    with AuditStore(sqlite_url) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        _log(store, make_event, 4)
        create_checkpoints(store, signing_key)
        rows = store.events(limit=10, newest_first=False)
        prev = rows[1].prev_hash
        with store.engine.begin() as conn:  # forge seq 2.. with consistent hashes
            for event in sorted(rows, key=lambda e: e.seq)[1:]:
                fields = {n: getattr(event, n) for n in CONTENT_FIELDS}
                if event.seq == 2:
                    fields["prompt"] = "forged"
                body, digest = rehash(
                    fields, chain_id=event.chain_id, seq=event.seq, prev_hash=prev, hmac_key=None
                )
                conn.execute(
                    update(EVENTS)
                    .where(EVENTS.c.event_id == event.event_id)
                    .values(prompt=fields["prompt"], prev_hash=prev, hash=digest, body_digest=body)
                )
                prev = digest
            conn.execute(update(CHAINS).values(head_hash=prev))
        report = verify_chain(store)
    assert not report.ok
    assert "Merkle root does not match" in report.first_problem.reason


def test_forged_checkpoint_signature_is_reported(store, make_event, signing_key):
    """A checkpoint whose signature was altered, or signed by an untrusted key, fails."""
    _log(store, make_event, 2)
    create_checkpoints(store, signing_key)
    assert verify_chain(store).ok
    other = Ed25519PrivateKey.generate().public_key()
    untrusted = verify_chain(store, public_keys=[other])
    assert "bad signature with the trusted key" in untrusted.first_problem.reason
    with store.engine.begin() as conn:
        conn.execute(update(CHECKPOINTS).values(signature="00" * 64))
    assert "bad signature" in verify_chain(store).first_problem.reason


def test_key_files_round_trip(tmp_path):
    """generate_signing_key writes a 0600 private key and a public key that load back."""
    public_path = generate_signing_key(tmp_path / "audit.key")
    key = load_signing_key(tmp_path / "audit.key")
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600
    assert load_public_key(public_path).public_bytes_raw() == key.public_key().public_bytes_raw()
    with pytest.raises(AuditConfigError, match="cannot write"):
        generate_signing_key(tmp_path / "audit.key")
    with pytest.raises(AuditConfigError, match=r"not an Ed25519 public key|cannot load"):
        load_public_key(tmp_path / "audit.key")


def test_prove_unknown_event_is_a_lookup_error(sqlite_url):
    """Asking for a proof of an event that does not exist names the id."""
    with pytest.raises(LookupError, match="nope"):
        inclusion_proof_for(sqlite_url, "nope")
