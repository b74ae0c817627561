"""Clocks: every time decision of the library goes through an injected clock.

A clock is any zero-argument callable returning a timezone-aware datetime. The
library converts its readings to UTC and truncates them to whole milliseconds,
the precision every supported backend stores, so a value read back from storage
compares equal to the value computed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from usercredits.errors import InvalidInputError

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def to_utc(moment: datetime, what: str = "datetime") -> datetime:
    """``moment`` in UTC truncated to milliseconds; naive datetimes are refused with
    InvalidInputError (a ValueError)."""
    if not isinstance(moment, datetime):
        raise InvalidInputError(f"{what} must be a datetime, got {moment!r}")
    if moment.tzinfo is not UTC:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise InvalidInputError(
                f"{what} must be timezone-aware, got naive {moment.isoformat()}"
            )
        moment = moment.astimezone(UTC)
    extra = moment.microsecond % 1000
    return moment.replace(microsecond=moment.microsecond - extra) if extra else moment


class FrozenClock:
    """A clock that only moves when told to: for tests, demos and replays."""

    def __init__(self, start: datetime | None = None):
        self._now = to_utc(start if start is not None else system_clock(), "start")

    def __call__(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (aware)."""
        self._now = to_utc(moment, "moment")

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by ``delta`` (or ``timedelta(**kwargs)``) and return the new time."""
        self._now = self._now + (delta if delta is not None else timedelta(**kwargs))
        return self._now


def to_iso(moment: datetime | None) -> str | None:
    """A datetime as ISO 8601 text (None stays None): how stored values keep their dates."""
    return None if moment is None else moment.isoformat()


def from_iso(text: str | None) -> datetime | None:
    """The datetime :func:`to_iso` wrote (None stays None)."""
    return None if text is None else datetime.fromisoformat(text)
