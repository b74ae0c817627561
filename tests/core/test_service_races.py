"""Races forced step by step: each test holds one call of the service at a chosen point (a
gate on a DAO method waits for an event) while another call runs, so the interleaving that
could lose or double tokens happens every time, not by luck.

The points that matter are those of the commit rule (``usercredits.accounts``): a call
decides its line from the account's snapshot, then appends it as the next line. A call held
between the two finds the line number taken when it resumes, and must decide again."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest

from usercredits import (
    Cycle,
    FrozenClock,
    InMemoryDaoFactory,
    InsufficientCreditsError,
    InvalidPaymentError,
    LedgerReason,
    ManualPaymentClient,
    Offer,
    OfferKind,
    Order,
    PaymentErrorCode,
    PaymentService,
    Status,
    TokenTimetable,
)
from usercredits.dao import (
    CustomerDao,
    DaoFactory,
    OfferDao,
    OrderDao,
    TokenTimetableDao,
    UserCreditsDao,
    WebhookEventDao,
)

START = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
WAIT = 10.0
USER, GROUP = "alice", "g"


def wait(event: threading.Event) -> None:
    assert event.wait(WAIT), "the other call never reached its step"


class Gate:
    """Holds the first call that ``matches`` (in whichever thread) until :meth:`open`."""

    def __init__(self, matches: Callable[..., bool]):
        self._matches = matches
        self._lock = threading.Lock()
        self.reached = threading.Event()
        self._opened = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            if self.reached.is_set() or not self._matches(*args, **kwargs):
                return
            self.reached.set()
        wait(self._opened)

    def open(self) -> None:
        self._opened.set()


class Hooked:
    """A DAO whose chosen methods run hooks before the real call (with its arguments)."""

    def __init__(self, target: Any):
        self._target = target
        self.before: dict[str, list[Callable[..., None]]] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        if name not in self.before:
            return method

        def hooked(*args: Any, **kwargs: Any) -> Any:
            for hook in self.before.get(name, []):
                hook(*args, **kwargs)
            return method(*args, **kwargs)

        return hooked

    def hold(self, name: str, matches: Callable[..., bool]) -> Gate:
        """A gate holding the first call of ``name`` that ``matches``."""
        gate = Gate(matches)
        self.before.setdefault(name, []).append(gate)
        return gate

    def watch(self, name: str, hook: Callable[..., None]) -> None:
        self.before.setdefault(name, []).append(hook)


class HookedDaoFactory(DaoFactory):
    """The in-memory backend (appending by compare-and-set) with hooks on the order, ledger
    and user credits DAOs."""

    def __init__(self) -> None:
        self.inner = InMemoryDaoFactory()
        self.orders = Hooked(self.inner.get_order_dao())
        self.ledger = Hooked(self.inner.get_token_timetable_dao())
        self.credits = Hooked(self.inner.get_user_credits_dao())

    def get_offer_dao(self) -> OfferDao:
        return self.inner.get_offer_dao()

    def get_order_dao(self) -> OrderDao:
        return cast(OrderDao, self.orders)

    def get_token_timetable_dao(self) -> TokenTimetableDao:
        return cast(TokenTimetableDao, self.ledger)

    def get_user_credits_dao(self) -> UserCreditsDao:
        return cast(UserCreditsDao, self.credits)

    def get_customer_dao(self) -> CustomerDao:
        return self.inner.get_customer_dao()

    def get_webhook_event_dao(self) -> WebhookEventDao:
        return self.inner.get_webhook_event_dao()


def in_thread(call: Callable[[], Any], name: str = "racer") -> Callable[[], Any]:
    """Start ``call`` in a thread; the returned function joins it and gives its result (or
    raises its exception)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(WAIT)
        assert not thread.is_alive(), "the call in the thread never finished"
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    return join


def running_in(name: str) -> bool:
    return threading.current_thread().name == name


def appending(reason: LedgerReason, thread: str | None = None) -> Callable[..., bool]:
    """Matches the append of a line of ``reason`` (by the thread named ``thread`` if given)."""

    def matches(entity: TokenTimetable) -> bool:
        return entity.reason is reason and (thread is None or running_in(thread))

    return matches


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
    for dao in (backend.orders, backend.ledger, backend.credits):
        for hook in (h for hooks in dao.before.values() for h in hooks):
            if isinstance(hook, Gate):
                hook.open()
        dao.before.clear()


def offer(service: PaymentService, name: str, cycle: Cycle, tokens: int, price: int = 0) -> Offer:
    return (
        service.get_dao_factory()
        .get_offer_dao()
        .create(
            Offer(
                name=name,
                kind=OfferKind.TOKENS,
                offer_group=GROUP,
                cycle=cycle,
                price=Decimal(price),
                token_count=tokens,
            )
        )
    )


