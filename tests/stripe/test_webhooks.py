"""Webhooks are verified with the SDK's signature check and applied once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import stripe

from usercredits import Order, PaymentError, Status, WebhookEventKind
from usercredits_stripe import StripePaymentClient

USER = "user-1"
SECRET = "whsec_test_usercredits"


def _intent(intent_id: str = "pi_1", **fields: Any) -> dict[str, Any]:
    return {
        "id": intent_id,
        "object": "payment_intent",
        "status": "succeeded",
        "metadata": {"order_id": "order-1"},
        **fields,
    }


@pytest.fixture
def body(make_event: Callable[..., str]) -> str:
    return make_event("payment_intent.succeeded", _intent())


# -- signature checks ------------------------------------------------------------------


def test_a_correctly_signed_event_is_accepted(
    client: Any, body: str, signer: Callable[..., str]
) -> None:
    event = client.handle_webhook(body, signer(body, SECRET))

    assert (event.id, event.type) == ("evt_test_1", "payment_intent.succeeded")
    assert event.kind is WebhookEventKind.PAYMENT_SUCCEEDED
    assert (event.payment_intent_id, event.order_id) == ("pi_1", "order-1")
    assert event.payload == body
    assert json.loads(event.payload)["data"]["object"] == _intent()


def test_the_raw_body_may_be_bytes(client: Any, body: str, signer: Callable[..., str]) -> None:
    event = client.handle_webhook(body.encode(), signer(body, SECRET))

    assert event.id == "evt_test_1"


def test_a_tampered_body_is_rejected(client: Any, body: str, signer: Callable[..., str]) -> None:
    header = signer(body, SECRET)
    tampered = body.replace('"succeeded"', '"canceled"', 1)

    with pytest.raises(PaymentError) as caught:
        client.handle_webhook(tampered, header)

    assert isinstance(caught.value.original_error, stripe.SignatureVerificationError)


def test_a_body_signed_with_another_secret_is_rejected(
    client: Any, body: str, signer: Callable[..., str]
) -> None:
    with pytest.raises(PaymentError) as caught:
        client.handle_webhook(body, signer(body, "whsec_somebody_else"))

    assert isinstance(caught.value.original_error, stripe.SignatureVerificationError)


def test_a_stale_signature_is_rejected(client: Any, body: str, signer: Callable[..., str]) -> None:
    stale = int(time.time()) - stripe.Webhook.DEFAULT_TOLERANCE - 60

    with pytest.raises(PaymentError, match="tolerance"):
        client.handle_webhook(body, signer(body, SECRET, stale))


def test_a_signature_within_the_tolerance_is_accepted(
    client: Any, body: str, signer: Callable[..., str]
) -> None:
    recent = int(time.time()) - stripe.Webhook.DEFAULT_TOLERANCE + 60

    assert client.handle_webhook(body, signer(body, SECRET, recent)).id == "evt_test_1"


def test_a_signature_dated_beyond_the_tolerance_in_the_future_is_rejected(
    client: Any, body: str, signer: Callable[..., str]
) -> None:
    future = int(time.time()) + stripe.Webhook.DEFAULT_TOLERANCE + 60

    with pytest.raises(PaymentError, match="tolerance") as caught:
        client.handle_webhook(body, signer(body, SECRET, future))

    assert isinstance(caught.value.original_error, stripe.SignatureVerificationError)


def test_a_signature_dated_within_the_tolerance_in_the_future_is_accepted(
    client: Any, body: str, signer: Callable[..., str]
) -> None:
    ahead = int(time.time()) + stripe.Webhook.DEFAULT_TOLERANCE - 60

    assert client.handle_webhook(body, signer(body, SECRET, ahead)).id == "evt_test_1"


def test_the_tolerance_is_the_clients_in_both_directions(
    fake_stripe: Any, body: str, signer: Callable[..., str]
) -> None:
    strict = StripePaymentClient("sk_test_x", SECRET, webhook_tolerance=10, http_client=fake_stripe)
    now = int(time.time())

    for moment in (now - 60, now + 60):
        with pytest.raises(PaymentError, match="tolerance"):
            strict.handle_webhook(body, signer(body, SECRET, moment))
    assert strict.handle_webhook(body, signer(body, SECRET, now + 5)).id == "evt_test_1"


@pytest.mark.parametrize("header", [None, "", "garbage", "t=123", "v1=abc"])
def test_a_missing_or_malformed_signature_header_is_rejected(
    client: Any, body: str, header: str | None
) -> None:
    with pytest.raises(PaymentError) as caught:
        client.handle_webhook(body, header)

    assert isinstance(caught.value.original_error, stripe.SignatureVerificationError)


def test_a_signed_body_that_is_not_an_event_is_rejected(
    client: Any, signer: Callable[..., str]
) -> None:
    for body in ("not json", json.dumps({"object": "event", "type": "x"})):
        with pytest.raises(PaymentError):
            client.handle_webhook(body, signer(body, SECRET))


# -- event types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("payment_intent.succeeded", WebhookEventKind.PAYMENT_SUCCEEDED),
        ("payment_intent.payment_failed", WebhookEventKind.PAYMENT_FAILED),
        ("payment_intent.canceled", WebhookEventKind.PAYMENT_CANCELED),
        ("payment_intent.created", WebhookEventKind.OTHER),
        ("customer.created", WebhookEventKind.OTHER),
    ],
)
def test_event_types_map_to_kinds(
    client: Any,
    make_event: Callable[..., str],
    signer: Callable[..., str],
    event_type: str,
    kind: WebhookEventKind,
) -> None:
    body = make_event(event_type, _intent())

    assert client.handle_webhook(body, signer(body, SECRET)).kind is kind


def test_a_full_refund_names_the_charges_intent(
    client: Any, make_event: Callable[..., str], signer: Callable[..., str]
) -> None:
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_9", "refunded": True}
    body = make_event("charge.refunded", charge)

    event = client.handle_webhook(body, signer(body, SECRET))

    assert (event.kind, event.payment_intent_id) == (WebhookEventKind.REFUNDED, "pi_9")


def test_a_partial_refund_reports_the_amount_refunded_so_far(
    client: Any, make_event: Callable[..., str], signer: Callable[..., str]
) -> None:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_9",
        "amount": 1999,
        "amount_refunded": 500,
        "currency": "usd",
        "refunded": False,
    }
    body = make_event("charge.refunded", charge)

    event = client.handle_webhook(body, signer(body, SECRET))

    assert (event.kind, event.amount) == (WebhookEventKind.REFUNDED, Decimal("5.00"))


# -- through the service ---------------------------------------------------------------


@pytest.fixture
def order(shop: Any) -> Order:
    created: Order = shop.service.create_order(shop.offer("pack").id, USER)
    return created


def _delivery(
    order: Order, event_type: str, make_event: Callable[..., str], signer: Callable[..., str]
) -> tuple[str, str]:
    body = make_event(
        event_type, _intent(str(order.payment_intent_id), metadata={"order_id": str(order.id)})
    )
    return body, signer(body, SECRET)


def test_a_success_event_settles_its_order(
    shop: Any,
    fake_stripe: Any,
    order: Order,
    make_event: Callable[..., str],
    signer: Callable[..., str],
) -> None:
    fake_stripe.intents[order.payment_intent_id].update(status="succeeded", amount_received=1999)

    result = shop.service.handle_webhook(
        *_delivery(order, "payment_intent.succeeded", make_event, signer)
    )

    assert result.handled
    assert not result.duplicate
    assert result.order.status is Status.PAID
    assert shop.service.remaining_tokens(USER, "ai") == 100


def test_the_same_event_delivered_twice_is_applied_once(
    shop: Any,
    fake_stripe: Any,
    order: Order,
    make_event: Callable[..., str],
    signer: Callable[..., str],
) -> None:
    fake_stripe.intents[order.payment_intent_id].update(status="succeeded", amount_received=1999)
    body, header = _delivery(order, "payment_intent.succeeded", make_event, signer)

    first = shop.service.handle_webhook(body, header)
    second = shop.service.handle_webhook(body, header)

    assert (first.duplicate, second.duplicate) == (False, True)
    assert shop.service.remaining_tokens(USER, "ai") == 100
    ledger = shop.service.get_dao_factory().get_token_timetable_dao().find({"user_id": USER})
    assert len(ledger) == 1


def test_the_event_only_names_the_order_stripe_tells_the_outcome(
    shop: Any,
    fake_stripe: Any,
    order: Order,
    make_event: Callable[..., str],
    signer: Callable[..., str],
) -> None:
    result = shop.service.handle_webhook(
        *_delivery(order, "payment_intent.succeeded", make_event, signer)
    )

    assert result.order.status is Status.PENDING
    assert shop.service.remaining_tokens(USER, "ai") == 0


def test_a_badly_signed_event_changes_nothing(
    shop: Any,
    fake_stripe: Any,
    order: Order,
    make_event: Callable[..., str],
    signer: Callable[..., str],
) -> None:
    fake_stripe.intents[order.payment_intent_id].update(status="succeeded", amount_received=1999)
    body, _ = _delivery(order, "payment_intent.succeeded", make_event, signer)

    with pytest.raises(PaymentError):
        shop.service.handle_webhook(body, signer(body, "whsec_forged"))

    stored = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert (stored.status, len(stored.history)) == (Status.PENDING, len(order.history))
    assert shop.service.remaining_tokens(USER, "ai") == 0


def test_a_failure_event_refuses_its_order(
    shop: Any,
    fake_stripe: Any,
    order: Order,
    make_event: Callable[..., str],
    signer: Callable[..., str],
) -> None:
    fake_stripe.intents[order.payment_intent_id].update(
        status="requires_payment_method", last_payment_error={"message": "Declined"}
    )

    result = shop.service.handle_webhook(
        *_delivery(order, "payment_intent.payment_failed", make_event, signer)
    )

    assert result.order.status is Status.REFUSED


def test_a_refund_event_refunds_the_order_and_revokes_its_unused_tokens(
    shop: Any,
    fake_stripe: Any,
    order: Order,
    make_event: Callable[..., str],
    signer: Callable[..., str],
) -> None:
    fake_stripe.intents[order.payment_intent_id].update(status="succeeded", amount_received=1999)
    shop.service.after_execute(order.id)
    shop.service.tokens_consumed(USER, "ai", 40)
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": order.payment_intent_id,
        "refunded": True,
    }
    body = make_event("charge.refunded", charge, event_id="evt_refund")

    result = shop.service.handle_webhook(body, signer(body, SECRET))

    assert result.order.status is Status.REFUNDED
    assert shop.service.remaining_tokens(USER, "ai") == 0


def test_an_unknown_event_type_is_acknowledged_and_ignored(
    shop: Any,
    order: Order,
    make_event: Callable[..., str],
    signer: Callable[..., str],
) -> None:
    result = shop.service.handle_webhook(*_delivery(order, "invoice.paid", make_event, signer))

    assert not result.handled
    stored = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert len(stored.history) == len(order.history)
