"""The privacy report written beside trained weights, and its record in the audit database.

A report is what an auditor needs to check a run's privacy claim. Its first field, ``claim``,
says in words whether the run is private at all (a run without DP, or with a fixed seed, is
NOT private). Then the (ε, δ) spent, by RDP and by PRV (the smaller is the headline), how it
got there (noise multiplier, sampling rate, steps, clipping norm, the accountant σ was
calibrated with, where the randomness came from), what it was trained on (record count, the
data file's resolved path and SHA-256), library versions, and the SHA-256 of every file
beside the report (weights, config.json, adapter config: everything that changes the
model's behaviour). Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from guardrails.privacy.data import file_sha256
from guardrails.privacy.errors import PrivacyError

REPORT_FILE = "privacy_report.json"
PROVENANCE_POLICY = "model-provenance"
REPORT_FORMAT = 2


def library_versions() -> dict[str, str]:
    """Versions of the libraries a privacy claim depends on (missing ones are left out)."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "opacus", "numpy", "guardrail-layer"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def claim_text(*, dp: bool, private: bool, epsilon: float | None, delta: float | None) -> str:
    """The report's first field: whether (and how far) the run is private, in words."""
    if not dp:
        return "NOT PRIVATE: trained without DP-SGD"
    if not private:
        return "NOT PRIVATE: fixed seed, the batches and the noise can be replayed (tests only)"
    return f"private: ({epsilon:.4g}, {delta:.1e})-DP per training record"


@dataclass(frozen=True, slots=True)
class PrivacyReport:
    """One training run's privacy accounting and provenance.

    ``claim`` (first) says whether the run is private. ``epsilon`` is the smaller of
    ``epsilon_rdp`` and ``epsilon_prv`` (``epsilon_accountant`` names it; both are upper
    bounds, ≤ ``target_epsilon``), None for a non-private run; ``accountant`` is the one σ was
    calibrated with. ``files`` maps every file beside the report to its SHA-256.
    """

    claim: str
    model_kind: str
    dp: bool
    epsilon: float | None
    epsilon_accountant: str | None
    epsilon_rdp: float | None
    epsilon_prv: float | None
    target_epsilon: float | None
    delta: float | None
    noise_multiplier: float | None
    sample_rate: float
    steps: int
    epochs: int
    max_grad_norm: float | None
    accountant: str | None
    clipping: str | None
    rng: str
    secure_mode: bool
    n_examples: int
    data_file: str
    data_sha256: str
    batch_size: int
    lr: float
    versions: dict[str, str] = field(default_factory=library_versions)
    files: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = REPORT_FORMAT

    @property
    def private(self) -> bool:
        """Whether the claim is a DP claim at all."""
        return self.claim.startswith("private:")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, in declaration order (``claim`` first)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (fields in declaration order), the text the audit digest is over."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def digest(self) -> str:
        """SHA-256 of `to_json`."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


def model_files(directory: str | Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory`` (relative POSIX paths), the report excepted."""
    d = Path(directory)
    return {
        p.relative_to(d).as_posix(): file_sha256(p)
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.relative_to(d).as_posix() != REPORT_FILE
    }


def write_report(directory: str | Path, report: PrivacyReport) -> PrivacyReport:
    """Write ``privacy_report.json`` in ``directory``; returns the report as written.

    The written report carries the SHA-256 of every file in ``directory`` (weights,
    config.json, adapter config, ...), so write the model first, and record the returned
    report (not the argument) as provenance.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    full = dataclasses.replace(report, files=model_files(d))
    (d / REPORT_FILE).write_text(full.to_json(), encoding="utf-8")
    return full


def read_report(path: str | Path) -> PrivacyReport:
    """Read a report from a model directory or the report file itself.

    Raises:
        PrivacyError: no report there, or it is not a report this version understands.
    """
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_FILE
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PrivacyError(f"{p}: no privacy report (train with `guardrails privacy`)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise PrivacyError(f"{p}: unreadable privacy report ({exc})") from exc
    names = {f.name for f in dataclasses.fields(PrivacyReport)}
    if not isinstance(obj, dict) or obj.get("format") != REPORT_FORMAT:
        raise PrivacyError(f"{p}: not a format-{REPORT_FORMAT} privacy report")
    missing = sorted(names - set(obj))
    if missing:
        raise PrivacyError(f"{p}: privacy report lacks {missing}")
    return PrivacyReport(**{k: v for k, v in obj.items() if k in names})


def check_files(directory: str | Path, report: PrivacyReport) -> dict[str, bool]:
    """Each file the report names, and each file now beside it: whether it still matches.

    A changed, missing or added file (a retuned config.json, a swapped tokenizer) is False.
    """
    now = model_files(directory)
    names = sorted(set(report.files) | set(now))
    return {name: now.get(name) == report.files.get(name) for name in names}


def record_provenance(url: str, report: PrivacyReport, *, model: str) -> str:
    """Record ``report`` in the audit database at ``url`` as a ``provenance`` event.

    The audit log requires every event to name a recorded policy, so the report's canonical
    JSON is recorded as the text of a pseudo-policy ``model-provenance`` whose digest is the
    report's SHA-256; the event carries that digest, ``model``, and the report in
    ``metadata``. Returns the event id.

    Raises:
        PrivacyError: the audit store refused or could not be reached.
    """
    from audit import AuditError, AuditEvent, AuditStore

    digest = report.digest()
    try:
        with AuditStore(url, auto_upgrade=True) as store:
            store.record_policy(digest, PROVENANCE_POLICY, str(REPORT_FORMAT), report.to_json())
            event = AuditEvent(
                request_id=f"provenance-{digest[:16]}",
                policy_name=PROVENANCE_POLICY,
                policy_version=str(REPORT_FORMAT),
                policy_digest=digest,
                action="provenance",
                model=model,
                metadata={"privacy_report": report.to_dict(), "report_sha256": digest},
            )
            store.writer().write(event)
    except AuditError as exc:
        raise PrivacyError(f"could not record provenance in {url}: {exc}") from exc
    return event.event_id


__all__ = [
    "PROVENANCE_POLICY",
    "REPORT_FILE",
    "REPORT_FORMAT",
    "PrivacyReport",
    "check_files",
    "claim_text",
    "library_versions",
    "model_files",
    "read_report",
    "record_provenance",
    "write_report",
]
