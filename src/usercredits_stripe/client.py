"""The Stripe payment client: payment intents, settlement, webhooks, refunds, customers."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import stripe
from stripe.v2.core import EventNotification

from usercredits.clock import Clock, system_clock
from usercredits.dao import CustomerDao
from usercredits.errors import (
    DuplicateEntityError,
    InvalidInputError,
    InvalidPaymentError,
    PaymentError,
    PaymentErrorCode,
)
from usercredits.models import Order, OrderStatus, Status, UserId
from usercredits.payment import PaymentClient, WebhookEvent
from usercredits_stripe.amounts import to_minor_units
from usercredits_stripe.mapping import (
    PROCESSOR,
    THIN_EVENT,
    concerns_orders,
    customer_credit,
    customer_for,
    refund_failed,
    refunded_order,
    settled_order,
    stored_customer,
    thin_webhook_event,
    webhook_event,
)


class StripePaymentClient(PaymentClient):
    """Payments through Stripe (the official SDK, ``StripeClient`` style).

    - Intents are created in the order's currency for its total in minor units
      (refused with InvalidPaymentError ``VALIDATION`` when Stripe cannot charge
      it exactly), with ``metadata`` ``order_id`` / ``user_id`` / ``offer_id``,
      the user's stored customer when there is one, and an idempotency key made of
      the order id and the intent it replaces: a retried call for the same attempt
      returns the same intent, ``pay_order`` after an abandoned intent gets a new one.
    - Settlement retrieves the order's current intent and reads its outcome;
      payment events only tell the service which order to settle.
    - Webhooks (snapshot events and thin event notifications) are verified with the
      SDK against ``webhook_secret``; a signature dated more than
      ``webhook_tolerance`` seconds in the past or in the future is refused.
    - Refunds, partial or full, are made in minor units with an idempotency key
      naming the order and the total refunded after them.
    - Customers are kept in ``customers`` (the application's customer DAO), one per
      user and per e-mail, so that every process finds them; without a customer
      store, :meth:`ensure_customer` and the balances raise PaymentError and intents
      carry no customer.
    - Every Stripe or network failure is raised as PaymentError with the SDK's
      error as ``original_error``; nothing is retried beyond the SDK's own
      ``max_network_retries``. Orders are never stored here; only customers are.

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
        customers: CustomerDao | None = None,
    ):
        if not isinstance(api_key, str) or not api_key:
            raise InvalidInputError("a Stripe secret API key is required")
        if not isinstance(webhook_secret, str) or not webhook_secret:
            raise InvalidInputError("a Stripe webhook signing secret is required")
        if isinstance(webhook_tolerance, bool) or not isinstance(webhook_tolerance, int):
            raise InvalidInputError(
                f"webhook_tolerance must be seconds (int), got {webhook_tolerance!r}"
            )
        if webhook_tolerance <= 0:
            raise InvalidInputError(f"webhook_tolerance must be positive, got {webhook_tolerance}")
        if customers is not None and not isinstance(customers, CustomerDao):
            raise TypeError(f"customers must be a CustomerDao, got {type(customers).__name__}")
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
        self._customers = customers
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
        customer = self.customer_id(order.user_id)
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

    # -- webhooks --------------------------------------------------------------------------

    def handle_webhook(self, payload: bytes | str, signature: str | None) -> WebhookEvent:
        """The verified event (pass the request's raw body and its ``Stripe-Signature``
        header), a snapshot event or a thin event notification; a thin event's related
        object is fetched from Stripe and the event reads like the snapshot event it stands
        for. PaymentError for a missing or wrong signature, a tampered body, a timestamp more
        than the tolerance in the past or in the future, a body that is not a Stripe event,
        or a related object Stripe did not give."""
        text = _text(payload)
        try:
            stripe.WebhookSignature.verify_header(
                text, signature, self._webhook_secret, self._tolerance
            )
            _refuse_future(text, signature or "", self._tolerance)
        except stripe.SignatureVerificationError as e:
            raise PaymentError(f"webhook rejected: {e.user_message or e}", e) from e
        return self.parse_event(text)

    def parse_event(self, payload: bytes | str) -> WebhookEvent:
        """The event of a payload verified when it was received, read again without a
        signature (to replay a stored event); a thin event's related object is fetched
        again. PaymentError when the payload is not a Stripe event."""
        text = _text(payload)
        try:
            body = json.loads(text)
            if not isinstance(body, dict):
                raise ValueError(f"a JSON {type(body).__name__}, not an object")
            if body.get("object") == THIN_EVENT:
                notification = self._stripe.parse_event_notification_without_verification(text)
                related = (
                    self._related_object(notification)
                    if concerns_orders(notification.type)
                    else None
                )
                return thin_webhook_event(body, related, text)
            event = self._stripe.construct_event_without_verification(text)
        except (ValueError, KeyError, TypeError) as e:
            raise PaymentError(f"webhook rejected: the body is not a Stripe event ({e})", e) from e
        return webhook_event(event.to_dict(), text)

    def _related_object(self, notification: EventNotification) -> dict[str, Any]:
        """The related object of a thin event, fetched from Stripe now."""
        fetch = getattr(notification, "fetch_related_object", None)
        if not callable(fetch):
            raise PaymentError(
                f"thin event {notification.id} ({notification.type}) names no related object"
            )
        with _gateway(f"fetching the object of event {notification.id}"):
            related = fetch()
        if not isinstance(related, stripe.StripeObject):
            raise PaymentError(
                f"thin event {notification.id} ({notification.type}) names no related object"
            )
        return related.to_dict()

    # -- refunds ---------------------------------------------------------------------------

    def refund(self, order: Order, amount: Decimal | None = None) -> Order:
        """Refund ``amount`` of the payment of the order's current intent (None: all that is
        left of ``order.total - order.refunded_amount``), in minor units, with the
        idempotency key ``usercredits-order-<order id>-refund-<intent id>-to-<total refunded
        after it, in minor units>``: retried for the same order and amount, it refunds
        nothing more. A copy of the order ``partial`` or ``refunded`` with one history entry
        carrying the refund as JSON.

        InvalidPaymentError (``VALIDATION``), before anything is sent, for an amount that is
        not positive, exceeds what is left or is not an exact amount of the currency;
        PaymentError when Stripe reports the refund failed or canceled. An order never
        charged through Stripe is refunded without asking Stripe."""
        intent_id = order.payment_intent_id
        if not intent_id:
            result = copy.deepcopy(order)
            result.status = Status.REFUNDED if amount is None else Status.PARTIAL
            result.history.append(
                OrderStatus(status=result.status, message="Nothing was charged through Stripe")
            )
            return result
        currency = order.currency or ""
        left = order.refundable_amount
        if left <= 0:
            raise InvalidPaymentError(
                f"order {order.id} has nothing left to refund of {order.total} {currency}",
                PaymentErrorCode.VALIDATION,
                order.id,
            )
        part = left if amount is None else amount
        try:
            minor = to_minor_units(part, currency)
            refunded = minor + _minor_or_zero(order.refunded_amount, currency)
        except InvalidPaymentError as e:
            raise InvalidPaymentError(f"order {order.id}: {e}", e.code, order.id) from None
        if part > left:
            raise InvalidPaymentError(
                f"order {order.id} has {left} {currency} left to refund of {order.total}; "
                f"{part} asked",
                PaymentErrorCode.VALIDATION,
                order.id,
            )
        with _gateway(f"refunding payment intent {intent_id} of order {order.id}"):
            refund = self._stripe.v1.refunds.create(
                params={
                    "payment_intent": intent_id,
                    "amount": minor,
                    "metadata": {"order_id": str(order.id)},
                },
                options={
                    "idempotency_key": f"usercredits-order-{order.id}-refund-{intent_id}"
                    f"-to-{refunded}"
                },
            )
        data = refund.to_dict()
        if refund_failed(data):
            raise PaymentError(
                f"refund {data.get('id')} of order {order.id} {data.get('status')}: "
                f"{data.get('failure_reason') or 'no reason given'}"
            )
        return refunded_order(order, data, order.refunded_amount + part)

    # -- customers and balances ------------------------------------------------------------

    def ensure_customer(self, user_id: UserId, email: str) -> str:
        """The id of the user's Stripe customer, the same in every process.

        The customer stored for the user is reused (whatever e-mail is asked); else the
        Stripe customer with this e-mail is taken (the one whose ``metadata.user_id`` names
        the user, else the oldest), else one is created with ``metadata.user_id`` and an
        idempotency key derived from the e-mail; then it is stored. At most one customer is
        stored per user and per e-mail: when two processes ask at once, the one whose store
        loses returns the customer the other stored.

        ValueError for a missing user id or e-mail address; InvalidPaymentError
        (``VALIDATION``) when the e-mail's customer is stored for another user; PaymentError
        for Stripe failures, or when the client has no customer store."""
        if user_id is None or (isinstance(user_id, str) and not user_id):
            raise InvalidInputError(f"a user id is required, got {user_id!r}")
        if not isinstance(email, str) or "@" not in email:
            raise InvalidInputError(f"an e-mail address is required, got {email!r}")
        customers = self._customer_store()
        stored = self._stored(customers, user_id, email)
        if stored is not None:
            return stored
        customer_id = self._find_or_create(user_id, email)
        try:
            customers.create(stored_customer(customer_id, user_id, email, self._clock()))
        except DuplicateEntityError:
            stored = self._stored(customers, user_id, email)
            if stored is None:
                raise
            return stored
        return customer_id

    def _stored(self, customers: CustomerDao, user_id: UserId, email: str) -> str | None:
        """The customer stored for the user; InvalidPaymentError when the e-mail's customer
        is another user's."""
        mine = customers.find_by_user(PROCESSOR, user_id)
        if mine is not None:
            return mine.customer_id
        theirs = customers.find_by_email(PROCESSOR, email)
        if theirs is not None:
            raise InvalidPaymentError(
                f"the Stripe customer {theirs.customer_id} of {email!r} is stored for user "
                f"{theirs.user_id!r}, not for user {user_id!r}",
                PaymentErrorCode.VALIDATION,
            )
        return None

    def _find_or_create(self, user_id: UserId, email: str) -> str:
        with _gateway(f"looking up the customer {email!r}"):
            found = self._stripe.v1.customers.list(params={"email": email, "limit": 100})
        existing = customer_for([c.to_dict() for c in found.data], user_id)
        if existing is not None:
            return existing
        digest = hashlib.sha256(email.encode()).hexdigest()
        with _gateway(f"creating the customer {email!r}"):
            customer = self._stripe.v1.customers.create(
                params={"email": email, "metadata": {"user_id": str(user_id)}},
                options={"idempotency_key": f"usercredits-customer-{digest}"},
            )
        return customer.id

    def customer_id(self, user_id: UserId) -> str | None:
        """The Stripe customer stored for the user; None when there is none, or when the
        client has no customer store."""
        if self._customers is None:
            return None
        stored = self._customers.find_by_user(PROCESSOR, user_id)
        return None if stored is None else stored.customer_id

    def _customer_store(self) -> CustomerDao:
        if self._customers is None:
            raise PaymentError(
                "this StripePaymentClient has no customer store: pass "
                "customers=dao_factory.get_customer_dao() (or give StripeContainer the "
                "application's dao_factory)"
            )
        return self._customers

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
        """The credit the user's stored Stripe customer holds, in major units of the
        customer's currency, read from Stripe now: positive when Stripe owes the customer (a
        negative Stripe ``balance``), negative when the customer owes. Works in any process
        sharing the customer store. PaymentError when no customer is stored for the user
        (call :meth:`ensure_customer` first) or the client has no customer store."""
        self._customer_store()
        customer_id = self.customer_id(user_id)
        if customer_id is None:
            raise PaymentError(
                f"no Stripe customer is stored for user {user_id!r}; call ensure_customer first"
            )
        with _gateway(f"retrieving customer {customer_id}"):
            customer = self._stripe.v1.customers.retrieve(customer_id)
        credit = customer_credit(customer.to_dict())
        with self._lock:
            self._balances[user_id] = (self._clock(), credit)
        return credit


def _text(payload: bytes | str) -> str:
    """The webhook body as text (Stripe signs its UTF-8 text)."""
    if isinstance(payload, str):
        return payload
    try:
        return bytes(payload).decode("utf-8")
    except (UnicodeDecodeError, TypeError) as e:
        raise PaymentError(f"webhook rejected: the body is not UTF-8 text ({e})", e) from e


def _refuse_future(payload: str, header: str, tolerance: int) -> None:
    """Raise SignatureVerificationError, as the SDK does for an old timestamp, when the
    (verified) header's timestamp is more than ``tolerance`` seconds in the future."""
    stamps = [item.split("=", 1)[1] for item in header.split(",") if item.startswith("t=")]
    timestamp = int(stamps[0])
    if timestamp > time.time() + tolerance:
        raise stripe.SignatureVerificationError(  # type: ignore[no-untyped-call]
            f"Timestamp outside the tolerance zone ({timestamp}): {timestamp - int(time.time())} "
            "seconds in the future",
            header,
            payload,
        )


def _minor_or_zero(amount: Decimal, currency: str) -> int:
    return 0 if amount == 0 else to_minor_units(amount, currency)


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
