"""The effects of an order's status, applied after each change of it.

Changing an order's status (paid, expired, refunded) is the commit point of a
settlement, an expiry or a refund: one conditional write of the order, which
also sets ``in_progress``. What the new status implies is then applied by
:func:`complete`, step by step, each step idempotent:

* paid: the order's window (a chained window is *claimed* in the account's
  window first, so a retry takes the same one), its grant (one purchase line,
  written once thanks to its operation key), each bundle item's child order
  (unique per bundle and item) with its window and grant;
* expired: as paid, then the grant's remainder is taken by an expiry line;
* refunded: every grant of the order and its items is made sure of, then its
  remainder taken by a refund line; the windows shrink to the live orders.

The last step clears ``in_progress``. Any retry of the call, the expiry routine
or ``reconcile`` runs :func:`complete` again and finishes what an interrupted
call left undone; remainders are taken through the commit rule of
:mod:`usercredits.accounts`, so each is taken exactly once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime
from decimal import Decimal

from usercredits.dao import Account
from usercredits.errors import DuplicateEntityError
from usercredits.grants import Snapshot, take_remainder
from usercredits.models import (
    REFUNDABLE,
    CombinedOrder,
    Cycle,
    LedgerReason,
    Order,
    OrderStatus,
    Status,
    TokenTimetable,
    UserId,
)
from usercredits.periods import window_end
from usercredits.usecases.context import Context
from usercredits.windows import Claim, Window

HOLDING = frozenset({Status.PAID, Status.PARTIAL, Status.EXPIRED})
"""Statuses of an order whose window and grants stand (a full refund withdraws them)."""


@dataclasses.dataclass
class Completion:
    """What :func:`complete` did: the order as left and the ledger lines it appended."""

    order: Order
    lines: list[TokenTimetable] = dataclasses.field(default_factory=list)


def complete(ctx: Context, order: Order) -> Completion:
    """Apply every effect of the order's status not applied yet, then clear ``in_progress``;
    an order not in progress is returned as it is."""
    done = Completion(order)
    if not order.in_progress:
        return done
    status = order.status
    now = ctx.now()
    items = order.combined_items
    if status in HOLDING:
        order = _open_window(ctx, order, now)
        _grant(ctx, order, done, now)
        settled = [_settle_item(ctx, order, i, item, done, now) for i, item in enumerate(items)]
        items = [item for item, _ in settled]
        if status is Status.EXPIRED:
            _take(ctx, order, LedgerReason.EXPIRY, done, now)
        elif order.refunded_amount > 0:
            for granted in [order, *(child for _, child in settled)]:
                _take_share(ctx, granted, order, done, now)
    elif status is Status.REFUNDED:
        _grant(ctx, order, done, now)
        _take(ctx, order, LedgerReason.REFUND, done, now)
        items = [_refund_item(ctx, order, i, item, done, now) for i, item in enumerate(items)]
        for group in dict.fromkeys([order.offer_group, *(i.offer_group for i in items)]):
            _shrink_window(ctx, order, group, now)
    finished = ctx.orders.transition(
        order.id,
        {status},
        {
            "starts": order.starts,
            "expires": order.expires,
            "combined_items": items,
            "in_progress": False,
        },
    )
    if status in HOLDING:
        release_claims(ctx, order.user_id, order.offer_group, [_claim_key(order)], now)
    done.order = finished or ctx.load_order(order.id)
    return done


# -- windows ---------------------------------------------------------------------------------


def _claim_key(order: Order, item_index: int | None = None) -> str:
    return str(order.id) if item_index is None else f"{order.id}/{item_index}"


def _still_holding(ctx: Context, order: Order) -> bool:
    """Whether the (root) order still stands, read again: a window change made after a
    refund committed would undo the refund's shrinking."""
    root_id = order.parent_id if order.is_child else order.id
    current = ctx.orders.find_by_id(root_id)
    return current is not None and current.status in HOLDING


def _open_window(ctx: Context, order: Order, now: datetime) -> Order:
    """The order with its window: a window fixed at payment is added to the account's, a
    chained one (``append_date`` without an explicit start) is claimed."""
    if order.starts is not None:
        _widen(ctx, order, order.offer_group, order.starts, order.expires, now)
        return order
    claim = _claim(
        ctx,
        order,
        _claim_key(order),
        order.offer_group,
        order.cycle,
        order.custom_cycle,
        order.quantity,
        now,
    )
    if claim is None:
        return order
    return dataclasses.replace(order, starts=claim.starts, expires=claim.expires)


