"""Holds: tokens reserved before a long job, settled with the real usage afterwards.

A hold is a ledger line of no tokens that reserves ``held`` tokens until its end:
safe consumptions and other holds only draw what is *available* (the balance
minus the active holds), decided on the same snapshot, so no concurrency can
take held tokens. A capture is a consumption naming the hold; a capture and a
release share the hold's operation key, so a hold is closed exactly once. A hold
past its end frees its tokens by itself: nothing needs to run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from usercredits.errors import (
    EntityNotFoundError,
    HoldExpiredError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidInputError,
)
from usercredits.grants import Snapshot
from usercredits.models import (
    EntityId,
    Hold,
    HoldStatus,
    LedgerReason,
    TokenTimetable,
    UserId,
)
from usercredits.usecases.checks import check_count, check_group, check_key, check_user
from usercredits.usecases.context import Context


def _closing_key(hold_id: str) -> str:
    return f"hold:{hold_id}"


def available_tokens(ctx: Context, user_id: UserId, offer_group: str) -> int:
    """The balance minus the tokens of the active holds (0 for an unknown group)."""
    check_user(user_id)
    check_group(offer_group)
    account = ctx.accounts.read(user_id, offer_group)
    return 0 if account is None else account.snapshot.available(ctx.now())


def reserve(
    ctx: Context,
    user_id: UserId,
    offer_group: str,
    count: int,
    *,
    ttl: timedelta,
    idempotency_key: str | None,
) -> Hold:
    """Hold ``count`` available tokens until now + ``ttl``; InsufficientCreditsError when
    fewer are available. A retry with the same key returns the same hold."""
    check_user(user_id)
    check_group(offer_group)
    check_count(count)
    check_key(idempotency_key)
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise InvalidInputError(f"ttl must be a positive timedelta, got {ttl!r}")
    now = ctx.now()
    draft = TokenTimetable(
        tokens=0,
        reason=LedgerReason.HOLD,
        held=count,
        expires=now + ttl,
        idempotency_key=idempotency_key,
    )

    def decide(snapshot: Snapshot) -> TokenTimetable:
        available = snapshot.available(now)
        if available < count:
            raise InsufficientCreditsError(
                f"user {user_id!r} has {available} tokens available in {offer_group!r}; "
                f"{count} requested",
                balance=available,
                requested=count,
            )
        return draft

    try:
        appended = ctx.accounts.append(user_id, offer_group, decide, now=now)
    except InsufficientCreditsError:
        first = (
            None
            if idempotency_key is None
            else ctx.lines.find_by_key(user_id, idempotency_key=idempotency_key)
        )
        if first is None:
            raise
        return _same_hold(ctx, first, offer_group, count)
    assert appended.line is not None
    if not appended.created:
        return _same_hold(ctx, appended.line, offer_group, count)
    return _hold(ctx, appended.line, appended.snapshot)


def _same_hold(ctx: Context, line: TokenTimetable, offer_group: str, count: int) -> Hold:
    if line.reason is not LedgerReason.HOLD or (line.offer_group, line.held) != (
        offer_group,
        count,
    ):
        raise IdempotencyConflictError(
            f"idempotency key {line.idempotency_key!r} was used for a {line.reason} line of "
            f"{line.offer_group!r}, not a hold of {count} tokens of {offer_group!r}"
        )
    return _hold(ctx, line)


def _hold(ctx: Context, line: TokenTimetable, snapshot: Snapshot | None = None) -> Hold:
    """The hold ``line`` made, with its status now."""
    hold_id = str(line.id)
    if snapshot is None:
        account = ctx.accounts.read(line.user_id, line.offer_group)
        snapshot = Snapshot() if account is None else account.snapshot
    now = ctx.now()
    status = HoldStatus.ACTIVE
    if snapshot.hold(hold_id) is None or (line.expires is not None and line.expires <= now):
        closing = ctx.lines.find_by_key(line.user_id, operation_key=_closing_key(hold_id))
        if closing is None:
            status = HoldStatus.EXPIRED
        elif closing.reason is LedgerReason.RELEASE:
            status = HoldStatus.RELEASED
        else:
            status = HoldStatus.CAPTURED
    return Hold(
        id=hold_id,
        user_id=line.user_id,
        offer_group=line.offer_group,
        tokens=line.held,
        expires_at=line.expires,
        status=status,
    )


def _hold_line(ctx: Context, hold_id: EntityId) -> TokenTimetable:
    if hold_id is None or (isinstance(hold_id, str) and not hold_id):
        raise InvalidInputError(f"a hold id is required, got {hold_id!r}")
    line = ctx.lines.find_by_id(hold_id)
    if line is None or line.reason is not LedgerReason.HOLD:
        raise EntityNotFoundError(f"no hold with id {hold_id!r}")
    return line


def capture(ctx: Context, hold_id: EntityId, count: Any = None) -> TokenTimetable:
    """Consume ``count`` tokens (default: the held amount) and free the rest of the hold,
    exactly once: a retry returns the same line. More than held only if the excess is
    available (else InsufficientCreditsError); HoldExpiredError when the hold ended."""
    line = _hold_line(ctx, hold_id)
    count = line.held if count is None else count
    check_count(count)
    key = _closing_key(str(line.id))
    now = ctx.now()
    draft = TokenTimetable(
        tokens=-count,
        reason=LedgerReason.CONSUMPTION,
        hold_id=str(line.id),
        operation_key=key,
    )

    def decide(snapshot: Snapshot) -> TokenTimetable:
        held = snapshot.hold(str(line.id))
        if held is None or held.expires_at <= now:
            raise HoldExpiredError(f"hold {hold_id!r} is no longer active")
        others = snapshot.held(now) - held.tokens
        if snapshot.balance - others < count:
            raise InsufficientCreditsError(
                f"hold {hold_id!r} holds {held.tokens} tokens and "
                f"{snapshot.balance - others - held.tokens} more are available; "
                f"{count} requested",
                balance=snapshot.balance - others,
                requested=count,
            )
        return draft

    try:
        appended = ctx.accounts.append(line.user_id, line.offer_group, decide, now=now)
    except HoldExpiredError:
        closing = ctx.lines.find_by_key(line.user_id, operation_key=key)
        if closing is None:
            raise HoldExpiredError(
                f"hold {hold_id!r} ended at {line.expires} before being captured"
            ) from None
        appended_line = closing
    else:
        assert appended.line is not None
        appended_line = appended.line
    if appended_line.reason is LedgerReason.RELEASE:
        raise HoldExpiredError(f"hold {hold_id!r} was released before being captured")
    if appended_line.tokens != -count:
        raise IdempotencyConflictError(
            f"hold {hold_id!r} was captured for {-appended_line.tokens} tokens, not {count}"
        )
    return appended_line


def release(ctx: Context, hold_id: EntityId) -> Hold:
    """Free the hold's tokens; idempotent. A hold captured or ended is returned as it is."""
    line = _hold_line(ctx, hold_id)
    now = ctx.now()
    draft = TokenTimetable(
        tokens=0,
        reason=LedgerReason.RELEASE,
        hold_id=str(line.id),
        operation_key=_closing_key(str(line.id)),
    )

    def decide(snapshot: Snapshot) -> TokenTimetable | None:
        held = snapshot.hold(str(line.id))
        return None if held is None or held.expires_at <= now else draft

    appended = ctx.accounts.append(line.user_id, line.offer_group, decide, now=now)
    return _hold(ctx, line, appended.snapshot if appended.created else None)
