"""Grants: tokens given without an order, taken back by a void, and listed in burn order.

A direct grant is one ledger line (reason ``grant`` for a promotion, ``adjustment``
for a correction, ``purchase`` for a sale made elsewhere) appended through the
commit rule, so it repays debt first like any grant; its idempotency key makes a
retry return the same grant. A void takes what a grant still holds, once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from usercredits.clock import to_utc
from usercredits.errors import EntityNotFoundError, IdempotencyConflictError, InvalidInputError
from usercredits.grants import (
    REASONS,
    SOURCES,
    LiveGrant,
    Snapshot,
    ending_key,
    take_remainder,
)
from usercredits.models import (
    DEFAULT_PRIORITY,
    EntityId,
    Grant,
    GrantSource,
    GrantStatus,
    LedgerReason,
    Order,
    Status,
    TokenTimetable,
    UserId,
    is_storable_int,
)
from usercredits.usecases.checks import check_count, check_group, check_key, check_user
from usercredits.usecases.context import Context

ENDING = {
    LedgerReason.VOID: GrantStatus.VOIDED,
    LedgerReason.EXPIRY: GrantStatus.EXPIRED,
    LedgerReason.REFUND: GrantStatus.REFUNDED,
}
"""The status of a grant ended by a line of each reason."""
ORDER_ENDING = {Status.EXPIRED: GrantStatus.EXPIRED, Status.REFUNDED: GrantStatus.REFUNDED}


def _live(user_id: UserId, offer_group: str, grant: LiveGrant) -> Grant:
    return Grant(
        id=grant.grant_id,
        user_id=user_id,
        offer_group=offer_group,
        order_id=grant.order_id,
        source=grant.source,
        tokens=grant.tokens,
        remaining=grant.remaining,
        priority=grant.priority,
        starts=grant.starts,
        expires=grant.expires,
    )


def _made_by(line: TokenTimetable, remaining: int, status: GrantStatus) -> Grant:
    return Grant(
        id=line.grant_id or str(line.id),
        user_id=line.user_id,
        offer_group=line.offer_group,
        order_id=None if line.order_id is None else str(line.order_id),
        source=SOURCES.get(line.reason, GrantSource.ADJUSTMENT),
        tokens=line.tokens,
        remaining=remaining,
        priority=DEFAULT_PRIORITY if line.priority is None else line.priority,
        starts=line.created_at,
        expires=line.expires,
        status=status,
    )


def _burn_key(grant: Grant) -> tuple[int, bool, datetime | None, datetime | None]:
    return (grant.priority, grant.expires is None, grant.expires, grant.starts)


def grants(
    ctx: Context, user_id: UserId, offer_group: str | None, include_ended: bool
) -> list[Grant]:
    """The user's live grants (of one group when given), in burn order within each group;
    with ``include_ended``, every grant ever made, read from the whole ledger."""
    check_user(user_id)
    if offer_group is not None:
        check_group(offer_group)
    accounts = [
        a
        for a in ctx.accounts.read_all(user_id)
        if offer_group is None or a.offer_group == offer_group
    ]
    if not include_ended:
        return [_live(user_id, a.offer_group, g) for a in accounts for g in a.snapshot.grants]
    filters: dict[str, Any] = {"user_id": user_id}
    if offer_group is not None:
        filters["offer_group"] = offer_group
    lines = ctx.lines.find(filters)
    orders = {str(o.id): o for o in ctx.orders.find({"user_id": user_id})}
    snapshots = {a.offer_group: a.snapshot for a in accounts}
    now = ctx.now()
    result = []
    for group in dict.fromkeys(line.offer_group for line in lines):
        group_lines = [line for line in lines if line.offer_group == group]
        snapshot = snapshots.get(group, Snapshot())
        made = [_made(line, snapshot, group_lines, orders, now) for line in group_lines]
        result.extend(sorted((g for g in made if g is not None), key=_burn_key))
    return result


def _made(
    line: TokenTimetable,
    snapshot: Snapshot,
    lines: Iterable[TokenTimetable],
    orders: dict[str, Order],
    now: datetime,
) -> Grant | None:
    """The grant ``line`` made (None when it made none), with its status now."""
    if line.tokens <= 0 or line.reason not in SOURCES:
        return None
    grant_id = line.grant_id or str(line.id)
    live = snapshot.grant(grant_id)
    if live is not None:
        return _live(line.user_id, line.offer_group, live)
    ended = [ENDING[x.reason] for x in lines if x.grant_id == grant_id and x.reason in ENDING]
    return _made_by(line, 0, ended[-1] if ended else _drained_status(line, orders, now))


def _drained_status(line: TokenTimetable, orders: dict[str, Order], now: datetime) -> GrantStatus:
    """The status of a grant that holds nothing and no line ended."""
    order = orders.get(str(line.order_id)) if line.order_id is not None else None
    if order is not None:
        return ORDER_ENDING.get(order.status, GrantStatus.LIVE)
    if line.expires is not None and line.expires <= now:
        return GrantStatus.EXPIRED
    return GrantStatus.LIVE


def _status(ctx: Context, line: TokenTimetable, now: datetime) -> GrantStatus:
    """The status of a grant that is not live, read from the line that ended it."""
    grant_id = line.grant_id or str(line.id)
    for reason, status in ENDING.items():
        if ctx.lines.find_by_key(line.user_id, operation_key=ending_key(reason, grant_id)):
            return status
    orders = {}
    if line.order_id is not None:
        order = ctx.orders.find_by_id(line.order_id)
        if order is not None:
            orders[str(order.id)] = order
    return _drained_status(line, orders, now)


def _grant_of(ctx: Context, line: TokenTimetable, snapshot: Snapshot) -> Grant:
    grant_id = line.grant_id or str(line.id)
    live = snapshot.grant(grant_id)
    if live is not None:
        return _live(line.user_id, line.offer_group, live)
    return _made_by(line, 0, _status(ctx, line, ctx.now()))


def grant_tokens(
    ctx: Context,
    user_id: UserId,
    offer_group: str,
    count: int,
    *,
    expires: datetime | None,
    priority: int,
    source: GrantSource | str,
    idempotency_key: str | None,
    note: str | None,
) -> Grant:
    """Credit ``count`` tokens without an order; a retry with the same key returns the same
    grant (IdempotencyConflictError when the key was used for something else)."""
    check_user(user_id)
    check_group(offer_group)
    check_count(count)
    check_key(idempotency_key)
    if not is_storable_int(priority):
        raise InvalidInputError(f"priority must be an int, got {priority!r}")
    try:
        source = GrantSource(source)
    except ValueError:
        allowed = ", ".join(s.value for s in GrantSource)
        raise InvalidInputError(f"unknown grant source {source!r} (one of: {allowed})") from None
    if note is not None and not isinstance(note, str):
        raise InvalidInputError(f"note must be a str, got {note!r}")
    now = ctx.now()
    if expires is not None:
        try:
            expires = to_utc(expires, "expires")
        except ValueError as e:
            raise InvalidInputError(str(e)) from None
        if expires <= now:
            raise InvalidInputError(f"expires must be in the future, got {expires.isoformat()}")
    draft = TokenTimetable(
        tokens=count,
        reason=REASONS[source],
        expires=expires,
        priority=priority,
        idempotency_key=idempotency_key,
        note=note,
    )
    appended = ctx.accounts.append(user_id, offer_group, lambda _: draft, now=now)
    line = appended.line
    assert line is not None
    if not appended.created and (
        line.reason is not draft.reason
        or line.offer_group != offer_group
        or (line.tokens, line.expires, line.priority) != (count, expires, priority)
    ):
        raise IdempotencyConflictError(
            f"idempotency key {idempotency_key!r} was used for a {line.reason} line of "
            f"{line.tokens} tokens of {line.offer_group!r}, not this grant of {count} tokens "
            f"of {offer_group!r}"
        )
    snapshot = appended.snapshot
    if not appended.created:
        account = ctx.accounts.read(user_id, offer_group)
        snapshot = Snapshot() if account is None else account.snapshot
    return _grant_of(ctx, line, snapshot)


def _locate(ctx: Context, grant_id: EntityId) -> TokenTimetable:
    """The line that made the grant: a direct grant's own line, or an order's purchase line."""
    if grant_id is None or (isinstance(grant_id, str) and not grant_id):
        raise InvalidInputError(f"a grant id is required, got {grant_id!r}")
    line = ctx.lines.find_by_id(grant_id)
    if line is not None and line.tokens > 0 and line.reason in SOURCES:
        return line
    order = ctx.orders.find_by_id(grant_id)
    if order is not None:
        found = ctx.lines.find_by_key(order.user_id, operation_key=f"purchase:{order.id}")
        if found is not None:
            return found
    raise EntityNotFoundError(f"no grant with id {grant_id!r}")


def void_grant(ctx: Context, grant_id: EntityId) -> Grant:
    """Take what the grant still holds now (a ``void`` line); idempotent: voiding a grant that
    holds nothing changes nothing and returns it."""
    line = _locate(ctx, grant_id)
    decide = take_remainder(line.grant_id or str(line.id), LedgerReason.VOID, line.order_id)
    appended = ctx.accounts.append(line.user_id, line.offer_group, decide, now=ctx.now())
    return _grant_of(ctx, line, appended.snapshot)
