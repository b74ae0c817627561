"""The upkeep jobs: ``reconcile`` and ``audit`` over every user with credits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from usercredits.cli.expiry import json_user_id
from usercredits.models import AuditReport, GroupAudit, ReconcileReport, UserId
from usercredits.service import PaymentService


@dataclass
class ReconcileSummary:
    """The totals of one ``reconcile`` run over all users."""

    now: datetime
    users_checked: int = 0
    reports: list[ReconcileReport] = field(default_factory=list)
    """The reports of the users where something was completed or repaired."""
    failures: list[tuple[UserId, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return {
            "now": self.now.isoformat(),
            "users_checked": self.users_checked,
            "completed_orders": sum(len(r.completed_orders) for r in self.reports),
            "repaired_groups": sum(len(r.repaired_groups) for r in self.reports),
            "users": [
                {
                    "user_id": json_user_id(r.user_id),
                    "completed_orders": [str(i) for i in r.completed_orders],
                    "repaired_groups": r.repaired_groups,
                }
                for r in self.reports
            ],
            "failures": [
                {"user_id": json_user_id(user), "error": error} for user, error in self.failures
            ],
        }


@dataclass
class AuditSummary:
    """The outcome of one ``audit`` run over all users: the groups that disagree."""

    now: datetime
    users_checked: int = 0
    groups_checked: int = 0
    mismatches: list[tuple[UserId, GroupAudit]] = field(default_factory=list)
    failures: list[tuple[UserId, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every group of every user agrees with its ledger."""
        return not self.mismatches and not self.failures

    def add(self, report: AuditReport) -> None:
        """Count one user's audit."""
        self.users_checked += 1
        self.groups_checked += len(report.groups)
        self.mismatches.extend((report.user_id, g) for g in report.groups if not g.ok)

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return {
            "now": self.now.isoformat(),
            "ok": self.ok,
            "users_checked": self.users_checked,
            "groups_checked": self.groups_checked,
            "mismatches": [
                {
                    "user_id": json_user_id(user),
                    "offer_group": g.offer_group,
                    "balance": g.balance,
                    "ledger_sum": g.ledger_sum,
                    "live_remainders": g.live_remainders,
                    "debt": g.debt,
                }
                for user, g in self.mismatches
            ],
            "failures": [
                {"user_id": json_user_id(user), "error": error} for user, error in self.failures
            ],
        }


def reconcile_all(
    service: PaymentService, *, advance: Callable[[], None] = lambda: None
) -> ReconcileSummary:
    """Run ``reconcile`` for every user, streaming the user ids; a user whose run fails is
    recorded in ``failures`` and the run goes on."""
    summary = ReconcileSummary(now=service.now())
    for user_id in service.get_dao_factory().get_user_credits_dao().iter_user_ids():
        try:
            report = service.reconcile(user_id)
        except Exception as e:
            summary.failures.append((user_id, f"{type(e).__name__}: {e}"))
        else:
            summary.users_checked += 1
            if report.completed_orders or report.repaired_groups:
                summary.reports.append(report)
        advance()
    return summary


def audit_all(
    service: PaymentService, *, advance: Callable[[], None] = lambda: None
) -> AuditSummary:
    """Run ``audit`` for every user, streaming the user ids."""
    summary = AuditSummary(now=service.now())
    for user_id in service.get_dao_factory().get_user_credits_dao().iter_user_ids():
        try:
            summary.add(service.audit(user_id))
        except Exception as e:
            summary.failures.append((user_id, f"{type(e).__name__}: {e}"))
        advance()
    return summary
