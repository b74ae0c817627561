"""Property tests of the grant model (SPEC §4), on the in-memory backend and on ``replay``.

Random interleavings of purchases (every kind of cycle, free or paid by hand, of
several priorities), direct grants, voids, consumptions (both calls, with and
without idempotency keys), clock moves and expiry checks are played against the
service and against ``GrantModel``, a deliberately plain model of the rules
written for this test. After every step: the balance is the sum of the ledger
lines and the model's balance; every live grant holds what the model says, in
burn order; an expiry or a void removes exactly what its grant still held (never
more); the balance is the live remainders minus the debt; the account's stored
snapshot is the fold of its lines.
"""

from __future__ import annotations

import dataclasses
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
    Grant,
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
from usercredits.grants import LiveGrant, Snapshot, replay

START = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
NEVER = datetime.max.replace(tzinfo=UTC)
USER, GROUP = "alice", "g"
CYCLES = [Cycle.ONCE, Cycle.DAILY, Cycle.WEEKLY, Cycle.MONTHLY, Cycle.CUSTOM]
PRIORITIES = [10, 50, 90]


@dataclass
class ModelGrant:
    grant_id: str
    priority: int
    expires: datetime | None
    seq: int
    held: int
    of_order: bool


@dataclass
class GrantModel:
    """The grant model as the SPEC states it, kept as simple as possible."""

    grants: list[ModelGrant] = field(default_factory=list)
    debt: int = 0
    seq: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def balance(self) -> int:
        return sum(g.held for g in self.grants) - self.debt

    def burn_order(self) -> list[ModelGrant]:
        return sorted(self.grants, key=lambda g: (g.priority, g.expires or NEVER, g.seq))

    def holding(self) -> list[tuple[str, int]]:
        """The grants holding tokens, in burn order, with what each holds."""
        return [(g.grant_id, g.held) for g in self.burn_order() if g.held]

    def grant(
        self,
        grant_id: str,
        tokens: int,
        priority: int,
        expires: datetime | None,
        *,
        of_order: bool = False,
    ) -> None:
        repaid = min(self.debt, tokens)
        self.debt -= repaid
        self.grants.append(
            ModelGrant(grant_id, priority, expires, next(self.seq), tokens - repaid, of_order)
        )

    def consume(self, count: int) -> None:
        for grant in self.burn_order():
            taken = min(grant.held, count)
            grant.held -= taken
            count -= taken
        self.debt += count

    def take(self, grant_id: str | None, count: int) -> int:
        """Take ``count`` from one grant, the rest in burn order; what the grant gave."""
        given = 0
        for grant in self.grants:
            if grant.grant_id == grant_id:
                given = min(grant.held, count)
                grant.held -= given
        self.consume(count - given)
        return given

    def void(self, grant_id: str) -> int:
        """Empty one grant (its order may still expire later); what it held."""
        held = 0
        for grant in self.grants:
            if grant.grant_id == grant_id:
                held, grant.held = grant.held, 0
        return held

    def expire(self, now: datetime) -> tuple[dict[str, int], dict[str, int]]:
        """End the due grants: what each held, for orders' grants and for direct grants."""
        due = [g for g in self.grants if g.expires is not None and g.expires <= now]
        self.grants = [g for g in self.grants if g not in due]
        return (
            {g.grant_id: g.held for g in due if g.of_order},
            {g.grant_id: g.held for g in due if not g.of_order},
        )


