"""Checksum validators that turn a pattern match into a real finding.

A regex finds things that look like a card number; the validator keeps only those whose check
digit is right, which removes most false positives. Validators are looked up by name from
policy files through `VALIDATORS`.
"""

from __future__ import annotations

from collections.abc import Callable

_DIGITS = str.maketrans("", "", " -.\t")


def luhn(text: str) -> bool:
    """True when the digits of ``text`` (separators ignored) pass the Luhn check (13-19 digits)."""
    digits = text.translate(_DIGITS)
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# Lengths from the SWIFT IBAN registry for the countries most often seen; others must still be
# 15-34 characters and pass the mod-97 check.
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
    "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18,
    "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TR": 26, "AE": 23,
}  # fmt: skip


def iban(text: str) -> bool:
    """True when ``text`` (spaces ignored) is an IBAN with a valid ISO 13616 mod-97 checksum."""
    compact = text.replace(" ", "").replace("-", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    country = compact[:2]
    if not country.isalpha() or not compact[2:4].isdigit():
        return False
    expected = _IBAN_LENGTHS.get(country)
    if expected is not None and len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_CHECK = "10X98765432"


def cn_resident_id(text: str) -> bool:
    """True for an 18-character PRC resident identity number with a valid GB 11643 check digit
    and a plausible birth date."""
    compact = text.replace(" ", "").upper()
    if len(compact) != 18 or not compact[:17].isdigit():
        return False
    year, month, day = int(compact[6:10]), int(compact[10:12]), int(compact[12:14])
    if not (1900 <= year <= 2100 and 1 <= month <= 12 and 1 <= day <= 31):
        return False
    total = sum(int(char) * weight for char, weight in zip(compact[:17], _CN_WEIGHTS, strict=True))
    return _CN_CHECK[total % 11] == compact[17]


def us_ssn(text: str) -> bool:
    """True for a US Social Security number the SSA could have issued (no 000/666/9xx area,
    no 00 group, no 0000 serial)."""
    digits = text.translate(_DIGITS)
    if len(digits) != 9 or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


VALIDATORS: dict[str, Callable[[str], bool]] = {
    "cn_resident_id": cn_resident_id,
    "iban": iban,
    "luhn": luhn,
    "us_ssn": us_ssn,
}
"""Validators by the name policy files use for them."""

from guardrails.national_ids import NATIONAL_ID_VALIDATORS  # noqa: E402  (stdnum, lazily)

VALIDATORS.update(NATIONAL_ID_VALIDATORS)


def get_validator(name: str) -> Callable[[str], bool]:
    """The validator called ``name``; raises ``KeyError`` naming the known ones."""
    try:
        return VALIDATORS[name]
    except KeyError:
        known = ", ".join(sorted(VALIDATORS))
        raise KeyError(f"unknown validator {name!r} (known: {known})") from None


__all__ = [
    "VALIDATORS",
    "cn_resident_id",
    "get_validator",
    "iban",
    "luhn",
    "us_ssn",
]
