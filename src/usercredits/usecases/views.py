"""What users read: their credits, assembled from their accounts and their orders.

Nothing here is stored on its own: a group's balance is its account's ledger
fold, its window is the account's window, and the subscriptions are read off
the orders, so none of them can disagree with what they are made of.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from usercredits.dao import Account
from usercredits.errors import InvalidInputError
from usercredits.models import (
    ActivatedOffer,
    EntityId,
    Order,
    Subscription,
    TokenTimetable,
    UserCredits,
    UserId,
    WebhookEventRecord,
    is_storable_int,
)
from usercredits.usecases.checks import check_group, check_user
from usercredits.usecases.context import Context

MAX_HISTORY = 1000
"""The most lines one ``history`` call returns."""


def is_open(account: Account) -> bool:
    """Whether the account is listed in the user's credits (the expiry routine closes spent
    ones; a new line or a new window opens them again)."""
    return not account.window.is_closed(account.snapshot.seq)


def activated_offer(account: Account) -> ActivatedOffer:
    """The user's standing in the account's group."""
    return ActivatedOffer(
        offer_group=account.offer_group,
        starts=account.window.starts,
        expires=account.window.expires,
        tokens=account.snapshot.balance,
    )


def subscriptions(orders: Iterable[Order]) -> list[Subscription]:
    """One subscription per order and per bundle item, in the orders' order. An item follows
    its bundle order until its child order exists, then its child order."""
    orders = list(orders)
    children = {(str(o.parent_id), o.item_index): o for o in orders if o.parent_id is not None}
    result = []
    for order in orders:
        if order.parent_id is not None:
            continue
        result.append(
            Subscription(
                offer_id=order.offer_id,
                order_id=order.id,
                name=order.offer_name,
                offer_group=order.offer_group,
                cycle=order.cycle,
                custom_cycle=order.custom_cycle,
                quantity=order.quantity,
                status=order.status,
                starts=order.starts,
                expires=order.expires,
                tokens=order.token_count,
                total=order.total,
                currency=order.currency,
            )
        )
        for index, item in enumerate(order.combined_items):
            child = children.get((str(order.id), index))
            result.append(
                Subscription(
                    offer_id=item.offer_id,
                    order_id=order.id,
                    name=item.offer_name,
                    offer_group=item.offer_group,
                    cycle=item.cycle or order.cycle,
                    custom_cycle=item.custom_cycle,
                    quantity=item.quantity,
                    status=order.status if child is None else child.status,
                    starts=item.starts if child is None else child.starts,
                    expires=item.expires if child is None else child.expires,
                    tokens=item.token_count,
                    currency=order.currency,
                )
            )
    return result


def load_user_credits(ctx: Context, user_id: UserId) -> UserCredits | None:
    """The user's credits, None when the user never ordered nor consumed."""
    record_id = ctx.credits.find_record_id(user_id)
    if record_id is None:
        return None
    return UserCredits(
        id=record_id,
        user_id=user_id,
        offers=[activated_offer(a) for a in ctx.accounts.read_all(user_id) if is_open(a)],
        subscriptions=subscriptions(ctx.orders.find({"user_id": user_id})),
    )


def active_groups(ctx: Context, user_id: UserId, now: datetime) -> set[str]:
    """The groups of the user's paid orders (and bundle items) not ended at ``now``."""
    groups = set()
    for order in ctx.orders.find_live(user_id):
        if order.expires is None or order.expires > now:
            groups.add(order.offer_group)
            if order.in_progress:
                groups.update(item.offer_group for item in order.combined_items)
    return groups


def history(
    ctx: Context,
    user_id: UserId,
    offer_group: str | None,
    limit: int,
    before: EntityId,
) -> list[TokenTimetable]:
    """The user's ledger lines, newest first, ``limit`` at most, before the line ``before``."""
    check_user(user_id)
    if offer_group is not None:
        check_group(offer_group)
    _check_limit(limit)
    return ctx.lines.history(user_id, offer_group, limit, before)


def _check_limit(limit: int) -> None:
    if not is_storable_int(limit) or not 1 <= limit <= MAX_HISTORY:
        raise InvalidInputError(f"limit must be an int from 1 to {MAX_HISTORY}, got {limit!r}")


def webhook_events(ctx: Context, limit: int, before: str | None) -> list[WebhookEventRecord]:
    """The gateway events received, the last first."""
    _check_limit(limit)
    return ctx.events.latest(limit, before)
