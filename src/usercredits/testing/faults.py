"""The fault-injection suite: every writing call survives a failure at any of its writes.

For each writing call of the service (a *scenario*) and for every ``k``, the
``k``-th storage write of the call fails -- either before it reaches the
backend (a lost connection) or after the backend applied it (a crash before the
answer) -- then the same call is retried, ``reconcile`` runs, and the suite
checks:

* the invariants of the ledger: every group's balance == the sum of its lines ==
  its live remainders minus its debt (``audit``); every order ever paid with
  tokens has exactly one purchase line, every item of a paid bundle its child
  order, every ended grant nothing left; no order left in progress, no window
  claim left over, every subscription the status of its order;
* for calls that have an identity to retry (all but ``create_order``), that the
  outcome is the outcome of one uninterrupted call: the same orders, balances,
  ledger lines and windows.

A backend runs it like the contract suite::

    class TestMyBackendFaults(FaultInjectionContract):
        def make_dao_factory(self) -> DaoFactory:
            return MyDaoFactory(...)

Each scenario runs its attempts on one backend, one fresh user per attempt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from usercredits.clock import FrozenClock
from usercredits.dao import (
    WRITES,
    CustomerDao,
    DaoFactory,
    OfferDao,
    OrderDao,
    TokenTimetableDao,
    UserCreditsDao,
    WebhookEventDao,
)
from usercredits.errors import (
    AlreadySubscribedError,
    InvalidPaymentError,
    PaymentErrorCode,
    StorageError,
    UserCreditsError,
)
from usercredits.grants import replay
from usercredits.models import (
    CombinedOffer,
    Cycle,
    LedgerReason,
    Offer,
    OfferKind,
    Order,
    OrderStatus,
    Status,
    UserId,
    WebhookEventRecord,
)
from usercredits.payment import WebhookEventKind
from usercredits.service import PaymentService
from usercredits.testing.base import BackendContract
from usercredits.testing.fakes import FakePaymentClient

__all__ = [
    "AFTER",
    "BEFORE",
    "FaultInjectionContract",
    "FaultyDaoFactory",
    "InjectedFault",
    "Scenario",
    "check_invariants",
]

START = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)
BEFORE = "before"
"""The failing write never reaches the backend."""
AFTER = "after"
"""The failing write is applied by the backend, then the call fails."""


class InjectedFault(StorageError):
    """The storage failure the suite injects."""


class FaultyDaoFactory(DaoFactory):
    """A backend whose ``fail_at``-th write (counted over every DAO, from 1) fails as
    ``mode`` says; :meth:`disarm` makes it reliable again. Reads are never counted."""

    def __init__(self, inner: DaoFactory):
        self.inner = inner
        self.writes = 0
        self.fail_at: int | None = None
        self.mode = BEFORE
        self._daos: dict[str, Any] = {}

    def arm(self, fail_at: int, mode: str) -> None:
        """Count writes from 0; the ``fail_at``-th will fail."""
        self.writes, self.fail_at, self.mode = 0, fail_at, mode

    def disarm(self) -> None:
        """Count writes from 0, fail none."""
        self.writes, self.fail_at = 0, None

    def _write(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        if self.writes != self.fail_at:
            return method(*args, **kwargs)
        if self.mode == BEFORE:
            raise InjectedFault(f"write {self.writes} ({method.__name__}) failed before storing")
        method(*args, **kwargs)
        raise InjectedFault(f"write {self.writes} ({method.__name__}) failed after storing")

    def _proxy(self, name: str, dao: Any, interface: type) -> Any:
        if name not in self._daos:
            self._daos[name] = _Proxy(self, dao, WRITES[interface])
        return self._daos[name]

    def get_offer_dao(self) -> Any:
        return self._proxy("offers", self.inner.get_offer_dao(), OfferDao)

    def get_order_dao(self) -> Any:
        return self._proxy("orders", self.inner.get_order_dao(), OrderDao)

    def get_token_timetable_dao(self) -> Any:
        return self._proxy("lines", self.inner.get_token_timetable_dao(), TokenTimetableDao)

    def get_user_credits_dao(self) -> Any:
        return self._proxy("credits", self.inner.get_user_credits_dao(), UserCreditsDao)

    def get_customer_dao(self) -> Any:
        return self._proxy("customers", self.inner.get_customer_dao(), CustomerDao)

    def get_webhook_event_dao(self) -> Any:
        return self._proxy("events", self.inner.get_webhook_event_dao(), WebhookEventDao)

    def close(self) -> None:
        self.inner.close()


class _Proxy:
    """A DAO whose writing methods go through :meth:`FaultyDaoFactory._write`."""

    def __init__(self, factory: FaultyDaoFactory, dao: Any, writes: frozenset[str]):
        self._factory = factory
        self._dao = dao
        self._writes = writes

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._dao, name)
        if name not in self._writes:
            return attribute

        def write(*args: Any, **kwargs: Any) -> Any:
            return self._factory._write(attribute, *args, **kwargs)

        return write


# -- the world of a scenario -----------------------------------------------------------------


@dataclasses.dataclass
class World:
    """A service on a faulty backend with a scripted gateway and a frozen clock."""

    factory: FaultyDaoFactory
    gateway: FakePaymentClient
    clock: FrozenClock
    service: PaymentService
    offers: dict[str, Offer]

    def buy(self, user: UserId, offer: str, quantity: int | None = None) -> Order:
        """Order and pay ``offer`` for ``user``; the order as stored."""
        order = self.service.create_order(self.offers[offer].id, user, quantity)
        if order.status is Status.PENDING:
            self.gateway.set_outcome(order.id, Status.PAID)
            self.service.after_execute(order.id)
        return self.reload(order)

    def reload(self, order: Order) -> Order:
        """The order as stored now."""
        found = self.service.get_dao_factory().get_order_dao().find_by_id(order.id)
        assert found is not None
        return found


def catalogue() -> list[Offer]:
    """The offers every scenario draws from."""

    def offer(name: str, **fields: Any) -> Offer:
        values: dict[str, Any] = {
            "name": name,
            "kind": OfferKind.TOKENS,
            "offer_group": name,
            "cycle": Cycle.MONTHLY,
            "price": Decimal("10"),
            "token_count": 100,
        }
        values.update(fields)
        return Offer(**values)

    return [
        offer("pack"),
        offer("weekly", offer_group="pack", cycle=Cycle.WEEKLY, token_count=40),
        offer("forever", offer_group="pack", cycle=Cycle.ONCE, token_count=30),
        offer("chained", append_date=True, token_count=20),
        offer("plan", kind=OfferKind.SUBSCRIPTION, token_count=None, append_date=True),
        offer("free", price=Decimal(0), token_count=500),
        offer("ai", cycle=Cycle.WEEKLY, token_count=50, append_date=True),
        offer("help", cycle=Cycle.YEARLY, token_count=5),
    ]


def _bundle(offers: dict[str, Offer], name: str, price: str) -> Offer:
    return Offer(
        name=name,
        kind=OfferKind.TOKENS,
        offer_group=name,
        cycle=Cycle.MONTHLY,
        price=Decimal(price),
        token_count=10,
        combined_items=[
            CombinedOffer(offer_id=offers["ai"].id, offer_group="ai", quantity=2),
            CombinedOffer(offer_id=offers["help"].id, offer_group="help"),
        ],
    )


# -- scenarios -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One writing call: ``setup`` prepares the user (no fault), ``call`` is the call under
    test, retried as it is after a failure. ``identity`` is False for calls whose retry is a
    new operation (``create_order`` makes a new order, ``pay_order`` a new intent): only the
    invariants are checked then."""

    name: str
    setup: Callable[[World, UserId], Any]
    call: Callable[[World, UserId, Any], Any]
    identity: bool = True


