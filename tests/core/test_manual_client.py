"""ManualPaymentClient (SPEC §5): an operator approves or declines each intent."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from usercredits import ManualPaymentClient, Order, PaymentError, Status


def stored_order(order_id: str = "o1") -> Order:
    return Order(id=order_id, user_id="alice", total=Decimal("5.00"), currency="usd")


def test_an_intent_gets_an_id_and_a_secret_on_a_copy_of_the_order() -> None:
    client = ManualPaymentClient()
    order = stored_order()
    with_intent = client.create_payment_intent(order)
    assert with_intent.payment_intent_id
    assert with_intent.payment_intent_secret
    assert with_intent is not order
    assert order.payment_intent_id is None


def test_each_intent_is_new() -> None:
    client = ManualPaymentClient()
    first = client.create_payment_intent(stored_order())
    second = client.create_payment_intent(stored_order())
    assert first.payment_intent_id != second.payment_intent_id


def test_an_order_must_be_stored_before_it_gets_an_intent() -> None:
    with pytest.raises(PaymentError, match="stored"):
        ManualPaymentClient().create_payment_intent(Order())


def test_an_undecided_intent_stays_pending() -> None:
    client = ManualPaymentClient()
    order = client.create_payment_intent(stored_order())
    outcome = client.after_payment_executed(order)
    assert outcome.status is Status.PENDING
    assert outcome.history[-1].message == "Awaiting manual validation"


def test_an_approved_intent_is_paid() -> None:
    client = ManualPaymentClient()
    order = client.create_payment_intent(stored_order())
    client.approve(order.id)
    outcome = client.after_payment_executed(order)
    assert (outcome.status, outcome.history[-1].status) == (Status.PAID, Status.PAID)
    assert json.loads(outcome.history[-1].payload or "")["decision"] == "approved"


def test_a_declined_intent_is_refused_with_the_operators_reason() -> None:
    client = ManualPaymentClient()
    order = client.create_payment_intent(stored_order())
    client.decline(order.id, "card blocked")
    outcome = client.after_payment_executed(order)
    assert (outcome.status, outcome.history[-1].message) == (Status.REFUSED, "card blocked")


def test_an_operator_can_change_a_decision() -> None:
    client = ManualPaymentClient()
    order = client.create_payment_intent(stored_order())
    client.decline(order.id)
    client.approve(order.id)
    assert client.after_payment_executed(order).status is Status.PAID


def test_a_decision_applies_to_the_orders_latest_intent_only() -> None:
    client = ManualPaymentClient()
    old = client.create_payment_intent(stored_order())
    new = client.create_payment_intent(stored_order())
    client.approve("o1")
    assert client.after_payment_executed(new).status is Status.PAID
    assert client.after_payment_executed(old).status is Status.PENDING


def test_settling_appends_one_entry_to_a_copy_of_the_history() -> None:
    client = ManualPaymentClient()
    order = client.create_payment_intent(stored_order())
    outcome = client.after_payment_executed(order)
    assert len(outcome.history) == len(order.history) + 1
    assert order.history == []


def test_deciding_on_an_order_without_intent_is_a_payment_error() -> None:
    client = ManualPaymentClient()
    with pytest.raises(PaymentError, match="no payment intent"):
        client.approve("o1")
    with pytest.raises(PaymentError, match="no payment intent"):
        client.decline("o1")


def test_settling_an_unknown_intent_is_a_payment_error() -> None:
    order = stored_order()
    order.payment_intent_id = "manual_elsewhere"
    with pytest.raises(PaymentError, match="unknown payment intent"):
        ManualPaymentClient().after_payment_executed(order)


def test_the_manual_client_receives_no_webhooks() -> None:
    with pytest.raises(PaymentError, match="no webhooks"):
        ManualPaymentClient().handle_webhook(b"{}", "sig")


def test_a_refund_returns_a_refunded_copy_with_an_entry() -> None:
    order = stored_order()
    refunded = ManualPaymentClient().refund(order)
    assert (refunded.status, refunded.history[-1].status) == (Status.REFUNDED, Status.REFUNDED)
    assert order.status is Status.PENDING


def test_the_manual_client_holds_no_money() -> None:
    client = ManualPaymentClient()
    assert client.check_user_balance("alice") == Decimal(0)
    assert client.fetch_user_balance("alice") == Decimal(0)
