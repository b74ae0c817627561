"""Ordering: creating orders and giving them payment intents.

An order is created with everything its settlement needs copied from its offer
and its bundled offers (names, windows, ``append_date``, priorities), so that
editing the catalogue never changes how an existing order settles. A priced
order is stored ``pending`` and then given a payment intent; a free one is
stored already paid and completed at once.
"""

from __future__ import annotations

from datetime import datetime

from usercredits.clock import to_utc
from usercredits.errors import (
    AlreadySubscribedError,
    DuplicateEntityError,
    EntityNotFoundError,
    InvalidOrderError,
    InvalidPaymentError,
    OfferNotAvailableError,
    PaymentErrorCode,
)
from usercredits.models import (
    PAYABLE,
    CombinedOffer,
    CombinedOrder,
    EntityId,
    Offer,
    Order,
    OrderStatus,
    Status,
    UserId,
    is_storable_int,
)
from usercredits.periods import window_end
from usercredits.usecases.checks import is_count
from usercredits.usecases.context import Context
from usercredits.usecases.effects import complete
from usercredits.usecases.expiry import expire_order
from usercredits.usecases.settlement import after_lost_race
from usercredits.usecases.views import active_groups


def create_order(
    ctx: Context,
    offer_id: EntityId,
    user_id: UserId,
    quantity: int | None,
    currency: str | None,
    starts: datetime | None,
) -> Order:
    """Validate, store the order, and give it a payment intent (or pay it when free)."""
    if user_id is None or (isinstance(user_id, str) and not user_id):
        raise InvalidOrderError(f"a user id is required, got {user_id!r}")
    offer = ctx.offers.find_by_id(offer_id) if offer_id is not None else None
    if offer is None:
        raise EntityNotFoundError(f"no offer with id {offer_id!r}")
    if quantity is None:
        quantity = 1
    if not is_count(quantity):
        raise InvalidOrderError(f"quantity must be a positive int, got {quantity!r}")
    if offer.quantity_limit is not None and quantity > offer.quantity_limit:
        raise InvalidOrderError(
            f"quantity {quantity} is above the limit {offer.quantity_limit} of offer {offer.name!r}"
        )
    order_currency = offer.currency or ctx.currency
    if currency is not None and (
        not isinstance(currency, str) or currency.lower() != order_currency
    ):
        raise InvalidOrderError(
            f"offer {offer.name!r} is sold in {order_currency!r}, not {currency!r}"
        )
    now = ctx.now()
    if starts is not None:
        try:
            starts = to_utc(starts, "starts")
        except ValueError as e:
            raise InvalidOrderError(str(e)) from None
        if starts <= now:
            raise InvalidOrderError(f"starts must be in the future, got {starts.isoformat()}")
    items = [
        _item(offer, item, _bundled(ctx, offer, item), quantity) for item in offer.combined_items
    ]
    counts = [(offer.token_count or 0) * quantity]
    counts += [n for i in items for n in (i.token_count, i.quantity)]
    if not all(is_storable_int(n) for n in counts):
        raise InvalidOrderError(
            f"quantity {quantity} of offer {offer.name!r} makes more tokens or units than can "
            f"be stored"
        )
    for cycle, custom, units in [
        (offer.cycle, offer.custom_cycle, quantity),
        *((i.cycle or offer.cycle, i.custom_cycle, i.quantity) for i in items),
    ]:
        try:
            window_end(starts or now, cycle, custom, units)
        except (OverflowError, ValueError):
            raise InvalidOrderError(
                f"quantity {quantity} of offer {offer.name!r} makes a window longer than a "
                f"date can reach"
            ) from None
    order = Order(
        user_id=user_id,
        offer_id=offer.id,
        offer_group=offer.offer_group,
        status=Status.PENDING,
        quantity=quantity,
        total=offer.price * quantity,
        currency=order_currency,
        cycle=offer.cycle,
        custom_cycle=offer.custom_cycle,
        token_count=(offer.token_count or 0) * quantity,
        starts=starts,
        combined_items=items,
        history=[OrderStatus(date=now, status=Status.PENDING, message="Order created")],
        created_at=now,
        updated_at=now,
        offer_name=offer.name,
        append_date=offer.append_date,
        priority=offer.priority,
    )
    _check_for_sale(ctx, offer, user_id, now)
    if order.total > 0:
        ctx.client.check_order(order)
    ctx.credits.register(user_id)
    if order.total > 0:
        return attach_intent(ctx, ctx.orders.create(order))
    try:
        created = ctx.orders.create(_paid_for_free(order, now))
    except DuplicateEntityError:
        raise AlreadySubscribedError(
            f"user {user_id!r} holds a live order of the free offer {offer.name!r}"
        ) from None
    return complete(ctx, created).order