buys = st.tuples(
    st.just("buy"),
    st.sampled_from(CYCLES),
    st.integers(1, 40),
    st.integers(1, 3),
    st.booleans(),
    st.booleans(),
    st.sampled_from(PRIORITIES),
)
gifts = st.tuples(
    st.just("gift"),
    st.integers(1, 40),
    st.none() | st.integers(1, 24 * 40),
    st.sampled_from(PRIORITIES),
    st.none() | st.sampled_from(["p1", "p2"]),
)
uses = st.tuples(
    st.just("use"),
    st.integers(1, 60),
    st.sampled_from(["tokens_consumed", "consume_tokens"]),
    st.none() | st.sampled_from(["k1", "k2", "k3"]),
)
voids = st.tuples(st.just("void"), st.integers(0, 30))
waits = st.tuples(st.just("wait"), st.integers(1, 24 * 40))
expiries = st.tuples(st.just("expire"))
steps = st.lists(st.one_of(buys, gifts, uses, voids, waits, expiries), max_size=30)


class Run:
    """One user's history played on the service and on the model side by side."""

    def __init__(self) -> None:
        self.clock = FrozenClock(START)
        self.manual = ManualPaymentClient()
        self.factory = InMemoryDaoFactory()
        self.service = PaymentService(self.factory, self.manual, clock=self.clock)
        self.model = GrantModel()
        self.made: list[str] = []
        self.keys: dict[str, tuple[Any, str]] = {}

    def ledger(self) -> list[TokenTimetable]:
        return self.factory.get_token_timetable_dao().lines_after(USER, GROUP, 0)

    def play(self, step: tuple[Any, ...]) -> None:
        if step[0] == "buy":
            self.buy(*step[1:])
        elif step[0] == "gift":
            self.gift(*step[1:])
        elif step[0] == "use":
            self.use(*step[1:])
        elif step[0] == "void":
            self.void(step[1])
        elif step[0] == "wait":
            self.clock.advance(hours=step[1])
        else:
            self.expire()

    def buy(
        self, cycle: Cycle, tokens: int, quantity: int, free: bool, append: bool, priority: int
    ) -> None:
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
                priority=priority,
            )
        )
        order = self.service.create_order(offer.id, USER, quantity)
        if not free:
            self.manual.approve(order.id)
            self.service.after_execute(order.id)
        paid = self.factory.get_order_dao().find_by_id(order.id)
        assert paid is not None
        assert paid.status is Status.PAID
        self.model.grant(str(paid.id), tokens * quantity, priority, paid.expires, of_order=True)
        self.made.append(str(paid.id))

    def gift(self, count: int, hours: int | None, priority: int, key: str | None) -> None:
        expires = None if hours is None else self.service.now() + timedelta(hours=hours)
        asked = (count, expires, priority)

        def grant() -> Grant:
            return self.service.grant_tokens(
                USER, GROUP, count, expires=expires, priority=priority, idempotency_key=key
            )

        if key is not None and key in self.keys:
            first, grant_id = self.keys[key]
            if first != asked:
                with pytest.raises(IdempotencyConflictError):
                    grant()
                return
            assert grant().id == grant_id
            return
        made = grant()
        self.model.grant(made.id, count, priority, expires)
        self.made.append(made.id)
        if key is not None:
            self.keys[key] = (asked, made.id)

    def use(self, count: int, call: str, key: str | None) -> None:
        consume = getattr(self.service, call)
        if key is not None and key in self.keys:
            first, line_id = self.keys[key]
            if first != count:
                with pytest.raises(IdempotencyConflictError):
                    consume(USER, GROUP, count, idempotency_key=key)
                return
            assert str(consume(USER, GROUP, count, idempotency_key=key).id) == line_id
            return
        if call == "consume_tokens" and self.model.balance < count:
            with pytest.raises(InsufficientCreditsError):
                consume(USER, GROUP, count, idempotency_key=key)
            return
        line = consume(USER, GROUP, count, idempotency_key=key)
        self.model.consume(count)
        if key is not None:
            self.keys[key] = (count, str(line.id))

    def void(self, index: int) -> None:
        if not self.made:
            return
        grant_id = self.made[index % len(self.made)]
        held = self.model.void(grant_id)
        recorded = len(self.ledger())
        voided = self.service.void_grant(grant_id)
        assert (voided.id, voided.remaining) == (grant_id, 0)
        written = [(line.reason, line.grant_id, line.tokens) for line in self.ledger()[recorded:]]
        assert written == ([(LedgerReason.VOID, grant_id, -held)] if held else [])

    def expire(self) -> None:
        orders, direct = self.model.expire(self.service.now())
        recorded = len(self.ledger())
        report = self.service.check_for_expired_orders(USER)
        assert sorted(str(o.id) for o in report.expired_orders) == sorted(orders)
        held = {**orders, **direct}
        assert report.removed_tokens.get(GROUP, 0) == sum(held.values())
        written = self.ledger()[recorded:]
        assert all(line.reason is LedgerReason.EXPIRY for line in written)
        removed = {str(line.grant_id): -line.tokens for line in written}
        assert len(removed) == len(written)
        assert removed == {grant: tokens for grant, tokens in held.items() if tokens > 0}

    def check(self) -> None:
        lines = self.ledger()
        assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
        balance = self.service.remaining_tokens(USER, GROUP)
        assert balance == sum(line.tokens for line in lines) == self.model.balance
        snapshot = replay(lines)
        assert [(g.grant_id, g.remaining) for g in snapshot.grants] == self.model.holding()
        assert snapshot.debt == self.model.debt
        assert balance == sum(g.remaining for g in snapshot.grants) - snapshot.debt
        listed = self.service.grants(USER, GROUP)
        assert [(g.id, g.remaining) for g in listed] == self.model.holding()
        account = self.factory.get_user_credits_dao().get_account(USER, GROUP)
        assert (account.snapshot if account is not None else Snapshot()) == snapshot
        assert self.service.audit(USER).ok