def _nothing(world: World, user: UserId) -> None:
    return None


def _pending(offer: str) -> Callable[[World, UserId], Order]:
    def setup(world: World, user: UserId) -> Order:
        order = world.service.create_order(world.offers[offer].id, user)
        world.gateway.set_outcome(order.id, Status.PAID)
        return order

    return setup


def _bought(offer: str, consumed: int = 0) -> Callable[[World, UserId], Order]:
    def setup(world: World, user: UserId) -> Order:
        order = world.buy(user, offer)
        if consumed:
            world.service.tokens_consumed(user, order.offer_group, consumed)
        return order

    return setup


def _chain(world: World, user: UserId) -> Order:
    world.buy(user, "chained")
    return _pending("chained")(world, user)


def _refused(world: World, user: UserId) -> Order:
    order = world.service.create_order(world.offers["pack"].id, user)
    world.gateway.set_outcome(order.id, Status.REFUSED)
    world.service.after_execute(order.id)
    return order


def _event(
    kind: WebhookEventKind, bought: bool, amount: Decimal | None = None
) -> Callable[[World, UserId], tuple[bytes, str]]:
    def setup(world: World, user: UserId) -> tuple[bytes, str]:
        if bought:
            order = world.buy(user, "pack")
            world.service.tokens_consumed(user, "pack", 15)
        else:
            order = world.service.create_order(world.offers["pack"].id, user)
        return world.gateway.event(kind, order.id, amount=amount)

    return setup


