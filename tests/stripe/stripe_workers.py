"""What the worker processes of the Stripe tests run (imported by spawned processes, so it is
a plain module, not a test module), and the customer store that forces their race."""

from __future__ import annotations

from typing import Any, Protocol

from usercredits.dao import CustomerDao
from usercredits.models import Customer, UserId
from usercredits_stripe import StripePaymentClient

WAIT_SECONDS = 30.0
"""How long a racer waits for the others."""


class Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


class RacingCustomers(CustomerDao):
    """A customer DAO whose ``create`` waits until every racer has reached it: each racer
    looked the customer up (and found none stored) before any of them stores one."""

    def __init__(self, inner: CustomerDao, barrier: Barrier):
        self._inner = inner
        self._barrier = barrier

    def create(self, entity: Customer) -> Customer:
        self._barrier.wait(WAIT_SECONDS)
        return self._inner.create(entity)

    def find_by_id(self, entity_id: Any) -> Customer | None:
        return self._inner.find_by_id(entity_id)

    def find(self, filters: Any = None) -> list[Customer]:
        return self._inner.find(filters)

    def find_one(self, filters: Any = None) -> Customer | None:
        return self._inner.find_one(filters)

    def count(self, filters: Any = None) -> int:
        return self._inner.count(filters)

    def find_by_user(self, processor: str, user_id: UserId) -> Customer | None:
        return self._inner.find_by_user(processor, user_id)

    def find_by_email(self, processor: str, email: str) -> Customer | None:
        return self._inner.find_by_email(processor, email)


def ensure_customer(
    url: str,
    api_base: str,
    keys: tuple[str, str],
    user_id: str,
    email: str,
    barrier: Barrier,
    results: Any,
) -> None:
    """In a process of its own: open the database ``url``, ask a Stripe client on
    ``api_base`` for the user's customer, racing the other workers, and put the answer (or
    the error's type and message) in ``results``."""
    from usercredits_sql import SqlDaoFactory  # only the workers need the SQL backend

    factory = SqlDaoFactory.from_url(url, create_schema=False)
    try:
        client = StripePaymentClient(
            *keys,
            api_base=api_base,
            max_network_retries=0,
            customers=RacingCustomers(factory.get_customer_dao(), barrier),
        )
        try:
            results.put(("ok", client.ensure_customer(user_id, email)))
        except Exception as e:  # reported to the test, which names what it expects
            results.put((type(e).__name__, str(e)))
    finally:
        factory.close()
