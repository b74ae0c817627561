"""Consumption: recording what users consume, and reading balances.

A consumption is one ledger line appended through the commit rule of
:mod:`usercredits.accounts`: the check of a safe consumption and its line are
decided on the same snapshot, so no concurrency can overdraw. An idempotency
key is unique per user on the ledger, so a retry finds the first line.
"""

from __future__ import annotations

from typing import Any

from usercredits.errors import (
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidInputError,
)
from usercredits.grants import Snapshot
from usercredits.models import LedgerReason, TokenTimetable, UserId
from usercredits.usecases.context import Context
from usercredits.usecases.ordering import is_count


def check_user(user_id: UserId) -> None:
    """Refuse a missing user id."""
    if user_id is None or (isinstance(user_id, str) and not user_id):
        raise InvalidInputError(f"a user id is required, got {user_id!r}")


def check_group(offer_group: Any) -> None:
    """Refuse an offer group that is not a non-empty str."""
    if not isinstance(offer_group, str) or not offer_group:
        raise InvalidInputError(f"offer_group must be a non-empty str, got {offer_group!r}")


def check_key(key: Any, what: str = "idempotency_key") -> None:
    """Refuse a key that is neither None nor a non-empty str."""
    if key is not None and (not isinstance(key, str) or not key):
        raise InvalidInputError(f"{what} must be a non-empty str, got {key!r}")


def check_count(count: Any) -> None:
    """Refuse a count that is not a positive int."""
    if not is_count(count):
        raise InvalidInputError(f"count must be a positive int, got {count!r}")


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
    """Record a consumption; with ``floor``, refuse one that would leave the balance below it
    (InsufficientCreditsError, nothing written, the key not used up)."""
    check_user(user_id)
    check_count(count)
    check_group(offer_group)
    check_key(idempotency_key)
    draft = TokenTimetable(
        tokens=-count, reason=LedgerReason.CONSUMPTION, idempotency_key=idempotency_key
    )

    def decide(snapshot: Snapshot) -> TokenTimetable:
        if floor is not None and snapshot.balance - count < floor:
            raise InsufficientCreditsError(
                f"user {user_id!r} has {snapshot.balance} tokens in {offer_group!r}; "
                f"{count} requested",
                balance=snapshot.balance,
                requested=count,
            )
        return draft

    try:
        appended = ctx.accounts.append(user_id, offer_group, decide, now=ctx.now())
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
