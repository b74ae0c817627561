"""The expiry job: ``check_for_expired_orders`` over every user with credits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from usercredits.models import ExpiryReport, ExpiryWarning, UserId
from usercredits.service import PaymentService

logger = logging.getLogger("usercredits.cli")


@dataclass
class ExpirySummary:
    """The totals of one run over all users; ``failures`` holds the users whose check failed."""

    now: datetime
    users_checked: int = 0
    orders_expired: int = 0
    removed_tokens: dict[str, int] = field(default_factory=dict)
    groups_removed: int = 0
    warnings: list[tuple[UserId, ExpiryWarning]] = field(default_factory=list)
    failures: list[tuple[UserId, str]] = field(default_factory=list)

    def add(self, report: ExpiryReport) -> None:
        """Count one user's report."""
        self.users_checked += 1
        self.orders_expired += len(report.expired_orders)
        for group, count in report.removed_tokens.items():
            self.removed_tokens[group] = self.removed_tokens.get(group, 0) + count
        self.groups_removed += len(report.expired)
        self.warnings.extend((report.user_id, warning) for warning in report.warnings)

    def warning_counts(self) -> dict[str, int]:
        """How many warnings of each reason."""
        counts: dict[str, int] = {}
        for _, warning in self.warnings:
            counts[warning.reason] = counts.get(warning.reason, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data (dates in ISO 8601, user ids as str unless int)."""
        return {
            "now": self.now.isoformat(),
            "users_checked": self.users_checked,
            "orders_expired": self.orders_expired,
            "removed_tokens": dict(sorted(self.removed_tokens.items())),
            "groups_removed": self.groups_removed,
            "warnings": [
                {
                    "user_id": json_user_id(user_id),
                    "offer_group": w.offer_group,
                    "reason": w.reason,
                    "expires": None if w.expires is None else w.expires.isoformat(),
                    "tokens": w.tokens,
                }
                for user_id, w in self.warnings
            ],
            "failures": [
                {"user_id": json_user_id(user_id), "error": error}
                for user_id, error in self.failures
            ],
        }


def json_user_id(user_id: UserId) -> Any:
    """A user id for JSON: ints stay ints, anything else becomes its ``str()``."""
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        return user_id
    return str(user_id)


def expire_all(
    service: PaymentService,
    *,
    warn_before: timedelta | None = None,
    low: Mapping[str, int] | None = None,
    advance: Callable[[], None] = lambda: None,
) -> ExpirySummary:
    """Run ``check_for_expired_orders`` for every user with credits, streaming the user ids.

    A user whose check fails is recorded in ``failures`` and the run goes on;
    ``advance`` is called once per user (a progress bar)."""
    summary = ExpirySummary(now=service.now())
    credits = service.get_dao_factory().get_user_credits_dao()
    for user_id in credits.iter_user_ids():
        try:
            report = service.check_for_expired_orders(user_id, warn_before=warn_before, low=low)
        except Exception as e:
            logger.debug("expiry check failed for user %r", user_id, exc_info=True)
            summary.failures.append((user_id, f"{type(e).__name__}: {e}"))
        else:
            summary.add(report)
        advance()
    return summary
