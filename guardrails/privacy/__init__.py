"""Private fine-tuning: Opacus DP-SGD for the classifier and LoRA adapters for the generator.

Importing this package does not import torch or opacus; the trainers do (`classifier`,
`generator`, `engine`, `lora`, `canary`). What is here: data readers that name file:line
(`read_labelled`, `read_texts`), the δ rule (`default_delta`, `check_delta`: δ < 1/n or
refuse), the privacy report beside the weights (`PrivacyReport`, `write_report`,
`read_report`) and its provenance record in the audit database (`record_provenance`), and
the membership-inference measure (`attack_advantage`).
"""

from __future__ import annotations

from guardrails.privacy.data import (
    check_delta,
    default_delta,
    file_sha256,
    read_labelled,
    read_texts,
)
from guardrails.privacy.errors import PrivacyError
from guardrails.privacy.membership import attack_advantage, dp_advantage_bound
from guardrails.privacy.report import (
    REPORT_FILE,
    PrivacyReport,
    check_files,
    library_versions,
    read_report,
    record_provenance,
    write_report,
)

__all__ = [
    "REPORT_FILE",
    "PrivacyError",
    "PrivacyReport",
    "attack_advantage",
    "check_delta",
    "check_files",
    "default_delta",
    "dp_advantage_bound",
    "file_sha256",
    "library_versions",
    "read_labelled",
    "read_report",
    "read_texts",
    "record_provenance",
    "write_report",
]
