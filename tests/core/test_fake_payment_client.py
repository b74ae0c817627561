"""FakePaymentClient: the scripted gateway shipped in ``usercredits.testing.fakes``."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from usercredits import Order, PaymentError, Status, WebhookEventKind
from usercredits.testing.fakes import FakeCall, FakePaymentClient


def stored_order(order_id: str = "o1") -> Order:
    return Order(id=order_id, user_id="alice", total=Decimal("12.50"), currency="eur")


@pytest.fixture
def gateway() -> FakePaymentClient:
    return FakePaymentClient("whsec_test")


def test_an_intent_records_the_amount_and_currency_of_the_order(
    gateway: FakePaymentClient,
) -> None:
    order = gateway.create_payment_intent(stored_order())
    assert order.payment_intent_id
    assert order.payment_intent_secret
    intent = gateway.intent(order.payment_intent_id)
    assert (intent.order_id, intent.amount, intent.currency) == ("o1", Decimal("12.50"), "eur")


def test_a_new_intent_reports_the_default_outcome(gateway: FakePaymentClient) -> None:
    order = gateway.create_payment_intent(stored_order())
    assert gateway.after_payment_executed(order).status is Status.PENDING
    paying = FakePaymentClient(default_outcome=Status.PAID)
    assert paying.after_payment_executed(paying.create_payment_intent(order)).status is Status.PAID


@pytest.mark.parametrize(
    "outcome", [Status.PAID, Status.REFUSED, Status.ERROR, Status.INCONSISTENT, Status.PENDING]
)
def test_the_outcome_set_for_an_order_is_reported_with_a_json_payload(
    gateway: FakePaymentClient, outcome: Status
) -> None:
    order = gateway.create_payment_intent(stored_order())
    gateway.set_outcome(order.id, outcome, "as scripted")
    settled = gateway.after_payment_executed(order)
    assert (settled.status, settled.history[-1].message) == (outcome, "as scripted")
    assert json.loads(settled.history[-1].payload or "")["id"] == order.payment_intent_id


@pytest.mark.parametrize("outcome", ["refunded", "expired", "bogus"])
def test_only_settlement_outcomes_can_be_scripted(gateway: FakePaymentClient, outcome: str) -> None:
    order = gateway.create_payment_intent(stored_order())
    with pytest.raises(ValueError, match="payment outcome"):
        gateway.set_outcome(order.id, outcome)


def test_an_outcome_applies_to_the_orders_latest_intent(gateway: FakePaymentClient) -> None:
    old = gateway.create_payment_intent(stored_order())
    new = gateway.create_payment_intent(stored_order())
    gateway.set_outcome("o1", Status.PAID)
    assert gateway.after_payment_executed(new).status is Status.PAID
    assert gateway.after_payment_executed(old).status is Status.PENDING


def test_scripting_an_order_without_intent_is_a_payment_error(
    gateway: FakePaymentClient,
) -> None:
    with pytest.raises(PaymentError, match="no payment intent"):
        gateway.set_outcome("o1", Status.PAID)


def test_settling_an_unknown_intent_is_a_payment_error(gateway: FakePaymentClient) -> None:
    with pytest.raises(PaymentError, match="unknown payment intent"):
        gateway.after_payment_executed(stored_order())


def test_fail_next_makes_one_call_fail(gateway: FakePaymentClient) -> None:
    gateway.fail_next("create_payment_intent")
    with pytest.raises(PaymentError, match="create_payment_intent failed"):
        gateway.create_payment_intent(stored_order())
    assert gateway.create_payment_intent(stored_order()).payment_intent_id


def test_fail_next_raises_the_given_error(gateway: FakePaymentClient) -> None:
    error = PaymentError("card network down")
    gateway.fail_next("refund", error)
    with pytest.raises(PaymentError) as raised:
        gateway.refund(stored_order())
    assert raised.value is error


def test_fail_next_knows_only_payment_client_methods(gateway: FakePaymentClient) -> None:
    with pytest.raises(ValueError, match="charge"):
        gateway.fail_next("charge")


def test_calls_are_recorded_in_order(gateway: FakePaymentClient) -> None:
    order = gateway.create_payment_intent(stored_order())
    gateway.after_payment_executed(order)
    gateway.check_user_balance("alice")
    assert gateway.calls == [
        FakeCall("create_payment_intent", "o1", None),
        FakeCall("after_payment_executed", "o1", order.payment_intent_id),
        FakeCall("check_user_balance"),
    ]
    assert gateway.calls_to("after_payment_executed") == [gateway.calls[1]]


def test_a_signed_event_is_verified_and_mapped(gateway: FakePaymentClient) -> None:
    order = gateway.create_payment_intent(stored_order())
    payload, signature = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, "o1", event_id="evt_1")
    event = gateway.handle_webhook(payload, signature)
    assert (event.id, event.type, event.kind) == (
        "evt_1",
        "payment_succeeded",
        WebhookEventKind.PAYMENT_SUCCEEDED,
    )
    assert (event.payment_intent_id, event.order_id) == (order.payment_intent_id, "o1")
    assert event.payload == payload.decode()


def test_a_str_payload_verifies_like_its_bytes(gateway: FakePaymentClient) -> None:
    gateway.create_payment_intent(stored_order())
    payload, signature = gateway.event(WebhookEventKind.PAYMENT_FAILED, "o1")
    assert (
        gateway.handle_webhook(payload.decode(), signature).kind is WebhookEventKind.PAYMENT_FAILED
    )


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (WebhookEventKind.PAYMENT_SUCCEEDED, Status.PAID),
        (WebhookEventKind.PAYMENT_FAILED, Status.REFUSED),
        (WebhookEventKind.PAYMENT_CANCELED, Status.REFUSED),
    ],
)
def test_a_payment_event_sets_the_outcome_of_its_intent(
    gateway: FakePaymentClient, kind: WebhookEventKind, status: Status
) -> None:
    order = gateway.create_payment_intent(stored_order())
    gateway.event(kind, "o1")
    assert gateway.after_payment_executed(order).status is status


def test_a_refund_event_marks_its_intent_refunded(gateway: FakePaymentClient) -> None:
    gateway.create_payment_intent(stored_order())
    gateway.event(WebhookEventKind.REFUNDED, "o1")
    intent = gateway.latest_intent("o1")
    assert intent is not None
    assert intent.refunded


def test_an_event_of_another_type_is_of_kind_other(gateway: FakePaymentClient) -> None:
    payload, signature = gateway.event(WebhookEventKind.OTHER, event_type="invoice.paid")
    event = gateway.handle_webhook(payload, signature)
    assert (event.type, event.kind) == ("invoice.paid", WebhookEventKind.OTHER)


def test_event_ids_are_unique(gateway: FakePaymentClient) -> None:
    gateway.create_payment_intent(stored_order())
    first = gateway.handle_webhook(*gateway.event(WebhookEventKind.PAYMENT_FAILED, "o1"))
    second = gateway.handle_webhook(*gateway.event(WebhookEventKind.PAYMENT_FAILED, "o1"))
    assert first.id != second.id


@pytest.mark.parametrize("signature", [None, "", "deadbeef"])
def test_a_missing_or_wrong_signature_is_a_payment_error(
    gateway: FakePaymentClient, signature: str | None
) -> None:
    payload, _ = gateway.event(WebhookEventKind.OTHER, event_type="ping")
    with pytest.raises(PaymentError, match="signature"):
        gateway.handle_webhook(payload, signature)


def test_a_signature_made_with_another_secret_is_refused(gateway: FakePaymentClient) -> None:
    payload, signature = FakePaymentClient("whsec_other").event(
        WebhookEventKind.OTHER, event_type="ping"
    )
    with pytest.raises(PaymentError, match="signature"):
        gateway.handle_webhook(payload, signature)


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"id": "evt"}'])
def test_a_signed_payload_that_is_not_an_event_is_a_payment_error(
    gateway: FakePaymentClient, payload: bytes
) -> None:
    with pytest.raises(PaymentError, match="not an event"):
        gateway.handle_webhook(payload, gateway.sign(payload))


def test_a_refund_marks_the_intent_refunded(gateway: FakePaymentClient) -> None:
    order = gateway.create_payment_intent(stored_order())
    refunded = gateway.refund(order)
    assert (refunded.status, refunded.history[-1].status) == (Status.REFUNDED, Status.REFUNDED)
    assert gateway.intent(order.payment_intent_id or "").refunded


def test_a_retried_refund_answers_like_the_first(gateway: FakePaymentClient) -> None:
    order = gateway.create_payment_intent(stored_order())
    first = gateway.refund(order)
    again = gateway.refund(order)
    assert (again.status, again.history[-1].message) == (first.status, first.history[-1].message)


def test_balances_are_set_per_user(gateway: FakePaymentClient) -> None:
    gateway.set_balance("alice", Decimal("3.20"))
    assert gateway.check_user_balance("alice") == Decimal("3.20")
    assert gateway.fetch_user_balance("alice") == Decimal("3.20")
    assert gateway.fetch_user_balance("bob") == Decimal(0)


def test_a_balance_must_be_a_decimal(gateway: FakePaymentClient) -> None:
    with pytest.raises(TypeError, match="Decimal"):
        gateway.set_balance("alice", 3.2)  # type: ignore[arg-type]


def test_check_order_accepts_orders_unless_told_otherwise(gateway: FakePaymentClient) -> None:
    gateway.check_order(stored_order())
    gateway.fail_next("check_order", PaymentError("amount too small"))
    with pytest.raises(PaymentError, match="too small"):
        gateway.check_order(stored_order())
    assert [c.method for c in gateway.calls] == ["check_order", "check_order"]
