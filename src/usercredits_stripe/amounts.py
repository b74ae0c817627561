"""Amounts in a currency's minor unit, the integer form every Stripe amount takes.

Most currencies have two decimals (``usd`` 12.34 → 1234). Stripe's zero-decimal
currencies take whole units (``jpy`` 500 → 500) and its three-decimal ones take
thousandths (``kwd`` 1.250 → 1250). Some currencies accept only a coarser step:
three-decimal amounts must end in 0, and ``isk`` keeps two decimals in the API
but accepts whole krónur only. A total that does not fall on its currency's step
is refused, never rounded.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from usercredits.errors import InvalidPaymentError, PaymentErrorCode

ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)
"""Currencies whose Stripe amounts are whole units."""

THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
"""Currencies whose Stripe amounts are thousandths; Stripe requires the last digit to be 0."""

_WHOLE_UNITS_ONLY = frozenset({"isk"})
"""Two-decimal in the API, but only whole units are accepted (amounts divisible by 100)."""


def minor_unit_exponent(currency: str) -> int:
    """How many decimals a Stripe amount in ``currency`` has (0, 2 or 3)."""
    code = _code(currency)
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def _step(code: str) -> int:
    """The smallest accepted increment of a Stripe amount, in minor units."""
    if code in THREE_DECIMAL_CURRENCIES:
        return 10
    if code in _WHOLE_UNITS_ONLY:
        return 100
    return 1


def to_minor_units(amount: Decimal, currency: str) -> int:
    """``amount`` (major units) as a Stripe amount in ``currency``'s minor unit.

    Raises InvalidPaymentError (``VALIDATION``) for a float, a non-finite or
    non-positive amount, or an amount that is not an exact multiple of the
    currency's accepted step (``Decimal("0.005")`` usd, ``Decimal("1.5")`` jpy).
    """
    code = _code(currency)
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidPaymentError(
            f"a payment amount must be a finite Decimal, got {amount!r}",
            code=PaymentErrorCode.VALIDATION,
        )
    if amount <= 0:
        raise InvalidPaymentError(
            f"a payment amount must be positive, got {amount} {code}",
            code=PaymentErrorCode.VALIDATION,
        )
    scaled = amount.scaleb(minor_unit_exponent(code))
    step = _step(code)
    if scaled != scaled.to_integral_value() or int(scaled) % step:
        unit = Decimal(step).scaleb(-minor_unit_exponent(code))
        raise InvalidPaymentError(
            f"{amount} {code} cannot be charged exactly: Stripe amounts in {code} "
            f"are multiples of {unit}",
            code=PaymentErrorCode.VALIDATION,
        )
    return int(scaled)


def from_minor_units(amount: int, currency: str) -> Decimal:
    """A Stripe amount in ``currency``'s minor unit as a Decimal in major units."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidPaymentError(
            f"a Stripe amount must be an int, got {amount!r}", code=PaymentErrorCode.VALIDATION
        )
    return Decimal(amount).scaleb(-minor_unit_exponent(currency))


def _code(currency: Any) -> str:
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise InvalidPaymentError(
            f"a currency must be an ISO 4217 code, got {currency!r}",
            code=PaymentErrorCode.VALIDATION,
        )
    return currency.lower()
