"""Settlement: applying a payment's outcome to an order.

A success is committed by one conditional write -- the order goes from a payable
status to ``paid`` with its window (unless chained) and ``in_progress`` set --
after which :func:`~usercredits.usecases.effects.complete` grants its tokens and
creates its bundle items. Of racing settlements exactly one commits; the others
help complete the order and then report it as already paid.
"""

from __future__ import annotations

import copy

from usercredits.errors import InvalidPaymentError, PaymentErrorCode
from usercredits.models import PAYABLE, EntityId, Order, OrderStatus, Status
from usercredits.periods import window_end
from usercredits.usecases.context import Context
from usercredits.usecases.effects import complete


def settle(ctx: Context, order_or_id: Order | EntityId, *, strict: bool) -> Order:
    """Ask the payment client for the outcome of the order's current intent and apply it; the
    order as stored afterwards. A paid order still in progress is completed. A paid order
    whose settlement is complete raises InvalidPaymentError DUPLICATE_ATTEMPT when
    ``strict``, else is returned as it is."""
    order = ctx.load_order(order_or_id)
    if order.in_progress:
        order = complete(ctx, order).order
        if order.status is Status.PAID:
            return order
    if order.status is Status.PAID and not strict:
        return order
    order.check_payable()
    if not order.payment_intent_id:
        raise InvalidPaymentError(
            f"order {order.id!r} has no payment intent to settle", order_id=order.id
        )
    outcome = ctx.client.after_payment_executed(copy.deepcopy(order))
    try:
        return apply_outcome(ctx, order, outcome)
    except InvalidPaymentError as e:
        if strict or e.code is not PaymentErrorCode.DUPLICATE_ATTEMPT:
            raise
        return ctx.load_order(order.id)


def client_entry(
    ctx: Context, order: Order, outcome: Order, status: Status, default: str
) -> OrderStatus:
    """The history entry the payment client appended to its copy of ``order``, dated by the
    service's clock (``default`` is the message when it appended none)."""
    added = outcome.history[len(order.history) :]
    last = added[-1] if added else OrderStatus()
    return ctx.entry(status, last.message or default, last.payload)


def apply_outcome(ctx: Context, order: Order, outcome: Order) -> Order:
    """Record the outcome the payment client reported for the order's current intent."""
    entry = client_entry(ctx, order, outcome, outcome.status, f"Payment {outcome.status}")
    if outcome.status is Status.PAID:
        return pay(ctx, order, entry)
    if outcome.status is Status.PENDING:
        stored = ctx.orders.transition(
            order.id, {Status.PENDING}, {"updated_at": entry.date}, entry
        )
    elif outcome.status in (Status.REFUSED, Status.ERROR, Status.INCONSISTENT):
        stored = ctx.orders.transition(
            order.id, PAYABLE, {"status": outcome.status, "updated_at": entry.date}, entry
        )
    else:
        raise InvalidPaymentError(
            f"the payment client reported an unexpected status {outcome.status!r}",
            code=PaymentErrorCode.GATEWAY,
            order_id=order.id,
        )
    return stored if stored is not None else after_lost_race(ctx, order.id)


def pay(ctx: Context, order: Order, entry: OrderStatus) -> Order:
    """Commit the payment of the order (exactly once), then apply its effects. A window that
    follows the group's (``append_date`` without an explicit start) is chained afterwards."""
    now = entry.date or ctx.now()
    changes: dict[str, object] = {"status": Status.PAID, "updated_at": now, "in_progress": True}
    if order.starts is not None or not order.append_date:
        starts = order.starts or now
        changes["starts"] = starts
        changes["expires"] = window_end(starts, order.cycle, order.custom_cycle, order.quantity)
    paid = ctx.orders.transition(order.id, PAYABLE, changes, entry)
    if paid is None:
        return after_lost_race(ctx, order.id)
    return complete(ctx, paid).order


def after_lost_race(ctx: Context, order_id: EntityId) -> Order:
    """The order as a concurrent call left it, once a conditional change of it failed: helped
    to completion, then refused as :meth:`Order.check_payable` says if no longer payable."""
    current = ctx.load_order(order_id)
    current = complete(ctx, current).order
    current.check_payable()
    return current