@settings(max_examples=100, deadline=None)
@given(steps)
def test_the_service_follows_the_grant_model(history: list[tuple[Any, ...]]) -> None:
    run = Run()
    for step in history:
        run.play(step)
        run.check()


@settings(max_examples=40, deadline=None)
@given(steps)
def test_a_second_expiry_check_at_the_same_time_changes_nothing(
    history: list[tuple[Any, ...]],
) -> None:
    run = Run()
    for step in history:
        if step[0] != "expire":
            run.play(step)
    run.service.check_for_expired_orders(USER)
    lines = run.ledger()
    again = run.service.check_for_expired_orders(USER)
    assert (again.expired_orders, again.removed_tokens) == ([], {})
    assert run.ledger() == lines


# -- replay on arbitrary ledgers -------------------------------------------------------------

GRANT_IDS = [f"g{n}" for n in range(1, 11)]
EXPIRIES = [None, START, START + timedelta(days=1), START + timedelta(days=30)]

grant_lines = st.builds(
    lambda tokens, reason, priority, expires: TokenTimetable(
        offer_group=GROUP, tokens=tokens, reason=reason, priority=priority, expires=expires
    ),
    st.integers(1, 50),
    st.sampled_from([LedgerReason.PURCHASE, LedgerReason.GRANT, LedgerReason.ADJUSTMENT]),
    st.none() | st.sampled_from(PRIORITIES),
    st.sampled_from(EXPIRIES),
)
taking_lines = st.builds(
    lambda grant_id, tokens, reason: TokenTimetable(
        offer_group=GROUP, tokens=-tokens, grant_id=grant_id, reason=reason
    ),
    st.none() | st.sampled_from(GRANT_IDS),
    st.integers(0, 60),
    st.sampled_from([LedgerReason.EXPIRY, LedgerReason.REFUND, LedgerReason.VOID]),
)
drawing_lines = st.builds(
    lambda tokens, reason: TokenTimetable(offer_group=GROUP, tokens=tokens, reason=reason),
    st.integers(-60, 0),
    st.sampled_from([LedgerReason.CONSUMPTION, LedgerReason.ADJUSTMENT]),
)


