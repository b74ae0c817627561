"""Consumption: recording what users consume, and reading balances.

A consumption is one ledger line appended through the commit rule of
:mod:`usercredits.accounts`: the check of a safe consumption and its line are
decided on the same snapshot, so no concurrency can overdraw. An idempotency
key is unique per user on the ledger, so a retry finds the first line.
"""

from __future__ import annotations

from usercredits.errors import IdempotencyConflictError, InsufficientCreditsError
from usercredits.grants import Snapshot
from usercredits.models import LedgerReason, TokenTimetable, UserId
from usercredits.usecases.checks import check_count, check_group, check_key, check_user
from usercredits.usecases.context import Context


def _same(line: TokenTimetable, offer_group: str, count: int) -> TokenTimetable:
    """The first line of a key, if it recorded the same consumption."""
    if (
        line.offer_group != offer_group
        or line.tokens != -count
        or line.reason is not LedgerReason.CONSUMPTION
    ):
        used = (
            f"{-line.tokens} tokens of {line.offer_group!r}"
            if line.reason is LedgerReason.CONSUMPTION
            else f"a {line.reason} line of {line.offer_group!r}"
        )
        raise IdempotencyConflictError(
            f"idempotency key {line.idempotency_key!r} was used for {used}, "
            f"not {count} tokens of {offer_group!r}"
        )
    return line


def consume(
    ctx: Context,
    user_id: UserId,
    offer_group: str,
    count: int,
    *,
    floor: int | None,
    idempotency_key: str | None,
) -> TokenTimetable:
    """Record a consumption; with ``floor``, refuse one that would leave the available tokens
    (the balance minus active holds) below it (InsufficientCreditsError, nothing written, the
    key not used up)."""
    check_user(user_id)
    check_count(count)
    check_group(offer_group)
    check_key(idempotency_key)
    draft = TokenTimetable(
        tokens=-count, reason=LedgerReason.CONSUMPTION, idempotency_key=idempotency_key
    )

    now = ctx.now()
    checked = ctx.accounts.append_consumption(user_id, offer_group, draft, floor=floor, now=now)
    if checked is not None:
        # The line stored, or the first line of the idempotency key.
        return _same(checked, offer_group, count)

    def decide(snapshot: Snapshot) -> TokenTimetable:
        if floor is not None:
            available = snapshot.available(now) if snapshot.holds else snapshot.balance
            if available - count < floor:
                held = " available" if snapshot.holds else ""
                raise InsufficientCreditsError(
                    f"user {user_id!r} has {available} tokens{held} in {offer_group!r}; "
                    f"{count} requested",
                    balance=available,
                    requested=count,
                )
        return draft

    try:
        appended = ctx.accounts.append(user_id, offer_group, decide, now=now)
    except InsufficientCreditsError:
        if idempotency_key is not None:
            first = ctx.lines.find_by_key(user_id, idempotency_key=idempotency_key)
            if first is not None:
                return _same(first, offer_group, count)
        raise
    assert appended.line is not None
    if not appended.created:
        return _same(appended.line, offer_group, count)
    return appended.line


def remaining_tokens(ctx: Context, user_id: UserId, offer_group: str) -> int:
    """The balance of the user's group, 0 when the user has no such group."""
    account = ctx.accounts.read(user_id, offer_group)
    return 0 if account is None else account.snapshot.balance
