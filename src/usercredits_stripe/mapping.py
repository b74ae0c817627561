"""How Stripe objects translate into usercredits objects: every such rule lives here.

The functions take Stripe objects as plain mappings (their JSON form), so they
read the same whether the object came from an API call, a webhook's snapshot or
the related object of a thin event, and they tolerate fields a Stripe-compatible
server leaves out.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from usercredits.errors import InvalidPaymentError, PaymentError
from usercredits.models import Customer, Order, OrderStatus, Status, UserId
from usercredits.payment import WebhookEvent, WebhookEventKind
from usercredits_stripe.amounts import from_minor_units, to_minor_units

PROCESSOR = "stripe"
"""The ``processor`` of the customers this package stores."""

THIN_EVENT = "v2.core.event"
"""The ``object`` of a thin event notification."""

_THIN_PREFIX = "v1."

EVENT_KINDS: Mapping[str, WebhookEventKind] = {
    "payment_intent.succeeded": WebhookEventKind.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": WebhookEventKind.PAYMENT_FAILED,
    "payment_intent.canceled": WebhookEventKind.PAYMENT_CANCELED,
    "charge.refunded": WebhookEventKind.REFUNDED,
    "refund.failed": WebhookEventKind.REFUND_FAILED,
    "refund.updated": WebhookEventKind.REFUND_FAILED,
    "charge.refund.updated": WebhookEventKind.REFUND_FAILED,
    "charge.dispute.created": WebhookEventKind.DISPUTE_OPENED,
    "charge.dispute.closed": WebhookEventKind.DISPUTE_LOST,
}
"""The Stripe event types (snapshot names; a thin event's type is the same with a ``v1.``
prefix) that may concern an order, and their kind. ``refund.updated`` and
``charge.refund.updated`` count only for a refund that failed or was canceled, and
``charge.dispute.closed`` is ``DISPUTE_WON`` for a won dispute and ``OTHER`` for a closed
inquiry. Every other type is ``OTHER``."""

_REFUND_FAILED = frozenset({"failed", "canceled"})
_AMOUNT_OF_OBJECT = frozenset(
    {
        WebhookEventKind.REFUND_FAILED,
        WebhookEventKind.DISPUTE_OPENED,
        WebhookEventKind.DISPUTE_LOST,
        WebhookEventKind.DISPUTE_WON,
    }
)
"""Kinds whose amount is the ``amount`` of their object (the refund, the dispute)."""
_DISPUTE_CLOSED = {"lost": WebhookEventKind.DISPUTE_LOST, "won": WebhookEventKind.DISPUTE_WON}

_WAITING = {
    "processing": "Payment {id} is processing",
    "requires_confirmation": "Payment {id} awaits confirmation",
    "requires_capture": "Payment {id} is authorized and awaits capture",
}


def to_json(stripe_object: Mapping[str, Any]) -> str:
    """A Stripe object as the JSON kept in an order's history."""
    return json.dumps(stripe_object, sort_keys=True, default=str)


# -- payment intents -----------------------------------------------------------------------


def intent_outcome(intent: Mapping[str, Any], order: Order) -> tuple[Status, str]:
    """The order status a payment intent stands for, with a message saying why.

    ``succeeded`` is ``paid`` only when the amount received and the currency
    equal the order's (in minor units) and the intent belongs to the order;
    otherwise ``inconsistent``. ``requires_payment_method`` after a failed
    attempt and ``canceled`` are ``refused``; ``requires_action`` is ``error``;
    ``processing``, ``requires_confirmation``, ``requires_capture`` and
    ``requires_payment_method`` before any attempt stay ``pending``.
    Raises ValueError for a status Stripe does not define.
    """
    intent_id = intent.get("id")
    status = intent.get("status")
    if status == "succeeded":
        return _succeeded_outcome(intent, order)
    if status == "requires_payment_method":
        error = intent.get("last_payment_error")
        if not error:
            return Status.PENDING, f"Payment {intent_id} awaits a payment method"
        reason = error.get("message") or error.get("code") or "payment failed"
        code = error.get("decline_code") or error.get("code")
        suffix = f" ({code})" if code and code != reason else ""
        return Status.REFUSED, f"Payment {intent_id} refused: {reason}{suffix}"
    if status == "canceled":
        reason = intent.get("cancellation_reason")
        suffix = f" ({reason})" if reason else ""
        return Status.REFUSED, f"Payment {intent_id} canceled{suffix}"
    if status == "requires_action":
        return Status.ERROR, f"Payment {intent_id} needs an action of the customer"
    if isinstance(status, str) and status in _WAITING:
        return Status.PENDING, _WAITING[status].format(id=intent_id)
    raise ValueError(f"payment intent {intent_id} has an unknown status {status!r}")