def free(service: PaymentService, name: str, cycle: Cycle, tokens: int) -> Order:
    """A free order of ``tokens`` tokens, paid at once."""
    order = service.create_order(offer(service, name, cycle, tokens).id, USER)
    assert order.status is Status.PAID
    return order


def bought(
    service: PaymentService, manual: ManualPaymentClient, name: str, cycle: Cycle, tokens: int
) -> Order:
    """A priced order of ``tokens`` tokens, approved and settled."""
    order = service.create_order(offer(service, name, cycle, tokens, price=5).id, USER)
    manual.approve(order.id)
    service.after_execute(order.id)
    return service.get_dao_factory().get_order_dao().find_by_id(order.id) or order


def ledger(service: PaymentService) -> list[TokenTimetable]:
    return service.get_dao_factory().get_token_timetable_dao().lines_after(USER, GROUP, 0)


def tokens_of(service: PaymentService, *reasons: LedgerReason) -> list[int]:
    return [line.tokens for line in ledger(service) if line.reason in reasons]


def ledger_sum(service: PaymentService) -> int:
    return sum(line.tokens for line in ledger(service))


def audited(service: PaymentService) -> bool:
    return service.audit(USER).ok


# -- expiry against consumption ----------------------------------------------------------------


@pytest.fixture
def expiring(service: PaymentService, clock: FrozenClock) -> Order:
    """10 tokens expiring after a week (drawn first) and 100 that never expire; the week has
    passed. The weekly order."""
    week = free(service, "week", Cycle.WEEKLY, 10)
    free(service, "forever", Cycle.ONCE, 100)
    clock.advance(days=7)
    return week


def test_a_consumption_between_the_expiry_decision_and_its_line_is_not_removed_again(
    service: PaymentService, backend: HookedDaoFactory, expiring: Order
) -> None:
    attempts: list[int] = []

    def count_attempt(entity: TokenTimetable) -> None:
        if entity.reason is LedgerReason.EXPIRY:
            attempts.append(entity.seq)

    backend.ledger.watch("create", count_attempt)
    gate = backend.ledger.hold("create", appending(LedgerReason.EXPIRY, "expiry"))
    expire = in_thread(lambda: service.check_for_expired_orders(USER), name="expiry")
    wait(gate.reached)
    service.tokens_consumed(USER, GROUP, 4)
    gate.open()
    report = expire()

    assert attempts == [3, 4]
    assert report.removed_tokens == {GROUP: 6}
    assert tokens_of(service, LedgerReason.EXPIRY) == [-6]
    assert service.remaining_tokens(USER, GROUP) == 100 == ledger_sum(service)
    assert audited(service)


def test_a_consumption_decided_before_an_expiry_but_appended_after_it_draws_from_what_is_left(
    service: PaymentService, backend: HookedDaoFactory, expiring: Order
) -> None:
    gate = backend.ledger.hold("create", appending(LedgerReason.CONSUMPTION, "consumer"))
    consume = in_thread(lambda: service.tokens_consumed(USER, GROUP, 4), name="consumer")
    wait(gate.reached)
    report = service.check_for_expired_orders(USER)
    gate.open()
    line = consume()

    assert report.removed_tokens == {GROUP: 10}
    assert (line.seq, line.tokens) == (4, -4)
    assert service.remaining_tokens(USER, GROUP) == 96 == ledger_sum(service)
    assert audited(service)


def test_a_safe_consumption_decided_before_an_expiry_is_refused_if_the_expiry_left_too_little(
    service: PaymentService, backend: HookedDaoFactory, clock: FrozenClock
) -> None:
    free(service, "week", Cycle.WEEKLY, 10)
    clock.advance(days=7)
    gate = backend.ledger.hold("create", appending(LedgerReason.CONSUMPTION, "consumer"))
    consume = in_thread(lambda: service.consume_tokens(USER, GROUP, 8), name="consumer")
    wait(gate.reached)
    report = service.check_for_expired_orders(USER)
    gate.open()

    with pytest.raises(InsufficientCreditsError):
        consume()
    assert report.removed_tokens == {GROUP: 10}
    assert tokens_of(service, LedgerReason.CONSUMPTION) == []
    assert service.remaining_tokens(USER, GROUP) == 0 == ledger_sum(service)


def test_a_second_expiry_check_between_the_first_ones_decision_and_its_line_removes_nothing_more(
    service: PaymentService, backend: HookedDaoFactory, expiring: Order
) -> None:
    gate = backend.ledger.hold("create", appending(LedgerReason.EXPIRY, "first"))
    first = in_thread(lambda: service.check_for_expired_orders(USER), name="first")
    wait(gate.reached)
    second = service.check_for_expired_orders(USER)
    gate.open()
    reports = [first(), second]

    assert [str(o.id) for r in reports for o in r.expired_orders] == [str(expiring.id)]
    assert sum(r.removed_tokens.get(GROUP, 0) for r in reports) == 10
    assert tokens_of(service, LedgerReason.EXPIRY) == [-10]
    assert service.remaining_tokens(USER, GROUP) == 100 == ledger_sum(service)
    assert audited(service)


