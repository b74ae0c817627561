"""How Stripe objects translate into usercredits objects: every such rule lives here.

The functions take Stripe objects as plain mappings (their JSON form), so they
read the same whether the object came from an API call or a webhook, and they
tolerate fields a Stripe-compatible server leaves out.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from usercredits.errors import InvalidPaymentError, PaymentError
from usercredits.models import Order, OrderStatus, Status
from usercredits.payment import WebhookEvent, WebhookEventKind
from usercredits_stripe.amounts import from_minor_units, to_minor_units

EVENT_KINDS: Mapping[str, WebhookEventKind] = {
    "payment_intent.succeeded": WebhookEventKind.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": WebhookEventKind.PAYMENT_FAILED,
    "payment_intent.canceled": WebhookEventKind.PAYMENT_CANCELED,
    "charge.refunded": WebhookEventKind.REFUNDED,
}
"""The Stripe event types that concern an order; every other type is ``OTHER``."""

_WAITING = {
    "processing": "Payment {id} is processing",
    "requires_confirmation": "Payment {id} awaits confirmation",
    "requires_capture": "Payment {id} is authorized and awaits capture",
}


def to_json(stripe_object: Mapping[str, Any]) -> str:
    """A Stripe object as the JSON kept in an order's history."""
    return json.dumps(stripe_object, sort_keys=True, default=str)


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


def refunded_order(order: Order, refund: Mapping[str, Any]) -> Order:
    """A copy of ``order`` marked ``refunded`` with one history entry whose payload is the
    refund as JSON."""
    result = copy.deepcopy(order)
    result.status = Status.REFUNDED
    result.history.append(
        OrderStatus(
            status=Status.REFUNDED,
            message=f"Refund {refund.get('id')} of payment {order.payment_intent_id} "
            f"{refund.get('status')}",
            payload=to_json(refund),
        )
    )
    return result


def webhook_event(event: Mapping[str, Any]) -> WebhookEvent:
    """The core's view of a verified Stripe event.

    ``payment_intent.*`` events name their intent; ``charge.refunded`` names the
    charge's intent and counts as ``REFUNDED`` only once the charge is refunded in
    full (a partial refund is ``OTHER``, left to an operator). The event's object is
    kept as JSON in ``payload``.
    """
    event_type = event.get("type")
    event_id = event.get("id")
    if not isinstance(event_type, str) or not event_type or not isinstance(event_id, str):
        raise PaymentError(f"a Stripe event needs an id and a type, got {event_id!r}")
    data = event.get("data") or {}
    obj = data.get("object") if isinstance(data, Mapping) else None
    obj = obj if isinstance(obj, Mapping) else {}
    kind = EVENT_KINDS.get(event_type, WebhookEventKind.OTHER)
    if kind is WebhookEventKind.REFUNDED and obj.get("refunded") is not True:
        kind = WebhookEventKind.OTHER
    intent_id: Any = None
    if event_type.startswith("payment_intent."):
        intent_id = obj.get("id")
    elif event_type.startswith("charge."):
        intent_id = obj.get("payment_intent")
        if isinstance(intent_id, Mapping):
            intent_id = intent_id.get("id")
    metadata = obj.get("metadata")
    order_id = metadata.get("order_id") if isinstance(metadata, Mapping) else None
    return WebhookEvent(
        id=event_id,
        type=event_type,
        kind=kind,
        payment_intent_id=intent_id if isinstance(intent_id, str) else None,
        order_id=order_id,
        payload=to_json(obj) if obj else None,
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
