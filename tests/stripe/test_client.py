"""What the Stripe client sends and how it reads Stripe back (SDK over a transport double)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import stripe

from usercredits import (
    InvalidInputError,
    InvalidPaymentError,
    LedgerReason,
    Order,
    PaymentError,
    PaymentErrorCode,
    Status,
)
from usercredits_stripe import StripePaymentClient

USER = "user-1"


# -- payment intents -------------------------------------------------------------------


def test_an_order_gets_an_intent_for_its_total_in_minor_units(shop: Any, fake_stripe: Any) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)

    (request,) = fake_stripe.posts("/v1/payment_intents")
    assert request.params["amount"] == "1999"
    assert request.params["currency"] == "usd"
    assert order.payment_intent_id == next(iter(fake_stripe.intents))
    assert (
        order.payment_intent_secret == fake_stripe.intents[order.payment_intent_id]["client_secret"]
    )


def test_a_zero_decimal_currency_is_sent_in_whole_units(shop: Any, fake_stripe: Any) -> None:
    shop.service.create_order(shop.offer("yen").id, USER)

    (request,) = fake_stripe.posts("/v1/payment_intents")
    assert (request.params["amount"], request.params["currency"]) == ("500", "jpy")


def test_a_three_decimal_currency_is_sent_in_thousandths(shop: Any, fake_stripe: Any) -> None:
    shop.service.create_order(shop.offer("dinar").id, USER)

    (request,) = fake_stripe.posts("/v1/payment_intents")
    assert (request.params["amount"], request.params["currency"]) == ("1250", "kwd")


def test_an_intent_carries_the_order_user_and_offer_in_metadata(
    shop: Any, fake_stripe: Any
) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)

    (request,) = fake_stripe.posts("/v1/payment_intents")
    assert request.metadata() == {
        "order_id": str(order.id),
        "user_id": USER,
        "offer_id": str(shop.offer("pack").id),
    }


def test_a_total_stripe_cannot_charge_exactly_is_refused_before_any_request(
    shop: Any, fake_stripe: Any
) -> None:
    with pytest.raises(InvalidPaymentError) as caught:
        shop.service.create_order(shop.offer("fraction").id, USER)

    assert caught.value.code is PaymentErrorCode.VALIDATION
    assert "0.005" in str(caught.value)
    assert fake_stripe.requests == []


def test_a_total_stripe_cannot_charge_exactly_stores_nothing(shop: Any) -> None:
    with pytest.raises(InvalidPaymentError):
        shop.service.create_order(shop.offer("fraction").id, USER)

    factory = shop.service.get_dao_factory()
    assert factory.get_order_dao().count({}) == 0
    assert shop.service.load_user_credits(USER) is None


def test_the_idempotency_key_names_the_order_and_the_attempt(shop: Any, fake_stripe: Any) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)

    (request,) = fake_stripe.posts("/v1/payment_intents")
    assert request.headers["Idempotency-Key"] == f"usercredits-order-{order.id}-intent-after-none"


def test_a_retried_call_for_the_same_attempt_returns_the_same_intent(
    shop: Any, fake_stripe: Any
) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)
    before = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    before.payment_intent_id = None

    retried = shop.client.create_payment_intent(before)

    assert retried.payment_intent_id == order.payment_intent_id
    assert len(fake_stripe.intents) == 1
    keys = {r.headers["Idempotency-Key"] for r in fake_stripe.posts("/v1/payment_intents")}
    assert len(keys) == 1


def test_paying_again_after_an_abandoned_intent_creates_a_new_one(
    shop: Any, fake_stripe: Any
) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)

    again = shop.service.pay_order(order.id)

    assert again.payment_intent_id != order.payment_intent_id
    assert set(fake_stripe.intents) == {order.payment_intent_id, again.payment_intent_id}
    second = fake_stripe.posts("/v1/payment_intents")[1]
    assert second.headers["Idempotency-Key"] == (
        f"usercredits-order-{order.id}-intent-after-{order.payment_intent_id}"
    )
    stored = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert stored.payment_intent_id == again.payment_intent_id


def test_an_intent_has_no_customer_until_one_is_known(shop: Any, fake_stripe: Any) -> None:
    shop.service.create_order(shop.offer("pack").id, USER)

    (request,) = fake_stripe.posts("/v1/payment_intents")
    assert "customer" not in request.params


def test_an_intent_is_attached_to_the_users_customer(shop: Any, fake_stripe: Any) -> None:
    customer_id = shop.client.ensure_customer(USER, "ada@example.com")

    order = shop.service.create_order(shop.offer("pack").id, USER)

    assert fake_stripe.intents[order.payment_intent_id]["customer"] == customer_id


# -- settlement ------------------------------------------------------------------------


def test_a_succeeded_intent_settles_the_order_and_grants_its_tokens(
    shop: Any, fake_stripe: Any
) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)
    fake_stripe.succeed(order.payment_intent_id)

    credits = shop.service.after_execute(order.id)

    assert credits.balance("ai") == 100
    stored = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert stored.status is Status.PAID


def test_a_short_payment_grants_nothing(shop: Any, fake_stripe: Any) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)
    fake_stripe.intents[order.payment_intent_id].update(status="succeeded", amount_received=999)

    credits = shop.service.after_execute(order.id)

    assert credits.balance("ai") == 0
    stored = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert stored.status is Status.INCONSISTENT


# -- refunds ---------------------------------------------------------------------------


@pytest.fixture
def paid(shop: Any, fake_stripe: Any) -> Order:
    """A paid order of 100 tokens for 19.99 usd, 30 of them consumed."""
    order: Order = shop.service.create_order(shop.offer("pack").id, USER)
    fake_stripe.succeed(order.payment_intent_id)
    shop.service.after_execute(order.id)
    shop.service.tokens_consumed(USER, "ai", 30)
    return order


def _stored(shop: Any, order: Order) -> Order:
    found: Order = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    return found


def _refund_lines(shop: Any) -> list[int]:
    lines = shop.service.get_dao_factory().get_token_timetable_dao().find({"user_id": USER})
    return [line.tokens for line in lines if line.reason is LedgerReason.REFUND]


def test_a_refund_refunds_what_is_left_of_the_intent_and_revokes_unused_tokens(
    shop: Any, fake_stripe: Any, paid: Order
) -> None:
    refunded = shop.service.refund(paid.id)

    (request,) = fake_stripe.posts("/v1/refunds")
    assert request.params == {
        "payment_intent": paid.payment_intent_id,
        "amount": "1999",
        "metadata[order_id]": str(paid.id),
    }
    assert refunded.status is Status.REFUNDED
    assert '"object": "refund"' in (refunded.history[-1].payload or "")
    assert shop.service.remaining_tokens(USER, "ai") == 0


def test_the_refund_key_names_the_order_the_intent_and_the_total_refunded_after_it(
    shop: Any, fake_stripe: Any, paid: Order
) -> None:
    shop.service.refund(paid.id, Decimal("5.00"))
    shop.service.refund(paid.id)

    keys = [r.headers["Idempotency-Key"] for r in fake_stripe.posts("/v1/refunds")]
    prefix = f"usercredits-order-{paid.id}-refund-{paid.payment_intent_id}"
    assert keys == [f"{prefix}-to-500", f"{prefix}-to-1999"]


def test_a_partial_refund_is_sent_in_minor_units_and_marks_the_order_partial(
    shop: Any, fake_stripe: Any, paid: Order
) -> None:
    refunded = shop.service.refund(paid.id, Decimal("5.00"))

    (request,) = fake_stripe.posts("/v1/refunds")
    assert request.params["amount"] == "500"
    assert (refunded.status, refunded.refunded_amount) == (Status.PARTIAL, Decimal("5.00"))
    assert _refund_lines(shop) == [-25]
    assert "5.00 of 19.99 usd refunded" in refunded.history[-1].message


def test_a_full_refund_after_a_partial_one_refunds_the_rest(
    shop: Any, fake_stripe: Any, paid: Order
) -> None:
    shop.service.refund(paid.id, Decimal("5.00"))

    refunded = shop.service.refund(paid.id)

    amounts = [r.params["amount"] for r in fake_stripe.posts("/v1/refunds")]
    assert amounts == ["500", "1499"]
    assert refunded.status is Status.REFUNDED
    assert _refund_lines(shop) == [-25, -45]


def test_a_zero_decimal_currency_is_refunded_in_whole_units(shop: Any, fake_stripe: Any) -> None:
    order = shop.service.create_order(shop.offer("yen").id, USER)
    fake_stripe.succeed(order.payment_intent_id)
    shop.service.after_execute(order.id)

    shop.service.refund(order.id, Decimal(200))

    (request,) = fake_stripe.posts("/v1/refunds")
    assert request.params["amount"] == "200"


def test_a_retried_refund_refunds_nothing_more(shop: Any, fake_stripe: Any, paid: Order) -> None:
    order = _stored(shop, paid)

    first = shop.client.refund(order, Decimal("5.00"))
    retried = shop.client.refund(order, Decimal("5.00"))

    assert len(fake_stripe.refunds) == 1
    assert retried.history[-1].payload == first.history[-1].payload
    charge = fake_stripe.charges[fake_stripe.intents[paid.payment_intent_id]["latest_charge"]]
    assert charge["amount_refunded"] == 500


def test_the_client_returns_a_copy_with_one_entry(shop: Any, paid: Order) -> None:
    order = _stored(shop, paid)

    refunded = shop.client.refund(order, Decimal("5.00"))

    assert len(refunded.history) == len(order.history) + 1
    assert refunded.history[-1].status is Status.PARTIAL
    assert (order.status, order.refunded_amount) == (Status.PAID, Decimal(0))


@pytest.mark.parametrize("amount", [Decimal("15.00"), Decimal("20.00"), Decimal(100)])
def test_the_client_refuses_more_than_what_is_left_before_asking_stripe(
    shop: Any, fake_stripe: Any, paid: Order, amount: Decimal
) -> None:
    order = _stored(shop, paid)
    order.refunded_amount = Decimal("5.00")
    sent = len(fake_stripe.requests)

    with pytest.raises(InvalidPaymentError, match="left to refund") as caught:
        shop.client.refund(order, amount)

    assert caught.value.code is PaymentErrorCode.VALIDATION
    assert len(fake_stripe.requests) == sent


@pytest.mark.parametrize("amount", [Decimal("0.005"), Decimal(0), Decimal(-1), 5.0])
def test_the_client_refuses_an_amount_stripe_cannot_refund_exactly(
    shop: Any, fake_stripe: Any, paid: Order, amount: Any
) -> None:
    sent = len(fake_stripe.requests)

    with pytest.raises(InvalidPaymentError):
        shop.client.refund(_stored(shop, paid), amount)

    assert len(fake_stripe.requests) == sent


def test_the_service_refuses_more_than_what_is_left_with_nothing_changed(
    shop: Any, fake_stripe: Any, paid: Order
) -> None:
    shop.service.refund(paid.id, Decimal("15.00"))

    with pytest.raises(InvalidInputError, match="left to refund"):
        shop.service.refund(paid.id, Decimal("5.00"))

    assert len(fake_stripe.posts("/v1/refunds")) == 1
    stored = _stored(shop, paid)
    assert (stored.status, stored.refunded_amount) == (Status.PARTIAL, Decimal("15.00"))


def test_a_failed_refund_leaves_the_order_paid(shop: Any, fake_stripe: Any, paid: Order) -> None:
    fake_stripe.refund_status = "failed"

    with pytest.raises(PaymentError, match="failed"):
        shop.service.refund(paid.id, Decimal("5.00"))

    stored = _stored(shop, paid)
    assert (stored.status, stored.refunded_amount) == (Status.PAID, Decimal(0))
    assert shop.service.remaining_tokens(USER, "ai") == 70


def test_refunding_a_free_order_asks_nothing_of_stripe(shop: Any, fake_stripe: Any) -> None:
    order = shop.service.create_order(shop.offer("free").id, USER)

    refunded = shop.service.refund(order.id)

    assert refunded.status is Status.REFUNDED
    assert fake_stripe.requests == []


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (402, {"type": "card_error", "code": "card_declined", "message": "Declined"}, "CardError"),
        (401, {"type": "invalid_request_error", "message": "Bad key"}, "AuthenticationError"),
        (400, {"type": "invalid_request_error", "message": "Bad param"}, "InvalidRequestError"),
        (500, {"type": "api_error", "message": "Boom"}, "APIError"),
    ],
)
def test_a_stripe_error_becomes_a_payment_error_carrying_it(
    shop: Any, fake_stripe: Any, status: int, error: dict[str, str], kind: str
) -> None:
    fake_stripe.error = (status, error)

    with pytest.raises(PaymentError) as caught:
        shop.service.create_order(shop.offer("pack").id, USER)

    original = caught.value.original_error
    assert isinstance(original, stripe.StripeError)
    assert type(original).__name__ == kind
    assert error["message"] in str(caught.value)


def test_a_network_failure_becomes_a_payment_error_carrying_it(shop: Any, fake_stripe: Any) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)
    fake_stripe.offline = True

    with pytest.raises(PaymentError) as caught:
        shop.service.after_execute(order.id)

    assert isinstance(caught.value.original_error, stripe.APIConnectionError)
    stored = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert stored.status is Status.PENDING
    assert len(stored.history) == len(order.history)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.ensure_customer("user-2", "grace@example.com"),
        lambda c: c.fetch_user_balance(USER),
        lambda c: c.refund(
            Order(id="o-1", user_id=USER, total=Decimal(1), currency="usd", payment_intent_id="pi")
        ),
    ],
)
def test_customer_and_refund_calls_wrap_failures_too(
    shop: Any, fake_stripe: Any, call: Any
) -> None:
    shop.client.ensure_customer(USER, "ada@example.com")
    fake_stripe.offline = True

    with pytest.raises(PaymentError) as caught:
        call(shop.client)

    assert isinstance(caught.value.original_error, stripe.APIConnectionError)


@pytest.mark.parametrize(("key", "secret"), [("", "whsec_x"), ("sk_test_x", ""), (None, "whsec_x")])
def test_a_client_needs_a_key_and_a_webhook_secret(key: Any, secret: Any) -> None:
    with pytest.raises(ValueError, match="required"):
        StripePaymentClient(key, secret)


@pytest.mark.parametrize("tolerance", [0, -1, 1.5, True])
def test_the_webhook_tolerance_is_a_positive_number_of_seconds(tolerance: Any) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        StripePaymentClient("sk_test_x", "whsec_x", webhook_tolerance=tolerance)
