"""What the Stripe client sends and how it reads Stripe back (SDK over a transport double)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe

from usercredits import (
    InvalidPaymentError,
    PaymentError,
    PaymentErrorCode,
    Status,
)
from usercredits_stripe import StripePaymentClient

USER = "user-1"


def _succeed(fake: Any, intent_id: str) -> None:
    intent = fake.intents[intent_id]
    intent.update(status="succeeded", amount_received=intent["amount"])


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
    _succeed(fake_stripe, order.payment_intent_id)

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


def test_a_refund_refunds_the_orders_intent_and_revokes_unused_tokens(
    shop: Any, fake_stripe: Any
) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)
    _succeed(fake_stripe, order.payment_intent_id)
    shop.service.after_execute(order.id)
    shop.service.tokens_consumed(USER, "ai", 30)

    refunded = shop.service.refund(order.id)

    (request,) = fake_stripe.posts("/v1/refunds")
    assert request.params == {"payment_intent": order.payment_intent_id}
    assert request.headers["Idempotency-Key"] == (
        f"usercredits-order-{order.id}-refund-{order.payment_intent_id}"
    )
    assert refunded.status is Status.REFUNDED
    assert '"object": "refund"' in (refunded.history[-1].payload or "")
    assert shop.service.remaining_tokens(USER, "ai") == 0


def test_a_failed_refund_leaves_the_order_paid(shop: Any, fake_stripe: Any) -> None:
    order = shop.service.create_order(shop.offer("pack").id, USER)
    _succeed(fake_stripe, order.payment_intent_id)
    shop.service.after_execute(order.id)
    fake_stripe.refund_status = "failed"

    with pytest.raises(PaymentError, match="failed"):
        shop.service.refund(order.id)

    stored = shop.service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert stored.status is Status.PAID
    assert shop.service.remaining_tokens(USER, "ai") == 100


def test_refunding_a_free_order_asks_nothing_of_stripe(shop: Any, fake_stripe: Any) -> None:
    order = shop.service.create_order(shop.offer("free").id, USER)

    refunded = shop.service.refund(order.id)

    assert refunded.status is Status.REFUNDED
    assert fake_stripe.requests == []


# -- customers -------------------------------------------------------------------------


def test_a_new_email_gets_a_customer_with_the_user_id(shop: Any, fake_stripe: Any) -> None:
    customer_id = shop.client.ensure_customer(USER, "ada@example.com")

    assert fake_stripe.customers[customer_id]["email"] == "ada@example.com"
    assert fake_stripe.customers[customer_id]["metadata"] == {"user_id": USER}


def test_a_known_email_reuses_its_customer(shop: Any, fake_stripe: Any) -> None:
    first = shop.client.ensure_customer(USER, "ada@example.com")

    second = shop.client.ensure_customer(USER, "ada@example.com")

    assert second == first
    assert len(fake_stripe.customers) == 1
    assert len(fake_stripe.posts("/v1/customers")) == 1


def test_a_customer_created_elsewhere_is_found_by_email(shop: Any, fake_stripe: Any) -> None:
    existing = StripePaymentClient(
        "sk_test_other", "whsec_other", http_client=fake_stripe, max_network_retries=0
    ).ensure_customer("someone", "ada@example.com")

    assert shop.client.ensure_customer(USER, "ada@example.com") == existing
    assert shop.client.customer_id(USER) == existing


@pytest.mark.parametrize("email", ["", "not an address", None])
def test_a_customer_needs_an_email(shop: Any, email: Any) -> None:
    with pytest.raises(ValueError, match="e-mail"):
        shop.client.ensure_customer(USER, email)


# -- balances --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "currency", "credit"),
    [
        (-1234, "usd", Decimal("12.34")),
        (500, "jpy", Decimal(-500)),
        (-1250, "kwd", Decimal("1.25")),
    ],
)
def test_the_balance_is_the_customers_credit_in_major_units(
    shop: Any, fake_stripe: Any, balance: int, currency: str, credit: Decimal
) -> None:
    customer_id = shop.client.ensure_customer(USER, "ada@example.com")
    fake_stripe.customers[customer_id].update(balance=balance, currency=currency)

    assert shop.client.fetch_user_balance(USER) == credit


def test_a_customer_without_balance_holds_nothing(shop: Any) -> None:
    shop.client.ensure_customer(USER, "ada@example.com")

    assert shop.client.fetch_user_balance(USER) == Decimal(0)


def test_checking_a_balance_reuses_a_recent_reading(shop: Any, fake_stripe: Any) -> None:
    customer_id = shop.client.ensure_customer(USER, "ada@example.com")
    fake_stripe.customers[customer_id].update(balance=-1000, currency="usd")
    assert shop.client.check_user_balance(USER) == Decimal(10)
    fake_stripe.customers[customer_id]["balance"] = -2000

    cached = shop.client.check_user_balance(USER)
    shop.clock.advance(timedelta(minutes=5))
    refreshed = shop.client.check_user_balance(USER)

    assert (cached, refreshed) == (Decimal(10), Decimal(20))


def test_fetching_a_balance_always_asks_stripe(shop: Any, fake_stripe: Any) -> None:
    customer_id = shop.client.ensure_customer(USER, "ada@example.com")
    fake_stripe.customers[customer_id].update(balance=-1000, currency="usd")
    shop.client.check_user_balance(USER)
    fake_stripe.customers[customer_id]["balance"] = -2000

    assert shop.client.fetch_user_balance(USER) == Decimal(20)


def test_the_balance_of_a_user_without_customer_is_an_error(shop: Any) -> None:
    with pytest.raises(PaymentError, match="ensure_customer"):
        shop.client.fetch_user_balance("nobody")


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
        lambda c: c.ensure_customer(USER, "ada@example.com"),
        lambda c: c.fetch_user_balance(USER),
    ],
)
def test_customer_calls_wrap_failures_too(shop: Any, fake_stripe: Any, call: Any) -> None:
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
