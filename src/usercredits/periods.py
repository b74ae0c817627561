"""Calendar arithmetic of validity windows.

A window of ``count`` cycles starting at ``start`` ends at ``start + cycle * count``
computed in one step: month-based cycles add ``months * count`` calendar months
and clamp to the last day of the target month (Jan 31 + 1 month = Feb 28/29,
Jan 31 + 3 months = Apr 30); ``once`` never ends.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

from usercredits.errors import InvalidOfferError
from usercredits.models import Cycle

_DAYS = {Cycle.DAILY: 1, Cycle.WEEKLY: 7, Cycle.BI_WEEKLY: 14}
_MONTHS = {Cycle.MONTHLY: 1, Cycle.TRIMESTER: 3, Cycle.SEMESTER: 6, Cycle.YEARLY: 12}


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` moved by ``months`` calendar months, the day clamped to the month's length."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def window_end(
    start: datetime, cycle: Cycle, custom_cycle: int | None, count: int
) -> datetime | None:
    """The end of ``count`` consecutive cycles from ``start``; None for ``once`` (never ends)."""
    if count < 1:
        raise InvalidOfferError(f"a window needs at least one cycle, got {count}")
    if cycle is Cycle.ONCE:
        return None
    if cycle in _DAYS:
        return start + timedelta(days=_DAYS[cycle] * count)
    if cycle in _MONTHS:
        return add_months(start, _MONTHS[cycle] * count)
    if custom_cycle is None or custom_cycle <= 0:
        raise InvalidOfferError("cycle 'custom' needs custom_cycle, a positive number of seconds")
    return start + timedelta(seconds=custom_cycle * count)