# -- safe consumptions against each other ------------------------------------------------------


def test_two_safe_consumptions_decided_on_one_balance_cannot_both_draw_it(
    service: PaymentService, backend: HookedDaoFactory
) -> None:
    free(service, "pack", Cycle.ONCE, 10)
    gate = backend.ledger.hold("create", appending(LedgerReason.CONSUMPTION, "first"))
    first = in_thread(lambda: service.consume_tokens(USER, GROUP, 8), name="first")
    wait(gate.reached)
    service.consume_tokens(USER, GROUP, 8)
    gate.open()

    with pytest.raises(InsufficientCreditsError):
        first()
    assert tokens_of(service, LedgerReason.CONSUMPTION) == [-8]
    assert service.remaining_tokens(USER, GROUP) == 2 == ledger_sum(service)


def test_a_retry_while_the_first_call_is_between_its_decision_and_its_line_returns_one_line(
    service: PaymentService, backend: HookedDaoFactory
) -> None:
    free(service, "pack", Cycle.ONCE, 12)
    gate = backend.ledger.hold("create", appending(LedgerReason.CONSUMPTION, "first"))
    first = in_thread(
        lambda: service.consume_tokens(USER, GROUP, 12, idempotency_key="req-1"), name="first"
    )
    wait(gate.reached)
    retried = service.consume_tokens(USER, GROUP, 12, idempotency_key="req-1")
    gate.open()
    line = first()

    assert str(line.id) == str(retried.id)
    assert tokens_of(service, LedgerReason.CONSUMPTION) == [-12]
    assert service.remaining_tokens(USER, GROUP) == 0 == ledger_sum(service)


# -- reads against appends ---------------------------------------------------------------------


def test_a_balance_read_between_a_line_and_its_snapshot_counts_the_line(
    service: PaymentService, backend: HookedDaoFactory
) -> None:
    free(service, "pack", Cycle.ONCE, 10)
    gate = backend.credits.hold("save_snapshot", lambda *args, **kwargs: running_in("consumer"))
    consume = in_thread(lambda: service.tokens_consumed(USER, GROUP, 4), name="consumer")
    wait(gate.reached)
    balance = service.remaining_tokens(USER, GROUP)
    gate.open()
    consume()

    assert balance == 6 == ledger_sum(service)


def test_a_snapshot_saved_late_does_not_replace_a_newer_one(
    service: PaymentService, backend: HookedDaoFactory
) -> None:
    free(service, "pack", Cycle.ONCE, 10)
    gate = backend.credits.hold("save_snapshot", lambda *args, **kwargs: running_in("late"))
    late = in_thread(lambda: service.tokens_consumed(USER, GROUP, 4), name="late")
    wait(gate.reached)
    service.tokens_consumed(USER, GROUP, 1)
    gate.open()
    late()

    account = service.get_dao_factory().get_user_credits_dao().get_account(USER, GROUP)
    assert account is not None
    assert (account.snapshot.seq, account.snapshot.balance) == (3, 5)
    assert service.remaining_tokens(USER, GROUP) == 5 == ledger_sum(service)


# -- settlements against each other ------------------------------------------------------------


@pytest.fixture
def approved(service: PaymentService, manual: ManualPaymentClient) -> Order:
    """A pending order of 30 tokens whose payment an operator approved."""
    order = service.create_order(offer(service, "pack", Cycle.MONTHLY, 30, price=5).id, USER)
    manual.approve(order.id)
    return order


def paying(order: Order) -> Callable[..., bool]:
    """Matches the commit of the order's payment."""

    def matches(order_id: Any, from_statuses: Any, changes: Any, entry: Any = None) -> bool:
        return str(order_id) == str(order.id) and changes.get("status") is Status.PAID

    return matches


def test_two_settlements_that_both_found_the_order_payable_grant_its_tokens_once(
    service: PaymentService, backend: HookedDaoFactory, approved: Order
) -> None:
    gate = backend.orders.hold("transition", paying(approved))
    first = in_thread(lambda: service.after_execute(approved.id), name="first")
    wait(gate.reached)
    settled = service.settle(approved.id)
    gate.open()

    with pytest.raises(InvalidPaymentError) as refused:
        first()
    assert refused.value.code is PaymentErrorCode.DUPLICATE_ATTEMPT
    assert settled.status is Status.PAID
    assert tokens_of(service, LedgerReason.PURCHASE) == [30]
    assert service.remaining_tokens(USER, GROUP) == 30 == ledger_sum(service)