def _succeeded_outcome(intent: Mapping[str, Any], order: Order) -> tuple[Status, str]:
    intent_id = intent.get("id")
    owner = (intent.get("metadata") or {}).get("order_id")
    if owner is not None and str(owner) != str(order.id):
        return Status.INCONSISTENT, f"Payment {intent_id} belongs to order {owner}"
    received = amount_received(intent)
    currency = str(intent.get("currency") or "").lower()
    try:
        expected = to_minor_units(order.total, order.currency or "")
    except InvalidPaymentError as e:
        return Status.INCONSISTENT, f"Payment {intent_id} succeeded but {e}"
    if received is None:
        return Status.INCONSISTENT, f"Payment {intent_id} succeeded but reports no amount received"
    if currency != (order.currency or "").lower() or received != expected:
        return (
            Status.INCONSISTENT,
            f"Payment {intent_id} received {received} {currency}, "
            f"the order expects {expected} {order.currency}",
        )
    return Status.PAID, f"Payment {intent_id} succeeded"


def amount_received(intent: Mapping[str, Any]) -> int | None:
    """The minor-unit amount the intent collected: ``amount_received``, or when the server
    leaves it out, what its embedded ``latest_charge`` captured if that charge succeeded."""
    received = intent.get("amount_received")
    if isinstance(received, int):
        return received
    charge = intent.get("latest_charge")
    if not isinstance(charge, Mapping) or charge.get("status") != "succeeded":
        return None
    captured = charge.get("amount_captured", charge.get("amount"))
    return captured if isinstance(captured, int) else None


def settled_order(order: Order, intent: Mapping[str, Any]) -> Order:
    """A copy of ``order`` with the intent's outcome as status and one history entry whose
    payload is the intent as JSON."""
    status, message = intent_outcome(intent, order)
    result = copy.deepcopy(order)
    result.status = status
    result.history.append(OrderStatus(status=status, message=message, payload=to_json(intent)))
    return result


# -- refunds -------------------------------------------------------------------------------


def refund_failed(refund: Mapping[str, Any]) -> bool:
    """Whether Stripe reports the refund ``failed`` or ``canceled`` (no money went back)."""
    return refund.get("status") in _REFUND_FAILED


def refunded_order(order: Order, refund: Mapping[str, Any], refunded: Decimal) -> Order:
    """A copy of ``order`` after ``refund``, which brings the amount refunded so far to
    ``refunded``: ``refunded`` once that is the whole total, ``partial`` before, with one
    history entry whose payload is the refund as JSON."""
    status = Status.REFUNDED if refunded >= order.total else Status.PARTIAL
    amount = refund.get("amount")
    currency = str(refund.get("currency") or order.currency or "")
    shown = (
        f"{from_minor_units(amount, currency)} {currency}"
        if isinstance(amount, int) and currency
        else "an amount"
    )
    result = copy.deepcopy(order)
    result.status = status
    result.refunded_amount = refunded
    result.history.append(
        OrderStatus(
            status=status,
            message=f"Refund {refund.get('id')} of {shown} of payment {order.payment_intent_id} "
            f"{refund.get('status')}: {refunded} of {order.total} {order.currency} refunded",
            payload=to_json(refund),
        )
    )
    return result


# -- events --------------------------------------------------------------------------------


def snapshot_type(event_type: str) -> str:
    """The snapshot event type a thin event type stands for (``v1.charge.refunded`` →
    ``charge.refunded``)."""
    return event_type[len(_THIN_PREFIX) :] if event_type.startswith(_THIN_PREFIX) else event_type


def concerns_orders(event_type: str) -> bool:
    """Whether events of this type (snapshot or thin) may concern an order, so that a thin
    one's related object is worth fetching."""
    return snapshot_type(event_type) in EVENT_KINDS


