"""Stripe payment client of usercredits.

:class:`StripePaymentClient` implements :class:`usercredits.PaymentClient` on the
official ``stripe`` SDK; :mod:`usercredits_stripe.containers` wires it with
dependency-injector. Amounts go to Stripe in the currency's minor unit
(:func:`to_minor_units`), and every Stripe object is read back into the core's
terms in one place, :mod:`usercredits_stripe.mapping`.
"""

from usercredits_stripe.amounts import from_minor_units, minor_unit_exponent, to_minor_units
from usercredits_stripe.client import StripePaymentClient

__all__ = [
    "StripePaymentClient",
    "from_minor_units",
    "minor_unit_exponent",
    "to_minor_units",
]
