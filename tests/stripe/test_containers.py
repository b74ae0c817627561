"""The Stripe container provides the payment client the core container needs."""

from __future__ import annotations

import pytest
from dependency_injector import errors

from usercredits import ManualPaymentClient, PaymentService
from usercredits.containers import UserCreditsContainer
from usercredits_stripe import StripePaymentClient
from usercredits_stripe.containers import StripeContainer

CONFIG = {"api_key": "sk_test_container", "webhook_secret": "whsec_container"}


def test_the_container_provides_one_stripe_client() -> None:
    payments = StripeContainer()
    payments.config.from_dict(CONFIG)

    client = payments.payment_client()

    assert isinstance(client, StripePaymentClient)
    assert payments.payment_client() is client


def test_the_core_container_takes_the_stripe_client() -> None:
    payments = StripeContainer()
    payments.config.from_dict(CONFIG)
    core = UserCreditsContainer(payment_client=payments.payment_client)

    core.check_dependencies()
    service = core.service()

    assert isinstance(service, PaymentService)
    assert core.payment_client() is payments.payment_client()


def test_the_core_payment_client_can_be_overridden_with_the_stripe_one() -> None:
    payments = StripeContainer()
    payments.config.from_dict(CONFIG)
    core = UserCreditsContainer()
    assert isinstance(core.payment_client(), ManualPaymentClient)

    with core.payment_client.override(payments.payment_client):
        assert isinstance(core.payment_client(), StripePaymentClient)


@pytest.mark.parametrize("missing", ["api_key", "webhook_secret"])
def test_the_key_and_the_webhook_secret_are_required(missing: str) -> None:
    payments = StripeContainer()
    payments.config.from_dict({k: v for k, v in CONFIG.items() if k != missing})

    with pytest.raises(errors.Error, match=missing):
        payments.payment_client()