def _covers(window: Window, starts: datetime, expires: datetime | None) -> bool:
    if window.closed_seq is not None or window.starts is None or window.starts > starts:
        return False
    if expires is None:
        return window.never_ends
    return window.latest_end is not None and window.latest_end >= expires


def _widen(
    ctx: Context,
    order: Order,
    group: str,
    starts: datetime,
    expires: datetime | None,
    now: datetime,
) -> None:
    def change(account: Account) -> Window | None:
        if _covers(account.window, starts, expires) or not _still_holding(ctx, order):
            return None
        return account.window.widened(starts, expires)

    ctx.accounts.change_window(order.user_id, group, change, now=now)


def _claim(
    ctx: Context,
    order: Order,
    key: str,
    group: str,
    cycle: Cycle,
    custom_cycle: int | None,
    units: int,
    now: datetime,
) -> Claim | None:
    """The window chained after the account's under ``key``: the one claimed before, else a
    new one starting at the window's end (or now); None when the order no longer stands."""
    taken: list[Claim | None] = [None]

    def change(account: Account) -> Window | None:
        window = account.window
        taken[0] = window.claim(key)
        if taken[0] is not None or not _still_holding(ctx, order):
            return None
        starts = window.next_start(now)
        claim = Claim(key, starts, window_end(starts, cycle, custom_cycle, units))
        taken[0] = claim
        return window.claimed(claim)

    ctx.accounts.change_window(order.user_id, group, change, now=now)
    return taken[0]


def release_claims(
    ctx: Context, user_id: UserId, group: str, keys: Collection[str], now: datetime
) -> None:
    """Forget claims once their windows are recorded on their orders."""
    if ctx.credits.get_account(user_id, group) is not None:
        ctx.accounts.change_window(
            user_id, group, lambda account: account.window.released(keys), now=now
        )


def _shrink_window(ctx: Context, order: Order, group: str, now: datetime) -> None:
    """Make the group's window span its live orders again after ``order`` was refunded; with
    none left it ends at the refund, so the expiry routine closes the group once spent."""
    keys = {_claim_key(order), *(_claim_key(order, i) for i in range(len(order.combined_items)))}

    def change(account: Account) -> Window | None:
        live = [o for o in ctx.orders.find_live(order.user_id, group) if o.starts is not None]
        window = account.window.released(keys) or account.window
        ends = [o.expires for o in live if o.expires is not None]
        shrunk = window.reset(
            min((o.starts for o in live if o.starts is not None), default=None),
            max(ends, default=None if live else order.updated_at),
            any(o.expires is None for o in live),
        )
        current = account.window
        if (shrunk.starts, shrunk.latest_end, shrunk.never_ends, shrunk.claims) == (
            current.starts,
            current.latest_end,
            current.never_ends,
            current.claims,
        ):
            return None
        return dataclasses.replace(shrunk, version=current.version + 1)

    if ctx.credits.get_account(order.user_id, group) is not None:
        ctx.accounts.change_window(order.user_id, group, change, now=now)


# -- grants ----------------------------------------------------------------------------------


def _grant(ctx: Context, order: Order, done: Completion, now: datetime) -> None:
    """Make sure the order's grant is on the ledger: one purchase line, written once."""
    if order.token_count <= 0:
        return
    line = TokenTimetable(
        tokens=order.token_count,
        order_id=order.id,
        reason=LedgerReason.PURCHASE,
        grant_id=str(order.id),
        priority=order.priority,
        expires=order.expires,
        operation_key=f"purchase:{order.id}",
    )
    appended = ctx.accounts.append(order.user_id, order.offer_group, lambda _: line, now=now)
    if appended.created and appended.line is not None:
        done.lines.append(appended.line)


