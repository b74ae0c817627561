"""Property tests of the grant model (SPEC §4), on the in-memory backend and on ``replay``.

Random interleavings of purchases (every kind of cycle, free or paid by hand),
consumptions (both calls, with and without idempotency keys), clock moves and
expiry checks are played against the service and against ``GrantModel``, a
deliberately plain model of the rules written for this test. After every step:
the balance is the sum of the ledger lines and the model's balance; every live
grant holds what the model says; an expiry removes exactly what its grant still
held (never more); the balance is the live remainders minus the debt.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usercredits import (
    Cycle,
    FrozenClock,
    IdempotencyConflictError,
    InMemoryDaoFactory,
    InsufficientCreditsError,
    LedgerReason,
    ManualPaymentClient,
    Offer,
    OfferKind,
    PaymentService,
    Status,
    TokenTimetable,
)
from usercredits.grants import replay

START = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
NEVER = datetime.max.replace(tzinfo=UTC)
USER, GROUP = "alice", "g"
CYCLES = [Cycle.ONCE, Cycle.DAILY, Cycle.WEEKLY, Cycle.MONTHLY, Cycle.CUSTOM]


@dataclass
class ModelGrant:
    order_id: str
    expires: datetime | None
    seq: int
    held: int


@dataclass
class GrantModel:
    """The grant model as the SPEC states it, kept as simple as possible."""

    grants: list[ModelGrant] = field(default_factory=list)
    debt: int = 0
    seq: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def balance(self) -> int:
        return sum(g.held for g in self.grants) - self.debt

    def grant(self, order_id: str, tokens: int, expires: datetime | None) -> None:
        repaid = min(self.debt, tokens)
        self.debt -= repaid
        self.grants.append(ModelGrant(order_id, expires, next(self.seq), tokens - repaid))

    def consume(self, count: int) -> None:
        for grant in sorted(self.grants, key=lambda g: (g.expires or NEVER, g.seq)):
            taken = min(grant.held, count)
            grant.held -= taken
            count -= taken
        self.debt += count

    def expire(self, now: datetime) -> dict[str, int]:
        due = [g for g in self.grants if g.expires is not None and g.expires <= now]
        self.grants = [g for g in self.grants if g not in due]
        return {g.order_id: g.held for g in due}


buys = st.tuples(
    st.just("buy"),
    st.sampled_from(CYCLES),
    st.integers(1, 40),
    st.integers(1, 3),
    st.booleans(),
    st.booleans(),
)
uses = st.tuples(
    st.just("use"),
    st.integers(1, 60),
    st.sampled_from(["tokens_consumed", "consume_tokens"]),
    st.none() | st.sampled_from(["k1", "k2", "k3"]),
)
waits = st.tuples(st.just("wait"), st.integers(1, 24 * 40))
expiries = st.tuples(st.just("expire"))
steps = st.lists(st.one_of(buys, uses, waits, expiries), max_size=30)


class Run:
    """One user's history played on the service and on the model side by side."""

    def __init__(self) -> None:
        self.clock = FrozenClock(START)
        self.manual = ManualPaymentClient()
        self.factory = InMemoryDaoFactory()
        self.service = PaymentService(self.factory, self.manual, clock=self.clock)
        self.model = GrantModel()
        self.keys: dict[str, tuple[int, Any]] = {}

    def ledger(self) -> list[TokenTimetable]:
        return self.factory.get_token_timetable_dao().find_group(USER, GROUP)

    def buy(self, cycle: Cycle, tokens: int, quantity: int, free: bool, append: bool) -> None:
        offer = self.factory.get_offer_dao().create(
            Offer(
                name=f"{cycle}-{tokens}",
                kind=OfferKind.TOKENS,
                offer_group=GROUP,
                cycle=cycle,
                custom_cycle=7200 if cycle is Cycle.CUSTOM else None,
                price=Decimal(0 if free else 5),
                token_count=tokens,
                append_date=append,
            )
        )
        order = self.service.create_order(offer.id, USER, quantity)
        if not free:
            self.manual.approve(order.id)
            self.service.after_execute(order.id)
        paid = self.factory.get_order_dao().find_by_id(order.id)
        assert paid is not None
        assert paid.status is Status.PAID
        self.model.grant(str(paid.id), tokens * quantity, paid.expires)

    def use(self, count: int, call: str, key: str | None) -> None:
        consume = getattr(self.service, call)
        if key is not None and key in self.keys:
            first_count, first_id = self.keys[key]
            if first_count != count:
                with pytest.raises(IdempotencyConflictError):
                    consume(USER, GROUP, count, idempotency_key=key)
                return
            assert str(consume(USER, GROUP, count, idempotency_key=key).id) == first_id
            return
        if call == "consume_tokens" and self.model.balance < count:
            with pytest.raises(InsufficientCreditsError):
                consume(USER, GROUP, count, idempotency_key=key)
            return
        line = consume(USER, GROUP, count, idempotency_key=key)
        self.model.consume(count)
        if key is not None:
            self.keys[key] = (count, str(line.id))

    def expire(self) -> None:
        expected = self.model.expire(self.service.now())
        report = self.service.check_for_expired_orders(USER)
        assert sorted(str(o.id) for o in report.expired_orders) == sorted(expected)
        assert report.removed_tokens.get(GROUP, 0) == sum(expected.values())
        removed = {
            str(line.order_id): -line.tokens
            for line in self.ledger()
            if line.reason is LedgerReason.EXPIRY and str(line.order_id) in expected
        }
        assert removed == {order: held for order, held in expected.items() if held > 0}

    def check(self) -> None:
        lines = self.ledger()
        balance = self.service.remaining_tokens(USER, GROUP)
        assert balance == sum(line.tokens for line in lines) == self.model.balance
        state = replay(lines)
        # A grant expired with nothing left writes no line: replay still lists it, holding 0.
        holding = {order: held for order, held in state.grants.items() if held}
        assert holding == {g.order_id: g.held for g in self.model.grants if g.held}
        assert state.debt == self.model.debt
        assert state.unattributed == 0
        assert balance == sum(state.grants.values()) - state.debt


