"""Checksum validators for national identifiers, tax and VAT numbers, from python-stdnum.

Each validator takes the matched text (spaces, dots and dashes allowed where the format
has them) and says whether its check digits are right, so a rule in
``policies/pii-national.yaml`` fires on real identifiers and not on any run of digits.
``stdnum`` is imported when a validator is first called, never by ``import guardrails``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["NATIONAL_ID_VALIDATORS", "stdnum_validator"]

# validator name -> python-stdnum module (country codes: ISO 3166; ``in_`` is India)
_MODULES = {
    # EU: VAT numbers of every member state (with their country prefix), and national ids
    "eu_vat": "eu.vat",
    "be_nn": "be.nn",
    "bg_egn": "bg.egn",
    "de_idnr": "de.idnr",
    "dk_cpr": "dk.cpr",
    "es_dni": "es.dni",
    "es_nie": "es.nie",
    "fi_hetu": "fi.hetu",
    "fr_nir": "fr.nir",
    "it_codicefiscale": "it.codicefiscale",
    "nl_bsn": "nl.bsn",
    "pl_pesel": "pl.pesel",
    "pt_nif": "pt.nif",
    "ro_cnp": "ro.cnp",
    "se_personnummer": "se.personnummer",
    # United Kingdom
    "gb_vat": "gb.vat",
    "gb_utr": "gb.utr",
    "gb_nhs": "gb.nhs",
    # India
    "in_aadhaar": "in_.aadhaar",
    "in_pan": "in_.pan",
    "in_gstin": "in_.gstin",
    # Brazil
    "br_cpf": "br.cpf",
    "br_cnpj": "br.cnpj",
    # Japan
    "jp_cn": "jp.cn",
    "jp_in": "jp.in_",
    # Korea
    "kr_rrn": "kr.rrn",
    "kr_brn": "kr.brn",
}


@cache
def _module(path: str) -> Any:
    return importlib.import_module(f"stdnum.{path}")


def stdnum_validator(path: str) -> Callable[[str], bool]:
    """A validator calling ``stdnum.<path>.is_valid`` (imported on first use)."""

    def validate(text: str) -> bool:
        try:
            return bool(_module(path).is_valid(text))
        except Exception:  # a number stdnum cannot even parse is not a valid one
            return False

    validate.__name__ = path.replace(".", "_").replace("__", "_")
    validate.__doc__ = f"Whether ``text`` passes ``stdnum.{path}.is_valid``."
    return validate


def _any_of(*names: str) -> Callable[[str], bool]:
    validators = [stdnum_validator(_MODULES[name]) for name in names]

    def validate(text: str) -> bool:
        return any(v(text) for v in validators)

    validate.__doc__ = f"Whether ``text`` is valid as any of {', '.join(names)}."
    return validate


NATIONAL_ID_VALIDATORS: dict[str, Callable[[str], bool]] = {
    name: stdnum_validator(path) for name, path in _MODULES.items()
}
# One shape, several countries: the rule fires when any of them validates.
NATIONAL_ID_VALIDATORS["es_dni_or_nie"] = _any_of("es_dni", "es_nie")
NATIONAL_ID_VALIDATORS["nordic_personal_id"] = _any_of("se_personnummer", "dk_cpr", "fi_hetu")
NATIONAL_ID_VALIDATORS["named_national_id"] = _any_of(
    "nl_bsn", "pl_pesel", "pt_nif", "ro_cnp", "bg_egn"
)
"""Validators by the name ``policies/pii-national.yaml`` uses for them."""