def _stored_event(world: World, user: UserId) -> str:
    """A refund event stored but never applied (its processing was interrupted)."""
    order = world.buy(user, "pack")
    payload, _ = world.gateway.event(WebhookEventKind.REFUNDED, order.id, amount=Decimal("5"))
    event = world.gateway.parse_event(payload)
    world.factory.inner.get_webhook_event_dao().create(
        WebhookEventRecord(id=event.id, type=event.type, received_at=START, payload=event.payload)
    )
    return event.id


def _due(world: World, user: UserId) -> None:
    world.buy(user, "pack")
    world.buy(user, "weekly")
    world.buy(user, "forever")
    world.buy(user, "bundle")
    world.service.tokens_consumed(user, "pack", 60)
    world.service.tokens_consumed(user, "ai", 30)
    world.clock.advance(days=40)


def _interrupted(world: World, user: UserId) -> Order:
    """A settlement whose effects never ran: the order is paid and in progress."""
    order = _pending("bundle")(world, user)
    orders = world.factory.inner.get_order_dao()
    paid = orders.transition(
        order.id,
        {Status.PENDING},
        {"status": Status.PAID, "in_progress": True, "starts": None, "expires": None},
        OrderStatus(date=START, status=Status.PAID, message="Payment succeeded"),
    )
    assert paid is not None
    return paid


def _indebted(world: World, user: UserId) -> None:
    world.service.tokens_consumed(user, "api", 20)


def _granted(world: World, user: UserId) -> Any:
    grant = world.service.grant_tokens(user, "api", 100)
    world.service.tokens_consumed(user, "api", 10)
    return grant


def _held(world: World, user: UserId) -> Any:
    _granted(world, user)
    return world.service.reserve(user, "api", 40)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "create_order",
        _nothing,
        lambda w, u, _: w.service.create_order(w.offers["pack"].id, u),
        identity=False,
    ),
    Scenario(
        "create_order_free",
        _nothing,
        lambda w, u, _: w.service.create_order(w.offers["free"].id, u),
        identity=False,
    ),
    Scenario(
        "create_order_free_bundle",
        _nothing,
        lambda w, u, _: w.service.create_order(w.offers["free_bundle"].id, u),
        identity=False,
    ),
    # Every pay_order asks for a new intent: after a lost answer the retry's intent supersedes
    # the first one, so only the invariants are compared.
    Scenario(
        "pay_order", _refused, lambda w, u, order: w.service.pay_order(order.id), identity=False
    ),
    Scenario("after_execute", _pending("pack"), lambda w, u, o: w.service.after_execute(o.id)),
    Scenario(
        "after_execute_bundle", _pending("bundle"), lambda w, u, o: w.service.after_execute(o.id)
    ),
    Scenario("after_execute_chained", _chain, lambda w, u, o: w.service.after_execute(o.id)),
    Scenario(
        "after_execute_subscription",
        _pending("plan"),
        lambda w, u, o: w.service.after_execute(o.id),
    ),
    Scenario("settle", _pending("bundle"), lambda w, u, o: w.service.settle(o.id)),
    Scenario(
        "handle_webhook_success",
        _event(WebhookEventKind.PAYMENT_SUCCEEDED, bought=False),
        lambda w, u, event: w.service.handle_webhook(*event),
    ),
    Scenario(
        "handle_webhook_refund",
        _event(WebhookEventKind.REFUNDED, bought=True),
        lambda w, u, event: w.service.handle_webhook(*event),
    ),
    Scenario(
        "handle_webhook_refund_before_payment",
        _event(WebhookEventKind.REFUNDED, bought=False),
        lambda w, u, event: w.service.handle_webhook(*event),
    ),
    Scenario("refund", _bought("pack", 30), lambda w, u, o: w.service.refund(o.id)),
    Scenario(
        "refund_partial",
        _bought("bundle", 3),
        lambda w, u, o: w.service.refund(o.id, Decimal("12.50"), idempotency_key="r1"),
    ),
    Scenario(
        "handle_webhook_partial_refund",
        _event(WebhookEventKind.REFUNDED, bought=True, amount=Decimal("4")),
        lambda w, u, event: w.service.handle_webhook(*event),
    ),
    Scenario(
        "handle_webhook_dispute_opened",
        _event(WebhookEventKind.DISPUTE_OPENED, bought=True, amount=Decimal("10")),
        lambda w, u, event: w.service.handle_webhook(*event),
    ),
    Scenario(
        "handle_webhook_dispute_lost",
        _event(WebhookEventKind.DISPUTE_LOST, bought=True),
        lambda w, u, event: w.service.handle_webhook(*event),
    ),
    Scenario(
        "replay_webhook",
        _stored_event,
        lambda w, u, event_id: w.service.replay_webhook(event_id),
    ),
    Scenario("refund_bundle", _bought("bundle", 3), lambda w, u, o: w.service.refund(o.id)),
    Scenario(
        "tokens_consumed",
        _bought("pack"),
        lambda w, u, _: w.service.tokens_consumed(u, "pack", 130, idempotency_key="job-1"),
    ),
    Scenario(
        "consume_tokens",
        _bought("pack"),
        lambda w, u, _: w.service.consume_tokens(u, "pack", 70, idempotency_key="job-1"),
    ),
    Scenario(
        "consume_tokens_first_of_a_group",
        _nothing,
        lambda w, u, _: w.service.consume_tokens(
            u, "api", 3, allow_negative=True, idempotency_key="job-1"
        ),
    ),
    Scenario(
        "check_for_expired_orders", _due, lambda w, u, _: w.service.check_for_expired_orders(u)
    ),
    Scenario("reconcile", _interrupted, lambda w, u, _: w.service.reconcile(u)),
    Scenario(
        "grant_tokens",
        _indebted,
        lambda w, u, _: w.service.grant_tokens(
            u, "api", 50, expires=START + timedelta(days=3), idempotency_key="promo"
        ),
    ),
    Scenario("void_grant", _granted, lambda w, u, grant: w.service.void_grant(grant.id)),
    Scenario(
        "reserve",
        _granted,
        lambda w, u, _: w.service.reserve(u, "api", 30, idempotency_key="job-1"),
    ),
    Scenario("capture", _held, lambda w, u, hold: w.service.capture(hold.id, 20)),
    Scenario("release", _held, lambda w, u, hold: w.service.release(hold.id)),
)
"""Every writing call of the service, in the situations that exercise its effects."""


