"""The Stripe payment client: payment intents, settlement, webhooks, refunds, customers."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import stripe

from usercredits.clock import Clock, system_clock
from usercredits.errors import InvalidPaymentError, PaymentError
from usercredits.models import Order, OrderStatus, Status, UserId
from usercredits.payment import PaymentClient, WebhookEvent
from usercredits_stripe.amounts import to_minor_units
from usercredits_stripe.mapping import customer_credit, refunded_order, settled_order, webhook_event

_REFUND_FAILED = frozenset({"failed", "canceled"})


class StripePaymentClient(PaymentClient):
    """Payments through Stripe (the official SDK, ``StripeClient`` style).

    - Intents are created in the order's currency for its total in minor units
      (refused with InvalidPaymentError ``VALIDATION`` when Stripe cannot charge
      it exactly), with ``metadata`` ``order_id`` / ``user_id`` / ``offer_id``,
      the user's customer when :meth:`ensure_customer` made it known, and an
      idempotency key made of the order id and the intent it replaces: a retried
      call for the same attempt returns the same intent, ``pay_order`` after an
      abandoned intent gets a new one.
    - Settlement retrieves the order's current intent and reads its outcome;
      webhook events only tell the service which order to settle.
    - Webhooks are verified with the SDK against ``webhook_secret``; events older
      than ``webhook_tolerance`` seconds are refused.
    - Every Stripe or network failure is raised as PaymentError with the SDK's
      error as ``original_error``; nothing is retried beyond the SDK's own
      ``max_network_retries``, and no stored data is changed here.

    ``api_base`` points the client at another Stripe-compatible server;
    ``http_client`` replaces the SDK's transport. Thread-safe.
    """

    def __init__(
        self,
        api_key: str,
        webhook_secret: str,
        *,
        api_base: str | None = None,
        webhook_tolerance: int = stripe.Webhook.DEFAULT_TOLERANCE,
        max_network_retries: int | None = None,
        http_client: stripe.HTTPClient | None = None,
        balance_cache_ttl: timedelta = timedelta(seconds=30),
        clock: Clock | None = None,
    ):
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("a Stripe secret API key is required")
        if not isinstance(webhook_secret, str) or not webhook_secret:
            raise ValueError("a Stripe webhook signing secret is required")
        if isinstance(webhook_tolerance, bool) or not isinstance(webhook_tolerance, int):
            raise ValueError(f"webhook_tolerance must be seconds (int), got {webhook_tolerance!r}")
        if webhook_tolerance <= 0:
            raise ValueError(f"webhook_tolerance must be positive, got {webhook_tolerance}")
        self._stripe = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=http_client,
        )
        self._webhook_secret = webhook_secret
        self._tolerance = webhook_tolerance
        self._cache_ttl = balance_cache_ttl
        self._clock = clock or system_clock
        self._lock = threading.Lock()
        self._customers: dict[UserId, str] = {}
        self._balances: dict[UserId, tuple[datetime, Decimal]] = {}

    # -- payments ----------------------------------------------------------------------

    def check_order(self, order: Order) -> None:
        """Raise InvalidPaymentError (VALIDATION) when Stripe cannot charge the order's total
        exactly in its currency's minor unit."""
        to_minor_units(order.total, order.currency or "")

    def create_payment_intent(self, order: Order) -> Order:
        """A copy of ``order`` with a new intent's id and client secret (see the class doc
        for its parameters and idempotency)."""
        if order.id is None:
            raise PaymentError("an order must be stored before it gets a payment intent")
        try:
            amount = to_minor_units(order.total, order.currency or "")
        except InvalidPaymentError as e:
            raise InvalidPaymentError(f"order {order.id}: {e}", e.code, order.id) from None
        params: stripe.params.PaymentIntentCreateParams = {
            "amount": amount,
            "currency": (order.currency or "").lower(),
            "metadata": {
                "order_id": str(order.id),
                "user_id": str(order.user_id),
                "offer_id": str(order.offer_id),
            },
        }
        with self._lock:
            customer = self._customers.get(order.user_id)
        if customer is not None:
            params["customer"] = customer
        after = order.payment_intent_id or "none"
        with _gateway(f"creating a payment intent for order {order.id}"):
            intent = self._stripe.v1.payment_intents.create(
                params=params,
                options={"idempotency_key": f"usercredits-order-{order.id}-intent-after-{after}"},
            )
        result = copy.deepcopy(order)
        result.payment_intent_id = intent.id
        result.payment_intent_secret = intent.client_secret
        return result

    def after_payment_executed(self, order: Order) -> Order:
        """A copy of ``order`` with the status of its current intent (SPEC mapping, see
        :func:`usercredits_stripe.mapping.intent_outcome`) and one history entry carrying
        the intent as JSON."""
        if not order.payment_intent_id:
            raise PaymentError(f"order {order.id} has no payment intent")
        with _gateway(f"retrieving payment intent {order.payment_intent_id}"):
            intent = self._stripe.v1.payment_intents.retrieve(order.payment_intent_id)
        try:
            return settled_order(order, intent.to_dict())
        except ValueError as e:
            raise PaymentError(f"order {order.id}: {e}", e) from e

    def handle_webhook(self, payload: bytes | str, signature: str | None) -> WebhookEvent:
        """The verified event (pass the request's raw body and its ``Stripe-Signature``
        header). PaymentError for a missing or wrong signature, a tampered body, a timestamp
        older than the tolerance, or a body that is not a Stripe event."""
        try:
            event = self._stripe.construct_event(
                payload, signature, self._webhook_secret, self._tolerance
            )
        except stripe.SignatureVerificationError as e:
            raise PaymentError(f"webhook rejected: {e.user_message or e}", e) from e
        except ValueError as e:
            raise PaymentError(f"webhook rejected: the body is not a Stripe event ({e})", e) from e
        return webhook_event(event.to_dict())

    def refund(self, order: Order) -> Order:
        """Refund the whole payment of the order's current intent (idempotent per order and
        intent); PaymentError when Stripe reports the refund failed or canceled."""
        intent_id = order.payment_intent_id
        if not intent_id:
            result = copy.deepcopy(order)
            result.status = Status.REFUNDED
            result.history.append(
                OrderStatus(status=Status.REFUNDED, message="Nothing was charged through Stripe")
            )
            return result
        with _gateway(f"refunding payment intent {intent_id} of order {order.id}"):
            refund = self._stripe.v1.refunds.create(
                params={"payment_intent": intent_id},
                options={"idempotency_key": f"usercredits-order-{order.id}-refund-{intent_id}"},
            )
        data = refund.to_dict()
        if data.get("status") in _REFUND_FAILED:
            raise PaymentError(
                f"refund {data.get('id')} of order {order.id} {data.get('status')}: "
                f"{data.get('failure_reason') or 'no reason given'}"
            )
        return refunded_order(order, data)

    # -- customers and balances --------------------------------------------------------

    def ensure_customer(self, user_id: UserId, email: str) -> str:
        """The id of the Stripe customer with this e-mail, created (with ``metadata.user_id``)
        when none exists; remembered for the user so the user's next intents attach to it.
        Concurrent first calls for one user and e-mail create one customer (idempotency key)."""
        if user_id is None or (isinstance(user_id, str) and not user_id):
            raise ValueError(f"a user id is required, got {user_id!r}")
        if not isinstance(email, str) or "@" not in email:
            raise ValueError(f"an e-mail address is required, got {email!r}")
        with _gateway(f"looking up the customer {email!r}"):
            found = self._stripe.v1.customers.list(params={"email": email, "limit": 1})
        if found.data:
            customer_id = found.data[0].id
        else:
            digest = hashlib.sha256(f"{email}\n{user_id}".encode()).hexdigest()
            with _gateway(f"creating the customer {email!r}"):
                customer = self._stripe.v1.customers.create(
                    params={"email": email, "metadata": {"user_id": str(user_id)}},
                    options={"idempotency_key": f"usercredits-customer-{digest}"},
                )
            customer_id = customer.id
        with self._lock:
            self._customers[user_id] = customer_id
        return customer_id

    def customer_id(self, user_id: UserId) -> str | None:
        """The Stripe customer remembered for the user, None before :meth:`ensure_customer`."""
        with self._lock:
            return self._customers.get(user_id)

    def check_user_balance(self, user_id: UserId) -> Decimal:
        """Like :meth:`fetch_user_balance`, answered from a reading at most
        ``balance_cache_ttl`` old."""
        now = self._clock()
        with self._lock:
            cached = self._balances.get(user_id)
        if cached is not None and now - cached[0] < self._cache_ttl:
            return cached[1]
        return self.fetch_user_balance(user_id)

    def fetch_user_balance(self, user_id: UserId) -> Decimal:
        """The credit the user's Stripe customer holds, in major units of the customer's
        currency, read from Stripe now: positive when Stripe owes the customer (a negative
        Stripe ``balance``), negative when the customer owes. PaymentError when no customer
        is known for the user (call :meth:`ensure_customer` first)."""
        customer_id = self.customer_id(user_id)
        if customer_id is None:
            raise PaymentError(
                f"no Stripe customer is known for user {user_id!r}; call ensure_customer first"
            )
        with _gateway(f"retrieving customer {customer_id}"):
            customer = self._stripe.v1.customers.retrieve(customer_id)
        credit = customer_credit(customer.to_dict())
        with self._lock:
            self._balances[user_id] = (self._clock(), credit)
        return credit


@contextlib.contextmanager
def _gateway(action: str) -> Iterator[None]:
    """Raise Stripe and network failures met while doing ``action`` as PaymentError."""
    try:
        yield
    except stripe.StripeError as e:
        status = f" (HTTP {e.http_status})" if e.http_status else ""
        detail = e.user_message or str(e) or type(e).__name__
        raise PaymentError(f"Stripe failed {action}{status}: {detail}", e) from e
    except OSError as e:
        raise PaymentError(f"network failure {action}: {e}", e) from e
