"""Checksum validators: real check digits accepted, one-off digits rejected."""

from __future__ import annotations

import pytest

from guardrails.validators import cn_resident_id, get_validator, iban, luhn, us_ssn


@pytest.mark.parametrize(
    ("fn", "good", "bad"),
    [
        (luhn, "4111 1111 1111 1111", "4111 1111 1111 1112"),
        (luhn, "5500-0000-0000-0004", "5500-0000-0000-0005"),
        (luhn, "378282246310005", "378282246310006"),
        (iban, "GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 33"),
        (iban, "DE89370400440532013000", "DE89370400440532013001"),
        (cn_resident_id, "11010519491231002X", "110105194912310021"),
        (us_ssn, "123-45-6789", "666-45-6789"),
        (us_ssn, "078-05-1120", "078-00-1120"),
    ],
)
def test_validator_accepts_valid_and_rejects_invalid(fn, good, bad):
    """The valid identifier passes; changing its check digit (or range) fails."""
    assert fn(good)
    assert not fn(bad)


def test_luhn_length_bounds():
    """Luhn-valid strings outside 13-19 digits are not card numbers."""
    assert not luhn("0")
    assert not luhn("00000000000000000000")


def test_unknown_validator_names_the_known_ones():
    """Asking for an unknown validator lists the known names."""
    with pytest.raises(KeyError, match="luhn"):
        get_validator("crc32")
