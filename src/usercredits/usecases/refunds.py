"""Refunds, disputes and gateway events.

A refund is committed by one conditional write of the order -- to ``refunded``
for what is left of its total, to ``partial`` for a part of it (the amount
refunded so far only grows: the write also checks the amount it replaces) --
with ``in_progress`` set; its effects (the share of every grant of the order and
its bundle items taken back, the windows shrunk after a full refund) are applied
by :func:`~usercredits.usecases.effects.complete`.

Every verified gateway event is stored once by its id, then applied through the
same commits, so a duplicate delivery, in any order, finds its work done: a
refund reported before the payment closes the order as refunded, and a success
reported afterwards grants nothing. A lost dispute takes back the tokens like a
full refund; an opened or won dispute and a failed refund are recorded in the
order's history.
"""

from __future__ import annotations

import copy
import logging
from decimal import Decimal
from typing import Any

from usercredits.errors import (
    DuplicateEntityError,
    EntityNotFoundError,
    InvalidInputError,
    InvalidPaymentError,
)
from usercredits.models import (
    LIVE,
    OPEN,
    REFUNDABLE,
    EntityId,
    Order,
    OrderStatus,
    Status,
    WebhookEventRecord,
    WebhookResult,
    to_decimal,
)
from usercredits.payment import WebhookEvent, WebhookEventKind
from usercredits.usecases.checks import check_key
from usercredits.usecases.context import Context
from usercredits.usecases.effects import complete
from usercredits.usecases.settlement import apply_outcome, client_entry

logger = logging.getLogger("usercredits")

ATTEMPTS = 50
"""How many times a refund lost to a concurrent change of its order is tried again."""


def _amount(order: Order, amount: Any) -> Decimal | None:
    """The amount to refund, None for all that is left; InvalidInputError for anything else
    than a positive amount no greater than what is left."""
    if amount is None:
        return None
    value = to_decimal(amount, "amount")
    if value <= 0:
        raise InvalidInputError(f"a refund amount must be positive, got {value}")
    if value > order.refundable_amount:
        raise InvalidInputError(
            f"order {order.id!r} has {order.refundable_amount} {order.currency} left to refund "
            f"of {order.total}; {value} asked"
        )
    return None if value == order.refundable_amount else value


def refund(
    ctx: Context, order_id: EntityId, amount: Any = None, idempotency_key: str | None = None
) -> Order:
    """Refund ``amount`` of a paid (or expired) order through the payment client (None: all
    that is left), then take back that share of its tokens; a refund of all that is left
    marks it and its bundle items ``refunded``. A refund whose effects were interrupted is
    completed; a refund whose ``idempotency_key`` is in the order's history is not made
    again."""
    check_key(idempotency_key)
    order = ctx.load_order(order_id)
    if order.in_progress:
        order = complete(ctx, order).order
        if order.status is Status.REFUNDED and amount is None:
            return order
    mark = None if idempotency_key is None else f"(refund {idempotency_key})"
    if mark is not None and any(entry.message.endswith(mark) for entry in order.history):
        return order
    order.check_refundable()
    part = _amount(order, amount)
    outcome = ctx.client.refund(copy.deepcopy(order), part)
    status = Status.REFUNDED if part is None else Status.PARTIAL
    entry = client_entry(ctx, order, outcome, status, "Refunded" if part is None else "Refund")
    if mark is not None:
        entry.message = f"{entry.message} {mark}"
    if part is None:
        return commit_refund(ctx, order, entry)
    return commit_refunded_amount(ctx, order, order.refunded_amount + part, entry)


def commit_refund(ctx: Context, order: Order, entry: OrderStatus) -> Order:
    """Mark the order refunded (once) and apply the refund's effects. An order never paid is
    closed as refunded with nothing to take back."""
    never_paid = order.status in OPEN
    refunded = ctx.orders.transition(
        order.id,
        OPEN if never_paid else REFUNDABLE,
        {
            "status": Status.REFUNDED,
            "updated_at": entry.date,
            "in_progress": not never_paid,
            "refunded_amount": order.total,
        },
        entry,
    )
    if refunded is None:
        return complete(ctx, ctx.load_order(order.id)).order
    return complete(ctx, refunded).order


def commit_refunded_amount(
    ctx: Context, order: Order, refunded: Decimal, entry: OrderStatus
) -> Order:
    """Record that ``refunded`` of the order's total has been refunded so far (only ever more)
    and take back the tokens' share: ``partial`` while something is left, ``refunded`` once
    everything is."""
    current = order
    for _ in range(ATTEMPTS):
        if current.in_progress:
            current = complete(ctx, current).order
        if refunded >= current.total:
            return commit_refund(ctx, current, entry)
        if current.status not in REFUNDABLE or refunded <= current.refunded_amount:
            return current
        status = Status.PARTIAL if current.status in LIVE else current.status
        changed = ctx.orders.transition(
            current.id,
            {current.status},
            {
                "status": status,
                "refunded_amount": refunded,
                "updated_at": entry.date,
                "in_progress": True,
            },
            entry,
            expected={"refunded_amount": current.refunded_amount},
        )
        if changed is not None:
            return complete(ctx, changed).order
        current = ctx.load_order(current.id)
    raise InvalidPaymentError(
        f"could not record the refund of order {order.id!r}: it kept changing", order_id=order.id
    )


