"""Stripe customers are stored through the customer DAO: one per user and per e-mail, found
again by every client sharing the store, even when several ask at once."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from usercredits import InMemoryDaoFactory, InvalidPaymentError, PaymentError
from usercredits.dao import CustomerDao
from usercredits.models import Customer
from usercredits_stripe import StripePaymentClient

from .conftest import API_KEY, START
from .payloads import WEBHOOK_SECRET
from .stripe_workers import RacingCustomers

USER = "user-1"
ADA = "ada@example.com"


@pytest.fixture
def customers(factory: InMemoryDaoFactory) -> CustomerDao:
    return factory.get_customer_dao()


def another_client(fake_stripe: Any, customers: CustomerDao | None) -> StripePaymentClient:
    """A client of another process: its own SDK client and memory, the same store."""
    return StripePaymentClient(
        API_KEY, WEBHOOK_SECRET, http_client=fake_stripe, max_network_retries=0, customers=customers
    )


# -- ensure_customer -----------------------------------------------------------------------


def test_a_new_email_gets_a_customer_with_the_user_id(
    client: Any, fake_stripe: Any, customers: CustomerDao
) -> None:
    customer_id = client.ensure_customer(USER, ADA)

    assert fake_stripe.customers[customer_id]["email"] == ADA
    assert fake_stripe.customers[customer_id]["metadata"] == {"user_id": USER}


def test_a_new_customer_is_created_with_a_key_derived_from_the_email(
    client: Any, fake_stripe: Any
) -> None:
    client.ensure_customer(USER, ADA)

    (request,) = fake_stripe.posts("/v1/customers")
    digest = hashlib.sha256(ADA.encode()).hexdigest()
    assert request.headers["Idempotency-Key"] == f"usercredits-customer-{digest}"


def test_a_new_customer_is_stored(client: Any, customers: CustomerDao) -> None:
    customer_id = client.ensure_customer(USER, ADA)

    stored = customers.find_by_user("stripe", USER)
    assert stored is not None
    assert (stored.customer_id, stored.email, stored.processor) == (customer_id, ADA, "stripe")
    assert stored.created_at == START


def test_a_stored_customer_is_reused_without_asking_stripe(
    client: Any, fake_stripe: Any, customers: CustomerDao
) -> None:
    customers.create(Customer(user_id=USER, email=ADA, processor="stripe", customer_id="cus_x"))

    assert client.ensure_customer(USER, ADA) == "cus_x"
    assert fake_stripe.requests == []


def test_the_stored_customer_of_the_user_is_reused_whatever_email_is_asked(
    client: Any, customers: CustomerDao
) -> None:
    first = client.ensure_customer(USER, ADA)

    assert client.ensure_customer(USER, "ada.lovelace@example.com") == first
    assert customers.count({}) == 1


def test_a_customer_of_another_system_is_found_by_email_and_stored(
    client: Any, fake_stripe: Any, customers: CustomerDao
) -> None:
    existing = fake_stripe.put_customer(ADA, {"source": "crm"})

    assert client.ensure_customer(USER, ADA) == existing
    assert fake_stripe.posts("/v1/customers") == []
    stored = customers.find_by_email("stripe", ADA)
    assert stored is not None
    assert (stored.user_id, stored.customer_id) == (USER, existing)


def test_among_customers_of_one_email_the_users_is_taken(client: Any, fake_stripe: Any) -> None:
    fake_stripe.put_customer(ADA, {})
    mine = fake_stripe.put_customer(ADA, {"user_id": USER})
    fake_stripe.put_customer(ADA, {"user_id": "someone"})

    assert client.ensure_customer(USER, ADA) == mine


def test_among_customers_of_one_email_for_nobody_the_oldest_is_taken(
    client: Any, fake_stripe: Any
) -> None:
    oldest = fake_stripe.put_customer(ADA, {})
    fake_stripe.put_customer(ADA, {})

    assert client.ensure_customer(USER, ADA) == oldest


def test_an_email_stored_for_another_user_is_refused(
    client: Any, fake_stripe: Any, customers: CustomerDao
) -> None:
    client.ensure_customer("user-2", ADA)

    with pytest.raises(InvalidPaymentError, match="user-2"):
        client.ensure_customer(USER, ADA)

    assert customers.find_by_user("stripe", USER) is None
    assert len(fake_stripe.customers) == 1


@pytest.mark.parametrize("email", ["", "not an address", None])
def test_a_customer_needs_an_email(client: Any, email: Any) -> None:
    with pytest.raises(ValueError, match="e-mail"):
        client.ensure_customer(USER, email)


@pytest.mark.parametrize("user_id", ["", None])
def test_a_customer_needs_a_user(client: Any, user_id: Any) -> None:
    with pytest.raises(ValueError, match="user id"):
        client.ensure_customer(user_id, ADA)


def test_a_client_without_a_customer_store_says_so(fake_stripe: Any) -> None:
    bare = another_client(fake_stripe, None)

    for call in (lambda: bare.ensure_customer(USER, ADA), lambda: bare.fetch_user_balance(USER)):
        with pytest.raises(PaymentError, match="customer store"):
            call()
    assert fake_stripe.requests == []


def test_a_customer_store_must_be_a_customer_dao(fake_stripe: Any) -> None:
    with pytest.raises(TypeError, match="CustomerDao"):
        another_client(fake_stripe, InMemoryDaoFactory())  # type: ignore[arg-type]


# -- several clients -----------------------------------------------------------------------


def test_another_process_finds_the_stored_customer(
    client: Any, fake_stripe: Any, customers: CustomerDao
) -> None:
    customer_id = client.ensure_customer(USER, ADA)

    other = another_client(fake_stripe, customers)

    assert other.customer_id(USER) == customer_id
    assert other.ensure_customer(USER, ADA) == customer_id
    assert len(fake_stripe.posts("/v1/customers")) == 1


def test_another_process_attaches_its_intents_to_the_stored_customer(
    client: Any, fake_stripe: Any, customers: CustomerDao, make_shop_for: Callable[..., Any]
) -> None:
    customer_id = client.ensure_customer(USER, ADA)
    factory = InMemoryDaoFactory()
    other = another_client(fake_stripe, customers)
    shop = make_shop_for(other, None, factory)

    order = shop.service.create_order(shop.offer("pack").id, USER)

    assert fake_stripe.intents[order.payment_intent_id]["customer"] == customer_id


@pytest.mark.parametrize("racers", [2, 4])
def test_clients_racing_for_one_user_end_with_one_customer(
    fake_stripe: Any, customers: CustomerDao, racers: int
) -> None:
    shared = RacingCustomers(customers, threading.Barrier(racers))
    clients = [another_client(fake_stripe, shared) for _ in range(racers)]

    with ThreadPoolExecutor(racers) as pool:
        answers = list(pool.map(lambda c: c.ensure_customer(USER, ADA), clients))

    assert len(set(answers)) == 1
    assert [c.customer_id for c in customers.find({})] == answers[:1]
    assert list(fake_stripe.customers) == answers[:1]


def test_users_racing_for_one_email_end_with_one_owner(
    fake_stripe: Any, customers: CustomerDao
) -> None:
    shared = RacingCustomers(customers, threading.Barrier(2))
    clients = [another_client(fake_stripe, shared) for _ in range(2)]

    def ask(index: int) -> str | Exception:
        try:
            return str(clients[index].ensure_customer(f"user-{index}", ADA))
        except PaymentError as e:
            return e

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(ask, range(2)))

    (stored,) = customers.find({})
    winners = [a for a in answers if isinstance(a, str)]
    assert winners == [stored.customer_id]
    assert [type(a) for a in answers if not isinstance(a, str)] == [InvalidPaymentError]


# -- balances ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "currency", "credit"),
    [
        (-1234, "usd", Decimal("12.34")),
        (500, "jpy", Decimal(-500)),
        (-1250, "kwd", Decimal("1.25")),
    ],
)
def test_the_balance_is_the_customers_credit_in_major_units(
    client: Any, fake_stripe: Any, balance: int, currency: str, credit: Decimal
) -> None:
    customer_id = client.ensure_customer(USER, ADA)
    fake_stripe.customers[customer_id].update(balance=balance, currency=currency)

    assert client.fetch_user_balance(USER) == credit


def test_a_customer_without_balance_holds_nothing(client: Any) -> None:
    client.ensure_customer(USER, ADA)

    assert client.fetch_user_balance(USER) == Decimal(0)


def test_a_fresh_client_reads_the_balance_of_the_stored_customer(
    client: Any, fake_stripe: Any, customers: CustomerDao
) -> None:
    customer_id = client.ensure_customer(USER, ADA)
    fake_stripe.customers[customer_id].update(balance=-1000, currency="usd")

    fresh = another_client(fake_stripe, customers)

    assert fresh.fetch_user_balance(USER) == Decimal(10)
    assert fresh.check_user_balance(USER) == Decimal(10)


def test_checking_a_balance_reuses_a_recent_reading(
    client: Any, fake_stripe: Any, clock: Any
) -> None:
    customer_id = client.ensure_customer(USER, ADA)
    fake_stripe.customers[customer_id].update(balance=-1000, currency="usd")
    assert client.check_user_balance(USER) == Decimal(10)
    fake_stripe.customers[customer_id]["balance"] = -2000

    cached = client.check_user_balance(USER)
    clock.advance(timedelta(minutes=5))
    refreshed = client.check_user_balance(USER)

    assert (cached, refreshed) == (Decimal(10), Decimal(20))


def test_fetching_a_balance_always_asks_stripe(client: Any, fake_stripe: Any) -> None:
    customer_id = client.ensure_customer(USER, ADA)
    fake_stripe.customers[customer_id].update(balance=-1000, currency="usd")
    client.check_user_balance(USER)
    fake_stripe.customers[customer_id]["balance"] = -2000

    assert client.fetch_user_balance(USER) == Decimal(20)


def test_the_balance_of_a_user_without_customer_is_an_error(client: Any) -> None:
    with pytest.raises(PaymentError, match="ensure_customer"):
        client.fetch_user_balance("nobody")
