"""The grant model (``usercredits.grants``): how an account's lines fold into a snapshot."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from usercredits import GrantSource, LedgerReason, TokenTimetable
from usercredits.grants import LiveGrant, Snapshot, replay

T0 = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
SOON = datetime(2025, 2, 1, tzinfo=UTC)
LATER = SOON + timedelta(days=30)


def granted(
    grant_id: str,
    tokens: int,
    expires: datetime | None = None,
    *,
    priority: int | None = None,
    reason: LedgerReason = LedgerReason.PURCHASE,
) -> TokenTimetable:
    return TokenTimetable(
        tokens=tokens,
        order_id=grant_id if reason is LedgerReason.PURCHASE else None,
        reason=reason,
        grant_id=grant_id,
        priority=priority,
        expires=expires,
        created_at=T0,
    )


def used(tokens: int) -> TokenTimetable:
    return TokenTimetable(tokens=-tokens, reason=LedgerReason.CONSUMPTION)


def taken(
    grant_id: str | None, tokens: int, reason: LedgerReason = LedgerReason.EXPIRY
) -> TokenTimetable:
    return TokenTimetable(tokens=-tokens, reason=reason, grant_id=grant_id)


def adjusted(tokens: int) -> TokenTimetable:
    return TokenTimetable(tokens=tokens, reason=LedgerReason.ADJUSTMENT)


def numbered(*lines: TokenTimetable, first: int = 1) -> list[TokenTimetable]:
    """The lines as an account records them: numbered ``first``, ``first + 1``..."""
    return [dataclasses.replace(line, seq=first + i) for i, line in enumerate(lines)]


def fold(*lines: TokenTimetable) -> Snapshot:
    return replay(numbered(*lines))


def holding(snapshot: Snapshot) -> dict[str, int]:
    """What each live grant still holds, in burn order."""
    return {g.grant_id: g.remaining for g in snapshot.grants}


# -- burn order ------------------------------------------------------------------------------


def test_a_consumption_draws_from_the_grant_of_lowest_priority_first() -> None:
    snapshot = fold(
        granted("soon", 10, SOON, priority=50), granted("low", 10, LATER, priority=10), used(4)
    )
    assert holding(snapshot) == {"low": 6, "soon": 10}


def test_priority_comes_before_expiry_even_for_a_never_expiring_grant() -> None:
    snapshot = fold(
        granted("soon", 10, SOON, priority=50), granted("never", 10, None, priority=1), used(4)
    )
    assert holding(snapshot) == {"never": 6, "soon": 10}


def test_among_grants_of_one_priority_the_soonest_expiring_is_drawn_first() -> None:
    snapshot = fold(granted("late", 10, LATER), granted("soon", 10, SOON), used(12))
    assert holding(snapshot) == {"late": 8}


def test_never_expiring_grants_are_drawn_last() -> None:
    snapshot = fold(granted("never", 10, None), granted("late", 10, LATER), used(12))
    assert holding(snapshot) == {"never": 8}


def test_grants_expiring_together_are_drawn_older_first() -> None:
    snapshot = fold(granted("older", 10, SOON), granted("newer", 10, SOON), used(4))
    assert holding(snapshot) == {"older": 6, "newer": 10}


def test_never_expiring_grants_of_one_priority_are_drawn_older_first() -> None:
    snapshot = fold(granted("older", 10, None), granted("newer", 10, None), used(4))
    assert holding(snapshot) == {"older": 6, "newer": 10}


def test_the_snapshot_lists_its_live_grants_in_burn_order() -> None:
    snapshot = fold(
        granted("never", 1, None),
        granted("late", 1, LATER),
        granted("urgent", 1, None, priority=0),
        granted("soon", 1, SOON),
        granted("soon-newer", 1, SOON),
    )
    assert list(holding(snapshot)) == ["urgent", "soon", "soon-newer", "late", "never"]


def test_a_consumption_larger_than_a_grant_goes_on_to_the_next_one() -> None:
    snapshot = fold(granted("a", 5, SOON), granted("b", 5, LATER), granted("c", 5, None), used(8))
    assert holding(snapshot) == {"b": 2, "c": 5}


# -- debt ------------------------------------------------------------------------------------


def test_what_no_grant_covers_becomes_debt() -> None:
    snapshot = fold(granted("a", 5, SOON), used(8))
    assert (holding(snapshot), snapshot.debt, snapshot.balance) == ({}, 3, -3)


def test_a_consumption_without_any_grant_is_all_debt() -> None:
    snapshot = fold(used(8))
    assert (snapshot.debt, snapshot.balance) == (8, -8)


def test_the_next_grant_repays_the_debt_first() -> None:
    snapshot = fold(used(8), granted("a", 10, SOON))
    assert (holding(snapshot), snapshot.debt, snapshot.balance) == ({"a": 2}, 0, 2)


def test_a_grant_that_repays_part_of_its_tokens_keeps_what_it_granted() -> None:
    grant = fold(used(8), granted("a", 10, SOON)).grant("a")
    assert grant is not None
    assert (grant.tokens, grant.remaining) == (10, 2)


def test_a_grant_smaller_than_the_debt_repays_part_of_it_and_holds_nothing() -> None:
    snapshot = fold(used(8), granted("a", 5, SOON))
    assert (holding(snapshot), snapshot.debt, snapshot.balance) == ({}, 3, -3)


def test_a_grant_repaying_the_whole_debt_with_nothing_left_holds_nothing() -> None:
    snapshot = fold(used(8), granted("a", 8, SOON))
    assert (holding(snapshot), snapshot.debt, snapshot.balance) == ({}, 0, 0)


# -- taking back from one grant --------------------------------------------------------------


def test_an_expiry_line_takes_from_the_grant_it_names_not_in_burn_order() -> None:
    snapshot = fold(granted("soon", 10, SOON), granted("late", 10, LATER), taken("late", 10))
    assert (holding(snapshot), snapshot.balance) == ({"soon": 10}, 10)


def test_a_refund_line_takes_from_the_grant_it_names() -> None:
    snapshot = fold(
        granted("a", 10, SOON), granted("b", 10, LATER), taken("b", 10, LedgerReason.REFUND)
    )
    assert holding(snapshot) == {"a": 10}


def test_a_void_line_takes_from_the_grant_it_names() -> None:
    snapshot = fold(
        granted("a", 10, SOON), granted("b", 10, LATER), taken("b", 10, LedgerReason.VOID)
    )
    assert holding(snapshot) == {"a": 10}


def test_an_expiry_of_what_a_grant_still_holds_leaves_the_others_untouched() -> None:
    snapshot = fold(granted("a", 10, SOON), granted("b", 10, LATER), used(4), taken("a", 6))
    assert (holding(snapshot), snapshot.debt, snapshot.balance) == ({"b": 10}, 0, 10)


def test_a_partial_take_leaves_the_grant_live_with_the_rest() -> None:
    snapshot = fold(granted("a", 10, SOON), taken("a", 4, LedgerReason.REFUND))
    grant = snapshot.grant("a")
    assert grant is not None
    assert (grant.tokens, grant.remaining, snapshot.balance) == (10, 6, 6)


def test_a_take_beyond_what_its_grant_holds_draws_the_rest_in_burn_order() -> None:
    snapshot = fold(granted("a", 5, LATER), granted("b", 10, SOON), taken("a", 8))
    assert (holding(snapshot), snapshot.balance) == ({"b": 7}, 7)


def test_a_take_naming_a_grant_that_is_gone_is_drawn_in_burn_order() -> None:
    snapshot = fold(granted("a", 5, SOON), granted("b", 10, LATER), taken("a", 5), taken("a", 3))
    assert (holding(snapshot), snapshot.balance) == ({"b": 7}, 7)


def test_a_take_naming_no_grant_is_drawn_like_a_consumption() -> None:
    snapshot = fold(granted("a", 5, SOON), granted("b", 10, LATER), taken(None, 8))
    assert (holding(snapshot), snapshot.balance) == ({"b": 7}, 7)


def test_a_take_with_no_grant_left_to_draw_from_becomes_debt() -> None:
    snapshot = fold(granted("a", 5, SOON), taken("a", 8))
    assert (holding(snapshot), snapshot.debt, snapshot.balance) == ({}, 3, -3)


# -- grants leaving the snapshot -------------------------------------------------------------


def test_a_grant_drawn_to_zero_leaves_the_snapshot() -> None:
    snapshot = fold(granted("a", 5, SOON), granted("b", 10, LATER), used(5))
    assert (snapshot.grant("a"), snapshot.remainder("a")) == (None, 0)


def test_a_grant_taken_to_zero_leaves_the_snapshot() -> None:
    snapshot = fold(granted("a", 5, SOON), taken("a", 5))
    assert (snapshot.grants, snapshot.remainder("a")) == ((), 0)


def test_a_grant_that_left_the_snapshot_is_not_refilled_by_a_later_grant() -> None:
    snapshot = fold(granted("a", 5, SOON), used(5), granted("b", 3, LATER))
    assert holding(snapshot) == {"b": 3}


# -- what a positive line makes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "source"),
    [
        (LedgerReason.PURCHASE, GrantSource.PURCHASE),
        (LedgerReason.GRANT, GrantSource.PROMOTIONAL),
        (LedgerReason.ADJUSTMENT, GrantSource.ADJUSTMENT),
    ],
)
def test_a_positive_line_makes_a_grant_whose_source_follows_its_reason(
    reason: LedgerReason, source: GrantSource
) -> None:
    grant = fold(granted("a", 5, reason=reason)).grant("a")
    assert grant is not None
    assert grant.source is source


def test_a_grant_records_what_its_line_says() -> None:
    grant = fold(used(1), granted("order-1", 10, SOON, priority=7)).grant("order-1")
    assert grant == LiveGrant(
        grant_id="order-1",
        order_id="order-1",
        source=GrantSource.PURCHASE,
        tokens=10,
        remaining=9,
        priority=7,
        starts=T0,
        expires=SOON,
        seq=2,
    )


def test_a_grant_records_the_str_form_of_its_order_id() -> None:
    class ObjectId:
        def __str__(self) -> str:
            return "65a0f00d"

    line = dataclasses.replace(granted("65a0f00d", 10), order_id=ObjectId())
    grant = fold(line).grant("65a0f00d")
    assert grant is not None
    assert grant.order_id == "65a0f00d"


def test_a_grant_without_a_priority_has_the_default_priority() -> None:
    grant = fold(granted("a", 10)).grant("a")
    assert grant is not None
    assert grant.priority == 50


def test_a_positive_line_without_a_grant_id_makes_a_grant_named_by_the_line_id() -> None:
    snapshot = fold(used(1), dataclasses.replace(adjusted(5), id="65a0f00d"))
    assert holding(snapshot) == {"65a0f00d": 4}


def test_a_positive_adjustment_is_drawn_like_any_never_expiring_grant() -> None:
    snapshot = fold(adjusted(5), granted("a", 10, None), used(7))
    assert holding(snapshot) == {"a": 8}


def test_a_negative_adjustment_is_drawn_like_a_consumption() -> None:
    snapshot = fold(granted("a", 10, SOON), granted("b", 10, LATER), adjusted(-4))
    assert holding(snapshot) == {"a": 6, "b": 10}


def test_a_line_of_zero_tokens_changes_nothing_but_the_line_number() -> None:
    before = fold(granted("a", 10, SOON), used(3))
    after = before.apply(numbered(taken("a", 0), first=3)[0])
    assert (after.seq, after.debt, after.grants) == (3, before.debt, before.grants)


# -- reading ---------------------------------------------------------------------------------


def test_an_empty_ledger_holds_nothing() -> None:
    snapshot = replay([])
    assert (snapshot.seq, snapshot.grants, snapshot.debt, snapshot.balance) == (0, (), 0, 0)


def test_the_balance_is_what_the_live_grants_hold_minus_the_debt() -> None:
    snapshot = fold(granted("a", 10, SOON), granted("b", 5, None), used(3))
    assert snapshot.balance == 12 == sum(g.remaining for g in snapshot.grants) - snapshot.debt


def test_the_remainder_of_an_unknown_grant_is_zero() -> None:
    assert fold(granted("a", 10, SOON)).remainder("zzz") == 0


def test_the_snapshot_reflects_the_number_of_its_last_line() -> None:
    assert fold(granted("a", 10), used(1), used(2)).seq == 3


# -- the fold ----------------------------------------------------------------------------------


def test_folding_on_from_a_snapshot_gives_the_snapshot_of_every_line() -> None:
    lines = numbered(granted("a", 10, SOON), used(12), granted("b", 5, None), taken("b", 1))
    assert replay(lines[:2]).apply_all(lines[2:]) == replay(lines)


def test_applying_a_line_leaves_the_snapshot_it_was_applied_to_unchanged() -> None:
    before = fold(granted("a", 10, SOON))
    before.apply(numbered(used(4), first=2)[0])
    assert before.remainder("a") == 10


def test_a_line_skipping_a_number_is_refused() -> None:
    snapshot = fold(granted("a", 10, SOON))
    with pytest.raises(ValueError, match="line 3 cannot follow line 1"):
        snapshot.apply(numbered(used(1), first=3)[0])


def test_a_line_repeating_a_number_is_refused() -> None:
    snapshot = fold(granted("a", 10, SOON))
    with pytest.raises(ValueError, match="line 1 cannot follow line 1"):
        snapshot.apply(numbered(used(1))[0])


def test_a_ledger_not_starting_at_line_one_is_refused() -> None:
    with pytest.raises(ValueError, match="line 2 cannot follow line 0"):
        replay(numbered(granted("a", 10), first=2))


def test_a_line_without_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="line 0 cannot follow line 0"):
        replay([granted("a", 10)])


# -- stored form -------------------------------------------------------------------------------


def test_a_snapshot_comes_back_equal_from_its_data() -> None:
    snapshot = fold(
        used(3),
        granted("a", 10, SOON, priority=10),
        granted("b", 5, None, reason=LedgerReason.GRANT),
        adjusted(2),
        used(1),
    )
    assert Snapshot.from_data(snapshot.to_data()) == snapshot


def test_a_snapshot_in_debt_comes_back_equal_from_its_data() -> None:
    snapshot = fold(used(3))
    assert Snapshot.from_data(snapshot.to_data()) == snapshot


def test_the_data_of_a_snapshot_survives_json() -> None:
    snapshot = fold(granted("a", 10, SOON), granted("b", 5, None))
    data = json.loads(json.dumps(snapshot.to_data()))
    assert Snapshot.from_data(data) == snapshot