# -- gateway events ------------------------------------------------------------------------


def handle_webhook(ctx: Context, payload: bytes | str, signature: str | None) -> WebhookResult:
    """Verify a gateway event, store it once by its id, and apply it. A duplicate delivery of
    an event already handled changes nothing."""
    event = ctx.client.handle_webhook(payload, signature)
    record = WebhookEventRecord(
        id=event.id,
        type=event.type,
        created=event.created,
        received_at=ctx.now(),
        payload=event.payload if event.payload is not None else _text(payload),
    )
    try:
        ctx.events.create(record)
    except DuplicateEntityError:
        stored = ctx.events.find_by_id(event.id)
        if stored is not None and stored.handled:
            result = WebhookResult(event_id=event.id, event_type=event.type, duplicate=True)
            result.message = "event already received"
            if stored.order_id is not None:
                result.order = ctx.orders.find_by_id(stored.order_id)
            return result
    return _apply_and_record(ctx, event)


def replay_webhook(ctx: Context, event_id: str) -> WebhookResult:
    """Apply a stored event again (after a fix, or when its processing was interrupted);
    idempotent: what it did already is not done twice."""
    stored = ctx.events.find_by_id(event_id)
    if stored is None or stored.payload is None:
        raise EntityNotFoundError(f"no stored gateway event with id {event_id!r}")
    return _apply_and_record(ctx, ctx.client.parse_event(stored.payload))


def _text(payload: bytes | str) -> str:
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload


def _apply_and_record(ctx: Context, event: WebhookEvent) -> WebhookResult:
    result = apply_event(ctx, event)
    ctx.events.finish(
        event.id,
        handled=True,
        message=result.message or ("applied" if result.handled else ""),
        order_id=None if result.order is None else result.order.id,
    )
    return result


def apply_event(ctx: Context, event: WebhookEvent) -> WebhookResult:
    """Apply a verified event to its order: each kind through the commit of its operation, so
    that applying it again finds its work done."""
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
    kind = event.kind
    if kind is WebhookEventKind.REFUNDED:
        order = _refunded(ctx, order, event, result)
    elif kind is WebhookEventKind.DISPUTE_LOST:
        order = _dispute_lost(ctx, order, event, result)
    elif kind in _RECORDED:
        order = _record(ctx, order, event, result)
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


def _refunded(ctx: Context, order: Order, event: WebhookEvent, result: WebhookResult) -> Order:
    amount = order.total if event.amount is None else min(event.amount, order.total)
    if order.status is Status.REFUNDED or (
        order.status in REFUNDABLE and amount <= order.refunded_amount
    ):
        result.duplicate = True
        result.message = "refund already applied"
        return order
    if order.status not in REFUNDABLE and order.status not in OPEN:
        result.message = f"order is {order.status}; nothing to refund"
        return order
    if amount >= order.total or order.status in OPEN:
        entry = ctx.entry(Status.REFUNDED, f"Refund reported by event {event.id}", event.payload)
        return commit_refund(ctx, order, entry)
    entry = ctx.entry(
        Status.PARTIAL,
        f"Partial refund reported by event {event.id}: {amount} of {order.total} "
        f"{order.currency} refunded so far",
        event.payload,
    )
    return commit_refunded_amount(ctx, order, amount, entry)


def _dispute_lost(ctx: Context, order: Order, event: WebhookEvent, result: WebhookResult) -> Order:
    if order.status is Status.REFUNDED:
        result.duplicate = True
        result.message = "order already refunded"
        return order
    if order.status not in REFUNDABLE:
        return _record(ctx, order, event, result)
    entry = ctx.entry(Status.REFUNDED, f"Dispute lost (event {event.id})", event.payload)
    return commit_refund(ctx, order, entry)


_RECORDED = {
    WebhookEventKind.DISPUTE_OPENED: "Dispute opened",
    WebhookEventKind.DISPUTE_WON: "Dispute won",
    WebhookEventKind.REFUND_FAILED: "Refund failed",
}
"""Events recorded in the order's history only, with their message."""


def _record(ctx: Context, order: Order, event: WebhookEvent, result: WebhookResult) -> Order:
    """Add the event to the order's history once (its message names the event)."""
    label = _RECORDED.get(event.kind, event.type)
    amount = "" if event.amount is None else f" for {event.amount} {order.currency}"
    message = f"{label}{amount} (event {event.id})"
    if any(entry.message == message for entry in order.history):
        result.duplicate = True
        result.message = "event already recorded"
        return order
    recorded = ctx.orders.transition(
        order.id,
        {order.status},
        {"updated_at": ctx.now()},
        ctx.entry(order.status, message, event.payload),
    )
    result.message = label.lower()
    return recorded if recorded is not None else ctx.load_order(order.id)
