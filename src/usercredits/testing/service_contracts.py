"""Service-level contracts: SPEC §4 played through :class:`PaymentService` on a backend.

Each class covers one topic. Subclass each once per backend, implementing
``make_dao_factory`` to return a fresh, empty backend::

    class TestMyOfferCatalog(OfferCatalogContract):
        def make_dao_factory(self) -> DaoFactory:
            return MyDaoFactory(...)

The tests only use public calls (the service, the DAO interfaces, the payment
clients), keep their data small, and run their threads with bounded waits.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from usercredits.clock import FrozenClock
from usercredits.dao import DaoFactory
from usercredits.errors import (
    EntityNotFoundError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidOfferError,
    InvalidOrderError,
    InvalidPaymentError,
    PaymentError,
    PaymentErrorCode,
)
from usercredits.manual import ManualPaymentClient
from usercredits.models import (
    CombinedOffer,
    Cycle,
    LedgerReason,
    Offer,
    OfferKind,
    Order,
    Status,
    Subscription,
    TokenTimetable,
    UserCredits,
    UserId,
)
from usercredits.payment import PaymentClient, WebhookEventKind
from usercredits.service import PaymentService
from usercredits.testing.base import BackendContract
from usercredits.testing.fakes import FakePaymentClient

__all__ = [
    "BadInputContract",
    "ConcurrencyContract",
    "ConsumptionContract",
    "ExpiryContract",
    "OfferCatalogContract",
    "OrderContract",
    "RefundContract",
    "ServiceContract",
    "SettlementContract",
    "WebhookContract",
]

T = TypeVar("T")

START = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
"""Where the clock of every service contract starts."""

USER = "alice"
THREADS = 6
JOIN_TIMEOUT = 60.0


def at(year: int, month: int, day: int, hour: int = 9, minute: int = 30) -> datetime:
    """An aware UTC datetime (the contracts' clock starts at 09:30)."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------


def add_offer(
    service: PaymentService,
    name: str,
    *,
    group: str | None = None,
    kind: OfferKind = OfferKind.TOKENS,
    cycle: Cycle = Cycle.MONTHLY,
    price: str = "10",
    tokens: int | None = 100,
    **fields: Any,
) -> Offer:
    """Store an offer (group defaults to its name) and return it with its id."""
    offer = Offer(
        name=name,
        kind=kind,
        offer_group=group or name,
        cycle=cycle,
        price=Decimal(price),
        **{"token_count": tokens, **fields},
    )
    return service.get_dao_factory().get_offer_dao().create(offer)


def approve(client: PaymentClient, order: Order) -> None:
    """Make the order's current intent succeed on a manual or fake client."""
    if isinstance(client, FakePaymentClient):
        client.set_outcome(order.id, Status.PAID)
    elif isinstance(client, ManualPaymentClient):
        client.approve(order.id)
    else:
        raise TypeError(f"cannot approve payments on {client!r}")


def settle(service: PaymentService, client: PaymentClient, order: Order) -> Order:
    """Approve the order's payment and settle it; the order as stored."""
    approve(client, order)
    service.after_execute(order.id)
    return reload(service, order)


def buy(
    service: PaymentService,
    client: PaymentClient,
    offer: Offer,
    user: UserId = USER,
    quantity: int | None = None,
    **kwargs: Any,
) -> Order:
    """Order an offer and pay for it (free orders pay themselves); the order as stored."""
    order = service.create_order(offer.id, user, quantity, **kwargs)
    if order.status is Status.PENDING:
        return settle(service, client, order)
    return order


def reload(service: PaymentService, order: Order) -> Order:
    """The order as stored now."""
    found = service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert found is not None, f"order {order.id!r} is not stored"
    return found


def children(service: PaymentService, order: Order) -> list[Order]:
    """The child orders of a bundle order."""
    return service.get_dao_factory().get_order_dao().find({"parent_id": order.id})


def ledger(service: PaymentService, user: UserId, group: str) -> list[TokenTimetable]:
    """The user's ledger lines of one group, in recording order."""
    return (
        service.get_dao_factory()
        .get_token_timetable_dao()
        .find({"user_id": user, "offer_group": group})
    )


def lines(
    service: PaymentService, user: UserId, group: str, reason: LedgerReason
) -> list[TokenTimetable]:
    """The user's ledger lines of one group and reason."""
    return [line for line in ledger(service, user, group) if line.reason is reason]


def credits_of(service: PaymentService, user: UserId = USER) -> UserCredits:
    """The user's credits, which must exist."""
    found = service.load_user_credits(user)
    assert found is not None, f"user {user!r} has no credits"
    return found


def subscriptions(service: PaymentService, group: str, user: UserId = USER) -> list[Subscription]:
    """The user's subscriptions of one offer group."""
    return [s for s in credits_of(service, user).subscriptions if s.offer_group == group]


def names(offers: list[Offer]) -> list[str]:
    """Offer names, sorted."""
    return sorted(o.name for o in offers)


def stored_state(service: PaymentService) -> dict[str, list[Any]]:
    """Everything the backend holds, in a comparable form (sorted by id, groups by name)."""
    factory = service.get_dao_factory()

    def by_id(entities: list[Any]) -> list[Any]:
        return sorted(entities, key=lambda e: str(e.id))

    credits_dao = factory.get_user_credits_dao()
    users = sorted(credits_dao.iter_user_ids(), key=repr)
    return {
        "offers": by_id(factory.get_offer_dao().find({})),
        "orders": by_id(factory.get_order_dao().find({})),
        "ledger": by_id(factory.get_token_timetable_dao().find({})),
        "users": users,
        "accounts": [
            sorted(credits_dao.accounts(user), key=lambda a: a.offer_group) for user in users
        ],
    }


def registrations(service: PaymentService, user: UserId) -> int:
    """How many user records the backend holds for ``user``."""
    users = service.get_dao_factory().get_user_credits_dao().iter_user_ids()
    return sum(1 for u in users if type(u) is type(user) and u == user)


def race(calls: Sequence[Callable[[], T]], timeout: float = JOIN_TIMEOUT) -> list[T | Exception]:
    """Run the calls in threads released together; each result or the exception raised."""
    barrier = threading.Barrier(len(calls))
    results: list[T | Exception] = [RuntimeError("did not run")] * len(calls)

    def run(index: int, call: Callable[[], T]) -> None:
        try:
            barrier.wait(timeout)
            results[index] = call()
        except Exception as e:
            results[index] = e

    threads = [
        threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), f"threads still running after {timeout}s"
    return results


def failures(results: list[Any]) -> list[Exception]:
    """The exceptions among race results."""
    return [r for r in results if isinstance(r, Exception)]


# -- the base --------------------------------------------------------------------------


class ServiceContract(BackendContract):
    """The base of the service contracts: a :class:`PaymentService` on the backend under test.

    Fixtures: ``clock`` (a :class:`FrozenClock` at :data:`START`), ``manual`` and
    ``service`` (manual payments), ``gateway`` and ``gateway_service`` (a scripted
    :class:`FakePaymentClient`). Both services share the test's backend.
    """

    @pytest.fixture
    def clock(self) -> FrozenClock:
        return FrozenClock(START)

    @pytest.fixture
    def manual(self) -> ManualPaymentClient:
        return ManualPaymentClient()

    @pytest.fixture
    def service(
        self, dao_factory: DaoFactory, manual: ManualPaymentClient, clock: FrozenClock
    ) -> PaymentService:
        return PaymentService(dao_factory, manual, clock=clock)

    @pytest.fixture
    def gateway(self) -> FakePaymentClient:
        return FakePaymentClient()

    @pytest.fixture
    def gateway_service(
        self, dao_factory: DaoFactory, gateway: FakePaymentClient, clock: FrozenClock
    ) -> PaymentService:
        return PaymentService(dao_factory, gateway, clock=clock)


# -- offers ----------------------------------------------------------------------------


class OfferCatalogContract(ServiceContract):
    """``load_offers``: tags, unlocking by live paid subscriptions, overriding by key."""

    def test_without_user_only_regular_offers_are_listed(self, service: PaymentService) -> None:
        add_offer(service, "pack")
        add_offer(service, "vip", unlocked_by=["plan"])
        assert names(service.load_offers()) == ["pack"]

    def test_without_env_tags_tagged_and_untagged_regular_offers_are_listed(
        self, service: PaymentService
    ) -> None:
        add_offer(service, "plain")
        add_offer(service, "web", tags=["web"])
        assert names(service.load_offers()) == ["plain", "web"]

    def test_env_tags_keep_offers_carrying_all_of_them(self, service: PaymentService) -> None:
        add_offer(service, "web-eu", tags=["web", "eu"])
        add_offer(service, "web", tags=["web"])
        add_offer(service, "plain")
        assert names(service.load_offers(env_tags=["web", "eu"])) == ["web-eu"]
        assert names(service.load_offers(env_tags=["web"])) == ["web", "web-eu"]

    def test_a_live_paid_subscription_unlocks_offers_of_its_group(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        plan = add_offer(service, "plan", price="0")
        add_offer(service, "vip", unlocked_by=["plan"])
        buy(service, manual, plan)
        assert names(service.load_offers(USER)) == ["plan", "vip"]

    def test_a_pending_order_unlocks_nothing(self, service: PaymentService) -> None:
        plan = add_offer(service, "plan")
        add_offer(service, "vip", unlocked_by=["plan"])
        service.create_order(plan.id, USER)
        assert names(service.load_offers(USER)) == ["plan"]

    def test_purchases_of_another_user_unlock_nothing(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        plan = add_offer(service, "plan", price="0")
        add_offer(service, "vip", unlocked_by=["plan"])
        buy(service, manual, plan, user="bob")
        assert names(service.load_offers(USER)) == ["plan"]

    def test_a_subscription_unlocks_until_its_expiry_date_without_the_expiry_routine(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        plan = add_offer(service, "plan", price="0")
        add_offer(service, "vip", unlocked_by=["plan"])
        order = buy(service, manual, plan)
        assert order.expires == at(2025, 2, 15)
        clock.set(order.expires - timedelta(milliseconds=1))
        assert names(service.load_offers(USER)) == ["plan", "vip"]
        clock.set(order.expires)
        assert names(service.load_offers(USER)) == ["plan"]

    def test_a_never_expiring_subscription_unlocks_for_ever(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        plan = add_offer(service, "plan", price="0", cycle=Cycle.ONCE)
        add_offer(service, "vip", unlocked_by=["plan"])
        buy(service, manual, plan)
        clock.advance(days=3650)
        assert names(service.load_offers(USER)) == ["plan", "vip"]

    def test_a_bundle_item_group_unlocks_offers(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        item = add_offer(service, "ai", price="5")
        suite = add_offer(
            service,
            "suite",
            price="0",
            combined_items=[CombinedOffer(offer_id=item.id, offer_group="ai")],
        )
        add_offer(service, "vip", unlocked_by=["ai"])
        buy(service, manual, suite)
        assert "vip" in names(service.load_offers(USER))

    def test_an_unlocked_offer_replaces_the_regular_offer_with_its_overriding_key(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        plan = add_offer(service, "plan", price="0")
        add_offer(service, "pro", overriding_key="pro")
        add_offer(service, "pro-discount", overriding_key="pro", unlocked_by=["plan"])
        buy(service, manual, plan)
        assert names(service.load_offers(USER)) == ["plan", "pro-discount"]

    def test_the_highest_weight_wins_among_unlocked_offers_sharing_a_key(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        plan = add_offer(service, "plan", price="0")
        add_offer(service, "pro", overriding_key="pro")
        add_offer(service, "pro-light", overriding_key="pro", weight=1, unlocked_by=["plan"])
        add_offer(service, "pro-heavy", overriding_key="pro", weight=5, unlocked_by=["plan"])
        add_offer(service, "pro-mid", overriding_key="pro", weight=3, unlocked_by=["plan"])
        buy(service, manual, plan)
        assert names(service.load_offers(USER)) == ["plan", "pro-heavy"]

    def test_a_weight_tie_is_won_by_the_smallest_id_with_a_warning(
        self,
        service: PaymentService,
        manual: ManualPaymentClient,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        plan = add_offer(service, "plan", price="0")
        tied = [
            add_offer(service, name, overriding_key="pro", weight=2, unlocked_by=["plan"])
            for name in ("pro-a", "pro-b", "pro-c")
        ]
        buy(service, manual, plan)
        winner = min(tied, key=lambda o: str(o.id))
        with caplog.at_level(logging.WARNING, logger="usercredits"):
            offers = service.load_offers(USER)
        assert names(offers) == sorted(["plan", winner.name])
        assert any("pro" in record.getMessage() for record in caplog.records)

    def test_no_warning_is_logged_when_weights_differ(
        self,
        service: PaymentService,
        manual: ManualPaymentClient,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        plan = add_offer(service, "plan", price="0")
        add_offer(service, "pro-a", overriding_key="pro", weight=1, unlocked_by=["plan"])
        add_offer(service, "pro-b", overriding_key="pro", weight=2, unlocked_by=["plan"])
        buy(service, manual, plan)
        with caplog.at_level(logging.WARNING, logger="usercredits"):
            service.load_offers(USER)
        assert caplog.records == []

    def test_an_unlocked_offer_without_a_regular_counterpart_is_listed(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        plan = add_offer(service, "plan", price="0")
        add_offer(service, "pro", overriding_key="pro")
        add_offer(service, "gold", overriding_key="gold", unlocked_by=["plan"])
        buy(service, manual, plan)
        assert names(service.load_offers(USER)) == ["gold", "plan", "pro"]

    def test_unlocked_offers_are_not_filtered_by_env_tags(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        plan = add_offer(service, "plan", price="0", tags=["web"])
        add_offer(service, "mobile", tags=["mobile"])
        add_offer(service, "vip", unlocked_by=["plan"], tags=["mobile"])
        buy(service, manual, plan)
        assert names(service.load_offers(USER, env_tags=["web"])) == ["plan", "vip"]


# -- orders ----------------------------------------------------------------------------


class OrderContract(ServiceContract):
    """``create_order`` validation and storage, free orders, intents and ``pay_order``."""

    def test_an_order_is_stored_pending_with_total_and_total_token_count(
        self, service: PaymentService
    ) -> None:
        offer = add_offer(service, "pack", price="9.99", tokens=100, cycle=Cycle.WEEKLY)
        order = service.create_order(offer.id, USER, 3)
        stored = reload(service, order)
        assert stored.status is Status.PENDING
        assert stored.total == Decimal("29.97")
        assert stored.token_count == 300
        assert stored.quantity == 3
        assert stored.cycle is Cycle.WEEKLY
        assert service.equals(stored.offer_id, offer.id)
        assert stored.offer_group == "pack"
        assert stored.user_id == USER

    def test_quantity_defaults_to_one(self, service: PaymentService) -> None:
        offer = add_offer(service, "pack", price="4", tokens=10)
        order = service.create_order(offer.id, USER)
        assert (order.quantity, order.total, order.token_count) == (1, Decimal(4), 10)

    def test_an_offer_without_tokens_gives_orders_of_zero_tokens(
        self, service: PaymentService
    ) -> None:
        offer = add_offer(service, "plan", kind=OfferKind.SUBSCRIPTION, tokens=None)
        assert service.create_order(offer.id, USER, 2).token_count == 0

    def test_a_quantity_up_to_the_limit_is_accepted(self, service: PaymentService) -> None:
        offer = add_offer(service, "pack", quantity_limit=2)
        assert service.create_order(offer.id, USER, 2).quantity == 2

    def test_the_order_currency_is_the_offers(self, service: PaymentService) -> None:
        offer = add_offer(service, "pack", currency="EUR")
        assert service.create_order(offer.id, USER).currency == "eur"

    def test_the_order_currency_defaults_to_the_service_currency(
        self, dao_factory: DaoFactory, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        service = PaymentService(dao_factory, manual, "CHF", clock=clock)
        offer = add_offer(service, "pack")
        assert service.create_order(offer.id, USER).currency == "chf"

    def test_an_explicit_currency_equal_to_the_offers_is_accepted_in_any_case(
        self, service: PaymentService
    ) -> None:
        offer = add_offer(service, "pack", currency="eur")
        assert service.create_order(offer.id, USER, currency="EUR").currency == "eur"

    def test_the_first_order_creates_the_users_credits_once(self, service: PaymentService) -> None:
        offer = add_offer(service, "pack")
        assert service.load_user_credits(USER) is None
        service.create_order(offer.id, USER)
        service.create_order(offer.id, USER)
        assert registrations(service, USER) == 1

    def test_an_order_adds_one_pending_subscription(self, service: PaymentService) -> None:
        offer = add_offer(service, "pack", price="3", tokens=7)
        order = service.create_order(offer.id, USER, 2)
        [sub] = credits_of(service).subscriptions
        assert service.equals(sub.order_id, order.id)
        assert service.equals(sub.offer_id, offer.id)
        assert (sub.name, sub.offer_group, sub.status) == ("pack", "pack", Status.PENDING)
        assert (sub.quantity, sub.tokens, sub.total) == (2, 14, Decimal(6))

    def test_a_bundle_order_lists_its_items_with_their_token_counts(
        self, service: PaymentService
    ) -> None:
        ai = add_offer(service, "ai", tokens=50)
        support = add_offer(service, "support", tokens=5, cycle=Cycle.YEARLY)
        suite = add_offer(
            service,
            "suite",
            price="30",
            tokens=None,
            combined_items=[
                CombinedOffer(offer_id=ai.id, offer_group="ai", quantity=2),
                CombinedOffer(offer_id=support.id, offer_group="help"),
            ],
        )
        order = reload(service, service.create_order(suite.id, USER, 3))
        items = {item.offer_group: item for item in order.combined_items}
        assert (items["ai"].quantity, items["ai"].token_count) == (6, 300)
        assert (items["help"].quantity, items["help"].token_count) == (3, 15)
        assert items["help"].cycle is Cycle.YEARLY

    def test_a_bundle_order_adds_one_pending_subscription_per_item(
        self, service: PaymentService
    ) -> None:
        ai = add_offer(service, "ai", tokens=50)
        suite = add_offer(
            service,
            "suite",
            price="30",
            combined_items=[CombinedOffer(offer_id=ai.id, offer_group="ai", quantity=2)],
        )
        order = service.create_order(suite.id, USER)
        [item_sub] = subscriptions(service, "ai")
        assert service.equals(item_sub.order_id, order.id)
        assert service.equals(item_sub.offer_id, ai.id)
        assert (item_sub.status, item_sub.tokens) == (Status.PENDING, 100)
        assert len(credits_of(service).subscriptions) == 2

    def test_a_priced_order_gets_a_payment_intent_whose_secret_is_not_stored(
        self, service: PaymentService
    ) -> None:
        offer = add_offer(service, "pack")
        order = service.create_order(offer.id, USER)
        assert order.payment_intent_id
        assert order.payment_intent_secret
        stored = reload(service, order)
        assert stored.payment_intent_id == order.payment_intent_id
        assert stored.payment_intent_secret is None

    def test_a_free_order_is_paid_at_once(self, service: PaymentService) -> None:
        offer = add_offer(service, "free", price="0", tokens=20)
        order = service.create_order(offer.id, USER)
        assert order.status is Status.PAID
        assert order.history[-1].message == "Free subscription succeeded"
        assert order == reload(service, order)
        assert service.remaining_tokens(USER, "free") == 20
        assert [s.status for s in subscriptions(service, "free")] == [Status.PAID]

    def test_a_free_order_asks_the_gateway_for_no_intent(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        offer = add_offer(gateway_service, "free", price="0")
        order = gateway_service.create_order(offer.id, USER)
        assert order.payment_intent_id is None
        assert gateway.calls_to("create_payment_intent") == []

    def test_an_explicit_start_stays_on_the_pending_order(self, service: PaymentService) -> None:
        offer = add_offer(service, "pack")
        starts = START + timedelta(days=3)
        order = service.create_order(offer.id, USER, starts=starts)
        assert reload(service, order).starts == starts

    def test_a_gateway_failure_leaves_a_pending_order_that_pay_order_can_retry(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        offer = add_offer(gateway_service, "pack")
        gateway.fail_next("create_payment_intent")
        with pytest.raises(PaymentError):
            gateway_service.create_order(offer.id, USER)
        [order] = gateway_service.get_dao_factory().get_order_dao().find({"user_id": USER})
        assert (order.status, order.payment_intent_id) == (Status.PENDING, None)
        with pytest.raises(InvalidPaymentError):
            gateway_service.after_execute(order.id)
        assert gateway_service.pay_order(order.id).payment_intent_id

    def test_pay_order_gives_a_pending_order_a_new_stored_intent(
        self, service: PaymentService
    ) -> None:
        offer = add_offer(service, "pack")
        first = service.create_order(offer.id, USER)
        again = service.pay_order(first.id)
        assert again.payment_intent_id not in (None, first.payment_intent_id)
        assert again.payment_intent_secret
        assert reload(service, first).payment_intent_id == again.payment_intent_id
        assert again.status is Status.PENDING

    def test_pay_order_of_a_paid_order_is_a_duplicate_attempt(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        with pytest.raises(InvalidPaymentError) as raised:
            service.pay_order(order.id)
        assert raised.value.code is PaymentErrorCode.DUPLICATE_ATTEMPT

    @pytest.mark.parametrize("outcome", [Status.REFUSED, Status.ERROR])
    def test_pay_order_puts_a_failed_order_back_to_pending_with_a_new_intent(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, outcome: Status
    ) -> None:
        order = gateway_service.create_order(add_offer(gateway_service, "pack").id, USER)
        gateway.set_outcome(order.id, outcome)
        gateway_service.after_execute(order.id)
        assert reload(gateway_service, order).status is outcome
        again = gateway_service.pay_order(order.id)
        assert again.status is Status.PENDING
        assert again.payment_intent_id != order.payment_intent_id
        assert [s.status for s in subscriptions(gateway_service, "pack")] == [Status.PENDING]

    def test_pay_order_of_an_inconsistent_order_needs_an_operator(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = gateway_service.create_order(add_offer(gateway_service, "pack").id, USER)
        gateway.set_outcome(order.id, Status.INCONSISTENT)
        gateway_service.after_execute(order.id)
        with pytest.raises(InvalidPaymentError) as raised:
            gateway_service.pay_order(order.id)
        assert raised.value.code is PaymentErrorCode.VALIDATION

    def test_pay_order_of_an_expired_order_is_a_validation_error(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", cycle=Cycle.DAILY))
        clock.advance(days=1)
        service.check_for_expired_orders(USER)
        with pytest.raises(InvalidPaymentError) as raised:
            service.pay_order(order.id)
        assert raised.value.code is PaymentErrorCode.VALIDATION

    def test_pay_order_of_a_refunded_order_is_a_validation_error(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        service.refund(order.id)
        with pytest.raises(InvalidPaymentError) as raised:
            service.pay_order(order.id)
        assert raised.value.code is PaymentErrorCode.VALIDATION

    def test_is_user_already_subscribed_finds_the_paid_order_only(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        offer = add_offer(service, "pack")
        pending = service.create_order(offer.id, USER)
        assert service.is_user_already_subscribed(USER, offer.id) is None
        paid = settle(service, manual, pending)
        found = service.is_user_already_subscribed(USER, str(offer.id))
        assert found is not None
        assert service.equals(found.id, paid.id)
        assert service.is_user_already_subscribed("bob", offer.id) is None

    @pytest.mark.parametrize(
        "user",
        [42, uuid.UUID("12345678-1234-5678-1234-567812345678"), "user-7"],
        ids=["int", "uuid", "str"],
    )
    def test_user_ids_are_kept_as_given(
        self, service: PaymentService, manual: ManualPaymentClient, user: UserId
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", tokens=5), user=user)
        stored_user = credits_of(service, user).user_id
        assert stored_user == user
        assert type(stored_user) is type(user)
        assert type(order.user_id) is type(user)
        assert service.remaining_tokens(user, "pack") == 5

    def test_ids_are_accepted_in_their_str_form(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        offer = add_offer(service, "pack", tokens=5)
        order = service.create_order(str(offer.id), USER)
        service.pay_order(str(order.id))
        manual.approve(order.id)
        service.after_execute(str(order.id))
        assert service.remaining_tokens(USER, "pack") == 5

    def test_equals_compares_an_id_with_its_str(self, service: PaymentService) -> None:
        offer = add_offer(service, "pack")
        other = add_offer(service, "other")
        assert service.equals(offer.id, str(offer.id))
        assert service.equals(str(offer.id), offer.id)
        assert not service.equals(offer.id, other.id)
        assert not service.equals(offer.id, None)


# -- settlement ------------------------------------------------------------------------


class SettlementContract(ServiceContract):
    """``after_execute``: outcomes, windows, bundles and subscriptions kept in step."""

    def test_an_undecided_payment_leaves_the_order_pending(self, service: PaymentService) -> None:
        order = service.create_order(add_offer(service, "pack").id, USER)
        service.after_execute(order.id)
        stored = reload(service, order)
        assert stored.status is Status.PENDING
        assert len(stored.history) > len(order.history)
        assert service.remaining_tokens(USER, "pack") == 0

    def test_a_successful_payment_marks_the_order_paid_and_grants_its_tokens(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = service.create_order(add_offer(service, "pack", tokens=40).id, USER, 2)
        manual.approve(order.id)
        credits = service.after_execute(order.id)
        stored = reload(service, order)
        assert stored.status is Status.PAID
        assert stored.history[-1].status is Status.PAID
        assert credits.balance("pack") == 80
        assert service.remaining_tokens(USER, "pack") == 80

    def test_a_grant_is_one_purchase_line_of_the_order(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", tokens=40))
        [line] = ledger(service, USER, "pack")
        assert (line.tokens, line.reason) == (40, LedgerReason.PURCHASE)
        assert service.equals(line.order_id, order.id)

    def test_settling_a_paid_order_again_is_a_duplicate_attempt(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", tokens=40))
        with pytest.raises(InvalidPaymentError) as raised:
            service.after_execute(order.id)
        assert raised.value.code is PaymentErrorCode.DUPLICATE_ATTEMPT
        assert service.remaining_tokens(USER, "pack") == 40
        assert len(ledger(service, USER, "pack")) == 1

    def test_settling_an_expired_order_is_a_validation_error(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", cycle=Cycle.DAILY))
        clock.advance(days=2)
        service.check_for_expired_orders(USER)
        with pytest.raises(InvalidPaymentError) as raised:
            service.after_execute(order.id)
        assert raised.value.code is PaymentErrorCode.VALIDATION

    def test_settling_a_refunded_order_is_a_validation_error(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        service.refund(order.id)
        with pytest.raises(InvalidPaymentError) as raised:
            service.after_execute(order.id)
        assert raised.value.code is PaymentErrorCode.VALIDATION

    def test_settling_an_inconsistent_order_is_a_validation_error(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = gateway_service.create_order(add_offer(gateway_service, "pack").id, USER)
        gateway.set_outcome(order.id, Status.INCONSISTENT)
        gateway_service.after_execute(order.id)
        gateway.set_outcome(order.id, Status.PAID)
        with pytest.raises(InvalidPaymentError) as raised:
            gateway_service.after_execute(order.id)
        assert raised.value.code is PaymentErrorCode.VALIDATION
        assert gateway_service.remaining_tokens(USER, "pack") == 0

    @pytest.mark.parametrize("outcome", [Status.REFUSED, Status.ERROR, Status.INCONSISTENT])
    def test_a_failed_payment_is_recorded_without_tokens_nor_dates(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, outcome: Status
    ) -> None:
        order = gateway_service.create_order(add_offer(gateway_service, "pack").id, USER)
        gateway.set_outcome(order.id, outcome, "card says no")
        gateway_service.after_execute(order.id)
        stored = reload(gateway_service, order)
        assert stored.status is outcome
        assert (stored.history[-1].status, stored.history[-1].message) == (
            outcome,
            "card says no",
        )
        assert (stored.starts, stored.expires) == (None, None)
        assert gateway_service.remaining_tokens(USER, "pack") == 0
        assert ledger(gateway_service, USER, "pack") == []
        assert [s.status for s in subscriptions(gateway_service, "pack")] == [outcome]

    def test_a_refused_order_can_be_paid_again(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = service.create_order(add_offer(service, "pack", tokens=10).id, USER)
        manual.decline(order.id, "insufficient funds")
        service.after_execute(order.id)
        service.pay_order(order.id)
        settled = settle(service, manual, order)
        assert settled.status is Status.PAID
        assert service.remaining_tokens(USER, "pack") == 10

    @pytest.mark.parametrize("outcome", [Status.REFUSED, Status.ERROR])
    def test_a_later_success_on_the_current_intent_settles_a_failed_order(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, outcome: Status
    ) -> None:
        order = gateway_service.create_order(add_offer(gateway_service, "pack", tokens=9).id, USER)
        gateway.set_outcome(order.id, outcome)
        gateway_service.after_execute(order.id)
        gateway.set_outcome(order.id, Status.PAID)
        gateway_service.after_execute(order.id)
        assert reload(gateway_service, order).status is Status.PAID
        assert gateway_service.remaining_tokens(USER, "pack") == 9

    def test_subscriptions_take_the_orders_status_and_window(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        [sub] = subscriptions(service, "pack")
        assert (sub.status, sub.starts, sub.expires) == (Status.PAID, order.starts, order.expires)
        assert (order.starts, order.expires) == (START, at(2025, 2, 15))

    @pytest.mark.parametrize(
        ("cycle", "start", "expires"),
        [
            (Cycle.DAILY, at(2025, 2, 28), at(2025, 3, 1)),
            (Cycle.WEEKLY, at(2025, 1, 28), at(2025, 2, 4)),
            (Cycle.BI_WEEKLY, at(2025, 12, 25), at(2026, 1, 8)),
            (Cycle.MONTHLY, at(2025, 1, 31), at(2025, 2, 28)),
            (Cycle.MONTHLY, at(2024, 1, 31), at(2024, 2, 29)),
            (Cycle.MONTHLY, at(2025, 12, 15), at(2026, 1, 15)),
            (Cycle.TRIMESTER, at(2025, 1, 31), at(2025, 4, 30)),
            (Cycle.SEMESTER, at(2025, 1, 31), at(2025, 7, 31)),
            (Cycle.SEMESTER, at(2025, 8, 31), at(2026, 2, 28)),
            (Cycle.YEARLY, at(2024, 2, 29), at(2025, 2, 28)),
            (Cycle.YEARLY, at(2025, 3, 1), at(2026, 3, 1)),
        ],
        ids=lambda v: str(v) if isinstance(v, Cycle) else v.date().isoformat(),
    )
    def test_one_cycle_is_a_calendar_period_from_payment(
        self,
        service: PaymentService,
        manual: ManualPaymentClient,
        clock: FrozenClock,
        cycle: Cycle,
        start: datetime,
        expires: datetime,
    ) -> None:
        clock.set(start)
        order = buy(service, manual, add_offer(service, "pack", cycle=cycle))
        assert (order.starts, order.expires) == (start, expires)

    def test_the_quantity_multiplies_the_cycle_in_one_month_addition(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        clock.set(at(2025, 1, 31))
        order = buy(service, manual, add_offer(service, "pack"), quantity=3)
        assert order.expires == at(2025, 4, 30)

    def test_a_custom_cycle_lasts_its_seconds_times_the_quantity(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        offer = add_offer(service, "pack", cycle=Cycle.CUSTOM, custom_cycle=3600)
        order = buy(service, manual, offer, quantity=2)
        assert order.expires == START + timedelta(hours=2)

    def test_a_once_order_never_expires(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", cycle=Cycle.ONCE))
        assert (order.starts, order.expires) == (START, None)
        group = credits_of(service).offer("pack")
        assert group is not None
        assert group.expires is None

    def test_append_date_chains_monthly_windows_from_their_own_starts(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        clock.set(at(2025, 1, 31))
        offer = add_offer(service, "pack", append_date=True)
        first = buy(service, manual, offer)
        second = buy(service, manual, offer)
        assert (first.starts, first.expires) == (at(2025, 1, 31), at(2025, 2, 28))
        assert (second.starts, second.expires) == (at(2025, 2, 28), at(2025, 3, 28))

    def test_append_date_starts_now_when_the_latest_window_has_ended(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        offer = add_offer(service, "pack", append_date=True, cycle=Cycle.WEEKLY)
        buy(service, manual, offer)
        clock.advance(days=10)
        second = buy(service, manual, offer)
        assert second.starts == START + timedelta(days=10)

    def test_append_date_follows_any_paid_order_of_the_group(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        yearly = add_offer(service, "yearly", group="plan", cycle=Cycle.YEARLY)
        monthly = add_offer(service, "monthly", group="plan", append_date=True)
        buy(service, manual, yearly)
        order = buy(service, manual, monthly)
        assert (order.starts, order.expires) == (at(2026, 1, 15), at(2026, 2, 15))

    def test_without_append_date_a_new_window_starts_now_and_the_group_ends_last(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        yearly = add_offer(service, "yearly", group="plan", cycle=Cycle.YEARLY)
        monthly = add_offer(service, "monthly", group="plan")
        buy(service, manual, yearly)
        clock.advance(days=1)
        order = buy(service, manual, monthly)
        assert order.starts == START + timedelta(days=1)
        group = credits_of(service).offer("plan")
        assert group is not None
        assert (group.starts, group.expires) == (START, at(2026, 1, 15))

    def test_an_explicit_start_is_kept_at_settlement(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        offer = add_offer(service, "pack")
        order = service.create_order(offer.id, USER, starts=at(2025, 3, 31))
        clock.advance(days=1)
        settled = settle(service, manual, order)
        assert (settled.starts, settled.expires) == (at(2025, 3, 31), at(2025, 4, 30))

    def test_an_explicit_start_wins_over_append_date(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        offer = add_offer(service, "pack", append_date=True)
        buy(service, manual, offer)
        order = buy(service, manual, offer, starts=at(2025, 1, 20))
        assert (order.starts, order.expires) == (at(2025, 1, 20), at(2025, 2, 20))

    def test_an_explicit_start_stays_on_a_refused_order(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = service.create_order(add_offer(service, "pack").id, USER, starts=at(2025, 2, 1))
        manual.decline(order.id)
        service.after_execute(order.id)
        stored = reload(service, order)
        assert (stored.status, stored.starts, stored.expires) == (
            Status.REFUSED,
            at(2025, 2, 1),
            None,
        )

    def test_a_pure_subscription_opens_its_group_window_without_a_ledger_line(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        offer = add_offer(service, "plan", kind=OfferKind.SUBSCRIPTION, tokens=None)
        buy(service, manual, offer)
        group = credits_of(service).offer("plan")
        assert group is not None
        assert (group.starts, group.expires, group.tokens) == (START, at(2025, 2, 15), 0)
        assert ledger(service, USER, "plan") == []

    # -- bundles

    def _suite(self, service: PaymentService, *, append_item: bool = False) -> Offer:
        ai = add_offer(service, "ai", tokens=50, cycle=Cycle.WEEKLY)
        support = add_offer(
            service, "support", tokens=5, cycle=Cycle.YEARLY, append_date=append_item
        )
        return add_offer(
            service,
            "suite",
            price="30",
            tokens=10,
            combined_items=[
                CombinedOffer(offer_id=ai.id, offer_group="ai", quantity=2),
                CombinedOffer(offer_id=support.id, offer_group="help"),
            ],
        )

    def test_a_bundle_becomes_paid_child_orders_of_zero_total(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, self._suite(service))
        kids = children(service, order)
        assert sorted(k.offer_group for k in kids) == ["ai", "help"]
        for kid in kids:
            assert service.equals(kid.parent_id, order.id)
            assert (kid.status, kid.total) == (Status.PAID, Decimal(0))
            assert kid.user_id == USER

    def test_bundle_item_tokens_are_item_tokens_times_item_and_root_quantities(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, self._suite(service), quantity=3)
        tokens = {k.offer_group: k.token_count for k in children(service, order)}
        assert tokens == {"ai": 300, "help": 15}
        assert service.remaining_tokens(USER, "ai") == 300
        assert service.remaining_tokens(USER, "help") == 15
        assert service.remaining_tokens(USER, "suite") == 30

    def test_a_bundle_item_without_append_date_shares_the_root_window(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, self._suite(service), quantity=3)
        assert (order.starts, order.expires) == (START, at(2025, 4, 15))
        for kid in children(service, order):
            assert (kid.starts, kid.expires) == (START, at(2025, 4, 15))
        group = credits_of(service).offer("ai")
        assert group is not None
        assert group.expires == at(2025, 4, 15)

    def test_a_bundle_item_with_append_date_chains_in_its_own_group(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        help_desk = add_offer(service, "desk", group="help", cycle=Cycle.YEARLY)
        buy(service, manual, help_desk)
        order = buy(service, manual, self._suite(service, append_item=True), quantity=2)
        [kid] = [k for k in children(service, order) if k.offer_group == "help"]
        assert (kid.starts, kid.expires) == (at(2026, 1, 15), at(2028, 1, 15))
        [item] = [i for i in order.combined_items if i.offer_group == "help"]
        assert (item.starts, item.expires) == (kid.starts, kid.expires)

    def test_a_bundle_item_with_append_date_ignores_the_roots_explicit_start(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        starts = at(2025, 3, 1)
        order = buy(service, manual, self._suite(service, append_item=True), starts=starts)
        kids = {k.offer_group: k for k in children(service, order)}
        assert (kids["help"].starts, kids["help"].expires) == (START, at(2026, 1, 15))
        assert (kids["ai"].starts, kids["ai"].expires) == (starts, at(2025, 4, 1))

    def test_a_bundle_item_cycle_overrides_the_item_offers(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        support = add_offer(service, "support", cycle=Cycle.YEARLY, append_date=True)
        suite = add_offer(
            service,
            "suite",
            price="30",
            combined_items=[
                CombinedOffer(
                    offer_id=support.id, offer_group="help", cycle=Cycle.WEEKLY, quantity=2
                )
            ],
        )
        [kid] = children(service, buy(service, manual, suite))
        assert kid.cycle is Cycle.WEEKLY
        assert kid.expires == START + timedelta(days=14)

    def test_bundle_item_subscriptions_take_the_root_order_id_and_the_item_window(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, self._suite(service, append_item=True))
        [kid] = [k for k in children(service, order) if k.offer_group == "help"]
        [sub] = subscriptions(service, "help")
        assert service.equals(sub.order_id, order.id)
        assert (sub.status, sub.starts, sub.expires) == (Status.PAID, kid.starts, kid.expires)

    def test_a_refused_bundle_creates_no_child_orders(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = service.create_order(self._suite(service).id, USER)
        manual.decline(order.id)
        service.after_execute(order.id)
        assert children(service, order) == []
        assert {s.status for s in credits_of(service).subscriptions} == {Status.REFUSED}


# -- consumption -----------------------------------------------------------------------


class ConsumptionContract(ServiceContract):
    """``tokens_consumed`` / ``consume_tokens`` / ``remaining_tokens`` and idempotency keys."""

    @pytest.fixture
    def funded(self, service: PaymentService, manual: ManualPaymentClient) -> Order:
        """The user holds 10 tokens of group ``pack``."""
        return buy(service, manual, add_offer(service, "pack", price="0", tokens=10))

    def test_tokens_consumed_records_a_consumption_line_and_lowers_the_balance(
        self, service: PaymentService, funded: Order
    ) -> None:
        line = service.tokens_consumed(USER, "pack", 3)
        assert (line.tokens, line.offer_group) == (-3, "pack")
        assert line.reason is LedgerReason.CONSUMPTION
        assert (line.user_id, line.created_at, line.order_id) == (USER, START, None)
        assert service.remaining_tokens(USER, "pack") == 7
        assert ledger(service, USER, "pack")[-1] == line

    def test_tokens_consumed_works_without_any_purchase(self, service: PaymentService) -> None:
        service.tokens_consumed(USER, "api", 4)
        assert service.remaining_tokens(USER, "api") == -4
        group = credits_of(service).offer("api")
        assert group is not None
        assert (group.starts, group.expires, group.tokens) == (START, None, -4)

    def test_tokens_consumed_may_go_below_zero(
        self, service: PaymentService, funded: Order
    ) -> None:
        service.tokens_consumed(USER, "pack", 15)
        assert service.remaining_tokens(USER, "pack") == -5

    def test_consume_tokens_consumes_within_the_balance(
        self, service: PaymentService, funded: Order
    ) -> None:
        line = service.consume_tokens(USER, "pack", 10)
        assert (line.tokens, line.reason) == (-10, LedgerReason.CONSUMPTION)
        assert service.remaining_tokens(USER, "pack") == 0

    def test_consume_tokens_refuses_to_overdraw_and_changes_nothing(
        self, service: PaymentService, funded: Order
    ) -> None:
        before = stored_state(service)
        with pytest.raises(InsufficientCreditsError) as raised:
            service.consume_tokens(USER, "pack", 11)
        assert (raised.value.balance, raised.value.requested) == (10, 11)
        assert stored_state(service) == before

    def test_a_refused_consumption_of_a_user_without_credits_creates_nothing(
        self, service: PaymentService
    ) -> None:
        with pytest.raises(InsufficientCreditsError):
            service.consume_tokens(USER, "api", 1)
        assert service.load_user_credits(USER) is None
        assert ledger(service, USER, "api") == []

    def test_consume_tokens_with_allow_negative_may_overdraw(
        self, service: PaymentService, funded: Order
    ) -> None:
        service.consume_tokens(USER, "pack", 12, allow_negative=True)
        assert service.remaining_tokens(USER, "pack") == -2

    def test_remaining_tokens_of_an_unknown_user_or_group_is_zero(
        self, service: PaymentService, funded: Order
    ) -> None:
        assert service.remaining_tokens("nobody", "pack") == 0
        assert service.remaining_tokens(USER, "other") == 0

    @pytest.mark.parametrize("call", ["tokens_consumed", "consume_tokens"])
    def test_a_retry_with_the_same_key_returns_the_first_line_and_consumes_nothing(
        self, service: PaymentService, funded: Order, call: str
    ) -> None:
        consume = getattr(service, call)
        first = consume(USER, "pack", 4, idempotency_key="req-1")
        again = consume(USER, "pack", 4, idempotency_key="req-1")
        assert service.equals(again.id, first.id)
        assert service.remaining_tokens(USER, "pack") == 6
        assert len(lines(service, USER, "pack", LedgerReason.CONSUMPTION)) == 1

    @pytest.mark.parametrize(
        ("first", "second"),
        [("tokens_consumed", "consume_tokens"), ("consume_tokens", "tokens_consumed")],
    )
    def test_both_calls_share_one_key_space(
        self, service: PaymentService, funded: Order, first: str, second: str
    ) -> None:
        line = getattr(service, first)(USER, "pack", 2, idempotency_key="req-1")
        again = getattr(service, second)(USER, "pack", 2, idempotency_key="req-1")
        assert service.equals(again.id, line.id)
        assert service.remaining_tokens(USER, "pack") == 8

    @pytest.mark.parametrize("call", ["tokens_consumed", "consume_tokens"])
    def test_reusing_a_key_for_another_count_is_a_conflict(
        self, service: PaymentService, funded: Order, call: str
    ) -> None:
        service.tokens_consumed(USER, "pack", 2, idempotency_key="req-1")
        with pytest.raises(IdempotencyConflictError):
            getattr(service, call)(USER, "pack", 3, idempotency_key="req-1")
        assert service.remaining_tokens(USER, "pack") == 8

    @pytest.mark.parametrize("call", ["tokens_consumed", "consume_tokens"])
    def test_reusing_a_key_for_another_group_is_a_conflict(
        self, service: PaymentService, funded: Order, call: str
    ) -> None:
        service.consume_tokens(USER, "pack", 2, idempotency_key="req-1")
        with pytest.raises(IdempotencyConflictError):
            getattr(service, call)(USER, "api", 2, idempotency_key="req-1")
        assert service.remaining_tokens(USER, "api") == 0
        assert service.remaining_tokens(USER, "pack") == 8

    def test_a_refused_consumption_does_not_use_its_key_up(
        self, service: PaymentService, manual: ManualPaymentClient, funded: Order
    ) -> None:
        with pytest.raises(InsufficientCreditsError):
            service.consume_tokens(USER, "pack", 15, idempotency_key="req-1")
        buy(service, manual, add_offer(service, "more", group="pack", price="0", tokens=10))
        line = service.consume_tokens(USER, "pack", 15, idempotency_key="req-1")
        assert line.tokens == -15
        assert service.remaining_tokens(USER, "pack") == 5

    def test_keys_belong_to_one_user(self, service: PaymentService, funded: Order) -> None:
        mine = service.tokens_consumed(USER, "pack", 2, idempotency_key="req-1")
        theirs = service.tokens_consumed("bob", "pack", 2, idempotency_key="req-1")
        assert not service.equals(mine.id, theirs.id)
        assert service.remaining_tokens("bob", "pack") == -2
        assert service.remaining_tokens(USER, "pack") == 8

    def test_the_group_balance_is_the_sum_of_its_ledger_lines(
        self, service: PaymentService, manual: ManualPaymentClient, funded: Order
    ) -> None:
        service.tokens_consumed(USER, "pack", 4)
        service.consume_tokens(USER, "pack", 3)
        buy(service, manual, add_offer(service, "more", group="pack", tokens=6))
        service.tokens_consumed(USER, "pack", 12)
        total = sum(line.tokens for line in ledger(service, USER, "pack"))
        assert service.remaining_tokens(USER, "pack") == total == -3


# -- expiry ----------------------------------------------------------------------------


class ExpiryContract(ServiceContract):
    """``check_for_expired_orders`` and the grant model (SPEC §4)."""

    def test_a_paid_order_is_expired_once_its_expiry_is_reached(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert [str(o.id) for o in report.expired_orders] == [str(order.id)]
        stored = reload(service, order)
        assert (stored.status, stored.history[-1].status) == (Status.EXPIRED, Status.EXPIRED)
        assert [s.status for s in subscriptions(service, "pack")] == [Status.EXPIRED]

    def test_nothing_expires_before_the_expiry(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        clock.set(at(2025, 2, 15) - timedelta(milliseconds=1))
        report = service.check_for_expired_orders(USER)
        assert (report.expired_orders, report.removed_tokens, report.expired) == ([], {}, [])
        assert reload(service, order).status is Status.PAID
        assert service.remaining_tokens(USER, "pack") == 100

    def test_nothing_expires_by_itself_without_the_routine(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        clock.advance(days=90)
        assert reload(service, order).status is Status.PAID
        assert service.remaining_tokens(USER, "pack") == 100

    def test_the_unused_tokens_of_an_expired_grant_are_removed(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        service.tokens_consumed(USER, "pack", 30)
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert report.removed_tokens == {"pack": 70}
        [line] = lines(service, USER, "pack", LedgerReason.EXPIRY)
        assert line.tokens == -70
        assert service.equals(line.order_id, order.id)
        assert service.remaining_tokens(USER, "pack") == 0

    def test_the_soonest_expiring_grant_is_drawn_first_even_if_bought_last(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "yearly", group="pack", cycle=Cycle.YEARLY))
        buy(service, manual, add_offer(service, "monthly", group="pack"))
        service.tokens_consumed(USER, "pack", 60)
        clock.set(at(2025, 2, 15))
        assert service.check_for_expired_orders(USER).removed_tokens == {"pack": 40}
        assert service.remaining_tokens(USER, "pack") == 100

    def test_a_drained_grant_expires_without_removing_tokens_of_others(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "monthly", group="pack"))
        buy(service, manual, add_offer(service, "yearly", group="pack", cycle=Cycle.YEARLY))
        service.consume_tokens(USER, "pack", 150)
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert len(report.expired_orders) == 1
        assert report.removed_tokens == {}
        assert lines(service, USER, "pack", LedgerReason.EXPIRY) == []
        assert service.remaining_tokens(USER, "pack") == 50

    def test_never_expiring_grants_are_drawn_last(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "once", group="pack", cycle=Cycle.ONCE))
        buy(service, manual, add_offer(service, "monthly", group="pack"))
        service.tokens_consumed(USER, "pack", 50)
        clock.set(at(2025, 2, 15))
        assert service.check_for_expired_orders(USER).removed_tokens == {"pack": 50}
        assert service.remaining_tokens(USER, "pack") == 100

    def test_grants_expiring_together_are_drawn_older_first(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        offer = add_offer(service, "pack")
        older = buy(service, manual, offer)
        newer = buy(service, manual, offer)
        assert older.expires == newer.expires
        service.tokens_consumed(USER, "pack", 30)
        clock.set(at(2025, 2, 15))
        service.check_for_expired_orders(USER)
        removed = {
            str(line.order_id): line.tokens
            for line in lines(service, USER, "pack", LedgerReason.EXPIRY)
        }
        assert removed == {str(older.id): -70, str(newer.id): -100}

    def test_debt_is_repaid_by_the_next_grant(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        service.tokens_consumed(USER, "pack", 30)
        buy(service, manual, add_offer(service, "pack"))
        assert service.remaining_tokens(USER, "pack") == 70
        clock.set(at(2025, 2, 15))
        assert service.check_for_expired_orders(USER).removed_tokens == {"pack": 70}
        assert service.remaining_tokens(USER, "pack") == 0

    def test_an_order_is_expired_and_its_tokens_removed_exactly_once(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "pack", cycle=Cycle.ONCE))
        buy(service, manual, add_offer(service, "monthly", group="pack"))
        clock.set(at(2025, 2, 15))
        service.check_for_expired_orders(USER)
        clock.advance(days=1)
        again = service.check_for_expired_orders(USER)
        assert (again.expired_orders, again.removed_tokens) == ([], {})
        assert len(lines(service, USER, "pack", LedgerReason.EXPIRY)) == 1
        assert service.remaining_tokens(USER, "pack") == 100

    def test_a_spent_expired_group_is_removed_and_listed(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "pack"))
        service.tokens_consumed(USER, "pack", 100)
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert [g.offer_group for g in report.expired] == ["pack"]
        assert report.removed_tokens == {}
        assert lines(service, USER, "pack", LedgerReason.EXPIRY) == []
        assert credits_of(service).offer("pack") is None

    def test_a_group_emptied_by_the_expiry_is_removed(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "pack"))
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert [g.offer_group for g in report.expired] == ["pack"]
        assert credits_of(service).offer("pack") is None

    def test_debt_keeps_an_expired_group(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "pack"))
        service.tokens_consumed(USER, "pack", 130)
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert (report.removed_tokens, report.expired) == ({}, [])
        group = credits_of(service).offer("pack")
        assert group is not None
        assert group.tokens == -30

    def test_a_group_with_another_live_order_is_kept(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "monthly", group="pack"))
        buy(service, manual, add_offer(service, "yearly", group="pack", cycle=Cycle.YEARLY))
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert report.expired == []
        assert service.remaining_tokens(USER, "pack") == 100

    def test_a_pure_subscription_group_is_removed_when_its_window_ends(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "plan", tokens=None))
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert [g.offer_group for g in report.expired] == ["plan"]
        assert report.removed_tokens == {}

    def test_a_group_of_consumption_alone_is_never_removed(
        self, service: PaymentService, clock: FrozenClock
    ) -> None:
        service.tokens_consumed(USER, "api", 1)
        service.tokens_consumed(USER, "api", 1)
        clock.advance(days=400)
        assert service.check_for_expired_orders(USER).expired == []
        assert service.remaining_tokens(USER, "api") == -2

    def test_bundle_items_expire_with_their_own_windows(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        item = add_offer(service, "ai", tokens=50, cycle=Cycle.WEEKLY, append_date=True)
        suite = add_offer(
            service,
            "suite",
            price="0",
            tokens=None,
            combined_items=[CombinedOffer(offer_id=item.id, offer_group="ai")],
        )
        order = buy(service, manual, suite)
        service.tokens_consumed(USER, "ai", 20)
        clock.advance(days=7)
        report = service.check_for_expired_orders(USER)
        assert [o.offer_group for o in report.expired_orders] == ["ai"]
        assert report.removed_tokens == {"ai": 30}
        assert reload(service, order).status is Status.PAID

    def test_expiring_a_bundle_keeps_the_item_subscription_with_a_later_window(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        item = add_offer(service, "ai", tokens=50, cycle=Cycle.YEARLY, append_date=True)
        suite = add_offer(
            service,
            "suite",
            price="0",
            tokens=None,
            combined_items=[CombinedOffer(offer_id=item.id, offer_group="ai")],
        )
        add_offer(service, "vip", unlocked_by=["ai"])
        buy(service, manual, suite)
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert [o.offer_group for o in report.expired_orders] == ["suite"]
        assert [s.status for s in subscriptions(service, "suite")] == [Status.EXPIRED]
        assert [s.status for s in subscriptions(service, "ai")] == [Status.PAID]
        assert "vip" in names(service.load_offers(USER))

    def test_groups_expiring_within_warn_before_are_warned(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "pack"))
        service.tokens_consumed(USER, "pack", 25)
        clock.set(at(2025, 2, 10))
        report = service.check_for_expired_orders(USER, warn_before=timedelta(days=7))
        [warning] = [w for w in report.warnings if w.reason == "expiring"]
        assert (warning.offer_group, warning.grant_id) == ("pack", None)
        assert (warning.expires, warning.tokens) == (at(2025, 2, 15), 75)

    def test_groups_expiring_after_warn_before_are_not_warned(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "pack"))
        clock.set(at(2025, 2, 10))
        assert service.check_for_expired_orders(USER, warn_before=timedelta(days=3)).warnings == []
        assert service.check_for_expired_orders(USER).warnings == []

    def test_never_expiring_groups_are_not_warned_as_expiring(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        buy(service, manual, add_offer(service, "pack", cycle=Cycle.ONCE))
        report = service.check_for_expired_orders(USER, warn_before=timedelta(days=3650))
        assert report.warnings == []

    @pytest.mark.parametrize(("consumed", "minimum"), [(95, 5), (100, 0), (130, 0), (60, 50)])
    def test_balances_at_or_below_their_minimum_are_warned(
        self,
        service: PaymentService,
        manual: ManualPaymentClient,
        consumed: int,
        minimum: int,
    ) -> None:
        buy(service, manual, add_offer(service, "pack", cycle=Cycle.ONCE))
        service.tokens_consumed(USER, "pack", consumed)
        report = service.check_for_expired_orders(USER, low={"pack": minimum})
        [warning] = report.warnings
        assert (warning.offer_group, warning.reason, warning.tokens) == (
            "pack",
            "low_balance",
            100 - consumed,
        )

    def test_balances_above_their_minimum_are_not_warned(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        buy(service, manual, add_offer(service, "pack"))
        assert service.check_for_expired_orders(USER, low={"pack": 99}).warnings == []

    def test_groups_the_user_does_not_have_are_not_warned(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        buy(service, manual, add_offer(service, "pack"))
        assert service.check_for_expired_orders(USER, low={"other": 10}).warnings == []

    def test_removed_tokens_list_only_groups_where_tokens_were_removed(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "kept"))
        buy(service, manual, add_offer(service, "spent"))
        service.tokens_consumed(USER, "spent", 100)
        clock.set(at(2025, 2, 15))
        report = service.check_for_expired_orders(USER)
        assert len(report.expired_orders) == 2
        assert report.removed_tokens == {"kept": 100}

    def test_checking_an_unknown_user_reports_nothing_and_stores_nothing(
        self, service: PaymentService
    ) -> None:
        report = service.check_for_expired_orders("nobody", timedelta(days=1), {"pack": 5})
        assert (report.expired_orders, report.removed_tokens, report.warnings) == ([], {}, [])
        assert service.load_user_credits("nobody") is None


# -- webhooks and refunds --------------------------------------------------------------


class WebhookContract(ServiceContract):
    """``handle_webhook`` with the scripted :class:`FakePaymentClient`."""

    @pytest.fixture
    def pending(self, gateway_service: PaymentService) -> Order:
        """A pending order of 10 tokens of group ``pack``."""
        return gateway_service.create_order(add_offer(gateway_service, "pack", tokens=10).id, USER)

    def test_a_success_event_settles_the_order_of_its_intent(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        result = gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        )
        assert (result.handled, result.duplicate) == (True, False)
        assert result.order is not None
        assert result.order.status is Status.PAID
        assert reload(gateway_service, pending).status is Status.PAID
        assert gateway_service.remaining_tokens(USER, "pack") == 10

    @pytest.mark.parametrize(
        "kind", [WebhookEventKind.PAYMENT_FAILED, WebhookEventKind.PAYMENT_CANCELED]
    )
    def test_a_failure_event_marks_the_order_refused(
        self,
        gateway_service: PaymentService,
        gateway: FakePaymentClient,
        pending: Order,
        kind: WebhookEventKind,
    ) -> None:
        result = gateway_service.handle_webhook(*gateway.event(kind, pending.id))
        assert result.handled
        assert reload(gateway_service, pending).status is Status.REFUSED
        assert gateway_service.remaining_tokens(USER, "pack") == 0

    def test_a_replayed_event_changes_nothing(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        event = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        gateway_service.handle_webhook(*event)
        before = stored_state(gateway_service)
        again = gateway_service.handle_webhook(*event)
        assert again.duplicate
        assert stored_state(gateway_service) == before

    def test_a_second_success_event_for_a_paid_order_changes_nothing(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        )
        before = stored_state(gateway_service)
        gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        )
        assert stored_state(gateway_service) == before

    def test_a_failure_event_after_the_payment_changes_nothing(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        )
        before = stored_state(gateway_service)
        gateway_service.handle_webhook(*gateway.event(WebhookEventKind.PAYMENT_FAILED, pending.id))
        assert stored_state(gateway_service) == before

    def test_an_unknown_event_type_is_acknowledged_and_ignored(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        before = stored_state(gateway_service)
        result = gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.OTHER, pending.id, event_type="customer.created")
        )
        assert (result.event_type, result.handled) == ("customer.created", False)
        assert stored_state(gateway_service) == before

    def test_an_event_about_an_unknown_intent_is_acknowledged_and_ignored(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        before = stored_state(gateway_service)
        result = gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.REFUNDED, payment_intent_id="pi_elsewhere")
        )
        assert not result.handled
        assert stored_state(gateway_service) == before

    def test_a_success_on_a_superseded_intent_does_not_settle_the_order(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        gateway_service.pay_order(pending.id)
        assert pending.payment_intent_id is not None
        gateway_service.handle_webhook(
            *gateway.event(
                WebhookEventKind.PAYMENT_SUCCEEDED, payment_intent_id=pending.payment_intent_id
            )
        )
        assert reload(gateway_service, pending).status is Status.PENDING

    @pytest.mark.parametrize("signature", [None, "", "0" * 64, "not-hex"])
    def test_a_bad_signature_is_a_payment_error_and_changes_nothing(
        self,
        gateway_service: PaymentService,
        gateway: FakePaymentClient,
        pending: Order,
        signature: str | None,
    ) -> None:
        payload, _ = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        before = stored_state(gateway_service)
        with pytest.raises(PaymentError):
            gateway_service.handle_webhook(payload, signature)
        assert stored_state(gateway_service) == before

    def test_a_tampered_payload_is_a_payment_error_and_changes_nothing(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        payload, signature = gateway.event(WebhookEventKind.PAYMENT_FAILED, pending.id)
        before = stored_state(gateway_service)
        forged = payload.replace(b"payment_failed", b"payment_succeeded")
        with pytest.raises(PaymentError):
            gateway_service.handle_webhook(forged, signature)
        assert stored_state(gateway_service) == before

    def test_a_success_event_settles_a_refused_order(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        gateway_service.handle_webhook(*gateway.event(WebhookEventKind.PAYMENT_FAILED, pending.id))
        gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        )
        assert reload(gateway_service, pending).status is Status.PAID
        assert gateway_service.remaining_tokens(USER, "pack") == 10

    def test_a_refund_event_revokes_unused_tokens_and_marks_the_order_refunded(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        )
        gateway_service.tokens_consumed(USER, "pack", 4)
        result = gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.REFUNDED, pending.id)
        )
        assert result.handled
        assert reload(gateway_service, pending).status is Status.REFUNDED
        [line] = lines(gateway_service, USER, "pack", LedgerReason.REFUND)
        assert line.tokens == -6
        assert gateway_service.remaining_tokens(USER, "pack") == 0

    def test_a_replayed_refund_event_revokes_once(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        )
        refund = gateway.event(WebhookEventKind.REFUNDED, pending.id)
        gateway_service.handle_webhook(*refund)
        gateway_service.handle_webhook(*refund)
        gateway_service.handle_webhook(*gateway.event(WebhookEventKind.REFUNDED, pending.id))
        assert len(lines(gateway_service, USER, "pack", LedgerReason.REFUND)) == 1
        assert gateway_service.remaining_tokens(USER, "pack") == 0

    def test_an_event_whose_application_fails_can_be_delivered_again(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, pending: Order
    ) -> None:
        event = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, pending.id)
        gateway.fail_next("after_payment_executed")
        with pytest.raises(PaymentError):
            gateway_service.handle_webhook(*event)
        assert reload(gateway_service, pending).status is Status.PENDING
        result = gateway_service.handle_webhook(*event)
        assert (result.handled, result.duplicate) == (True, False)
        assert gateway_service.remaining_tokens(USER, "pack") == 10


class RefundContract(ServiceContract):
    """``refund``: through the gateway, tokens revoked, bundle items included."""

    def test_a_refund_marks_the_order_refunded_and_revokes_its_unused_tokens(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = buy(gateway_service, gateway, add_offer(gateway_service, "pack", tokens=10))
        gateway_service.consume_tokens(USER, "pack", 3)
        refunded = gateway_service.refund(order.id)
        assert refunded.status is Status.REFUNDED
        assert reload(gateway_service, order).history[-1].status is Status.REFUNDED
        [line] = lines(gateway_service, USER, "pack", LedgerReason.REFUND)
        assert (line.tokens, str(line.order_id)) == (-7, str(order.id))
        assert gateway_service.remaining_tokens(USER, "pack") == 0
        assert [s.status for s in subscriptions(gateway_service, "pack")] == [Status.REFUNDED]

    def test_a_refund_goes_through_the_payment_client(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = buy(gateway_service, gateway, add_offer(gateway_service, "pack"))
        gateway_service.refund(order.id)
        [call] = gateway.calls_to("refund")
        assert str(call.order_id) == str(order.id)
        intent = gateway.latest_intent(order.id)
        assert intent is not None
        assert intent.refunded

    def test_a_refused_refund_at_the_gateway_changes_nothing(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = buy(gateway_service, gateway, add_offer(gateway_service, "pack"))
        gateway.fail_next("refund")
        before = stored_state(gateway_service)
        with pytest.raises(PaymentError):
            gateway_service.refund(order.id)
        assert stored_state(gateway_service) == before

    def test_refunding_twice_is_a_duplicate_attempt(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        service.refund(order.id)
        with pytest.raises(InvalidPaymentError) as raised:
            service.refund(order.id)
        assert raised.value.code is PaymentErrorCode.DUPLICATE_ATTEMPT

    def test_a_pending_order_cannot_be_refunded(self, service: PaymentService) -> None:
        order = service.create_order(add_offer(service, "pack").id, USER)
        before = stored_state(service)
        with pytest.raises(InvalidPaymentError) as raised:
            service.refund(order.id)
        assert raised.value.code is PaymentErrorCode.VALIDATION
        assert stored_state(service) == before

    def test_refunding_a_bundle_refunds_its_items_and_revokes_their_tokens(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        ai = add_offer(service, "ai", tokens=50)
        suite = add_offer(
            service,
            "suite",
            tokens=5,
            combined_items=[CombinedOffer(offer_id=ai.id, offer_group="ai")],
        )
        order = buy(service, manual, suite)
        service.tokens_consumed(USER, "ai", 20)
        service.refund(order.id)
        assert [k.status for k in children(service, order)] == [Status.REFUNDED]
        assert service.remaining_tokens(USER, "ai") == 0
        assert service.remaining_tokens(USER, "suite") == 0
        assert {s.status for s in credits_of(service).subscriptions} == {Status.REFUNDED}

    def test_a_bundle_item_cannot_be_refunded_alone(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        ai = add_offer(service, "ai", tokens=50)
        suite = add_offer(
            service, "suite", combined_items=[CombinedOffer(offer_id=ai.id, offer_group="ai")]
        )
        [kid] = children(service, buy(service, manual, suite))
        with pytest.raises(InvalidPaymentError):
            service.refund(kid.id)
        assert service.remaining_tokens(USER, "ai") == 50

    def test_refunding_an_expired_order_removes_nothing_more(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", cycle=Cycle.WEEKLY))
        buy(service, manual, add_offer(service, "forever", group="pack", cycle=Cycle.ONCE))
        service.tokens_consumed(USER, "pack", 30)
        clock.advance(days=7)
        service.check_for_expired_orders(USER)
        service.refund(order.id)
        assert reload(service, order).status is Status.REFUNDED
        assert lines(service, USER, "pack", LedgerReason.REFUND) == []
        assert service.remaining_tokens(USER, "pack") == 100

    def test_a_refunded_subscription_unlocks_nothing(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        plan = add_offer(service, "plan")
        add_offer(service, "vip", unlocked_by=["plan"])
        order = buy(service, manual, plan)
        service.refund(order.id)
        assert names(service.load_offers(USER)) == ["plan"]

    def test_a_refund_shrinks_the_group_window_to_the_remaining_orders(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        buy(service, manual, add_offer(service, "monthly", group="plan"))
        yearly_offer = add_offer(service, "yearly", group="plan", cycle=Cycle.YEARLY)
        yearly = buy(service, manual, yearly_offer)
        service.refund(yearly.id)
        group = credits_of(service).offer("plan")
        assert group is not None
        assert group.expires == at(2025, 2, 15)
        follow = buy(service, manual, add_offer(service, "next", group="plan", append_date=True))
        assert follow.starts == at(2025, 2, 15)

    def test_refunding_the_only_order_closes_the_group_and_expiry_drops_it(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", cycle=Cycle.YEARLY))
        service.refund(order.id)
        group = credits_of(service).offer("pack")
        assert group is not None
        assert (group.tokens, group.expires) == (0, clock())
        clock.advance(seconds=1)
        report = service.check_for_expired_orders(USER)
        assert [o.offer_group for o in report.expired] == ["pack"]
        assert credits_of(service).offer("pack") is None


# -- bad input -------------------------------------------------------------------------


BAD_COUNTS = [0, -3, True, False, 2.0, "3", Decimal(3), None, 2**63]
BAD_QUANTITIES = [0, -1, True, False, 1.5, "2", Decimal(2)]


class BadInputContract(ServiceContract):
    """SPEC §6: bad input raises the SPEC's error type and changes nothing stored."""

    @pytest.fixture
    def shop(self, service: PaymentService, manual: ManualPaymentClient) -> dict[str, Any]:
        """Some data to keep: a paid order with a consumption, a pending order, a bundle."""
        pack = add_offer(service, "pack", price="5", tokens=10, quantity_limit=3, currency="eur")
        paid = buy(service, manual, pack)
        service.tokens_consumed(USER, "pack", 2, idempotency_key="req-1")
        pending = service.create_order(pack.id, USER)
        return {"pack": pack, "paid": paid, "pending": pending}

    def test_an_unknown_offer_is_not_found(
        self, service: PaymentService, shop: dict[str, Any]
    ) -> None:
        missing = _missing_id(service, shop["pack"].id)
        before = stored_state(service)
        with pytest.raises(EntityNotFoundError):
            service.create_order(missing, USER)
        assert stored_state(service) == before

    @pytest.mark.parametrize("method", ["pay_order", "after_execute", "refund"])
    def test_an_unknown_order_is_not_found(
        self, service: PaymentService, shop: dict[str, Any], method: str
    ) -> None:
        missing = _missing_id(service, shop["paid"].id)
        before = stored_state(service)
        with pytest.raises(EntityNotFoundError):
            getattr(service, method)(missing)
        assert stored_state(service) == before

    def test_a_bundle_of_a_missing_offer_is_not_found(
        self, service: PaymentService, shop: dict[str, Any]
    ) -> None:
        bundle = add_offer(
            service,
            "bundle",
            combined_items=[
                CombinedOffer(offer_id=shop["pack"].id, offer_group="pack"),
                CombinedOffer(offer_id=_missing_id(service, shop["pack"].id), offer_group="x"),
            ],
        )
        before = stored_state(service)
        with pytest.raises(EntityNotFoundError):
            service.create_order(bundle.id, USER)
        assert stored_state(service) == before

    @pytest.mark.parametrize("quantity", BAD_QUANTITIES, ids=repr)
    def test_a_quantity_that_is_not_a_positive_int_is_refused(
        self, service: PaymentService, shop: dict[str, Any], quantity: Any
    ) -> None:
        before = stored_state(service)
        with pytest.raises(InvalidOrderError):
            service.create_order(shop["pack"].id, USER, quantity)
        assert stored_state(service) == before

    def test_a_quantity_above_the_limit_is_refused(
        self, service: PaymentService, shop: dict[str, Any]
    ) -> None:
        before = stored_state(service)
        with pytest.raises(InvalidOrderError):
            service.create_order(shop["pack"].id, USER, 4)
        assert stored_state(service) == before

    @pytest.mark.parametrize("currency", ["usd", "EURO", 978])
    def test_a_currency_other_than_the_offers_is_refused(
        self, service: PaymentService, shop: dict[str, Any], currency: Any
    ) -> None:
        before = stored_state(service)
        with pytest.raises(InvalidOrderError):
            service.create_order(shop["pack"].id, USER, currency=currency)
        assert stored_state(service) == before

    @pytest.mark.parametrize(
        "starts",
        [at(2025, 3, 1).replace(tzinfo=None), START, START - timedelta(days=1), "2025-03-01"],
        ids=["naive", "now", "past", "str"],
    )
    def test_a_start_that_is_not_an_aware_future_datetime_is_refused(
        self, service: PaymentService, shop: dict[str, Any], starts: Any
    ) -> None:
        before = stored_state(service)
        with pytest.raises(InvalidOrderError):
            service.create_order(shop["pack"].id, USER, starts=starts)
        assert stored_state(service) == before

    @pytest.mark.parametrize("user", [None, ""])
    def test_an_order_without_a_user_is_refused(
        self, service: PaymentService, shop: dict[str, Any], user: Any
    ) -> None:
        before = stored_state(service)
        with pytest.raises(InvalidOrderError):
            service.create_order(shop["pack"].id, user)
        assert stored_state(service) == before

    @pytest.mark.parametrize("count", BAD_COUNTS, ids=repr)
    @pytest.mark.parametrize("call", ["tokens_consumed", "consume_tokens"])
    def test_a_count_that_is_not_a_positive_int_is_refused(
        self, service: PaymentService, shop: dict[str, Any], call: str, count: Any
    ) -> None:
        before = stored_state(service)
        with pytest.raises(ValueError, match="count"):
            getattr(service, call)(USER, "pack", count)
        assert stored_state(service) == before

    @pytest.mark.parametrize(
        "fields",
        [{"token_count": 2**63}, {"quantity_limit": 2**64}, {"weight": -(2**63) - 1}],
        ids=["tokens", "limit", "weight"],
    )
    def test_integers_beyond_64_bits_are_refused_before_anything_is_stored(
        self, service: PaymentService, shop: dict[str, Any], fields: dict[str, int]
    ) -> None:
        before = stored_state(service)
        with pytest.raises(InvalidOfferError, match="int"):
            add_offer(service, "huge", tokens=1, **dict[str, Any](fields))
        offers = service.get_dao_factory().get_offer_dao()
        with pytest.raises(InvalidOfferError):
            offers.update_by_id(shop["pack"].id, fields)
        assert stored_state(service) == before

    def test_an_order_making_more_tokens_than_64_bits_hold_is_refused(
        self, service: PaymentService, shop: dict[str, Any]
    ) -> None:
        big = add_offer(service, "big", tokens=2**62)
        before = stored_state(service)
        with pytest.raises(InvalidOrderError, match="more tokens"):
            service.create_order(big.id, USER, 2)
        assert stored_state(service) == before

    @pytest.mark.parametrize(
        ("group", "key"), [("", None), (None, None), ("pack", ""), ("pack", 7)]
    )
    @pytest.mark.parametrize("call", ["tokens_consumed", "consume_tokens"])
    def test_a_consumption_needs_a_group_and_a_str_key(
        self, service: PaymentService, shop: dict[str, Any], call: str, group: Any, key: Any
    ) -> None:
        before = stored_state(service)
        with pytest.raises(ValueError, match=r"offer_group|idempotency_key"):
            getattr(service, call)(USER, group, 1, idempotency_key=key)
        assert stored_state(service) == before

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"warn_before": timedelta(days=-1)},
            {"warn_before": 7},
            {"low": {"pack": 1.5}},
            {"low": {"pack": True}},
        ],
        ids=["negative-warn", "int-warn", "float-low", "bool-low"],
    )
    def test_bad_expiry_options_are_refused_before_anything_expires(
        self,
        service: PaymentService,
        shop: dict[str, Any],
        clock: FrozenClock,
        kwargs: dict[str, Any],
    ) -> None:
        clock.advance(days=60)
        before = stored_state(service)
        with pytest.raises(ValueError, match=r"warn_before|low"):
            service.check_for_expired_orders(USER, **kwargs)
        assert stored_state(service) == before

    @pytest.mark.parametrize(
        "fields",
        [
            {"cycle": "fortnightly"},
            {"cycle": Cycle.CUSTOM},
            {"cycle": Cycle.CUSTOM, "custom_cycle": 0},
            {"cycle": Cycle.MONTHLY, "custom_cycle": 60},
            {"cycle": Cycle.MONTHLY, "price": 9.99},
            {"cycle": Cycle.MONTHLY, "token_count": -1},
        ],
        ids=[
            "unknown-cycle",
            "custom-without-seconds",
            "custom-zero",
            "seconds-not-custom",
            "float-price",
            "negative-tokens",
        ],
    )
    def test_a_malformed_offer_cannot_be_built(
        self, service: PaymentService, shop: dict[str, Any], fields: dict[str, Any]
    ) -> None:
        before = stored_state(service)
        base: dict[str, Any] = {
            "name": "bad",
            "kind": OfferKind.TOKENS,
            "offer_group": "bad",
            "cycle": Cycle.MONTHLY,
            "price": Decimal(1),
        }
        with pytest.raises(InvalidOfferError):
            service.get_dao_factory().get_offer_dao().create(Offer(**{**base, **fields}))
        assert stored_state(service) == before

    @pytest.mark.parametrize(
        "fields",
        [{"cycle": "fortnightly"}, {"cycle": Cycle.CUSTOM}, {"quantity": 0}],
        ids=["unknown-cycle", "custom-without-seconds", "zero-quantity"],
    )
    def test_a_malformed_bundle_item_cannot_be_built(
        self, service: PaymentService, shop: dict[str, Any], fields: dict[str, Any]
    ) -> None:
        with pytest.raises(InvalidOfferError):
            CombinedOffer(offer_id=shop["pack"].id, offer_group="pack", **fields)

    def test_a_clock_reading_naive_times_is_refused_before_anything_is_stored(
        self, dao_factory: DaoFactory, manual: ManualPaymentClient, shop: dict[str, Any]
    ) -> None:
        naive = PaymentService(dao_factory, manual, clock=lambda: START.replace(tzinfo=None))
        before = stored_state(naive)
        with pytest.raises(ValueError, match="naive"):
            naive.create_order(shop["pack"].id, USER)
        with pytest.raises(ValueError, match="naive"):
            naive.tokens_consumed(USER, "pack", 1)
        assert stored_state(naive) == before

    def test_an_order_the_gateway_cannot_take_is_refused_before_anything_is_stored(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        offer = add_offer(gateway_service, "pack", price="0.001")
        gateway.fail_next("check_order", InvalidPaymentError("0.001 usd is not payable"))
        before = stored_state(gateway_service)
        with pytest.raises(InvalidPaymentError):
            gateway_service.create_order(offer.id, USER)
        assert stored_state(gateway_service) == before
        assert gateway.calls_to("create_payment_intent") == []

    def test_env_tags_given_as_one_str_are_refused(self, service: PaymentService) -> None:
        with pytest.raises(ValueError, match="env_tags"):
            service.load_offers(env_tags="web")


def _missing_id(service: PaymentService, like: Any) -> Any:
    """An id of the same form as ``like`` that matches nothing: the id of a deleted offer."""
    offers = service.get_dao_factory().get_offer_dao()
    ghost = offers.create(
        Offer(
            name="ghost",
            kind=OfferKind.TOKENS,
            offer_group="ghost",
            cycle=Cycle.ONCE,
            price=Decimal(0),
        )
    )
    offers.delete_by_id(ghost.id)
    assert type(ghost.id) is type(like)
    return ghost.id


# -- concurrency -----------------------------------------------------------------------


class ConcurrencyContract(ServiceContract):
    """Threads racing on one backend (bounded: a few threads, a few calls each)."""

    @pytest.fixture
    def funded(self, service: PaymentService, manual: ManualPaymentClient) -> Order:
        """The user holds 12 never-expiring tokens of group ``pack``."""
        return buy(service, manual, add_offer(service, "pack", price="0", tokens=12))

    def test_concurrent_consumptions_give_the_exact_balance(
        self, service: PaymentService, funded: Order
    ) -> None:
        def consume() -> None:
            for _ in range(4):
                service.tokens_consumed(USER, "pack", 1)

        assert failures(race([consume] * THREADS)) == []
        assert service.remaining_tokens(USER, "pack") == 12 - 4 * THREADS
        assert sum(line.tokens for line in ledger(service, USER, "pack")) == 12 - 4 * THREADS

    def test_concurrent_safe_consumptions_never_overdraw(
        self, service: PaymentService, funded: Order
    ) -> None:
        def consume() -> int:
            done = 0
            for _ in range(4):
                try:
                    service.consume_tokens(USER, "pack", 1)
                    done += 1
                except InsufficientCreditsError:
                    pass
            return done

        results = race([consume] * THREADS)
        assert failures(results) == []
        assert sum(r for r in results if isinstance(r, int)) == 12
        assert service.remaining_tokens(USER, "pack") == 0
        assert sum(line.tokens for line in ledger(service, USER, "pack")) == 0

    def test_concurrent_settlements_of_one_order_grant_once(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = service.create_order(add_offer(service, "pack", tokens=10).id, USER)
        manual.approve(order.id)
        results = race([lambda: service.after_execute(order.id)] * 4)
        refused = failures(results)
        # A racer finding the order paid but its grant not written yet completes it (as a
        # retry would) and succeeds; one finding it complete is refused as a duplicate.
        assert len(refused) < 4
        assert all(
            isinstance(e, InvalidPaymentError) and e.code is PaymentErrorCode.DUPLICATE_ATTEMPT
            for e in refused
        )
        assert service.remaining_tokens(USER, "pack") == 10
        assert len(lines(service, USER, "pack", LedgerReason.PURCHASE)) == 1

    def test_concurrent_settlements_of_a_bundle_create_its_items_once(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        ai = add_offer(service, "ai", tokens=5)
        suite = add_offer(
            service, "suite", combined_items=[CombinedOffer(offer_id=ai.id, offer_group="ai")]
        )
        order = service.create_order(suite.id, USER)
        manual.approve(order.id)
        race([lambda: service.after_execute(order.id)] * 3)
        assert len(children(service, order)) == 1
        assert service.remaining_tokens(USER, "ai") == 5

    def test_concurrent_first_orders_of_a_user_create_one_user_credits(
        self, service: PaymentService
    ) -> None:
        offer = add_offer(service, "pack")
        results = race([lambda: service.create_order(offer.id, "newcomer")] * THREADS)
        assert failures(results) == []
        assert registrations(service, "newcomer") == 1
        assert len(credits_of(service, "newcomer").subscriptions) == THREADS

    def test_concurrent_expiry_checks_remove_tokens_once(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", tokens=10))
        service.tokens_consumed(USER, "pack", 3)
        clock.set(at(2025, 2, 15))
        results = race([lambda: service.check_for_expired_orders(USER)] * 4)
        reports = [r for r in results if not isinstance(r, Exception)]
        assert failures(results) == []
        assert sum(r.removed_tokens.get("pack", 0) for r in reports) == 7
        assert sum(len(r.expired_orders) for r in reports) == 1
        assert len(lines(service, USER, "pack", LedgerReason.EXPIRY)) == 1
        assert reload(service, order).status is Status.EXPIRED
        assert service.remaining_tokens(USER, "pack") == 0

    @pytest.mark.parametrize("count", [3, 12], ids=["some", "whole-balance"])
    def test_racing_retries_with_one_key_consume_once(
        self, service: PaymentService, funded: Order, count: int
    ) -> None:
        def retry(call: str) -> Callable[[], TokenTimetable]:
            return lambda: getattr(service, call)(USER, "pack", count, idempotency_key="req-1")

        calls = [retry("consume_tokens")] * 4 + [retry("tokens_consumed")] * 2
        results = race(calls)
        assert failures(results) == []
        assert len({str(r.id) for r in results if isinstance(r, TokenTimetable)}) == 1
        assert service.remaining_tokens(USER, "pack") == 12 - count
        assert len(lines(service, USER, "pack", LedgerReason.CONSUMPTION)) == 1

    def test_concurrent_settlements_with_append_date_get_consecutive_windows(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        offer = add_offer(service, "pack", append_date=True, cycle=Cycle.WEEKLY)
        orders = [service.create_order(offer.id, USER) for _ in range(3)]
        for order in orders:
            manual.approve(order.id)
        settlements = [functools.partial(service.after_execute, o.id) for o in orders]
        assert failures(race(settlements)) == []
        windows = sorted((o.starts, o.expires) for o in (reload(service, o) for o in orders))
        assert [w[0] for w in windows] == [START + timedelta(days=7 * i) for i in range(3)]
        assert [w[1] for w in windows] == [START + timedelta(days=7 * i) for i in range(1, 4)]

    def test_one_webhook_delivered_concurrently_is_applied_once(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = gateway_service.create_order(add_offer(gateway_service, "pack", tokens=8).id, USER)
        event = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, order.id)
        results = race([lambda: gateway_service.handle_webhook(*event)] * 4)
        assert failures(results) == []
        assert gateway_service.remaining_tokens(USER, "pack") == 8
        assert len(lines(gateway_service, USER, "pack", LedgerReason.PURCHASE)) == 1
