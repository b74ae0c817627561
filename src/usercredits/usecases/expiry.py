"""The expiry routine: ending what is due, closing spent groups, warning ahead.

Each due order is expired by one conditional write (``paid`` to ``expired``),
then its grant's remainder is taken by an expiry line through the commit rule:
exactly once, whatever runs concurrently, and completed by the next run when
interrupted. The routine first completes every order a call left in progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from usercredits.dao import Account
from usercredits.errors import InvalidInputError
from usercredits.grants import take_remainder
from usercredits.models import (
    LIVE,
    ExpiryReport,
    ExpiryWarning,
    LedgerReason,
    Order,
    OrderStatus,
    Status,
    TokenTimetable,
    UserId,
)
from usercredits.usecases.checks import check_user
from usercredits.usecases.context import Context
from usercredits.usecases.effects import Completion, complete
from usercredits.usecases.views import activated_offer, is_open
from usercredits.windows import Window


def check_for_expired_orders(
    ctx: Context,
    user_id: UserId,
    warn_before: timedelta | None,
    low: Mapping[str, int] | None,
) -> ExpiryReport:
    """Expire the user's due orders and grants (each exactly once, removing what its grant
    still holds), close spent groups whose window ended, and report warnings."""
    check_user(user_id)
    if warn_before is not None and (
        not isinstance(warn_before, timedelta) or warn_before < timedelta(0)
    ):
        raise InvalidInputError(
            f"warn_before must be a non-negative timedelta, got {warn_before!r}"
        )
    if low is not None and not all(
        isinstance(g, str) and isinstance(v, int) and not isinstance(v, bool)
        for g, v in low.items()
    ):
        raise InvalidInputError(f"low must map offer groups to int minimums, got {low!r}")
    now = ctx.now()
    report = ExpiryReport(user_id=user_id)

    def count(lines: list[TokenTimetable]) -> None:
        for line in lines:
            if line.reason is LedgerReason.EXPIRY:
                group = line.offer_group
                report.removed_tokens[group] = report.removed_tokens.get(group, 0) - line.tokens

    for order in ctx.orders.find_in_progress(user_id):
        count(complete(ctx, order).lines)
    for order in ctx.orders.find_due(user_id, now):
        done = expire_order(ctx, order, now)
        if done is not None:
            report.expired_orders.append(done.order)
            count(done.lines)
    accounts = ctx.accounts.read_all(user_id)
    for account in accounts:
        count(_expire_direct_grants(ctx, account, now))
    if report.expired_orders or report.removed_tokens:
        accounts = ctx.accounts.read_all(user_id)
    for account in accounts:
        if not is_open(account):
            continue
        if account.snapshot.balance == 0 and account.window.ended(now):
            if _close(ctx, account, now):
                report.expired.append(activated_offer(account))
            continue
        report.warnings.extend(_warnings(account, now, warn_before, low))
    return report


def expire_order(ctx: Context, order: Order, now: datetime) -> Completion | None:
    """Expire a live order (once: None when it is no longer live) and take its remainder."""
    expired = ctx.orders.transition(
        order.id,
        LIVE,
        {"status": Status.EXPIRED, "updated_at": now, "in_progress": True},
        OrderStatus(date=now, status=Status.EXPIRED, message="Expired"),
    )
    return None if expired is None else complete(ctx, expired)


def _expire_direct_grants(ctx: Context, account: Account, now: datetime) -> list[TokenTimetable]:
    """Take what the account's due grants made without an order still hold."""
    lines = []
    for grant in account.snapshot.grants:
        if grant.order_id is not None or grant.expires is None or grant.expires > now:
            continue
        decide = take_remainder(grant.grant_id, LedgerReason.EXPIRY)
        appended = ctx.accounts.append(account.user_id, account.offer_group, decide, now=now)
        if appended.created and appended.line is not None:
            lines.append(appended.line)
    return lines


def _close(ctx: Context, account: Account, now: datetime) -> bool:
    """Close the account if it is spent and its window ended; whether this call closed it."""
    closed = [False]

    def change(current: Account) -> Window | None:
        closed[0] = False
        window, snapshot = current.window, current.snapshot
        if window.is_closed(snapshot.seq) or snapshot.balance != 0 or not window.ended(now):
            return None
        closed[0] = True
        return window.closed(snapshot.seq)

    ctx.accounts.change_window(
        account.user_id, account.offer_group, change, now=now, caught_up=True
    )
    return closed[0]


def _warnings(
    account: Account,
    now: datetime,
    warn_before: timedelta | None,
    low: Mapping[str, int] | None,
) -> list[ExpiryWarning]:
    group, window, balance = account.offer_group, account.window, account.snapshot.balance
    warnings = []
    if warn_before is not None:
        horizon = now + warn_before
        expires = window.expires
        if expires is not None and now < expires <= horizon:
            warnings.append(
                ExpiryWarning(offer_group=group, reason="expiring", expires=expires, tokens=balance)
            )
        for grant in account.snapshot.grants:
            if grant.expires is not None and now < grant.expires <= horizon:
                warnings.append(
                    ExpiryWarning(
                        offer_group=group,
                        reason="tokens_expiring",
                        expires=grant.expires,
                        tokens=grant.remaining,
                        grant_id=grant.grant_id,
                    )
                )
    if low is not None and group in low and balance <= low[group]:
        warnings.append(
            ExpiryWarning(
                offer_group=group, reason="low_balance", expires=window.expires, tokens=balance
            )
        )
    return warnings