@settings(max_examples=80, deadline=None)
@given(steps)
def test_the_service_follows_the_grant_model(history: list[tuple[Any, ...]]) -> None:
    run = Run()
    for step in history:
        if step[0] == "buy":
            run.buy(*step[1:])
        elif step[0] == "use":
            run.use(*step[1:])
        elif step[0] == "wait":
            run.clock.advance(hours=step[1])
        else:
            run.expire()
        run.check()


@settings(max_examples=40, deadline=None)
@given(steps)
def test_a_second_expiry_check_at_the_same_time_changes_nothing(
    history: list[tuple[Any, ...]],
) -> None:
    run = Run()
    for step in history:
        if step[0] == "buy":
            run.buy(*step[1:])
        elif step[0] == "use":
            run.use(*step[1:])
        elif step[0] == "wait":
            run.clock.advance(hours=step[1])
    run.service.check_for_expired_orders(USER)
    lines = run.ledger()
    again = run.service.check_for_expired_orders(USER)
    assert (again.expired_orders, again.removed_tokens) == ([], {})
    assert run.ledger() == lines


# -- replay on arbitrary ledgers -------------------------------------------------------

ORDERS = ["o1", "o2", "o3", "o4"]
EXPIRIES = [None, START, START + timedelta(days=1), START + timedelta(days=30)]

purchase_lines = st.builds(
    lambda order, tokens, expires: TokenTimetable(
        offer_group=GROUP,
        tokens=tokens,
        order_id=order,
        reason=LedgerReason.PURCHASE,
        expires=expires,
    ),
    st.sampled_from(ORDERS),
    st.integers(0, 50),
    st.sampled_from(EXPIRIES),
)
ending_lines = st.builds(
    lambda order, tokens, reason: TokenTimetable(
        offer_group=GROUP, tokens=-tokens, order_id=order, reason=reason
    ),
    st.none() | st.sampled_from(ORDERS),
    st.integers(0, 60),
    st.sampled_from([LedgerReason.EXPIRY, LedgerReason.REFUND]),
)
other_lines = st.builds(
    lambda tokens, reason: TokenTimetable(offer_group=GROUP, tokens=tokens, reason=reason),
    st.integers(-60, 60),
    st.sampled_from([LedgerReason.CONSUMPTION, LedgerReason.ADJUSTMENT]),
)
any_lines = st.lists(st.one_of(purchase_lines, ending_lines, other_lines), max_size=40)


@settings(max_examples=300, deadline=None)
@given(any_lines)
def test_replay_of_any_ledger_adds_up_to_the_sum_of_its_lines(lines: list[TokenTimetable]) -> None:
    state = replay(lines)
    assert state.balance == sum(line.tokens for line in lines)
    assert state.balance == sum(state.grants.values()) + state.unattributed - state.debt


@settings(max_examples=300, deadline=None)
@given(any_lines)
def test_replay_never_holds_negative_amounts_nor_debt_beside_held_tokens(
    lines: list[TokenTimetable],
) -> None:
    state = replay(lines)
    assert all(held >= 0 for held in state.grants.values())
    assert state.unattributed >= 0
    assert state.debt >= 0
    if state.debt > 0:
        assert sum(state.grants.values()) + state.unattributed == 0


@settings(max_examples=300, deadline=None)
@given(any_lines)
def test_replay_ends_every_grant_named_by_an_expiry_or_refund_line(
    lines: list[TokenTimetable],
) -> None:
    state = replay(lines)
    named = {
        str(x.order_id)
        for x in lines
        if x.reason in (LedgerReason.EXPIRY, LedgerReason.REFUND) and x.order_id is not None
    }
    assert named <= state.ended
