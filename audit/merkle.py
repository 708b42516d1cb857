"""RFC 6962 / RFC 9162 Merkle trees over a chain's event hashes, with their proofs.

The leaves of a chain's tree are its events' chain hashes (32 raw bytes each) in seq order.
``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``, and the tree of
n leaves splits at the largest power of two below n (RFC 6962 section 2.1), so roots and
proofs are checkable with any RFC 6962 implementation. The verifiers here need nothing but
``hashlib``: someone without database access can run them on a published checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "MerkleAccumulator",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 hash of one leaf."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaves: Sequence[bytes]) -> bytes:
    """MTH over already leaf-hashed entries."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def root(data: Iterable[bytes]) -> bytes:
    """The Merkle tree head of ``data`` (raw leaf data, not yet hashed)."""
    acc = MerkleAccumulator()
    for item in data:
        acc.append(item)
    return acc.root()


class MerkleAccumulator:
    """Appends leaves one by one and gives the root at any size in O(log n) memory."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (subtree size, hash), sizes decreasing

    def append(self, data: bytes) -> None:
        """Add one leaf (raw data)."""
        node = (1, leaf_hash(data))
        while self._stack and self._stack[-1][0] == node[0]:
            size, left = self._stack.pop()
            node = (size * 2, node_hash(left, node[1]))
        self._stack.append(node)
        self.size += 1

    def root(self) -> bytes:
        """The tree head of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        result = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            result = node_hash(left, result)
        return result


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``leaves`` (raw data), RFC 6962 2.1.1.

    Raises:
        ValueError: ``index`` is outside the tree.
    """
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaves)}")
    hashed = [leaf_hash(item) for item in leaves]

    def path(m: int, nodes: Sequence[bytes]) -> list[bytes]:
        n = len(nodes)
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*path(m, nodes[:k]), _mth(nodes[k:])]
        return [*path(m - k, nodes[k:]), _mth(nodes[:k])]

    return path(index, hashed)


def verify_inclusion(
    data: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """Check an inclusion proof (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    result = leaf_hash(data)
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == expected_root


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The proof that the tree of the first ``old_size`` leaves is a prefix of the tree of
    ``leaves`` (raw data), RFC 6962 section 2.1.2.

    Raises:
        ValueError: ``old_size`` is not between 1 and ``len(leaves)``.
    """
    if not 0 < old_size <= len(leaves):
        raise ValueError(f"old size {old_size} is not within 1..{len(leaves)}")
    hashed = [leaf_hash(item) for item in leaves]

    def subproof(m: int, nodes: Sequence[bytes], complete: bool) -> list[bytes]:
        n = len(nodes)
        if m == n:
            return [] if complete else [_mth(nodes)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, nodes[:k], complete), _mth(nodes[k:])]
        return [*subproof(m - k, nodes[k:], False), _mth(nodes[:k])]

    return subproof(old_size, hashed, True)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check a consistency proof (RFC 9162 section 2.1.4.2)."""
    if old_size < 1 or old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
