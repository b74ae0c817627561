"""How Stripe-shaped events read: snapshot events and thin event notifications, signed as
Stripe signs them, mapped to the core's WebhookEvent (kind, intent, order, amount, time)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import stripe

from usercredits import PaymentError, WebhookEventKind

from .payloads import (
    charge,
    dispute,
    payment_intent,
    refund,
    sign,
    snapshot_event,
    thin_event,
)

PI = "pi_3PgaftB7WZ01zgkW0mapping"
K = WebhookEventKind


# -- snapshot events -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "obj", "kind", "amount"),
    [
        ("payment_intent.succeeded", payment_intent(PI), K.PAYMENT_SUCCEEDED, None),
        (
            "payment_intent.payment_failed",
            payment_intent(PI, status="requires_payment_method"),
            K.PAYMENT_FAILED,
            None,
        ),
        (
            "payment_intent.canceled",
            payment_intent(PI, status="canceled"),
            K.PAYMENT_CANCELED,
            None,
        ),
        ("charge.refunded", charge(PI, amount_refunded=500), K.REFUNDED, Decimal("5.00")),
        ("charge.refunded", charge(PI, amount_refunded=1999), K.REFUNDED, Decimal("19.99")),
        ("refund.failed", refund(PI, amount=500, status="failed"), K.REFUND_FAILED, Decimal(5)),
        ("refund.updated", refund(PI, amount=500, status="failed"), K.REFUND_FAILED, Decimal(5)),
        (
            "charge.refund.updated",
            refund(PI, amount=700, status="failed"),
            K.REFUND_FAILED,
            Decimal(7),
        ),
        (
            "charge.refund.updated",
            refund(PI, amount=700, status="canceled"),
            K.REFUND_FAILED,
            Decimal(7),
        ),
        ("refund.updated", refund(PI, amount=500), K.OTHER, None),
        ("refund.created", refund(PI, amount=500), K.OTHER, None),
        ("charge.dispute.created", dispute(PI), K.DISPUTE_OPENED, Decimal("19.99")),
        ("charge.dispute.closed", dispute(PI, status="lost"), K.DISPUTE_LOST, Decimal("19.99")),
        ("charge.dispute.closed", dispute(PI, status="won"), K.DISPUTE_WON, Decimal("19.99")),
        ("charge.dispute.closed", dispute(PI, status="warning_closed"), K.OTHER, None),
        ("charge.dispute.updated", dispute(PI, status="under_review"), K.OTHER, None),
        ("payment_intent.created", payment_intent(PI), K.OTHER, None),
        ("invoice.paid", {"id": "in_1", "object": "invoice"}, K.OTHER, None),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_event_type_maps_to_its_kind_intent_and_amount(
    client: Any, event_type: str, obj: dict[str, Any], kind: WebhookEventKind, amount: Any
) -> None:
    body = snapshot_event(event_type, obj)

    event = client.handle_webhook(body, sign(body))

    assert (event.type, event.kind, event.amount) == (event_type, kind, amount)
    assert event.payment_intent_id == (None if event_type == "invoice.paid" else PI)


@pytest.mark.parametrize(
    ("currency", "minor", "major"),
    [("usd", 1234, Decimal("12.34")), ("jpy", 500, Decimal(500)), ("kwd", 1250, Decimal("1.25"))],
)
def test_a_refunded_amount_is_read_in_the_charges_currency(
    client: Any, currency: str, minor: int, major: Decimal
) -> None:
    body = snapshot_event(
        "charge.refunded", charge(PI, amount=minor * 2, amount_refunded=minor, currency=currency)
    )

    assert client.handle_webhook(body, sign(body)).amount == major


def test_a_charge_names_its_order_through_the_intents_metadata(client: Any) -> None:
    body = snapshot_event("charge.refunded", charge(PI, amount_refunded=100, order_id="order-7"))

    assert client.handle_webhook(body, sign(body)).order_id == "order-7"


def test_an_event_tells_when_stripe_created_it(client: Any) -> None:
    body = snapshot_event("charge.dispute.created", dispute(PI), created=1721948530)

    created = client.handle_webhook(body, sign(body)).created

    assert created == datetime(2024, 7, 25, 23, 2, 10, tzinfo=UTC)


def test_an_event_keeps_the_body_as_received(client: Any) -> None:
    body = snapshot_event("charge.dispute.created", dispute(PI))

    assert client.handle_webhook(body.encode(), sign(body)).payload == body


def test_a_stored_payload_reads_again_without_a_signature(client: Any) -> None:
    body = snapshot_event("charge.refunded", charge(PI, amount_refunded=500))
    received = client.handle_webhook(body, sign(body))

    again = client.parse_event(received.payload)

    assert again == received


@pytest.mark.parametrize("payload", ["not json", "[]", json.dumps({"object": "event"}), b"\xff"])
def test_a_payload_that_is_not_an_event_does_not_read(client: Any, payload: Any) -> None:
    with pytest.raises(PaymentError):
        client.parse_event(payload)


def test_a_refund_event_without_the_refunded_amount_is_rejected(client: Any) -> None:
    obj = charge(PI)
    del obj["amount_refunded"]
    obj["refunded"] = False
    body = snapshot_event("charge.refunded", obj)

    with pytest.raises(PaymentError, match="amount"):
        client.handle_webhook(body, sign(body))


# -- thin events ---------------------------------------------------------------------------


@pytest.fixture
def intent(fake_stripe: Any) -> dict[str, Any]:
    """A succeeded intent of order-1 on the fake Stripe, with its charge."""
    created: dict[str, Any] = fake_stripe.put(payment_intent(PI, order_id="order-1"))
    return created


def test_a_thin_event_reads_like_the_snapshot_event_it_stands_for(
    client: Any, fake_stripe: Any, intent: dict[str, Any]
) -> None:
    body = thin_event(
        "v1.payment_intent.succeeded",
        PI,
        "payment_intent",
        event_id="evt_test_thin",
        created=datetime(2030, 1, 15, 12, 0, 0, 134000, tzinfo=UTC),
    )

    event = client.handle_webhook(body, sign(body))

    assert (event.id, event.type) == ("evt_test_thin", "v1.payment_intent.succeeded")
    assert event.kind is K.PAYMENT_SUCCEEDED
    assert (event.payment_intent_id, event.order_id) == (PI, "order-1")
    assert event.created == datetime(2030, 1, 15, 12, 0, 0, 134000, tzinfo=UTC)
    assert event.payload == body


def test_a_thin_event_fetches_its_related_object_through_the_sdk(
    client: Any, fake_stripe: Any, intent: dict[str, Any]
) -> None:
    body = thin_event("v1.payment_intent.succeeded", PI, "payment_intent", event_id="evt_t1")

    client.handle_webhook(body, sign(body))

    (fetch,) = fake_stripe.gets(f"/v1/payment_intents/{PI}")
    assert fetch.headers["Stripe-Request-Trigger"] == "event=evt_t1"


@pytest.mark.parametrize(
    ("event_type", "obj", "kind", "amount"),
    [
        ("v1.charge.refunded", charge(PI, amount_refunded=500), K.REFUNDED, Decimal(5)),
        ("v1.refund.failed", refund(PI, amount=300, status="failed"), K.REFUND_FAILED, Decimal(3)),
        (
            "v1.charge.refund.updated",
            refund(PI, amount=300, status="failed"),
            K.REFUND_FAILED,
            Decimal(3),
        ),
        ("v1.charge.dispute.created", dispute(PI), K.DISPUTE_OPENED, Decimal("19.99")),
        ("v1.charge.dispute.closed", dispute(PI, status="lost"), K.DISPUTE_LOST, Decimal("19.99")),
        ("v1.charge.dispute.closed", dispute(PI, status="won"), K.DISPUTE_WON, Decimal("19.99")),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_thin_refund_and_dispute_events_read_their_fetched_object(
    client: Any,
    fake_stripe: Any,
    event_type: str,
    obj: dict[str, Any],
    kind: WebhookEventKind,
    amount: Decimal,
) -> None:
    fake_stripe.put(obj)
    body = thin_event(event_type, obj["id"], obj["object"])

    event = client.handle_webhook(body, sign(body))

    assert (event.kind, event.amount, event.payment_intent_id) == (kind, amount, PI)


def test_a_thin_event_of_a_type_that_concerns_no_order_fetches_nothing(
    client: Any, fake_stripe: Any
) -> None:
    body = thin_event("v1.customer.created", "cus_1", "customer")

    event = client.handle_webhook(body, sign(body))

    assert event.kind is K.OTHER
    assert fake_stripe.requests == []


def test_a_thin_event_whose_object_stripe_does_not_give_is_a_payment_error(
    client: Any, fake_stripe: Any
) -> None:
    body = thin_event("v1.payment_intent.succeeded", "pi_missing", "payment_intent")

    with pytest.raises(PaymentError) as caught:
        client.handle_webhook(body, sign(body))

    assert isinstance(caught.value.original_error, stripe.InvalidRequestError)


def test_a_thin_event_is_verified_like_a_snapshot_one(
    client: Any, fake_stripe: Any, intent: dict[str, Any]
) -> None:
    body = thin_event("v1.payment_intent.succeeded", PI, "payment_intent")
    future = int(time.time()) + 3600

    for header in (sign(body, "whsec_forged"), sign(body, timestamp=future), None):
        with pytest.raises(PaymentError):
            client.handle_webhook(body, header)
    assert fake_stripe.requests == []


def test_a_thin_event_without_its_related_object_is_rejected(client: Any) -> None:
    notification = json.loads(thin_event("v1.payment_intent.succeeded", PI, "payment_intent"))
    del notification["related_object"]
    body = json.dumps(notification)

    with pytest.raises(PaymentError):
        client.handle_webhook(body, sign(body))


def test_a_stored_thin_event_fetches_its_object_again(
    client: Any, fake_stripe: Any, intent: dict[str, Any]
) -> None:
    body = thin_event("v1.payment_intent.succeeded", PI, "payment_intent")
    received = client.handle_webhook(body, sign(body))

    again = client.parse_event(received.payload)

    assert again == received
    assert len(fake_stripe.gets(f"/v1/payment_intents/{PI}")) == 2
