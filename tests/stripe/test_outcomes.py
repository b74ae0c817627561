"""Settlement reads the order's intent and maps its status exactly as SPEC §5 says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from usercredits import Order, PaymentError, Status

USER = "user-1"
PAID = {"status": "succeeded", "amount_received": 1999}


@pytest.fixture
def order(shop: Any) -> Order:
    """A pending order of 19.99 usd with its intent."""
    created: Order = shop.service.create_order(shop.offer("pack").id, USER)
    return created


def _settle(shop: Any, fake: Any, order: Order, **intent: Any) -> Order:
    fake.intents[order.payment_intent_id].update(intent)
    settled: Order = shop.client.after_payment_executed(order)
    return settled


@pytest.mark.parametrize(
    ("intent", "status"),
    [
        (PAID, Status.PAID),
        ({"status": "succeeded", "amount_received": 1998}, Status.INCONSISTENT),
        ({"status": "succeeded", "amount_received": 2000}, Status.INCONSISTENT),
        ({**PAID, "currency": "eur"}, Status.INCONSISTENT),
        ({**PAID, "metadata": {"order_id": "another-order"}}, Status.INCONSISTENT),
        (
            {
                "status": "requires_payment_method",
                "last_payment_error": {"code": "card_declined", "message": "Declined"},
            },
            Status.REFUSED,
        ),
        ({"status": "requires_payment_method", "last_payment_error": None}, Status.PENDING),
        ({"status": "requires_action"}, Status.ERROR),
        ({"status": "processing"}, Status.PENDING),
        ({"status": "requires_confirmation"}, Status.PENDING),
        ({"status": "requires_capture"}, Status.PENDING),
        ({"status": "canceled", "cancellation_reason": "abandoned"}, Status.REFUSED),
    ],
    ids=[
        "succeeded",
        "succeeded-short",
        "succeeded-over",
        "succeeded-other-currency",
        "succeeded-other-order",
        "requires_payment_method-after-failure",
        "requires_payment_method-before-attempt",
        "requires_action",
        "processing",
        "requires_confirmation",
        "requires_capture",
        "canceled",
    ],
)
def test_each_intent_status_maps_to_an_order_status(
    shop: Any, fake_stripe: Any, order: Order, intent: dict[str, Any], status: Status
) -> None:
    settled = _settle(shop, fake_stripe, order, **intent)

    assert settled.status is status
    assert settled.history[-1].status is status


def test_the_amount_may_come_from_the_intents_succeeded_charge(
    shop: Any, fake_stripe: Any, order: Order
) -> None:
    fake_stripe.intents[order.payment_intent_id].pop("amount_received")
    charge = {"id": "ch_1", "object": "charge", "status": "succeeded", "amount": 1999}

    settled = _settle(shop, fake_stripe, order, status="succeeded", latest_charge=charge)

    assert settled.status is Status.PAID


@pytest.mark.parametrize(
    "charge",
    [
        "ch_not_expanded",
        {"id": "ch_1", "object": "charge", "status": "failed", "amount": 1999},
        {"id": "ch_1", "object": "charge", "status": "succeeded", "amount": 1000},
        None,
    ],
)
def test_a_success_without_a_matching_amount_received_is_inconsistent(
    shop: Any, fake_stripe: Any, order: Order, charge: Any
) -> None:
    fake_stripe.intents[order.payment_intent_id].pop("amount_received")

    settled = _settle(shop, fake_stripe, order, status="succeeded", latest_charge=charge)

    assert settled.status is Status.INCONSISTENT


def test_a_refusal_says_why(shop: Any, fake_stripe: Any, order: Order) -> None:
    error = {"code": "card_declined", "message": "Your card was declined."}

    settled = _settle(
        shop, fake_stripe, order, status="requires_payment_method", last_payment_error=error
    )

    assert "Your card was declined." in settled.history[-1].message


def test_an_inconsistency_names_both_amounts(shop: Any, fake_stripe: Any, order: Order) -> None:
    settled = _settle(shop, fake_stripe, order, status="succeeded", amount_received=999)

    assert "999 usd" in settled.history[-1].message
    assert "1999" in settled.history[-1].message


def test_each_outcome_adds_one_entry_with_the_intent_as_json(
    shop: Any, fake_stripe: Any, order: Order
) -> None:
    settled = _settle(shop, fake_stripe, order, **PAID)

    assert len(settled.history) == len(order.history) + 1
    payload = json.loads(settled.history[-1].payload or "")
    assert payload == fake_stripe.intents[order.payment_intent_id]


def test_settlement_asks_stripe_for_the_orders_current_intent(
    shop: Any, fake_stripe: Any, order: Order
) -> None:
    _settle(shop, fake_stripe, order, **PAID)

    assert fake_stripe.requests[-1].method == "get"
    assert fake_stripe.requests[-1].path == f"/v1/payment_intents/{order.payment_intent_id}"


def test_settlement_does_not_change_the_order_it_is_given(
    shop: Any, fake_stripe: Any, order: Order
) -> None:
    entries = len(order.history)

    _settle(shop, fake_stripe, order, **PAID)

    assert (order.status, len(order.history)) == (Status.PENDING, entries)


def test_an_unknown_intent_status_is_a_payment_error(
    shop: Any, fake_stripe: Any, order: Order
) -> None:
    with pytest.raises(PaymentError, match="unknown status"):
        _settle(shop, fake_stripe, order, status="teleported")


def test_an_order_without_intent_cannot_be_settled(shop: Any) -> None:
    with pytest.raises(PaymentError, match="no payment intent"):
        shop.client.after_payment_executed(Order(id="o-1", user_id=USER))


@pytest.mark.parametrize(
    ("intent", "status", "tokens"),
    [
        (PAID, Status.PAID, 100),
        ({"status": "succeeded", "amount_received": 100}, Status.INCONSISTENT, 0),
        (
            {"status": "requires_payment_method", "last_payment_error": {"message": "No"}},
            Status.REFUSED,
            0,
        ),
        ({"status": "requires_action"}, Status.ERROR, 0),
        ({"status": "processing"}, Status.PENDING, 0),
        ({"status": "canceled"}, Status.REFUSED, 0),
    ],
)
def test_the_service_records_the_outcome_and_grants_only_on_payment(
    shop: Any, fake_stripe: Any, order: Order, intent: dict[str, Any], status: Status, tokens: int
) -> None:
    fake_stripe.intents[order.payment_intent_id].update(intent)

    credits = shop.service.after_execute(order.id)

    stored = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert stored.status is status
    assert credits.balance("ai") == tokens
    assert json.loads(stored.history[-1].payload)["id"] == order.payment_intent_id
