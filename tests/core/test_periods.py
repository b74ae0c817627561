"""Calendar windows (SPEC §4): one addition of N cycles, months clamped to their last day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from usercredits import Cycle, InvalidOfferError
from usercredits.periods import add_months, window_end


def at(year: int, month: int, day: int, hour: int = 12) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        (at(2025, 1, 31), 1, at(2025, 2, 28)),
        (at(2024, 1, 31), 1, at(2024, 2, 29)),
        (at(2025, 1, 31), 3, at(2025, 4, 30)),
        (at(2025, 3, 31), 1, at(2025, 4, 30)),
        (at(2025, 1, 15), 1, at(2025, 2, 15)),
        (at(2025, 11, 30), 3, at(2026, 2, 28)),
        (at(2025, 12, 31), 1, at(2026, 1, 31)),
        (at(2024, 2, 29), 12, at(2025, 2, 28)),
        (at(2025, 5, 31), 0, at(2025, 5, 31)),
        (at(2025, 3, 31), -1, at(2025, 2, 28)),
    ],
)
def test_add_months_clamps_to_the_last_day_of_the_target_month(
    start: datetime, months: int, end: datetime
) -> None:
    assert add_months(start, months) == end


def test_add_months_keeps_the_time_of_day_and_the_timezone() -> None:
    paris = timezone(timedelta(hours=1))
    start = datetime(2025, 1, 31, 23, 59, 58, 123000, tzinfo=paris)
    assert add_months(start, 1) == datetime(2025, 2, 28, 23, 59, 58, 123000, tzinfo=paris)


@pytest.mark.parametrize(
    ("cycle", "count", "end"),
    [
        (Cycle.DAILY, 1, at(2025, 2, 1)),
        (Cycle.DAILY, 3, at(2025, 2, 3)),
        (Cycle.WEEKLY, 1, at(2025, 2, 7)),
        (Cycle.BI_WEEKLY, 1, at(2025, 2, 14)),
        (Cycle.BI_WEEKLY, 2, at(2025, 2, 28)),
        (Cycle.MONTHLY, 1, at(2025, 2, 28)),
        (Cycle.MONTHLY, 3, at(2025, 4, 30)),
        (Cycle.TRIMESTER, 1, at(2025, 4, 30)),
        (Cycle.TRIMESTER, 2, at(2025, 7, 31)),
        (Cycle.SEMESTER, 1, at(2025, 7, 31)),
        (Cycle.SEMESTER, 2, at(2026, 1, 31)),
        (Cycle.YEARLY, 1, at(2026, 1, 31)),
        (Cycle.YEARLY, 4, at(2029, 1, 31)),
    ],
)
def test_a_window_of_count_cycles_from_jan_31(cycle: Cycle, count: int, end: datetime) -> None:
    assert window_end(at(2025, 1, 31), cycle, None, count) == end


def test_chained_monthly_windows_are_each_computed_from_their_own_start() -> None:
    first = window_end(at(2025, 1, 31), Cycle.MONTHLY, None, 1)
    assert first == at(2025, 2, 28)
    assert window_end(first, Cycle.MONTHLY, None, 1) == at(2025, 3, 28)


def test_a_custom_window_lasts_its_seconds_times_the_count() -> None:
    assert window_end(at(2025, 1, 31), Cycle.CUSTOM, 90, 4) == at(2025, 1, 31) + timedelta(
        minutes=6
    )


def test_a_once_window_never_ends() -> None:
    assert window_end(at(2025, 1, 31), Cycle.ONCE, None, 5) is None


@pytest.mark.parametrize("seconds", [None, 0, -60])
def test_a_custom_window_needs_a_positive_number_of_seconds(seconds: int | None) -> None:
    with pytest.raises(InvalidOfferError, match="custom_cycle"):
        window_end(at(2025, 1, 31), Cycle.CUSTOM, seconds, 1)


@pytest.mark.parametrize("count", [0, -1])
def test_a_window_needs_at_least_one_cycle(count: int) -> None:
    with pytest.raises(InvalidOfferError, match="at least one cycle"):
        window_end(at(2025, 1, 31), Cycle.DAILY, None, count)
