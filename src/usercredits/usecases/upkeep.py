"""Upkeep: completing interrupted operations, and checking balances against the ledger."""

from __future__ import annotations

from usercredits.accounts import SNAPSHOT_LAG
from usercredits.grants import replay
from usercredits.models import AuditReport, GroupAudit, ReconcileReport, UserId
from usercredits.usecases.checks import check_user
from usercredits.usecases.context import Context
from usercredits.usecases.effects import complete, release_claims


def reconcile(ctx: Context, user_id: UserId) -> ReconcileReport:
    """Complete every operation of the user left in progress, and bring each account's
    snapshot up to its ledger; idempotent. A group is reported repaired when its snapshot
    lagged further behind than appends leave it (:data:`~usercredits.accounts.SNAPSHOT_LAG`)
    or when it held stale window claims."""
    check_user(user_id)
    report = ReconcileReport(user_id=user_id)
    for order in ctx.orders.find_in_progress(user_id):
        complete(ctx, order)
        report.completed_orders.append(order.id)
    for account in ctx.credits.accounts(user_id):
        group = account.offer_group
        lag = ctx.accounts.catch_up(account, store=True).snapshot.seq - account.snapshot.seq
        behind = lag >= SNAPSHOT_LAG
        stale = [c.key for c in account.window.claims if not _claimed_in_progress(ctx, c.key)]
        if stale:
            release_claims(ctx, user_id, group, stale, ctx.now())
        if behind or stale:
            report.repaired_groups.append(group)
    return report


def _claimed_in_progress(ctx: Context, key: str) -> bool:
    """Whether the order that claimed a window (``<order id>`` or ``<order id>/<item>``) is
    still in progress: its completion will record and release the claim."""
    order = ctx.orders.find_by_id(key.split("/")[0])
    return order is not None and order.in_progress


def audit(ctx: Context, user_id: UserId) -> AuditReport:
    """Check every group of the user: the balance read, the sum of its ledger lines, and its
    live remainders minus its debt must agree."""
    check_user(user_id)
    report = AuditReport(user_id=user_id)
    for account in ctx.accounts.read_all(user_id):
        lines = ctx.lines.lines_after(user_id, account.offer_group, 0)
        folded = replay(lines)
        live = sum(g.remaining for g in folded.grants)
        balance = account.snapshot.balance
        ledger_sum = sum(line.tokens for line in lines)
        group = GroupAudit(
            offer_group=account.offer_group,
            balance=balance,
            ledger_sum=ledger_sum,
            live_remainders=live,
            debt=folded.debt,
            ok=balance == ledger_sum == live - folded.debt,
        )
        report.groups.append(group)
        report.ok = report.ok and group.ok
    return report
