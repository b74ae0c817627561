"""What the worker processes of ``test_sql_processes.py`` run (imported by spawned processes,
so it is a plain module, not a test module).

Each worker opens its own factory on the database URL it is given and works through a
:class:`PaymentService` with :class:`ApprovingPaymentClient`, a gateway whose every intent
is paid, so that processes agree on payments without sharing memory.
"""

from __future__ import annotations

import contextlib
import copy
import time
from decimal import Decimal
from typing import Any

from usercredits.errors import (
    InsufficientCreditsError,
    InvalidPaymentError,
    PaymentError,
    PaymentErrorCode,
)
from usercredits.models import Order, OrderStatus, Status, UserId
from usercredits.payment import PaymentClient, WebhookEvent
from usercredits.service import PaymentService
from usercredits_sql import SqlDaoFactory

WAIT_SECONDS = 60.0
"""How long a worker waits for the others to be ready."""
WORK_SECONDS = 60.0
"""How long a worker may work at most."""


class ApprovingPaymentClient(PaymentClient):
    """A gateway without state: an order's intent is ``pi_<order id>`` and is always paid."""

    def create_payment_intent(self, order: Order) -> Order:
        result = copy.deepcopy(order)
        result.payment_intent_id = f"pi_{order.id}"
        result.payment_intent_secret = f"pi_{order.id}_secret"
        return result

    def after_payment_executed(self, order: Order) -> Order:
        result = copy.deepcopy(order)
        result.status = Status.PAID
        result.history.append(OrderStatus(status=Status.PAID, message="Payment approved"))
        return result

    def handle_webhook(self, payload: bytes | str, signature: str | None) -> WebhookEvent:
        raise PaymentError("this gateway sends no webhooks")

    def refund(self, order: Order) -> Order:
        result = copy.deepcopy(order)
        result.status = Status.REFUNDED
        result.history.append(OrderStatus(status=Status.REFUNDED, message="Refunded"))
        return result

    def check_user_balance(self, user_id: UserId) -> Decimal:
        return Decimal(0)

    def fetch_user_balance(self, user_id: UserId) -> Decimal:
        return Decimal(0)


def open_service(url: str) -> tuple[SqlDaoFactory, PaymentService]:
    """A service on the database ``url`` (its schema exists already)."""
    factory = SqlDaoFactory.from_url(url, create_schema=False)
    return factory, PaymentService(factory, ApprovingPaymentClient())


def consume_until_refused(
    url: str, user: UserId, group: str, limit: int, barrier: Any, results: Any
) -> None:
    """Consume one token at a time with ``consume_tokens`` until refused (at most ``limit``
    calls); put (consumed, refused) on ``results``."""
    factory, service = open_service(url)
    try:
        barrier.wait(WAIT_SECONDS)
        consumed = refused = 0
        for _ in range(limit):
            try:
                service.consume_tokens(user, group, 1)
            except InsufficientCreditsError:
                refused += 1
                break
            consumed += 1
        results.put((consumed, refused))
    finally:
        factory.close()


def hold_capture_and_consume(
    url: str, user: UserId, group: str, barrier: Any, results: Any
) -> None:
    """Alternate a hold of 5 tokens captured whole and a safe consumption of 1 until both are
    refused; put (tokens taken, captures that failed) on ``results``: a capture fails only if
    another process consumed the tokens it held."""
    factory, service = open_service(url)
    try:
        barrier.wait(WAIT_SECONDS)
        taken = failed = 0
        while True:
            progressed = False
            with contextlib.suppress(InsufficientCreditsError):
                hold = service.reserve(user, group, 5)
                try:
                    taken -= service.capture(hold.id).tokens
                except InsufficientCreditsError:
                    failed += 1
                progressed = True
            with contextlib.suppress(InsufficientCreditsError):
                taken -= service.consume_tokens(user, group, 1).tokens
                progressed = True
            if not progressed:
                break
        results.put((taken, failed))
    finally:
        factory.close()


def settle_each(url: str, order_ids: list[str], barrier: Any, results: Any) -> None:
    """Settle each order with ``after_execute``; put the outcome of each on ``results``:
    ``paid``, ``duplicate`` (InvalidPaymentError DUPLICATE_ATTEMPT) or the error's repr."""
    factory, service = open_service(url)
    try:
        barrier.wait(WAIT_SECONDS)
        outcomes = []
        for order_id in order_ids:
            try:
                service.after_execute(order_id)
                outcomes.append("paid")
            except InvalidPaymentError as e:
                duplicate = e.code is PaymentErrorCode.DUPLICATE_ATTEMPT
                outcomes.append("duplicate" if duplicate else repr(e))
            except Exception as e:
                outcomes.append(repr(e))
        results.put(outcomes)
    finally:
        factory.close()


def churn(
    url: str, user: UserId, offer_ids: list[str], worker: int, ready: Any, completed: Any
) -> None:
    """Order, settle and consume without end (until killed, or for ``WORK_SECONDS``): first
    complete what an earlier worker left undone (``reconcile``, then the pending orders paid
    again), then buy the offers in turn, paying each order, and consume from their groups.
    Puts on ``completed`` how many interrupted orders the ``reconcile`` completed."""
    factory, service = open_service(url)
    completed.put(len(service.reconcile(user).completed_orders))
    for order in factory.get_order_dao().find({"user_id": user, "status": Status.PENDING}):
        if not order.payment_intent_id:
            service.pay_order(order.id)
        service.settle(order.id)
    ready.set()
    deadline = time.monotonic() + WORK_SECONDS
    step = 0
    while time.monotonic() < deadline:
        offer_id = offer_ids[step % len(offer_ids)]
        order = service.create_order(offer_id, user)
        settled = service.settle(order.id)
        group = settled.offer_group
        key = f"{worker}-{step}"
        for count in (1, 2):
            with contextlib.suppress(InsufficientCreditsError):
                service.consume_tokens(user, group, count, idempotency_key=f"{key}-{count}")
        service.tokens_consumed(user, "bonus", 1, idempotency_key=f"{key}-bonus")
        step += 1
