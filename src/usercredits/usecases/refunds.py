"""Refunds and gateway events.

A refund is committed by one conditional write of the order (to ``refunded``,
``in_progress`` set); its effects -- the bundle items refunded, every grant's
remainder taken back, the windows shrunk -- are applied by
:func:`~usercredits.usecases.effects.complete`. Gateway events are applied
through the same commits, so a replayed event finds its work done, and events
may arrive in any order: a refund reported before the payment closes the order
as refunded, and a success reported afterwards grants nothing.
"""

from __future__ import annotations

import copy
import logging

from usercredits.errors import InvalidPaymentError
from usercredits.models import (
    OPEN,
    REFUNDABLE,
    EntityId,
    Order,
    OrderStatus,
    Status,
    WebhookResult,
)
from usercredits.payment import WebhookEventKind
from usercredits.usecases.context import Context
from usercredits.usecases.effects import complete
from usercredits.usecases.settlement import apply_outcome, client_entry

logger = logging.getLogger("usercredits")


def refund(ctx: Context, order_id: EntityId) -> Order:
    """Refund a paid (or expired) order through the payment client, then mark it and its
    bundle items ``refunded`` and take back the tokens they still hold. A refund whose
    effects were interrupted is completed."""
    order = ctx.load_order(order_id)
    if order.in_progress:
        order = complete(ctx, order).order
        if order.status is Status.REFUNDED:
            return order
    order.check_refundable()
    outcome = ctx.client.refund(copy.deepcopy(order))
    return commit_refund(ctx, order, client_entry(ctx, order, outcome, Status.REFUNDED, "Refunded"))


def commit_refund(ctx: Context, order: Order, entry: OrderStatus) -> Order:
    """Mark the order refunded (once) and apply the refund's effects. An order never paid is
    closed as refunded with nothing to take back."""
    never_paid = order.status in OPEN
    refunded = ctx.orders.transition(
        order.id,
        OPEN if never_paid else REFUNDABLE,
        {"status": Status.REFUNDED, "updated_at": entry.date, "in_progress": not never_paid},
        entry,
    )
    if refunded is None:
        return complete(ctx, ctx.load_order(order.id)).order
    return complete(ctx, refunded).order


def handle_webhook(ctx: Context, payload: bytes | str, signature: str | None) -> WebhookResult:
    """Verify a gateway event and apply it: a payment outcome settles its order, a refund
    refunds it. A replayed event finds its work done and changes nothing."""
    event = ctx.client.handle_webhook(payload, signature)
    result = WebhookResult(event_id=event.id, event_type=event.type)
    if event.kind is WebhookEventKind.OTHER:
        result.message = f"event type {event.type!r} ignored"
        return result
    order = (
        ctx.orders.find_by_payment_intent_id(event.payment_intent_id)
        if event.payment_intent_id
        else None
    )
    if order is None:
        result.message = f"no order has payment intent {event.payment_intent_id!r}"
        logger.warning("webhook %s: %s", event.id, result.message)
        return result
    if order.in_progress:
        order = complete(ctx, order).order
    if event.kind is WebhookEventKind.REFUNDED:
        if order.status is Status.REFUNDED:
            result.duplicate = True
            result.message = "order already refunded"
        elif order.status in REFUNDABLE or order.status in OPEN:
            entry = ctx.entry(
                Status.REFUNDED, f"Refund reported by event {event.id}", event.payload
            )
            order = commit_refund(ctx, order, entry)
        else:
            result.message = f"order is {order.status}; nothing to refund"
    elif order.payable():
        outcome = ctx.client.after_payment_executed(copy.deepcopy(order))
        try:
            order = apply_outcome(ctx, order, outcome)
        except InvalidPaymentError as e:
            result.message = str(e)
            order = ctx.load_order(order.id)
    elif order.status is Status.PAID:
        result.duplicate = True
        result.message = "order already paid"
    else:
        result.message = f"order is {order.status}; nothing to settle"
    result.handled = not result.duplicate
    result.order = order
    return result
