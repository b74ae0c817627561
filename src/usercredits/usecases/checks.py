"""Checks of the arguments of service calls: bad input is refused before anything is stored."""

from __future__ import annotations

from typing import Any

from usercredits.errors import InvalidInputError
from usercredits.models import UserId, is_storable_int


def is_count(value: Any) -> bool:
    """Whether ``value`` is a positive int every backend can store (bools are not ints)."""
    return is_storable_int(value) and value > 0


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
