"""Stripe's events applied through PaymentService (in-memory backend): payments, partial and
full refunds, disputes and failed refunds, each delivered as a signed snapshot event and as
a signed thin event notification whose object the client fetches from Stripe."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from usercredits import LedgerReason, Order, PaymentError, Status, WebhookResult

from .payloads import dispute, refund, sign, snapshot_event, thin_event

USER = "user-1"


@dataclass
class Stripe:
    """Stripe's side of the tests: its state (the fake transport) and the events it sends,
    as snapshot events or as thin events (whose object then lives on the fake)."""

    shop: Any
    fake: Any
    thin: bool

    def body(self, event_type: str, obj: dict[str, Any], event_id: str) -> str:
        if self.thin:
            self.fake.put(obj)
            return thin_event(f"v1.{event_type}", obj["id"], obj["object"], event_id=event_id)
        return snapshot_event(event_type, obj, event_id=event_id)

    def send(self, event_type: str, obj: dict[str, Any], event_id: str) -> WebhookResult:
        body = self.body(event_type, obj, event_id)
        result: WebhookResult = self.shop.service.handle_webhook(body, sign(body))
        return result

    def pay(self, order: Order, event_id: str = "evt_payment") -> WebhookResult:
        self.fake.succeed(order.payment_intent_id)
        return self.send("payment_intent.succeeded", self.intent(order), event_id)

    def intent(self, order: Order) -> dict[str, Any]:
        intent: dict[str, Any] = self.fake.intents[order.payment_intent_id]
        return intent

    def charge(self, order: Order, refunded: int) -> dict[str, Any]:
        """The order's charge, refunded by ``refunded`` (minor units) so far."""
        charge_id = self.intent(order)["latest_charge"]
        charge: dict[str, Any] = copy.deepcopy(self.fake.charges[charge_id])
        charge.update(amount_refunded=refunded, refunded=refunded >= charge["amount"])
        return charge


@pytest.fixture(params=["snapshot", "thin"])
def gateway(request: pytest.FixtureRequest, shop: Any, fake_stripe: Any) -> Stripe:
    return Stripe(shop, fake_stripe, thin=request.param == "thin")


@pytest.fixture
def order(shop: Any) -> Order:
    """A pending order of 100 tokens for 19.99 usd."""
    created: Order = shop.service.create_order(shop.offer("pack").id, USER)
    return created


@pytest.fixture
def paid(shop: Any, gateway: Stripe, order: Order) -> Order:
    """The order paid, 30 of its tokens consumed."""
    gateway.pay(order)
    shop.service.tokens_consumed(USER, "ai", 30)
    return stored(shop, order)


def stored(shop: Any, order: Order) -> Order:
    found: Order = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    return found


def refunds(shop: Any) -> list[int]:
    """The tokens of the user's refund ledger lines, oldest first."""
    lines = shop.service.get_dao_factory().get_token_timetable_dao().find({"user_id": USER})
    return [line.tokens for line in lines if line.reason is LedgerReason.REFUND]


# -- payments ------------------------------------------------------------------------------


def test_a_success_event_settles_its_order(shop: Any, gateway: Stripe, order: Order) -> None:
    result = gateway.pay(order)

    assert result.handled
    assert result.order.status is Status.PAID
    assert shop.service.remaining_tokens(USER, "ai") == 100


def test_a_thin_success_event_is_stored_under_its_own_type(
    shop: Any, fake_stripe: Any, order: Order
) -> None:
    fake_stripe.succeed(order.payment_intent_id)
    body = thin_event(
        "v1.payment_intent.succeeded", order.payment_intent_id, "payment_intent", event_id="evt_t"
    )

    shop.service.handle_webhook(body, sign(body))

    (record,) = shop.service.webhook_events()
    assert (record.id, record.type, record.handled) == (
        "evt_t",
        "v1.payment_intent.succeeded",
        True,
    )
    assert (record.order_id, record.payload) == (order.id, body)
    assert record.created is not None


# -- refunds -------------------------------------------------------------------------------


def test_a_partial_refund_marks_the_order_partial_and_takes_back_its_share(
    shop: Any, gateway: Stripe, paid: Order
) -> None:
    result = gateway.send("charge.refunded", gateway.charge(paid, refunded=500), "evt_r1")

    assert result.order.status is Status.PARTIAL
    assert result.order.refunded_amount == Decimal("5.00")
    assert refunds(shop) == [-25]  # floor(100 x 5.00 / 19.99)
    assert shop.service.remaining_tokens(USER, "ai") == 45
    assert "5.00 of 19.99 usd" in stored(shop, paid).history[-1].message