def _retry(call: Callable[[], Any]) -> None:
    """Run a retry; an order whose operation is complete is refused as a duplicate, and a
    free offer ordered by the first call as already held."""
    try:
        call()
    except AlreadySubscribedError:
        pass
    except InvalidPaymentError as e:
        if e.code is not PaymentErrorCode.DUPLICATE_ATTEMPT:
            raise


# -- invariants ------------------------------------------------------------------------------


def check_invariants(service: PaymentService, user: UserId) -> None:
    """Assert the invariants of the ledger, the orders and the windows for one user."""
    factory = service.get_dao_factory()
    audit = service.audit(user)
    assert audit.ok, f"the balances of {user!r} disagree with the ledger: {audit}"
    orders = factory.get_order_dao().find({"user_id": user})
    lines = factory.get_token_timetable_dao().find({"user_id": user})
    assert not [o.id for o in orders if o.in_progress], "an order is left in progress"
    purchases = Counter(
        str(line.order_id) for line in lines if line.reason is LedgerReason.PURCHASE
    )
    by_group: dict[str, list[Any]] = {}
    for line in lines:
        by_group.setdefault(line.offer_group, []).append(line)
    for group in by_group.values():
        group.sort(key=lambda line: line.seq)
        assert [line.seq for line in group] == list(range(1, len(group) + 1)), (
            f"the lines of {group[0].offer_group!r} are not numbered 1..n"
        )
    for order in orders:
        paid = any(entry.status is Status.PAID for entry in order.history)
        expected = 1 if paid and order.token_count > 0 else 0
        assert purchases[str(order.id)] == expected, (
            f"order {order.id!r} ({order.status}) has {purchases[str(order.id)]} purchase lines"
        )
        if paid and order.parent_id is None:
            kids = sorted(
                (o.item_index for o in orders if str(o.parent_id) == str(order.id)),
                key=lambda i: -1 if i is None else i,
            )
            assert kids == list(range(len(order.combined_items))), (
                f"bundle order {order.id!r} has child orders {kids}"
            )
        if order.status in (Status.EXPIRED, Status.REFUNDED) and order.token_count > 0:
            held = replay(by_group.get(order.offer_group, [])).remainder(str(order.id))
            assert held == 0, f"the ended grant of order {order.id!r} still holds {held}"
    credits = service.load_user_credits(user)
    statuses = {str(o.id): o.status for o in orders if o.parent_id is None}
    for sub in credits.subscriptions if credits is not None else []:
        if sub.offer_id is not None and statuses.get(str(sub.order_id)) is not None:
            root = next(o for o in orders if str(o.id) == str(sub.order_id))
            if str(root.offer_id) == str(sub.offer_id) and root.offer_group == sub.offer_group:
                assert sub.status is root.status
    for account in factory.get_user_credits_dao().accounts(user):
        assert account.window.claims == (), f"claims left in {account.offer_group!r}"


