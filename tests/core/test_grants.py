"""The grant model's replay (``usercredits.grants``), rule by rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from usercredits import LedgerReason, TokenTimetable
from usercredits.grants import replay

SOON = datetime(2025, 2, 1, tzinfo=UTC)
LATER = SOON + timedelta(days=30)


def bought(order: str, tokens: int, expires: datetime | None) -> TokenTimetable:
    return TokenTimetable(
        tokens=tokens, order_id=order, reason=LedgerReason.PURCHASE, expires=expires
    )


def used(tokens: int) -> TokenTimetable:
    return TokenTimetable(tokens=-tokens, reason=LedgerReason.CONSUMPTION)


def ended(order: str, tokens: int, reason: LedgerReason = LedgerReason.EXPIRY) -> TokenTimetable:
    return TokenTimetable(tokens=-tokens, order_id=order, reason=reason)


def adjusted(tokens: int) -> TokenTimetable:
    return TokenTimetable(tokens=tokens, reason=LedgerReason.ADJUSTMENT)


def test_a_consumption_draws_from_the_soonest_expiring_grant_first() -> None:
    state = replay([bought("late", 10, LATER), bought("soon", 10, SOON), used(12)])
    assert state.grants == {"late": 8, "soon": 0}


def test_never_expiring_grants_are_drawn_last() -> None:
    state = replay([bought("never", 10, None), bought("late", 10, LATER), used(12)])
    assert state.grants == {"never": 8, "late": 0}


def test_grants_expiring_together_are_drawn_older_first() -> None:
    state = replay([bought("older", 10, SOON), bought("newer", 10, SOON), used(4)])
    assert state.grants == {"older": 6, "newer": 10}


def test_what_no_grant_covers_becomes_debt() -> None:
    state = replay([bought("a", 5, SOON), used(8)])
    assert (state.grants, state.debt, state.balance) == ({"a": 0}, 3, -3)


def test_the_next_grant_repays_the_debt_first() -> None:
    state = replay([used(8), bought("a", 5, SOON), bought("b", 10, LATER)])
    assert (state.grants, state.debt, state.balance) == ({"a": 0, "b": 7}, 0, 7)


def test_an_expiry_ends_its_grant_removing_what_it_held() -> None:
    state = replay([bought("a", 10, SOON), bought("b", 10, LATER), used(4), ended("a", 6)])
    assert (state.grants, state.ended, state.balance) == ({"b": 10}, {"a"}, 10)


def test_a_refund_ends_its_grant_like_an_expiry() -> None:
    state = replay([bought("a", 10, SOON), ended("a", 10, LedgerReason.REFUND)])
    assert (state.grants, state.ended, state.balance) == ({}, {"a"}, 0)


def test_an_ending_line_of_zero_tokens_still_ends_its_grant() -> None:
    state = replay([bought("a", 10, SOON), used(10), ended("a", 0)])
    assert (state.grants, state.ended) == ({}, {"a"})


def test_tokens_an_expiry_left_behind_stay_in_the_balance_outside_any_grant() -> None:
    state = replay([bought("a", 10, SOON), ended("a", 4)])
    assert (state.grants, state.unattributed, state.balance) == ({}, 6, 6)


def test_an_expiry_removing_more_than_held_draws_the_rest_from_other_grants() -> None:
    state = replay([bought("a", 5, SOON), bought("b", 10, LATER), ended("a", 8)])
    assert (state.grants, state.balance) == ({"b": 7}, 7)


def test_a_positive_adjustment_is_held_outside_grants_and_drawn_after_them() -> None:
    state = replay([adjusted(5), bought("a", 10, None), used(12)])
    assert (state.grants, state.unattributed, state.debt) == ({"a": 0}, 3, 0)


def test_a_negative_adjustment_is_drawn_like_a_consumption() -> None:
    state = replay([bought("a", 10, SOON), adjusted(-4)])
    assert state.grants == {"a": 6}


def test_the_remainder_of_an_unknown_order_is_zero() -> None:
    assert replay([bought("a", 10, SOON)]).remainder("zzz") == 0


def test_orders_are_matched_by_their_str_form() -> None:
    class Oid:
        def __str__(self) -> str:
            return "65a0f00d"

    state = replay([bought("65a0f00d", 10, SOON)])
    assert state.remainder(Oid()) == 10


def test_an_empty_ledger_holds_nothing() -> None:
    state = replay([])
    assert (state.grants, state.debt, state.unattributed, state.balance) == ({}, 0, 0, 0)
