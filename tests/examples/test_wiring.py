"""The examples' container from the environment (examples/wiring.py)."""

from __future__ import annotations

from pathlib import Path

from examples.wiring import container_from_env
from usercredits import InMemoryDaoFactory, ManualPaymentClient
from usercredits_mongo import MongoDaoFactory
from usercredits_sql import SqlDaoFactory
from usercredits_stripe import StripePaymentClient


def test_without_configuration_it_is_in_memory_with_manual_payments() -> None:
    container = container_from_env({})

    assert isinstance(container.dao_factory(), InMemoryDaoFactory)
    assert isinstance(container.payment_client(), ManualPaymentClient)


def test_a_sqlite_url_opens_the_sql_backend(tmp_path: Path) -> None:
    container = container_from_env({"USERCREDITS_DB": f"sqlite:///{tmp_path / 'credits.db'}"})

    assert isinstance(container.service().get_dao_factory(), SqlDaoFactory)
    container.shutdown_resources()


def test_a_mongo_url_opens_the_mongo_backend() -> None:
    container = container_from_env({"USERCREDITS_DB": "mongomock://localhost/shop"})

    factory = container.service().get_dao_factory()

    assert isinstance(factory, MongoDaoFactory)
    container.shutdown_resources()


def test_stripe_keys_choose_the_stripe_client() -> None:
    container = container_from_env(
        {"STRIPE_API_KEY": "sk_test_123", "STRIPE_WEBHOOK_SECRET": "whsec_123"}
    )

    assert isinstance(container.payment_client(), StripePaymentClient)