def summary(service: PaymentService, user: UserId) -> dict[str, Any]:
    """What one user holds, without ids: comparable between two users of one backend."""
    factory = service.get_dao_factory()
    orders = factory.get_order_dao().find({"user_id": user})
    lines = factory.get_token_timetable_dao().find({"user_id": user})
    accounts = factory.get_user_credits_dao().accounts(user)
    credits = service.load_user_credits(user)
    return {
        "orders": sorted(
            (
                o.offer_name,
                o.item_index,
                o.status.value,
                o.token_count,
                o.starts,
                o.expires,
                tuple((e.status.value, e.message.split(" ")[0]) for e in o.history),
            )
            for o in orders
        ),
        "lines": sorted(
            (line.offer_group, line.seq, line.reason.value, line.tokens, line.expires)
            for line in lines
        ),
        "balances": sorted(
            (a.offer_group, service.remaining_tokens(user, a.offer_group)) for a in accounts
        ),
        "credits": None
        if credits is None
        else sorted((o.offer_group, o.starts, o.expires, o.tokens) for o in credits.offers),
    }


# -- the contract ----------------------------------------------------------------------------


class FaultInjectionContract(BackendContract):
    """Every writing call, failing at each of its writes in turn, retried, then reconciled."""

    MODES = (BEFORE, AFTER)

    def faulty(self, factory: DaoFactory) -> FaultyDaoFactory:
        """The backend under test, wrapped to fail on demand."""
        return FaultyDaoFactory(factory)

    @pytest.fixture
    def world(self, dao_factory: DaoFactory) -> World:
        factory = self.faulty(dao_factory)
        gateway = FakePaymentClient()
        clock = FrozenClock(START)
        service = PaymentService(factory, gateway, clock=clock)
        offers = factory.get_offer_dao()
        stored = {o.name: offers.create(o) for o in catalogue()}
        stored["bundle"] = offers.create(_bundle(stored, "bundle", "30"))
        stored["free_bundle"] = offers.create(_bundle(stored, "free_bundle", "0"))
        return World(factory, gateway, clock, service, stored)

    @pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
    def test_a_call_interrupted_at_any_write_completes_on_retry(
        self, world: World, scenario: Scenario
    ) -> None:
        users = (f"{scenario.name}-{n}" for n in itertools.count())
        reference = next(users)
        state = self._setup(world, scenario, reference)
        world.factory.arm(fail_at=0, mode=BEFORE)
        scenario.call(world, reference, state)
        writes = world.factory.writes
        world.factory.disarm()
        assert writes > 0, f"{scenario.name} wrote nothing"
        check_invariants(world.service, reference)
        expected = summary(world.service, reference)
        for fail_at in range(1, writes + 1):
            for mode in self.MODES:
                user = next(users)
                state = self._setup(world, scenario, user)
                world.factory.arm(fail_at, mode)
                with contextlib.suppress(UserCreditsError):
                    scenario.call(world, user, state)
                world.factory.disarm()
                where = f"{scenario.name}, write {fail_at} failing {mode} storing"
                _retry(functools.partial(scenario.call, world, user, state))
                world.service.reconcile(user)
                try:
                    check_invariants(world.service, user)
                except AssertionError as e:
                    raise AssertionError(f"{where}: {e}") from None
                if scenario.identity:
                    got = summary(world.service, user)
                    assert got == expected, f"{where}: the outcome differs from one call's"

    def _setup(self, world: World, scenario: Scenario, user: UserId) -> Any:
        world.factory.disarm()
        world.clock.set(START)
        state = scenario.setup(world, user)
        world.factory.disarm()
        return state
