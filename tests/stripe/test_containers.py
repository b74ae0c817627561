"""The Stripe container provides the payment client the core container needs, with the
application's DAO factory as its customer store."""

from __future__ import annotations

import pytest
from dependency_injector import errors, providers

from usercredits import InMemoryDaoFactory, ManualPaymentClient, PaymentError, PaymentService
from usercredits.containers import UserCreditsContainer
from usercredits.models import Customer
from usercredits_mongo.containers import MongoContainer
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


def test_without_a_dao_factory_the_client_has_no_customer_store() -> None:
    payments = StripeContainer()
    payments.config.from_dict(CONFIG)

    with pytest.raises(PaymentError, match="customer store"):
        payments.payment_client().ensure_customer("bob", "bob@example.com")


def test_the_client_stores_its_customers_through_the_given_dao_factory() -> None:
    factory = providers.Singleton(InMemoryDaoFactory)
    payments = StripeContainer(config=CONFIG, dao_factory=factory)
    core = UserCreditsContainer(dao_factory=factory, payment_client=payments.payment_client)
    core.check_dependencies()
    customers = core.service().get_dao_factory().get_customer_dao()
    customers.create(
        Customer(user_id="bob", email="bob@example.com", processor="stripe", customer_id="cus_bob")
    )

    assert payments.payment_client().customer_id("bob") == "cus_bob"


def test_the_mongo_composition_keeps_customers_in_mongo() -> None:
    mongo = MongoContainer(config={"uri": "mongomock://localhost", "db": "stripe_shop"})
    payments = StripeContainer(config=CONFIG, dao_factory=mongo.dao_factory)
    core = UserCreditsContainer(
        dao_factory=mongo.dao_factory, payment_client=payments.payment_client
    )
    core.check_dependencies()
    try:
        customers = mongo.dao_factory().get_customer_dao()
        customers.create(
            Customer(user_id="bob", email="bob@example.com", processor="stripe", customer_id="c")
        )

        assert core.payment_client().customer_id("bob") == "c"
    finally:
        mongo.shutdown_resources()


def test_a_dao_factory_must_be_one() -> None:
    payments = StripeContainer(config=CONFIG, dao_factory=providers.Object("not a factory"))

    with pytest.raises(TypeError, match="DaoFactory"):
        payments.payment_client()
