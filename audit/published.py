"""Checkpoints published outside the database, as C2SP signed notes, and the check that the
database still extends every one of them.

`publish_checkpoints` appends each signed checkpoint to a folder the operator gives (one
file per checkpoint, never overwritten: ``<dir>/<chain_id>/<tree size, 12 digits>.checkpoint``)
in the C2SP ``tlog-checkpoint`` format, wrapped in a C2SP ``signed-note``::

    guardrails.audit/<chain_id>          origin
    <tree size>                          decimal
    <root hash, base64>                  RFC 6962 root of the chain's event hashes

    — <key name> <base64(4-byte key hash || Ed25519 signature)>

and the verifier key beside them (``<dir>/<key name>.vkey``, the C2SP vkey encoding
``<name>+<key hash hex>+<base64(0x01 || public key)>``). Put the folder where the database's
owner cannot rewrite it (another host, a WORM bucket, a git repository others pull).

`check_published` then proves, per chain, that the rows in the database still produce every
published root: it recomputes the tree over the chain's event hashes and checks an RFC 6962
consistency proof from each published size to the current size. Truncation, deletion of a
whole chain, and rewriting of rows behind a published checkpoint are all caught, whatever
the attacker did to the chain heads and checkpoint rows inside the database. A chain that
was never published is not covered by this check.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.checkpoint import Checkpoint, key_id
from audit.exceptions import AuditConfigError, AuditStoreError
from audit.merkle import MerkleAccumulator, consistency_proof, verify_consistency

__all__ = [
    "ORIGIN_PREFIX",
    "PublishedCheckpoint",
    "check_published",
    "key_name",
    "load_published",
    "note_for",
    "publish_checkpoints",
    "vkey_for",
]

_log = logging.getLogger(__name__)

ORIGIN_PREFIX = "guardrails.audit/"
"""Each chain's checkpoints name the log ``guardrails.audit/<chain_id>``."""
_SUFFIX = ".checkpoint"
_ED25519 = b"\x01"
_DASH = "\u2014"


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_name(public_key: Ed25519PublicKey) -> str:
    """The signed-note key name of ``public_key``: ``guardrails-audit-<key id>``."""
    return f"guardrails-audit-{key_id(public_key)}"


def _key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + _raw(public_key)).digest()[:4]


def vkey_for(public_key: Ed25519PublicKey) -> str:
    """The C2SP verifier key string of ``public_key``."""
    name = key_name(public_key)
    encoded = base64.b64encode(_ED25519 + _raw(public_key)).decode()
    return f"{name}+{_key_hash(name, public_key).hex()}+{encoded}"


def _body(chain_id: str, tree_size: int, root: bytes) -> str:
    return f"{ORIGIN_PREFIX}{chain_id}\n{tree_size}\n{base64.b64encode(root).decode()}\n"


