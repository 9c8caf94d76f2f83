"""Amounts in ISO 4217 currencies: exact decimals, the currency's own decimals, sane bounds."""

from __future__ import annotations

from decimal import Decimal

import pytest

from models.iso4217 import MINOR_UNITS, AmountError, check_currency, in_units, parse_amount


def test_minor_units_of_well_known_currencies() -> None:
    expected = {"USD": 2, "EUR": 2, "JPY": 0, "KWD": 3, "BHD": 3, "CDF": 2, "RWF": 0, "PEN": 2}
    assert {code: MINOR_UNITS[code] for code in expected} == expected
    assert len(MINOR_UNITS) > 150
    assert all(len(code) == 3 and code.isupper() for code in MINOR_UNITS)


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("1500", "usd", Decimal("1500.00")),
        (Decimal("0.1") + Decimal("0.2"), "USD", Decimal("0.30")),
        (1000, "JPY", Decimal("1000")),
        ("1.001", "KWD", Decimal("1.001")),
        ("1e3", "RWF", Decimal("1000")),
        ("1000000000000", "USD", Decimal("1000000000000.00")),
    ],
)
def test_accepted_amounts_are_exact(
    value: Decimal | str | int, currency: str, expected: Decimal
) -> None:
    got = parse_amount(value, currency)
    assert got == expected and str(got) == str(expected)


@pytest.mark.parametrize(
    ("value", "currency", "why"),
    [
        ("1.001", "USD", "more decimals than USD allows"),
        ("0.5", "JPY", "more decimals than JPY allows"),
        ("0.5", "RWF", "more decimals than RWF allows"),
        ("-1", "USD", "more than zero"),
        ("0", "USD", "more than zero"),
        ("NaN", "USD", "finite"),
        ("Infinity", "USD", "finite"),
        ("1000000000000.01", "USD", "cannot exceed"),
        ("ten", "USD", "not a number"),
        (0.3, "USD", "not as float"),
        (True, "USD", "not as bool"),
        ("5", "XXX", "not an active ISO 4217 code"),
    ],
)
def test_refused_amounts_say_why(value: object, currency: str, why: str) -> None:
    with pytest.raises(AmountError, match=why):
        parse_amount(value, currency)  # type: ignore[arg-type]


def test_stored_amounts_come_back_in_the_currencys_decimals() -> None:
    assert str(in_units(Decimal("1500.0000"), "USD")) == "1500.00"
    assert str(in_units(Decimal("7.0000"), "JPY")) == "7"
    assert check_currency(" eur ") == "EUR"