def well_formed(drafts: list[TokenTimetable]) -> list[TokenTimetable]:
    """The lines numbered 1, 2, 3..., each with an id, and each positive line making a grant
    of its own id (of the line's id once ``GRANT_IDS`` are used up)."""
    made = iter(GRANT_IDS)
    lines = []
    for seq, draft in enumerate(drafts, start=1):
        grant_id = next(made, None) if draft.tokens > 0 else draft.grant_id
        lines.append(dataclasses.replace(draft, id=f"line-{seq}", seq=seq, grant_id=grant_id))
    return lines


ledgers = st.lists(st.one_of(grant_lines, taking_lines, drawing_lines), max_size=40).map(
    well_formed
)


def plain_fold(lines: list[TokenTimetable]) -> GrantModel:
    model = GrantModel()
    for line in lines:
        if line.tokens > 0:
            grant_id = line.grant_id or str(line.id)
            priority = 50 if line.priority is None else line.priority
            model.grant(grant_id, line.tokens, priority, line.expires)
        elif line.reason in (LedgerReason.EXPIRY, LedgerReason.REFUND, LedgerReason.VOID):
            model.take(line.grant_id, -line.tokens)
        else:
            model.consume(-line.tokens)
    return model


@settings(max_examples=150, deadline=None)
@given(ledgers)
def test_replay_of_any_ledger_adds_up_to_the_sum_of_its_lines(lines: list[TokenTimetable]) -> None:
    snapshot = replay(lines)
    assert snapshot.balance == sum(line.tokens for line in lines)
    assert snapshot.balance == sum(g.remaining for g in snapshot.grants) - snapshot.debt
    assert snapshot.seq == len(lines)


@settings(max_examples=150, deadline=None)
@given(ledgers)
def test_replay_never_holds_negative_amounts_nor_debt_beside_held_tokens(
    lines: list[TokenTimetable],
) -> None:
    snapshot = replay(lines)
    assert all(0 < g.remaining <= g.tokens for g in snapshot.grants)
    assert snapshot.debt >= 0
    if snapshot.debt > 0:
        assert snapshot.grants == ()


@settings(max_examples=150, deadline=None)
@given(ledgers)
def test_replay_agrees_with_the_plain_model_of_the_rules(lines: list[TokenTimetable]) -> None:
    snapshot = replay(lines)
    model = plain_fold(lines)
    assert [(g.grant_id, g.remaining) for g in snapshot.grants] == model.holding()
    assert snapshot.debt == model.debt


@settings(max_examples=150, deadline=None)
@given(ledgers)
def test_replay_lists_the_live_grants_in_burn_order(lines: list[TokenTimetable]) -> None:
    grants = list(replay(lines).grants)
    assert grants == sorted(grants, key=LiveGrant.burn_key)


@settings(max_examples=150, deadline=None)
@given(ledgers, st.data())
def test_taking_a_grants_remainder_removes_that_grant_and_nothing_else(
    lines: list[TokenTimetable], data: st.DataObject
) -> None:
    snapshot = replay(lines)
    if not snapshot.grants:
        return
    grant = data.draw(st.sampled_from(snapshot.grants))
    line = TokenTimetable(
        offer_group=GROUP,
        tokens=-snapshot.remainder(grant.grant_id),
        reason=data.draw(st.sampled_from([LedgerReason.EXPIRY, LedgerReason.REFUND])),
        grant_id=grant.grant_id,
        seq=snapshot.seq + 1,
    )
    after = snapshot.apply(line)
    assert after.grants == tuple(g for g in snapshot.grants if g is not grant)
    assert (after.debt, after.balance) == (snapshot.debt, snapshot.balance - grant.remaining)


@settings(max_examples=150, deadline=None)
@given(ledgers, st.data())
def test_folding_on_from_a_stored_snapshot_gives_the_replay_of_every_line(
    lines: list[TokenTimetable], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(lines)))
    stored = Snapshot.from_data(replay(lines[:cut]).to_data())
    assert stored.apply_all(lines[cut:]) == replay(lines)