def test_a_full_refund_after_a_partial_one_takes_back_the_rest(
    shop: Any, gateway: Stripe, paid: Order
) -> None:
    gateway.send("charge.refunded", gateway.charge(paid, refunded=500), "evt_r1")

    result = gateway.send("charge.refunded", gateway.charge(paid, refunded=1999), "evt_r2")

    assert result.order.status is Status.REFUNDED
    assert refunds(shop) == [-25, -45]
    assert shop.service.remaining_tokens(USER, "ai") == 0


def test_two_partial_refunds_take_back_their_cumulated_share(
    shop: Any, gateway: Stripe, paid: Order
) -> None:
    gateway.send("charge.refunded", gateway.charge(paid, refunded=500), "evt_r1")

    result = gateway.send("charge.refunded", gateway.charge(paid, refunded=1000), "evt_r2")

    assert result.order.status is Status.PARTIAL
    assert refunds(shop) == [-25, -25]  # floor(100 x 10.00 / 19.99) = 50 in all


def test_the_event_of_a_refund_made_through_the_service_finds_its_work_done(
    shop: Any, gateway: Stripe, paid: Order
) -> None:
    shop.service.refund(paid.id, Decimal("5.00"))
    charge = gateway.fake.charges[gateway.intent(paid)["latest_charge"]]

    result = gateway.send("charge.refunded", copy.deepcopy(charge), "evt_own_refund")

    assert charge["amount_refunded"] == 500
    assert result.duplicate
    assert result.order.status is Status.PARTIAL
    assert refunds(shop) == [-25]


def test_a_refund_reported_before_the_payment_closes_the_order_without_tokens(
    shop: Any, gateway: Stripe, order: Order
) -> None:
    charge = gateway.fake.succeed(order.payment_intent_id)
    charge.update(amount_refunded=1999, refunded=True)

    refunded = gateway.send("charge.refunded", copy.deepcopy(charge), "evt_refund_first")
    late = gateway.send("payment_intent.succeeded", gateway.intent(order), "evt_paid_late")

    assert refunded.order.status is Status.REFUNDED
    assert late.order.status is Status.REFUNDED
    assert shop.service.remaining_tokens(USER, "ai") == 0


def test_a_failed_refund_is_recorded_in_the_orders_history(
    shop: Any, gateway: Stripe, paid: Order
) -> None:
    failed = refund(paid.payment_intent_id or "", amount=500, status="failed")

    result = gateway.send("refund.failed", failed, "evt_refund_failed")

    after = stored(shop, paid)
    assert result.handled
    assert after.status is Status.PAID
    assert after.history[-1].message == "Refund failed for 5.00 usd (event evt_refund_failed)"
    assert shop.service.remaining_tokens(USER, "ai") == 70


# -- disputes ------------------------------------------------------------------------------


def test_an_opened_dispute_is_recorded_and_changes_nothing_else(
    shop: Any, gateway: Stripe, paid: Order
) -> None:
    opened = dispute(paid.payment_intent_id or "", status="needs_response")

    gateway.send("charge.dispute.created", opened, "evt_dispute")

    after = stored(shop, paid)
    assert after.status is Status.PAID
    assert after.history[-1].message == "Dispute opened for 19.99 usd (event evt_dispute)"
    assert shop.service.remaining_tokens(USER, "ai") == 70


def test_a_lost_dispute_takes_back_the_remaining_tokens_like_a_full_refund(
    shop: Any, gateway: Stripe, paid: Order
) -> None:
    opened = dispute(paid.payment_intent_id or "", status="needs_response")
    gateway.send("charge.dispute.created", opened, "evt_opened")

    result = gateway.send("charge.dispute.closed", dict(opened, status="lost"), "evt_lost")

    assert result.order.status is Status.REFUNDED
    assert refunds(shop) == [-70]
    assert shop.service.remaining_tokens(USER, "ai") == 0


def test_a_lost_dispute_after_a_partial_refund_takes_back_the_rest(
    shop: Any, gateway: Stripe, paid: Order
) -> None:
    gateway.send("charge.refunded", gateway.charge(paid, refunded=500), "evt_r1")
    lost = dispute(paid.payment_intent_id or "", amount=1499, status="lost")

    gateway.send("charge.dispute.closed", lost, "evt_lost")

    assert refunds(shop) == [-25, -45]
    assert stored(shop, paid).status is Status.REFUNDED


