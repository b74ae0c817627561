"""Races forced step by step: each test holds one call of the service at a chosen point (a
hook on a DAO method waits for an event) while another call runs, so the interleaving that
could lose tokens happens every time, not by luck."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import pytest

from usercredits import (
    Cycle,
    FrozenClock,
    InMemoryDaoFactory,
    LedgerReason,
    ManualPaymentClient,
    Offer,
    OfferKind,
    PaymentService,
    Status,
    TokenTimetable,
)
from usercredits.dao import DaoFactory, OfferDao, OrderDao, TokenTimetableDao, UserCreditsDao

START = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
WAIT = 10.0
Hook = Callable[..., None]


class Hooked:
    """A DAO whose chosen methods run a hook before or after the real call."""

    def __init__(self, target: Any):
        self._target = target
        self.before: dict[str, Hook] = {}
        self.after: dict[str, Callable[..., None]] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        if name not in self.before and name not in self.after:
            return method

        def hooked(*args: Any, **kwargs: Any) -> Any:
            if name in self.before:
                self.before[name](*args, **kwargs)
            result = method(*args, **kwargs)
            if name in self.after:
                self.after[name](result, *args, **kwargs)
            return result

        return hooked


class HookedDaoFactory(DaoFactory):
    """The in-memory backend with hooks on the ledger and the user credits DAOs."""

    def __init__(self) -> None:
        self.inner = InMemoryDaoFactory()
        self.ledger = Hooked(self.inner.get_token_timetable_dao())
        self.credits = Hooked(self.inner.get_user_credits_dao())

    def get_offer_dao(self) -> OfferDao:
        return self.inner.get_offer_dao()

    def get_order_dao(self) -> OrderDao:
        return self.inner.get_order_dao()

    def get_token_timetable_dao(self) -> TokenTimetableDao:
        return cast(TokenTimetableDao, self.ledger)

    def get_user_credits_dao(self) -> UserCreditsDao:
        return cast(UserCreditsDao, self.credits)


def wait(event: threading.Event) -> None:
    assert event.wait(WAIT), "the other call never reached its step"


def in_thread(call: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``call`` in a thread; the returned function joins it and gives its result."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(WAIT)
        assert not thread.is_alive(), "the call in the thread never finished"
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    return join


@pytest.fixture
def backend() -> HookedDaoFactory:
    return HookedDaoFactory()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def manual() -> ManualPaymentClient:
    return ManualPaymentClient()


@pytest.fixture
def service(
    backend: HookedDaoFactory, manual: ManualPaymentClient, clock: FrozenClock
) -> Iterator[PaymentService]:
    yield PaymentService(backend, manual, clock=clock)
    backend.ledger.before.clear()
    backend.ledger.after.clear()
    backend.credits.before.clear()


def grant(service: PaymentService, name: str, cycle: Cycle, tokens: int) -> None:
    """A free order of ``tokens`` tokens in group ``g``, paid at once."""
    offer = (
        service.get_dao_factory()
        .get_offer_dao()
        .create(
            Offer(
                name=name,
                kind=OfferKind.TOKENS,
                offer_group="g",
                cycle=cycle,
                price=Decimal(0),
                token_count=tokens,
            )
        )
    )
    assert service.create_order(offer.id, "alice").status is Status.PAID


def expiry_lines(service: PaymentService) -> list[int]:
    found = service.get_dao_factory().get_token_timetable_dao().find_group("alice", "g")
    return [line.tokens for line in found if line.reason is LedgerReason.EXPIRY]


def ledger_sum(service: PaymentService) -> int:
    found = service.get_dao_factory().get_token_timetable_dao().find_group("alice", "g")
    return sum(line.tokens for line in found)


@pytest.fixture
def expiring(service: PaymentService, clock: FrozenClock) -> None:
    """10 tokens expiring after a week and 100 that never expire; the week has passed."""
    grant(service, "week", Cycle.WEEKLY, 10)
    grant(service, "forever", Cycle.ONCE, 100)
    clock.advance(days=7)


def test_a_consumption_between_the_expiry_replay_and_its_removal_is_not_removed_again(
    service: PaymentService, backend: HookedDaoFactory, expiring: None
) -> None:
    replayed, consumed = threading.Event(), threading.Event()

    def hold_after_first_replay(result: Any, *args: Any) -> None:
        if not replayed.is_set():
            replayed.set()
            wait(consumed)

    backend.ledger.after["find_group"] = hold_after_first_replay
    expire = in_thread(lambda: service.check_for_expired_orders("alice"))
    wait(replayed)
    service.tokens_consumed("alice", "g", 4)
    consumed.set()
    report = expire()

    assert report.removed_tokens == {"g": 6}
    assert expiry_lines(service) == [-6]
    assert service.remaining_tokens("alice", "g") == 100 == ledger_sum(service)


def test_a_consumption_recorded_before_the_expiry_line_but_applied_after_is_not_removed_again(
    service: PaymentService, backend: HookedDaoFactory, expiring: None
) -> None:
    expiry_taken, consumption_recorded, expiry_recorded = (threading.Event() for _ in range(3))

    def before_insert(line: TokenTimetable) -> None:
        if line.reason is LedgerReason.EXPIRY:
            expiry_taken.set()
            wait(consumption_recorded)

    def after_insert(result: Any, line: TokenTimetable) -> None:
        if line.reason is LedgerReason.CONSUMPTION:
            consumption_recorded.set()
        elif line.reason is LedgerReason.EXPIRY:
            expiry_recorded.set()

    def before_add(user_id: Any, group: str, delta: int, **kwargs: Any) -> None:
        if delta < 0 and kwargs.get("floor") is None:
            wait(expiry_recorded)

    backend.ledger.before["insert_once"] = before_insert
    backend.ledger.after["insert_once"] = after_insert
    backend.credits.before["add_tokens"] = before_add
    consume = in_thread(lambda: (wait(expiry_taken), service.tokens_consumed("alice", "g", 4))[1])
    report = service.check_for_expired_orders("alice")
    consume()

    assert report.removed_tokens == {"g": 6}
    assert expiry_lines(service) == [-6]
    assert service.remaining_tokens("alice", "g") == 100 == ledger_sum(service)


def test_a_refund_racing_the_expiry_of_its_order_removes_the_tokens_once(
    service: PaymentService, backend: HookedDaoFactory, expiring: None
) -> None:
    expiry_taken, refund_replayed = threading.Event(), threading.Event()
    order = service.get_dao_factory().get_order_dao().find_one({"offer_group": "g"})
    assert order is not None
    assert order.cycle is Cycle.WEEKLY

    def before_insert(line: TokenTimetable) -> None:
        if line.reason is LedgerReason.EXPIRY:
            expiry_taken.set()
            wait(refund_replayed)

    def after_replay(result: Any, *args: Any) -> None:
        if threading.current_thread().name == "refund":
            refund_replayed.set()

    backend.ledger.before["insert_once"] = before_insert
    backend.ledger.after["find_group"] = after_replay

    outcome: list[Any] = []
    refund = threading.Thread(
        target=lambda: (wait(expiry_taken), outcome.append(service.refund(order.id))),
        name="refund",
        daemon=True,
    )
    refund.start()
    report = service.check_for_expired_orders("alice")
    refund.join(WAIT)

    assert outcome
    assert outcome[0].status is Status.REFUNDED
    assert report.removed_tokens == {"g": 10}
    assert service.remaining_tokens("alice", "g") == 100 == ledger_sum(service)


def test_a_retry_refused_while_the_first_call_records_its_line_returns_that_line(
    service: PaymentService, backend: HookedDaoFactory
) -> None:
    grant(service, "pack", Cycle.ONCE, 12)
    first_taken, retry_waiting = threading.Event(), threading.Event()
    misses = 0

    def before_insert(line: TokenTimetable) -> None:
        if line.idempotency_key == "req-1":
            first_taken.set()
            wait(retry_waiting)

    def after_lookup(result: Any, *args: Any) -> None:
        nonlocal misses
        if result is None and first_taken.is_set() and threading.current_thread().name == "retry":
            misses += 1
            if misses == 2:
                retry_waiting.set()

    backend.ledger.before["insert_once"] = before_insert
    backend.ledger.after["find_by_idempotency_key"] = after_lookup
    first = in_thread(lambda: service.consume_tokens("alice", "g", 12, idempotency_key="req-1"))
    wait(first_taken)
    outcome: list[Any] = []

    def retry() -> None:
        try:
            outcome.append(service.consume_tokens("alice", "g", 12, idempotency_key="req-1"))
        except Exception as e:
            outcome.append(e)

    retrying = threading.Thread(target=retry, name="retry", daemon=True)
    retrying.start()
    retrying.join(WAIT)
    line = first()

    assert isinstance(outcome[0], TokenTimetable), outcome
    assert str(outcome[0].id) == str(line.id)
    assert service.remaining_tokens("alice", "g") == 0 == ledger_sum(service)