def webhook_event(event: Mapping[str, Any], payload: str) -> WebhookEvent:
    """The core's view of a Stripe snapshot event (``object: "event"``), whose object is in
    ``data.object``; ``payload`` is the event as received, kept to be read again."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    return _event(event, event.get("type"), obj if isinstance(obj, Mapping) else {}, payload)


def thin_webhook_event(
    notification: Mapping[str, Any], related: Mapping[str, Any] | None, payload: str
) -> WebhookEvent:
    """The core's view of a thin event notification (``object: "v2.core.event"``), applied
    like the snapshot event it stands for: ``related`` is its related object as fetched from
    Stripe (None when its type concerns no order)."""
    event_type = notification.get("type")
    snapshot = snapshot_type(event_type) if isinstance(event_type, str) else event_type
    return _event(notification, snapshot, related or {}, payload)


def _event(
    event: Mapping[str, Any], snapshot: Any, obj: Mapping[str, Any], payload: str
) -> WebhookEvent:
    """An event whose type, read as the snapshot type ``snapshot``, is about ``obj``.

    The kind follows :data:`EVENT_KINDS`; the payment intent comes from the object
    (a payment intent's id, a charge's, refund's or dispute's ``payment_intent``), the
    order from its ``metadata.order_id``. ``amount`` is, for ``charge.refunded``, the
    charge's ``amount_refunded`` (the total refunded so far), for a failed refund the
    refund's amount and for a dispute the disputed amount, in major units.
    """
    event_id = event.get("id")
    event_type = event.get("type")
    if not isinstance(event_type, str) or not event_type or not isinstance(event_id, str):
        raise PaymentError(f"a Stripe event needs an id and a type, got {event_id!r}")
    if not isinstance(snapshot, str):
        raise PaymentError(f"Stripe event {event_id} has a type {event_type!r}")
    kind = _kind(snapshot, obj)
    amount = _amount(event_id, kind, obj)
    metadata = obj.get("metadata")
    order_id = metadata.get("order_id") if isinstance(metadata, Mapping) else None
    return WebhookEvent(
        id=event_id,
        type=event_type,
        kind=kind,
        payment_intent_id=_intent_id(obj),
        order_id=order_id,
        payload=payload,
        amount=amount,
        created=event_created(event.get("created")),
    )


def _kind(snapshot: str, obj: Mapping[str, Any]) -> WebhookEventKind:
    kind = EVENT_KINDS.get(snapshot, WebhookEventKind.OTHER)
    if snapshot in ("refund.updated", "charge.refund.updated") and not refund_failed(obj):
        return WebhookEventKind.OTHER
    if snapshot == "charge.dispute.closed":
        return _DISPUTE_CLOSED.get(str(obj.get("status")), WebhookEventKind.OTHER)
    return kind


def _amount(event_id: str, kind: WebhookEventKind, obj: Mapping[str, Any]) -> Decimal | None:
    if kind is WebhookEventKind.REFUNDED:
        refunded = obj.get("amount_refunded")
        if refunded is None and obj.get("refunded") is True:
            return None
        return _major(event_id, refunded, obj.get("currency"))
    if kind not in _AMOUNT_OF_OBJECT or obj.get("amount") is None:
        return None
    return _major(event_id, obj.get("amount"), obj.get("currency"))


def _major(event_id: str, amount: Any, currency: Any) -> Decimal:
    try:
        return from_minor_units(amount, currency)
    except InvalidPaymentError as e:
        raise PaymentError(f"Stripe event {event_id}: {e}", e) from e


def _intent_id(obj: Mapping[str, Any]) -> str | None:
    """The payment intent a payment intent, charge, refund or dispute belongs to."""
    if obj.get("object") == "payment_intent":
        found: Any = obj.get("id")
    else:
        found = obj.get("payment_intent")
        if found is None and isinstance(obj.get("charge"), Mapping):
            found = obj["charge"].get("payment_intent")
    if isinstance(found, Mapping):
        found = found.get("id")
    return found if isinstance(found, str) and found else None


_FRACTION = re.compile(r"(\.\d{6})\d+")


def event_created(value: Any) -> datetime | None:
    """When Stripe created an event, as an aware UTC datetime: a snapshot event gives Unix
    seconds, a thin one an ISO 8601 string. None when absent or unreadable."""
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        text = _FRACTION.sub(r"\1", value.strip())
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return None


# -- customers -----------------------------------------------------------------------------


def customer_for(customers: Sequence[Mapping[str, Any]], user_id: UserId) -> str | None:
    """Of the Stripe customers found with one e-mail, the id of the one to use: the oldest
    whose ``metadata.user_id`` names the user, else the oldest (so that every process picks
    the same one). Deleted customers are skipped; None when none is left."""
    live = [c for c in customers if not c.get("deleted") and isinstance(c.get("id"), str)]
    if not live:
        return None

    def rank(indexed: tuple[int, Mapping[str, Any]]) -> tuple[bool, int, int]:
        index, customer = indexed
        metadata = customer.get("metadata")
        owner = metadata.get("user_id") if isinstance(metadata, Mapping) else None
        created = customer.get("created")
        # Stripe lists the newest first: between equal creation times, the last is older.
        return (owner != str(user_id), created if isinstance(created, int) else 0, -index)

    _, chosen = min(enumerate(live), key=rank)
    return str(chosen["id"])


def stored_customer(
    customer_id: str, user_id: UserId, email: str, created_at: datetime
) -> Customer:
    """The record of the user's Stripe customer, as the customer DAO stores it."""
    return Customer(
        user_id=user_id,
        email=email,
        processor=PROCESSOR,
        customer_id=customer_id,
        created_at=created_at,
    )


def customer_credit(customer: Mapping[str, Any]) -> Decimal:
    """The credit a Stripe customer holds, in major units: Stripe's ``balance`` negated (a
    negative Stripe balance is money owed to the customer). A customer without a ``balance``
    holds nothing. PaymentError for a deleted customer or a balance without a currency."""
    if customer.get("deleted"):
        raise PaymentError(f"Stripe customer {customer.get('id')} was deleted")
    balance = customer.get("balance") or 0
    if not isinstance(balance, int):
        raise PaymentError(f"Stripe customer {customer.get('id')} has a balance {balance!r}")
    currency = customer.get("currency")
    if not currency:
        if balance:
            raise PaymentError(
                f"Stripe customer {customer.get('id')} has a balance {balance} without currency"
            )
        return Decimal(0)
    return from_minor_units(-balance, currency)