def test_a_won_dispute_is_recorded_and_keeps_the_tokens(
    shop: Any, gateway: Stripe, paid: Order
) -> None:
    opened = dispute(paid.payment_intent_id or "", status="needs_response")
    gateway.send("charge.dispute.created", opened, "evt_opened")

    gateway.send("charge.dispute.closed", dict(opened, status="won"), "evt_won")

    after = stored(shop, paid)
    assert after.status is Status.PAID
    assert [e.message for e in after.history[-2:]] == [
        "Dispute opened for 19.99 usd (event evt_opened)",
        "Dispute won for 19.99 usd (event evt_won)",
    ]
    assert shop.service.remaining_tokens(USER, "ai") == 70


# -- duplicates and replays ----------------------------------------------------------------


def _events(paid: Order, gateway: Stripe) -> dict[str, tuple[str, dict[str, Any]]]:
    intent = paid.payment_intent_id or ""
    return {
        "paid": ("payment_intent.succeeded", gateway.intent(paid)),
        "partial": ("charge.refunded", gateway.charge(paid, refunded=500)),
        "refunded": ("charge.refunded", gateway.charge(paid, refunded=1999)),
        "refund_failed": ("refund.failed", refund(intent, amount=500, status="failed")),
        "opened": ("charge.dispute.created", dispute(intent)),
        "lost": ("charge.dispute.closed", dispute(intent, status="lost")),
        "won": ("charge.dispute.closed", dispute(intent, status="won")),
    }


KINDS = ["paid", "partial", "refunded", "refund_failed", "opened", "lost", "won"]


def _state(shop: Any, order: Order) -> tuple[Status, int, int, list[int]]:
    after = stored(shop, order)
    return (
        after.status,
        len(after.history),
        shop.service.remaining_tokens(USER, "ai"),
        refunds(shop),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_delivery_of_an_event_is_recognised_by_its_id(
    shop: Any, gateway: Stripe, paid: Order, kind: str
) -> None:
    event_type, obj = _events(paid, gateway)[kind]
    body = gateway.body(event_type, obj, f"evt_{kind}")
    shop.service.handle_webhook(body, sign(body))
    before = _state(shop, paid)

    second = shop.service.handle_webhook(body, sign(body))

    assert second.duplicate
    assert second.message == "event already received"
    assert _state(shop, paid) == before
    assert len(shop.service.webhook_events()) == 2  # the payment's event, then this one


@pytest.mark.parametrize("kind", KINDS)
def test_replaying_a_stored_event_changes_nothing_more(
    shop: Any, gateway: Stripe, paid: Order, kind: str
) -> None:
    event_type, obj = _events(paid, gateway)[kind]
    gateway.send(event_type, obj, f"evt_{kind}")
    before = _state(shop, paid)

    replayed = shop.service.replay_webhook(f"evt_{kind}")

    assert replayed.event_id == f"evt_{kind}"
    assert _state(shop, paid) == before


def test_replaying_a_thin_event_fetches_its_object_again(
    shop: Any, fake_stripe: Any, order: Order
) -> None:
    fake_stripe.succeed(order.payment_intent_id)
    body = thin_event(
        "v1.payment_intent.succeeded", order.payment_intent_id, "payment_intent", event_id="evt_t"
    )
    shop.service.handle_webhook(body, sign(body))

    shop.service.replay_webhook("evt_t")

    assert len(fake_stripe.gets(f"/v1/payment_intents/{order.payment_intent_id}")) >= 2
    assert shop.service.remaining_tokens(USER, "ai") == 100


def test_an_event_for_no_known_order_is_stored_and_recognised_again(
    shop: Any, gateway: Stripe
) -> None:
    stray = dispute("pi_of_another_shop")
    body = gateway.body("charge.dispute.created", stray, "evt_stray")

    first = shop.service.handle_webhook(body, sign(body))
    second = shop.service.handle_webhook(body, sign(body))

    assert first.order is None
    assert second.duplicate
    assert [r.id for r in shop.service.webhook_events()] == ["evt_stray"]


# -- signatures ----------------------------------------------------------------------------


def test_an_event_signed_in_the_future_is_rejected_and_stores_nothing(
    shop: Any, gateway: Stripe, order: Order
) -> None:
    gateway.fake.succeed(order.payment_intent_id)
    body = gateway.body("payment_intent.succeeded", gateway.intent(order), "evt_future")
    future = int(time.time()) + 3600

    with pytest.raises(PaymentError, match="tolerance"):
        shop.service.handle_webhook(body, sign(body, timestamp=future))

    assert shop.service.webhook_events() == []
    assert stored(shop, order).status is Status.PENDING
    assert shop.service.remaining_tokens(USER, "ai") == 0