def _check_for_sale(ctx: Context, offer: Offer, user_id: UserId, now: datetime) -> None:
    """Refuse an offer the user may not buy: one unlocked by purchases the user lacks, or a
    free offer the user holds live. A free order whose window ended by date is expired first,
    so that it no longer holds the user's place."""
    if offer.unlocked_by and not set(offer.unlocked_by) & active_groups(ctx, user_id, now):
        raise OfferNotAvailableError(
            f"offer {offer.name!r} is for customers with a live purchase in "
            f"{', '.join(offer.unlocked_by)}; user {user_id!r} has none"
        )
    if offer.price != 0:
        return
    for held in ctx.orders.find_live(user_id, offer.offer_group):
        if not held.exclusive or str(held.offer_id) != str(offer.id):
            continue
        if held.expires is None or held.expires > now:
            raise AlreadySubscribedError(
                f"user {user_id!r} holds the free offer {offer.name!r} until "
                f"{'forever' if held.expires is None else held.expires.isoformat()}"
            )
        expire_order(ctx, held, now)


def _paid_for_free(order: Order, now: datetime) -> Order:
    """A free order as it is stored: paid at once, its effects still to apply."""
    order.status = Status.PAID
    order.in_progress = True
    order.exclusive = True
    order.history.append(
        OrderStatus(date=now, status=Status.PAID, message="Free subscription succeeded")
    )
    if order.starts is not None or not order.append_date:
        order.starts = order.starts or now
        order.expires = window_end(order.starts, order.cycle, order.custom_cycle, order.quantity)
    return order


def _bundled(ctx: Context, offer: Offer, item: CombinedOffer) -> Offer:
    item_offer = ctx.offers.find_by_id(item.offer_id) if item.offer_id is not None else None
    if item_offer is None:
        raise EntityNotFoundError(
            f"offer {offer.name!r} bundles offer {item.offer_id!r}, which does not exist"
        )
    return item_offer


def _item(offer: Offer, item: CombinedOffer, item_offer: Offer, quantity: int) -> CombinedOrder:
    cycle = item.cycle or item_offer.cycle
    custom = item.custom_cycle if item.cycle is not None else item_offer.custom_cycle
    units = item.quantity * quantity
    return CombinedOrder(
        offer_id=item_offer.id,
        offer_group=item.offer_group,
        quantity=units,
        cycle=cycle,
        custom_cycle=custom,
        token_count=(item_offer.token_count or 0) * units,
        offer_name=item_offer.name,
        append_date=item_offer.append_date,
        priority=item_offer.priority,
    )


def pay_order(ctx: Context, order_id: EntityId) -> Order:
    """A new payment intent for a pending, refused or failed order (back to ``pending``)."""
    order = ctx.load_order(order_id)
    order = complete(ctx, order).order
    order.check_payable()
    if order.is_child:
        raise InvalidPaymentError("a bundle item is paid with its bundle order", order_id=order.id)
    return attach_intent(ctx, order)


def attach_intent(ctx: Context, order: Order) -> Order:
    """Ask the payment client for a new intent and record it on the order (``pending``)."""
    with_intent = ctx.client.create_payment_intent(order)
    if not with_intent.payment_intent_id:
        raise InvalidPaymentError(
            "the payment client returned no payment intent",
            code=PaymentErrorCode.GATEWAY,
            order_id=order.id,
        )
    stored = ctx.orders.transition(
        order.id,
        PAYABLE,
        {
            "status": Status.PENDING,
            "payment_intent_id": with_intent.payment_intent_id,
            "updated_at": ctx.now(),
        },
        ctx.entry(Status.PENDING, f"Payment intent {with_intent.payment_intent_id} created"),
    )
    if stored is None:
        current = after_lost_race(ctx, order.id)
        raise InvalidPaymentError(
            f"order {order.id!r} changed to {current.status} meanwhile; try again",
            order_id=order.id,
        )
    stored.payment_intent_secret = with_intent.payment_intent_secret
    return stored
