"""Clocks: aware UTC readings truncated to milliseconds; naive datetimes refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from usercredits import FrozenClock, system_clock
from usercredits.clock import to_utc


def test_the_system_clock_reads_aware_utc() -> None:
    before = datetime.now(UTC)
    reading = system_clock()
    assert reading.tzinfo is not None
    assert reading.utcoffset() == timedelta(0)
    assert before <= reading <= datetime.now(UTC)


def test_to_utc_converts_other_offsets_to_utc() -> None:
    tokyo = datetime(2025, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9)))
    converted = to_utc(tokyo)
    assert converted == datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
    assert converted.tzinfo is UTC


def test_to_utc_truncates_to_whole_milliseconds() -> None:
    moment = datetime(2025, 1, 1, 0, 0, 0, 123987, tzinfo=UTC)
    assert to_utc(moment).microsecond == 123000


def test_to_utc_refuses_naive_datetimes_naming_the_value() -> None:
    with pytest.raises(ValueError, match="starts must be timezone-aware"):
        to_utc(datetime(2025, 1, 1), "starts")


@pytest.mark.parametrize("value", ["2025-01-01T00:00:00Z", 1735689600, None])
def test_to_utc_refuses_what_is_not_a_datetime(value: object) -> None:
    with pytest.raises(ValueError, match="must be a datetime"):
        to_utc(value)  # type: ignore[arg-type]


def test_a_frozen_clock_stands_still_until_moved() -> None:
    clock = FrozenClock(datetime(2025, 1, 1, tzinfo=UTC))
    assert clock() == clock() == datetime(2025, 1, 1, tzinfo=UTC)


def test_a_frozen_clock_advances_by_a_delta_or_keywords() -> None:
    clock = FrozenClock(datetime(2025, 1, 1, tzinfo=UTC))
    assert clock.advance(timedelta(days=1)) == datetime(2025, 1, 2, tzinfo=UTC)
    assert clock.advance(hours=6) == datetime(2025, 1, 2, 6, tzinfo=UTC)
    assert clock() == datetime(2025, 1, 2, 6, tzinfo=UTC)


def test_a_frozen_clock_jumps_to_a_set_moment_in_utc() -> None:
    clock = FrozenClock(datetime(2025, 1, 1, tzinfo=UTC))
    clock.set(datetime(2024, 6, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))))
    assert clock() == datetime(2024, 6, 1, 0, 0, tzinfo=UTC)


def test_a_frozen_clock_refuses_naive_moments() -> None:
    with pytest.raises(ValueError, match="naive"):
        FrozenClock(datetime(2025, 1, 1))
    clock = FrozenClock(datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="naive"):
        clock.set(datetime(2025, 1, 2))
    assert clock() == datetime(2025, 1, 1, tzinfo=UTC)


def test_a_frozen_clock_starts_now_by_default() -> None:
    before = to_utc(datetime.now(UTC))
    assert before <= FrozenClock()() <= datetime.now(UTC)