def test_a_settlement_held_between_its_commit_and_its_grant_is_completed_once(
    service: PaymentService, backend: HookedDaoFactory, approved: Order
) -> None:
    gate = backend.ledger.hold("create", appending(LedgerReason.PURCHASE, "first"))
    first = in_thread(lambda: service.after_execute(approved.id), name="first")
    wait(gate.reached)
    helped = service.settle(approved.id)
    gate.open()
    credits = first()

    assert helped.status is Status.PAID
    assert not helped.in_progress
    assert credits.balance(GROUP) == 30
    assert tokens_of(service, LedgerReason.PURCHASE) == [30]
    assert service.remaining_tokens(USER, GROUP) == 30 == ledger_sum(service)


# -- refunds against expiry --------------------------------------------------------------------


@pytest.fixture
def refundable(service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock) -> Order:
    """A paid weekly order of 10 tokens (drawn first) beside 100 that never expire; the week
    has passed."""
    week = bought(service, manual, "week", Cycle.WEEKLY, 10)
    free(service, "forever", Cycle.ONCE, 100)
    clock.advance(days=7)
    return week


def test_a_refund_while_the_expiry_of_its_order_is_between_decision_and_line_removes_once(
    service: PaymentService, backend: HookedDaoFactory, refundable: Order
) -> None:
    gate = backend.ledger.hold("create", appending(LedgerReason.EXPIRY, "expiry"))
    expire = in_thread(lambda: service.check_for_expired_orders(USER), name="expiry")
    wait(gate.reached)
    refunded = service.refund(refundable.id)
    gate.open()
    report = expire()

    assert refunded.status is Status.REFUNDED
    assert [str(o.id) for o in report.expired_orders] == [str(refundable.id)]
    assert sum(tokens_of(service, LedgerReason.EXPIRY, LedgerReason.REFUND)) == -10
    assert service.remaining_tokens(USER, GROUP) == 100 == ledger_sum(service)
    assert audited(service)


def test_an_expiry_check_while_a_refund_is_between_its_commit_and_its_line_removes_once(
    service: PaymentService, backend: HookedDaoFactory, refundable: Order
) -> None:
    gate = backend.ledger.hold("create", appending(LedgerReason.REFUND, "refund"))
    refund = in_thread(lambda: service.refund(refundable.id), name="refund")
    wait(gate.reached)
    report = service.check_for_expired_orders(USER)
    gate.open()
    refunded = refund()

    assert refunded.status is Status.REFUNDED
    assert report.expired_orders == []
    assert tokens_of(service, LedgerReason.EXPIRY, LedgerReason.REFUND) == [-10]
    assert tokens_of(service, LedgerReason.REFUND) == [-10]
    assert service.remaining_tokens(USER, GROUP) == 100 == ledger_sum(service)
    assert audited(service)


def test_a_refund_committed_while_the_expiry_holds_its_order_as_due_leaves_nothing_to_expire(
    service: PaymentService, backend: HookedDaoFactory, refundable: Order
) -> None:
    def expiring_it(order_id: Any, from_statuses: Any, changes: Any, entry: Any = None) -> bool:
        return str(order_id) == str(refundable.id) and changes.get("status") is Status.EXPIRED

    gate = backend.orders.hold("transition", expiring_it)
    expire = in_thread(lambda: service.check_for_expired_orders(USER), name="expiry")
    wait(gate.reached)
    service.refund(refundable.id)
    gate.open()
    report = expire()

    assert (report.expired_orders, report.removed_tokens) == ([], {})
    assert tokens_of(service, LedgerReason.EXPIRY, LedgerReason.REFUND) == [-10]
    assert service.remaining_tokens(USER, GROUP) == 100 == ledger_sum(service)


def test_a_void_while_the_expiry_of_its_grant_is_between_decision_and_line_removes_once(
    service: PaymentService, backend: HookedDaoFactory, clock: FrozenClock
) -> None:
    gift = service.grant_tokens(USER, GROUP, 10, expires=clock() + timedelta(days=1))
    free(service, "forever", Cycle.ONCE, 100)
    clock.advance(days=2)
    gate = backend.ledger.hold("create", appending(LedgerReason.EXPIRY, "expiry"))
    expire = in_thread(lambda: service.check_for_expired_orders(USER), name="expiry")
    wait(gate.reached)
    voided = service.void_grant(gift.id)
    gate.open()
    report = expire()

    assert voided.remaining == 0
    assert report.removed_tokens == {}
    assert tokens_of(service, LedgerReason.EXPIRY, LedgerReason.VOID) == [-10]
    assert service.remaining_tokens(USER, GROUP) == 100 == ledger_sum(service)
    assert audited(service)
