"""Amounts go to Stripe as exact integers in the currency's minor unit."""

from __future__ import annotations

from decimal import Decimal

import pytest

from usercredits import InvalidPaymentError, PaymentErrorCode
from usercredits_stripe import from_minor_units, minor_unit_exponent, to_minor_units


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (Decimal("19.99"), "usd", 1999),
        (Decimal(10), "usd", 1000),
        (Decimal("0.01"), "eur", 1),
        (Decimal("19.990"), "usd", 1999),
        (Decimal(500), "jpy", 500),
        (Decimal("500.00"), "jpy", 500),
        (Decimal(15000), "krw", 15000),
        (Decimal("1.230"), "bhd", 1230),
        (Decimal("5.12"), "kwd", 5120),
        (Decimal(3), "kwd", 3000),
        (Decimal(1500), "isk", 150000),
        (Decimal("19.99"), "USD", 1999),
    ],
)
def test_an_exact_total_becomes_minor_units(amount: Decimal, currency: str, minor: int) -> None:
    assert to_minor_units(amount, currency) == minor


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("usd", 2), ("eur", 2), ("jpy", 0), ("krw", 0), ("xof", 0), ("bhd", 3), ("kwd", 3)],
)
def test_the_table_gives_each_currency_its_decimals(currency: str, exponent: int) -> None:
    assert minor_unit_exponent(currency) == exponent


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        (Decimal("0.005"), "usd"),
        (Decimal("19.999"), "eur"),
        (Decimal("1.5"), "jpy"),
        (Decimal("0.1"), "krw"),
        (Decimal("1.234"), "bhd"),
        (Decimal("0.0001"), "kwd"),
        (Decimal("1.5"), "isk"),
    ],
)
def test_a_total_that_cannot_be_charged_exactly_is_refused(amount: Decimal, currency: str) -> None:
    with pytest.raises(InvalidPaymentError) as caught:
        to_minor_units(amount, currency)
    assert caught.value.code is PaymentErrorCode.VALIDATION
    assert str(amount) in str(caught.value)


@pytest.mark.parametrize(
    "amount", [19.99, Decimal(0), Decimal("-5"), Decimal("NaN"), Decimal("Infinity"), 1999]
)
def test_only_a_positive_finite_decimal_is_charged(amount: object) -> None:
    with pytest.raises(InvalidPaymentError):
        to_minor_units(amount, "usd")  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["", "us", "dollars", "u$d", None])
def test_a_currency_must_be_an_iso_code(currency: object) -> None:
    with pytest.raises(InvalidPaymentError):
        to_minor_units(Decimal(1), currency)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("minor", "currency", "amount"),
    [
        (1999, "usd", Decimal("19.99")),
        (500, "jpy", Decimal(500)),
        (1230, "kwd", Decimal("1.230")),
        (-250, "usd", Decimal("-2.50")),
        (0, "usd", Decimal(0)),
    ],
)
def test_minor_units_read_back_as_major_units(minor: int, currency: str, amount: Decimal) -> None:
    result = from_minor_units(minor, currency)
    assert isinstance(result, Decimal)
    assert result == amount