def note_for(checkpoint: Checkpoint, signing_key: Ed25519PrivateKey) -> str:
    """The signed note publishing ``checkpoint`` (see the module docstring)."""
    body = _body(checkpoint.chain_id, checkpoint.tree_size, bytes.fromhex(checkpoint.root_hash))
    public = signing_key.public_key()
    name = key_name(public)
    signature = _key_hash(name, public) + signing_key.sign(body.encode())
    return f"{body}\n{_DASH} {name} {base64.b64encode(signature).decode()}\n"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` durably; False if it exists (published files are never
    overwritten)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(path.parent)
    return True


def publish_checkpoints(
    checkpoints: Iterable[Checkpoint],
    directory: str | os.PathLike[str],
    signing_key: Ed25519PrivateKey,
) -> list[Path]:
    """Append each checkpoint to ``directory`` as a signed note; return the files written.

    A checkpoint already published (same chain and size) is left as it is.

    Raises:
        AuditStoreError: the folder cannot be created or written.
    """
    folder = Path(directory)
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        public = signing_key.public_key()
        _write_new(folder / f"{key_name(public)}.vkey", vkey_for(public) + "\n")
        for checkpoint in checkpoints:
            chain_dir = folder / checkpoint.chain_id
            chain_dir.mkdir(exist_ok=True)
            path = chain_dir / f"{checkpoint.tree_size:012d}{_SUFFIX}"
            if _write_new(path, note_for(checkpoint, signing_key)):
                written.append(path)
                _log.info(
                    "audit_checkpoint_published",
                    extra={"path": str(path), "tree_size": checkpoint.tree_size},
                )
    except OSError as exc:
        raise AuditStoreError(f"cannot publish checkpoints to {folder}: {exc}") from exc
    return written


@dataclass(frozen=True, slots=True)
class PublishedCheckpoint:
    """One published checkpoint read back: where it is and what it commits to.

    ``problem`` is None when the note parsed and its signature verified; otherwise it says
    why the note cannot be trusted (and the note is reported, not used).
    """

    path: Path
    chain_id: str
    tree_size: int
    root: bytes
    problem: str | None = None


def _parse_vkey(text: str) -> tuple[str, bytes, Ed25519PublicKey]:
    name, hash_hex, encoded = text.strip().split("+", 2)
    raw = base64.b64decode(encoded, validate=True)
    if raw[:1] != _ED25519:
        raise ValueError("not an Ed25519 verifier key")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if _key_hash(name, key).hex() != hash_hex:
        raise ValueError("key hash does not match the key")
    return name, bytes.fromhex(hash_hex), key


def _verifiers(
    folder: Path, trusted: Sequence[Ed25519PublicKey]
) -> dict[tuple[str, bytes], Ed25519PublicKey]:
    keys: list[Ed25519PublicKey] = list(trusted)
    if not keys:
        for path in sorted(folder.glob("*.vkey")):
            try:
                keys.append(_parse_vkey(path.read_text(encoding="utf-8"))[2])
            except (OSError, ValueError) as exc:
                raise AuditConfigError(f"verifier key {path} is unreadable: {exc}") from exc
    if not keys:
        raise AuditConfigError(
            f"no key to check the checkpoints published in {folder}: give --public-key "
            "(or keep the .vkey file written there by `audit checkpoint --publish`)"
        )
    return {(key_name(k), _key_hash(key_name(k), k)): k for k in keys}


def _read_note(
    path: Path, verifiers: dict[tuple[str, bytes], Ed25519PublicKey]
) -> PublishedCheckpoint:
    chain_hint = path.parent.name
    try:
        text = path.read_text(encoding="utf-8")
        body, sep, signatures = text.partition("\n\n")
        lines = body.split("\n")
        if not sep or len(lines) < 3 or not lines[0].startswith(ORIGIN_PREFIX):
            raise ValueError("not a guardrails audit checkpoint note")
        chain_id = lines[0][len(ORIGIN_PREFIX) :]
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
        if size < 1 or len(root) != 32 or str(size) != lines[1]:
            raise ValueError("bad tree size or root hash")
    except (OSError, ValueError) as exc:
        return PublishedCheckpoint(path, chain_hint, 0, b"", f"unreadable note: {exc}")
    signed = (body + "\n").encode()
    for line in signatures.split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        key = verifiers.get((parts[1], blob[:4]))
        if key is None:
            continue
        try:
            key.verify(blob[4:], signed)
        except InvalidSignature:
            return PublishedCheckpoint(path, chain_id, size, root, "bad signature")
        return PublishedCheckpoint(path, chain_id, size, root)
    return PublishedCheckpoint(path, chain_id, size, root, "no signature by a trusted key")


def load_published(
    directory: str | os.PathLike[str], trusted: Sequence[Ed25519PublicKey] = ()
) -> list[PublishedCheckpoint]:
    """Every checkpoint note in ``directory``, by chain then size, each with its signature
    checked (with ``trusted`` keys if given, else the ``.vkey`` files in the folder).

    Raises:
        AuditConfigError: the folder does not exist, or there is no key to check with.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise AuditConfigError(f"checkpoint folder {folder} does not exist")
    verifiers = _verifiers(folder, trusted)
    notes = [_read_note(path, verifiers) for path in sorted(folder.glob(f"*/*{_SUFFIX}"))]
    return sorted(notes, key=lambda n: (n.chain_id, n.tree_size, str(n.path)))


def check_published(
    chain_id: str, leaves: Sequence[bytes], notes: Sequence[PublishedCheckpoint]
) -> str | None:
    """Why ``leaves`` (the chain's event hashes now, seq order) do not extend every note of
    ``chain_id``, or None if they do (each published root is a prefix of the current tree,
    shown by an RFC 6962 consistency proof)."""
    size = len(leaves)
    current = MerkleAccumulator()
    prefix_roots: dict[int, bytes] = {}
    wanted = {n.tree_size for n in notes}
    for leaf in leaves:
        current.append(leaf)
        if current.size in wanted:
            prefix_roots[current.size] = current.root()
    head_root = current.root()
    for note in notes:
        where = f"published checkpoint {note.path.name} (tree size {note.tree_size})"
        if note.problem is not None:
            return f"{where}: {note.problem}"
        if size == 0:
            return f"{where}: the database holds no rows of this chain (whole chain deleted)"
        if note.tree_size > size:
            return (
                f"{where}: the database holds only {size} rows of this chain "
                "(rows deleted: truncated behind a published checkpoint)"
            )
        if prefix_roots.get(note.tree_size) != note.root:
            return f"{where}: the database no longer extends it (rows rewritten behind it)"
    if notes:
        # The newest published head, proven a prefix of the current tree the RFC 6962 way
        # (the smaller ones are prefixes of it, checked above by their roots).
        top = max(notes, key=lambda n: n.tree_size)
        proof = consistency_proof(top.tree_size, leaves)
        if not verify_consistency(top.tree_size, size, top.root, head_root, proof):
            return (
                f"published checkpoint {top.path.name} (tree size {top.tree_size}): "
                "no consistency proof to the current tree (rows rewritten behind it)"
            )
    return None