def _take_share(ctx: Context, order: Order, root: Order, done: Completion, now: datetime) -> None:
    """Take from the grant of ``order`` (the bundle order ``root`` or one of its items) the
    share of its tokens refunded so far: floor(tokens x refunded / total), less what earlier
    partial refunds took, never more than the grant still holds."""
    if order.token_count <= 0 or root.total <= 0:
        return
    grant_id = str(order.id)
    target = int(Decimal(order.token_count) * root.refunded_amount // root.total)

    def decide(snapshot: Snapshot) -> TokenTimetable | None:
        grant = snapshot.grant(grant_id)
        taken = 0 if grant is None else min(target - grant.taken, grant.remaining)
        if taken <= 0:
            return None
        return TokenTimetable(
            tokens=-taken,
            order_id=order.id,
            reason=LedgerReason.REFUND,
            grant_id=grant_id,
            note=f"{root.refunded_amount} of {root.total} {root.currency or ''} refunded".rstrip(),
        )

    appended = ctx.accounts.append(order.user_id, order.offer_group, decide, now=now)
    if appended.created and appended.line is not None:
        done.lines.append(appended.line)


def _take(
    ctx: Context, order: Order, reason: LedgerReason, done: Completion, now: datetime
) -> None:
    """Take what the order's grant still holds, once: after the first take it holds nothing."""
    if order.token_count <= 0:
        return
    decide = take_remainder(str(order.id), reason, order.id)
    appended = ctx.accounts.append(order.user_id, order.offer_group, decide, now=now)
    if appended.created and appended.line is not None:
        done.lines.append(appended.line)


# -- bundle items ----------------------------------------------------------------------------


def _child(order: Order, index: int, item: CombinedOrder, status: Status, now: datetime) -> Order:
    message = (
        f"Paid with bundle order {order.id}"
        if status is not Status.REFUNDED
        else f"Bundle order {order.id} refunded"
    )
    return Order(
        user_id=order.user_id,
        offer_id=item.offer_id,
        offer_group=item.offer_group,
        status=status,
        quantity=item.quantity,
        total=Decimal(0),
        currency=order.currency,
        cycle=item.cycle or order.cycle,
        custom_cycle=item.custom_cycle,
        token_count=item.token_count,
        starts=item.starts,
        expires=item.expires,
        parent_id=order.id,
        item_index=index,
        offer_name=item.offer_name,
        append_date=item.append_date,
        priority=item.priority,
        history=[OrderStatus(date=now, status=status, message=message)],
        created_at=now,
        updated_at=now,
    )


def _create_child(ctx: Context, child: Order) -> Order:
    try:
        return ctx.orders.create(child)
    except DuplicateEntityError:
        found = ctx.orders.find_child(child.parent_id, child.item_index or 0)
        if found is None:
            raise
        return found


def _settle_item(
    ctx: Context, order: Order, index: int, item: CombinedOrder, done: Completion, now: datetime
) -> tuple[CombinedOrder, Order]:
    """The item's child order, created with its window when absent, and its grant; the item
    with the child's window, and the child."""
    child = ctx.orders.find_child(order.id, index)
    key = _claim_key(order, index)
    if not item.append_date and order.starts is not None:
        _widen(ctx, order, item.offer_group, order.starts, order.expires, now)
    if child is None:
        if item.append_date:
            claim = _claim(
                ctx,
                order,
                key,
                item.offer_group,
                item.cycle or order.cycle,
                item.custom_cycle,
                item.quantity,
                now,
            )
            starts, expires = (None, None) if claim is None else (claim.starts, claim.expires)
        else:
            starts, expires = order.starts, order.expires
        window = dataclasses.replace(item, starts=starts, expires=expires)
        child = _create_child(ctx, _child(order, index, window, Status.PAID, now))
    if item.append_date:
        release_claims(ctx, order.user_id, item.offer_group, [key], now)
    if child.status in HOLDING:
        _grant(ctx, child, done, now)
    return dataclasses.replace(item, starts=child.starts, expires=child.expires), child


def _refund_item(
    ctx: Context, order: Order, index: int, item: CombinedOrder, done: Completion, now: datetime
) -> CombinedOrder:
    """The item's child order refunded, its grant (if it was ever paid) taken back."""
    child = ctx.orders.find_child(order.id, index)
    if child is None:
        child = _create_child(ctx, _child(order, index, item, Status.REFUNDED, now))
    if child.status in REFUNDABLE:
        child = ctx.orders.transition(
            child.id,
            REFUNDABLE,
            {"status": Status.REFUNDED, "updated_at": order.updated_at},
            OrderStatus(date=now, status=Status.REFUNDED, message="Bundle order refunded"),
        ) or ctx.load_order(child.id)
    if any(entry.status is Status.PAID for entry in child.history):
        _grant(ctx, child, done, now)
        _take(ctx, child, LedgerReason.REFUND, done, now)
    return dataclasses.replace(item, starts=child.starts, expires=child.expires)
