"""Contract tests of the storage interfaces of :mod:`usercredits.dao`.

One class per DAO interface, each checking the guarantees its docstrings state,
through the public DAO methods only. A backend runs them by subclassing each
class once (``class TestMyOfferDao(OfferDaoContract)``) and implementing
``make_dao_factory``; the classes here are not named ``Test*`` so that pytest
collects only those subclasses. Every test stores a handful of entities at most:
some backends (mongomock) scan whole collections.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

import pytest

from usercredits.dao import Dao, DaoFactory
from usercredits.errors import DuplicateEntityError, EntityNotFoundError
from usercredits.models import (
    ActivatedOffer,
    CombinedOffer,
    CombinedOrder,
    Cycle,
    LedgerReason,
    Offer,
    OfferKind,
    Order,
    OrderStatus,
    Status,
    Subscription,
    TokenTimetable,
    UserCredits,
    UserId,
)
from usercredits.testing.base import BackendContract

__all__ = [
    "OfferDaoContract",
    "OrderDaoContract",
    "TokenTimetableDaoContract",
    "UserCreditsDaoContract",
]

E = TypeVar("E")
R = TypeVar("R")

T0 = datetime(2024, 1, 31, 9, 30, 15, 250_000, tzinfo=UTC)
"""A reference instant, in whole milliseconds like every time the service stores."""
DAY = timedelta(days=1)

WORKERS = 8
ROUNDS = 25
WAIT_SECONDS = 60.0

USER_IDS: tuple[UserId, ...] = (
    1,
    "1",
    uuid.UUID("6f1c2a44-8d7e-4b0a-9c3e-2f5d7a1b9e80"),
    "6f1c2a44-8d7e-4b0a-9c3e-2f5d7a1b9e80",
)
"""User ids of several kinds; no two of them are the same user."""

AMOUNTS = ("19.99", "0.001", "1234567.89", "0")
NO_SUCH_ID = "no-such-id"


def _id(entity: Any) -> Any:
    return entity.id


def _replace(entity: Any, **changes: Any) -> Any:
    return dataclasses.replace(entity, **changes)


def _assert_utc(actual: datetime | None, expected: datetime) -> None:
    assert actual is not None, f"expected {expected.isoformat()}, got None"
    assert actual.tzinfo is not None, f"{actual.isoformat()} is naive"
    assert actual.utcoffset() == timedelta(0), f"{actual.isoformat()} is not UTC"
    assert actual == expected


def _assert_money(actual: Any, expected: str) -> None:
    assert isinstance(actual, Decimal), f"{actual!r} is not a Decimal"
    assert actual == Decimal(expected)


def _race(task: Callable[[int], R], workers: int = WORKERS) -> list[R]:
    """Run ``task(worker)`` in ``workers`` threads released at the same moment."""
    start = threading.Barrier(workers)

    def run(worker: int) -> R:
        start.wait(timeout=WAIT_SECONDS)
        return task(worker)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, worker) for worker in range(workers)]
        return [future.result(timeout=WAIT_SECONDS) for future in futures]


def _flatten(results: Iterable[list[R]]) -> list[R]:
    return [item for result in results for item in result]


def _offer(
    key: str,
    *,
    offer_group: str = "basic",
    kind: OfferKind = OfferKind.TOKENS,
    price: str = "9.99",
    tags: Iterable[str] = (),
    unlocked_by: Iterable[str] = (),
) -> Offer:
    return Offer(
        key=key,
        name=f"Offer {key}",
        kind=kind,
        offer_group=offer_group,
        cycle=Cycle.MONTHLY,
        price=Decimal(price),
        currency="usd",
        token_count=100,
        tags=list(tags),
        unlocked_by=list(unlocked_by),
    )


def _order(
    user_id: UserId = "alice",
    *,
    status: Status = Status.PENDING,
    offer_group: str = "basic",
    expires: datetime | None = None,
    parent_id: Any = None,
    payment_intent_id: str | None = None,
) -> Order:
    return Order(
        user_id=user_id,
        offer_group=offer_group,
        status=status,
        total=Decimal("9.99"),
        currency="usd",
        cycle=Cycle.MONTHLY,
        token_count=100,
        starts=None if expires is None else expires - 30 * DAY,
        expires=expires,
        parent_id=parent_id,
        payment_intent_id=payment_intent_id,
        created_at=T0,
    )


def _line(
    user_id: UserId = "alice",
    tokens: int = -1,
    *,
    offer_group: str = "basic",
    reason: LedgerReason = LedgerReason.CONSUMPTION,
    order_id: Any = None,
    idempotency_key: str | None = None,
    created_at: datetime = T0,
) -> TokenTimetable:
    return TokenTimetable(
        user_id=user_id,
        offer_group=offer_group,
        tokens=tokens,
        created_at=created_at,
        order_id=order_id,
        reason=reason,
        idempotency_key=idempotency_key,
    )


def _subscription(
    order_id: Any,
    *,
    offer_id: Any = None,
    offer_group: str = "basic",
    status: Status = Status.PENDING,
    expires: datetime | None = None,
) -> Subscription:
    return Subscription(
        offer_id=offer_id,
        order_id=order_id,
        name="Basic",
        offer_group=offer_group,
        cycle=Cycle.MONTHLY,
        status=status,
        starts=T0,
        expires=expires,
        tokens=100,
        total=Decimal("9.99"),
        currency="usd",
    )


def _stored_order(factory: DaoFactory, user_id: UserId = "alice") -> Order:
    return factory.get_order_dao().create(_order(user_id))


def _stored_offer(factory: DaoFactory, key: str) -> Offer:
    return factory.get_offer_dao().create(_offer(key))


class _EntityContract(BackendContract, Generic[E]):
    """What every DAO guarantees: create, read by id and by filters, update, delete, copies."""

    def _dao(self, factory: DaoFactory) -> Dao[E]:
        raise NotImplementedError

    def _new(self, n: int) -> E:
        """The ``n``-th of a series of distinct entities, not stored yet."""
        raise NotImplementedError

    def _changes(self) -> dict[str, Any]:
        """Field values for an update, none of them equal to what ``_new`` sets."""
        raise NotImplementedError

    def _scribble(self, entity: E) -> None:
        """Change ``entity`` in place, in a top-level field and in a nested one."""
        raise NotImplementedError

    def _create(self, factory: DaoFactory, n: int) -> E:
        return self._dao(factory).create(self._new(n))

    def _absent_id(self, factory: DaoFactory) -> Any:
        """The id of an entity that existed and was deleted: a well-formed id matching nothing."""
        gone = self._create(factory, 99)
        self._dao(factory).delete_by_id(_id(gone))
        return _id(gone)

    def test_create_returns_the_entity_with_an_id(self, dao_factory: DaoFactory) -> None:
        entity = self._new(0)
        created = self._dao(dao_factory).create(entity)
        assert _id(created) is not None
        assert created == _replace(entity, id=_id(created))

    def test_find_by_id_finds_the_created_entity(self, dao_factory: DaoFactory) -> None:
        created = self._create(dao_factory, 0)
        assert self._dao(dao_factory).find_by_id(_id(created)) == created

    def test_find_by_id_accepts_the_str_form_of_the_id(self, dao_factory: DaoFactory) -> None:
        created = self._create(dao_factory, 0)
        assert self._dao(dao_factory).find_by_id(str(_id(created))) == created

    def test_find_by_id_of_an_absent_id_is_none(self, dao_factory: DaoFactory) -> None:
        absent = self._absent_id(dao_factory)
        dao = self._dao(dao_factory)
        assert dao.find_by_id(absent) is None
        assert dao.find_by_id(str(absent)) is None
        assert dao.find_by_id(NO_SUCH_ID) is None

    def test_find_without_filters_returns_every_entity_in_creation_order(
        self, dao_factory: DaoFactory
    ) -> None:
        created = [self._create(dao_factory, n) for n in range(3)]
        dao = self._dao(dao_factory)
        assert dao.find({}) == created
        assert dao.find() == created

    def test_find_on_an_empty_store_is_empty(self, dao_factory: DaoFactory) -> None:
        assert self._dao(dao_factory).find({}) == []

    def test_find_one_without_filters_returns_the_first_created(
        self, dao_factory: DaoFactory
    ) -> None:
        created = [self._create(dao_factory, n) for n in range(3)]
        assert self._dao(dao_factory).find_one({}) == created[0]

    def test_find_one_on_an_empty_store_is_none(self, dao_factory: DaoFactory) -> None:
        assert self._dao(dao_factory).find_one({}) is None

    def test_count_without_filters_counts_every_entity(self, dao_factory: DaoFactory) -> None:
        dao = self._dao(dao_factory)
        assert dao.count({}) == 0
        for n in range(3):
            self._create(dao_factory, n)
        assert dao.count({}) == 3
        assert dao.count() == 3

    def test_an_id_filter_accepts_the_id_and_its_str_form(self, dao_factory: DaoFactory) -> None:
        created = [self._create(dao_factory, n) for n in range(3)]
        dao = self._dao(dao_factory)
        wanted = _id(created[1])
        assert dao.find({"id": wanted}) == [created[1]]
        assert dao.find({"id": str(wanted)}) == [created[1]]
        assert dao.find_one({"id": str(wanted)}) == created[1]
        assert dao.count({"id": str(wanted)}) == 1

    def test_an_id_filter_of_an_absent_id_matches_nothing(self, dao_factory: DaoFactory) -> None:
        self._create(dao_factory, 0)
        absent = self._absent_id(dao_factory)
        dao = self._dao(dao_factory)
        assert dao.find({"id": absent}) == []
        assert dao.find_one({"id": str(absent)}) is None
        assert dao.count({"id": str(absent)}) == 0

    def test_update_by_id_changes_only_the_given_fields(self, dao_factory: DaoFactory) -> None:
        created = self._create(dao_factory, 0)
        other = self._create(dao_factory, 1)
        changes = self._changes()
        expected = _replace(created, **changes)
        dao = self._dao(dao_factory)
        assert dao.update_by_id(_id(created), changes) == expected
        assert dao.find_by_id(_id(created)) == expected
        assert dao.find_by_id(_id(other)) == other

    def test_update_by_id_accepts_the_str_form_of_the_id(self, dao_factory: DaoFactory) -> None:
        created = self._create(dao_factory, 0)
        changes = self._changes()
        dao = self._dao(dao_factory)
        assert dao.update_by_id(str(_id(created)), changes) == _replace(created, **changes)
        assert dao.find_by_id(_id(created)) == _replace(created, **changes)

    def test_update_by_id_of_an_absent_id_returns_none_and_stores_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        absent = self._absent_id(dao_factory)
        dao = self._dao(dao_factory)
        assert dao.update_by_id(absent, self._changes()) is None
        assert dao.update_by_id(NO_SUCH_ID, self._changes()) is None
        assert dao.count({}) == 0

    def test_delete_by_id_removes_only_that_entity(self, dao_factory: DaoFactory) -> None:
        doomed = self._create(dao_factory, 0)
        kept = self._create(dao_factory, 1)
        dao = self._dao(dao_factory)
        assert dao.delete_by_id(_id(doomed)) is True
        assert dao.find_by_id(_id(doomed)) is None
        assert dao.find({}) == [kept]

    def test_delete_by_id_accepts_the_str_form_of_the_id(self, dao_factory: DaoFactory) -> None:
        doomed = self._create(dao_factory, 0)
        dao = self._dao(dao_factory)
        assert dao.delete_by_id(str(_id(doomed))) is True
        assert dao.find_by_id(_id(doomed)) is None

    def test_delete_by_id_of_an_absent_id_returns_false(self, dao_factory: DaoFactory) -> None:
        kept = self._create(dao_factory, 0)
        absent = self._absent_id(dao_factory)
        dao = self._dao(dao_factory)
        assert dao.delete_by_id(absent) is False
        assert dao.delete_by_id(str(absent)) is False
        assert dao.delete_by_id(NO_SUCH_ID) is False
        assert dao.find({}) == [kept]

    def test_mutating_a_returned_entity_does_not_change_the_stored_one(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._dao(dao_factory)
        created = self._create(dao_factory, 0)
        stored = copy.deepcopy(created)
        returned = [created, dao.find_by_id(_id(created)), dao.find_one({}), *dao.find({})]
        for entity in returned:
            assert entity is not None
            self._scribble(entity)
        assert returned[0] != stored
        assert dao.find_by_id(_id(created)) == stored

    def test_mutating_the_entity_given_to_create_does_not_change_the_stored_one(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._dao(dao_factory)
        entity = self._new(0)
        created = dao.create(entity)
        stored = copy.deepcopy(created)
        self._scribble(entity)
        assert dao.find_by_id(_id(created)) == stored


class OfferDaoContract(_EntityContract[Offer]):
    """The guarantees of :class:`usercredits.dao.OfferDao`."""

    def _dao(self, factory: DaoFactory) -> Dao[Offer]:
        return factory.get_offer_dao()

    def _new(self, n: int) -> Offer:
        return _offer(f"offer-{n}", offer_group=f"group-{n}")

    def _changes(self) -> dict[str, Any]:
        return {"name": "Renamed", "price": Decimal("12.50"), "tags": ["renamed"]}

    def _scribble(self, entity: Offer) -> None:
        entity.name = "Scribbled"
        entity.tags.append("scribbled")

    def test_every_field_round_trips(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        offer = Offer(
            key="vip",
            name="VIP",
            kind=OfferKind.SUBSCRIPTION,
            offer_group="vip",
            cycle=Cycle.CUSTOM,
            custom_cycle=3600,
            price=Decimal("19.99"),
            currency="eur",
            token_count=500,
            quantity_limit=3,
            append_date=True,
            tags=["web", "eu"],
            unlocked_by=["pro", "business"],
            has_dependent_offers=True,
            overriding_key="plan",
            weight=7,
            popular=2,
        )
        created = dao.create(offer)
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found == _replace(offer, id=created.id)
        assert type(found.kind) is OfferKind
        assert type(found.cycle) is Cycle

    @pytest.mark.parametrize("amount", AMOUNTS)
    def test_price_round_trips_exactly(self, dao_factory: DaoFactory, amount: str) -> None:
        dao = dao_factory.get_offer_dao()
        created = dao.create(_offer("priced", price=amount))
        found = dao.find_by_id(created.id)
        assert found is not None
        _assert_money(found.price, amount)

    def test_combined_items_round_trip(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        tokens = dao.create(_offer("tokens", offer_group="tokens"))
        support = dao.create(_offer("support", offer_group="support"))
        items = [
            CombinedOffer(offer_id=tokens.id, offer_group="tokens", quantity=2),
            CombinedOffer(
                offer_id=support.id,
                offer_group="support",
                cycle=Cycle.CUSTOM,
                custom_cycle=86_400,
            ),
        ]
        bundle = _replace(_offer("bundle"), combined_items=items)
        created = dao.create(bundle)
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found.combined_items == items
        assert [str(item.offer_id) for item in found.combined_items] == [
            str(tokens.id),
            str(support.id),
        ]
        assert type(found.combined_items[1].cycle) is Cycle

    def test_find_filters_on_field_values(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        first = dao.create(_offer("a", offer_group="pro", kind=OfferKind.SUBSCRIPTION))
        second = dao.create(_offer("b", offer_group="pro"))
        third = dao.create(_offer("c", offer_group="basic", kind=OfferKind.SUBSCRIPTION))
        assert dao.find({"offer_group": "pro"}) == [first, second]
        assert dao.find({"kind": OfferKind.SUBSCRIPTION}) == [first, third]
        assert dao.find({"offer_group": "pro", "kind": OfferKind.SUBSCRIPTION}) == [first]
        assert dao.find_one({"offer_group": "basic"}) == third
        assert dao.count({"offer_group": "pro"}) == 2
        assert dao.find({"offer_group": "none"}) == []
        assert dao.count({"offer_group": "none"}) == 0

    def test_create_refuses_a_key_already_used(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        first = dao.create(_offer("starter", offer_group="first"))
        with pytest.raises(DuplicateEntityError):
            dao.create(_offer("starter", offer_group="second"))
        assert dao.find({}) == [first]

    def test_offers_without_a_key_never_clash(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        dao.create(_replace(_offer("x"), key=None))
        dao.create(_replace(_offer("y"), key=None))
        assert dao.count({"key": None}) == 2

    def test_find_by_key_finds_the_offer(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        dao.create(_offer("starter"))
        business = dao.create(_offer("business"))
        assert dao.find_by_key("business") == business

    def test_find_by_key_of_an_unknown_key_is_none(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        dao.create(_offer("starter"))
        assert dao.find_by_key("enterprise") is None

    def test_find_regular_without_tags_returns_every_offer_not_unlocked_by_a_group(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_offer_dao()
        dao.create(_offer("tagged", tags=["web"]))
        dao.create(_offer("plain"))
        dao.create(_offer("vip", unlocked_by=["pro"]))
        no_tags: list[str] | None
        for no_tags in (None, []):
            assert sorted(o.key or "" for o in dao.find_regular(no_tags)) == ["plain", "tagged"]

    def test_find_regular_requires_every_env_tag(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        dao.create(_offer("web-eu", tags=["web", "eu"]))
        dao.create(_offer("web", tags=["web"]))
        dao.create(_offer("untagged"))
        dao.create(_offer("vip-web-eu", tags=["web", "eu"], unlocked_by=["pro"]))

        def keys(tags: list[str]) -> list[str]:
            return sorted(o.key or "" for o in dao.find_regular(tags))

        assert keys(["web"]) == ["web", "web-eu"]
        assert keys(["web", "eu"]) == ["web-eu"]
        assert keys(["eu", "web"]) == ["web-eu"]
        assert keys(["mobile"]) == []

    def test_find_unlocked_by_returns_offers_naming_any_of_the_groups(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_offer_dao()
        dao.create(_offer("pro-only", unlocked_by=["pro"]))
        dao.create(_offer("pro-or-vip", unlocked_by=["pro", "vip"]))
        dao.create(_offer("vip-only", unlocked_by=["vip"]))
        dao.create(_offer("regular"))

        def keys(groups: list[str]) -> list[str]:
            return sorted(o.key or "" for o in dao.find_unlocked_by(groups))

        assert keys(["pro"]) == ["pro-only", "pro-or-vip"]
        assert keys(["vip", "other"]) == ["pro-or-vip", "vip-only"]
        assert keys(["pro", "vip"]) == ["pro-only", "pro-or-vip", "vip-only"]
        assert keys(["other"]) == []
        assert keys([]) == []


class OrderDaoContract(_EntityContract[Order]):
    """The guarantees of :class:`usercredits.dao.OrderDao`."""

    def _dao(self, factory: DaoFactory) -> Dao[Order]:
        return factory.get_order_dao()

    def _new(self, n: int) -> Order:
        return _order(f"user-{n}", payment_intent_id=f"pi_{n}")

    def _changes(self) -> dict[str, Any]:
        return {
            "status": Status.PAID,
            "payment_intent_id": "pi_changed",
            "updated_at": T0 + DAY,
        }

    def _scribble(self, entity: Order) -> None:
        entity.status = Status.REFUNDED
        entity.history.append(OrderStatus(date=T0, status=Status.REFUNDED, message="scribbled"))

    def test_every_field_round_trips(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        item_offer = _stored_offer(dao_factory, "support")
        parent = dao.create(_order())
        starts, expires = T0 + DAY, T0 + 31 * DAY
        order = Order(
            user_id="alice",
            offer_id=item_offer.id,
            offer_group="pro",
            status=Status.PAID,
            quantity=3,
            total=Decimal("59.97"),
            currency="eur",
            cycle=Cycle.CUSTOM,
            custom_cycle=86_400,
            token_count=300,
            starts=starts,
            expires=expires,
            combined_items=[
                CombinedOrder(
                    offer_id=item_offer.id,
                    offer_group="support",
                    quantity=2,
                    cycle=Cycle.MONTHLY,
                    token_count=20,
                    starts=starts,
                    expires=expires,
                )
            ],
            history=[
                OrderStatus(date=T0, status=Status.PENDING, message="Created"),
                OrderStatus(
                    date=starts, status=Status.PAID, message="Paid", payload='{"id": "pi_1"}'
                ),
            ],
            payment_intent_id="pi_1",
            parent_id=parent.id,
            country="FR",
            tax_rate=Decimal("0.2"),
            created_at=T0,
            updated_at=starts,
        )
        created = dao.create(order)
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found == _replace(order, id=created.id)
        assert str(found.offer_id) == str(item_offer.id)
        assert str(found.parent_id) == str(parent.id)
        assert type(found.status) is Status
        assert type(found.cycle) is Cycle
        assert type(found.history[1].status) is Status
        assert type(found.combined_items[0].cycle) is Cycle
        for moment, expected in [
            (found.starts, starts),
            (found.expires, expires),
            (found.created_at, T0),
            (found.updated_at, starts),
            (found.history[0].date, T0),
            (found.history[1].date, starts),
            (found.combined_items[0].starts, starts),
            (found.combined_items[0].expires, expires),
        ]:
            _assert_utc(moment, expected)

    @pytest.mark.parametrize("amount", AMOUNTS)
    def test_money_round_trips_exactly(self, dao_factory: DaoFactory, amount: str) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_replace(_order(), total=Decimal(amount), tax_rate=Decimal(amount)))
        found = dao.find_by_id(created.id)
        assert found is not None
        _assert_money(found.total, amount)
        _assert_money(found.tax_rate, amount)

    def test_user_ids_of_different_kinds_are_different_users(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        created = [dao.create(_order(user_id)) for user_id in USER_IDS]
        for user_id, order in zip(USER_IDS, created, strict=True):
            assert dao.find({"user_id": user_id}) == [order]
            assert dao.count({"user_id": user_id}) == 1
            found = dao.find_by_id(order.id)
            assert found is not None
            assert type(found.user_id) is type(user_id)
            assert found.user_id == user_id

    def test_find_filters_on_id_fields_given_as_str(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        offer = _stored_offer(dao_factory, "starter")
        other_offer = _stored_offer(dao_factory, "business")
        parent = dao.create(_replace(_order(), offer_id=offer.id))
        child = dao.create(_replace(_order(parent_id=parent.id), offer_id=other_offer.id))
        assert dao.find({"offer_id": str(offer.id)}) == [parent]
        assert dao.find({"offer_id": other_offer.id}) == [child]
        assert dao.find({"parent_id": str(parent.id)}) == [child]
        assert dao.count({"parent_id": parent.id}) == 1

    def test_find_filters_on_several_fields_at_once(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        wanted = dao.create(_order("alice", status=Status.PAID, offer_group="pro"))
        dao.create(_order("alice", status=Status.PENDING, offer_group="pro"))
        dao.create(_order("alice", status=Status.PAID, offer_group="basic"))
        dao.create(_order("bob", status=Status.PAID, offer_group="pro"))
        filters = {"user_id": "alice", "status": Status.PAID, "offer_group": "pro"}
        assert dao.find(filters) == [wanted]
        assert dao.find_one(filters) == wanted
        assert dao.count(filters) == 1

    def test_the_payment_intent_secret_is_never_stored(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(
            _replace(_order(payment_intent_id="pi_1"), payment_intent_secret="pi_1_secret")
        )
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found.payment_intent_id == "pi_1"
        assert found.payment_intent_secret is None
        assert [o.payment_intent_secret for o in dao.find({})] == [None]

    def test_update_by_id_does_not_store_the_payment_intent_secret(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order())
        dao.update_by_id(
            created.id, {"payment_intent_id": "pi_2", "payment_intent_secret": "pi_2_secret"}
        )
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found.payment_intent_id == "pi_2"
        assert found.payment_intent_secret is None

    def test_find_by_payment_intent_id_finds_the_order(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        dao.create(_order(payment_intent_id="pi_1"))
        second = dao.create(_order(payment_intent_id="pi_2"))
        assert dao.find_by_payment_intent_id("pi_2") == second

    def test_find_by_payment_intent_id_of_an_unknown_intent_is_none(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        dao.create(_order(payment_intent_id="pi_1"))
        dao.create(_order())
        assert dao.find_by_payment_intent_id("pi_unknown") is None

    def test_find_by_payment_intent_id_follows_the_current_intent(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order(payment_intent_id="pi_old"))
        updated = dao.update_by_id(created.id, {"payment_intent_id": "pi_new"})
        assert dao.find_by_payment_intent_id("pi_old") is None
        assert dao.find_by_payment_intent_id("pi_new") == updated

    def test_transition_from_a_listed_status_applies_the_changes(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order(status=Status.ERROR))
        entry = OrderStatus(date=T0 + DAY, status=Status.PAID, message="Paid")
        changes = {"status": Status.PAID, "updated_at": T0 + DAY}
        result = dao.transition(created.id, [Status.PENDING, Status.ERROR], changes, entry)
        expected = _replace(created, **changes, history=[entry])
        assert result == expected
        assert dao.find_by_id(created.id) == expected

    def test_transition_appends_the_entry_to_the_history(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        first = OrderStatus(date=T0, status=Status.PENDING, message="Created")
        created = dao.create(_replace(_order(), history=[first]))
        second = OrderStatus(date=T0 + DAY, status=Status.REFUSED, message="Declined")
        dao.transition(created.id, [Status.PENDING], {"status": Status.REFUSED}, second)
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found.history == [first, second]
        _assert_utc(found.history[1].date, T0 + DAY)

    def test_transition_without_an_entry_keeps_the_history(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        first = OrderStatus(date=T0, status=Status.PENDING, message="Created")
        created = dao.create(_replace(_order(), history=[first]))
        result = dao.transition(created.id, [Status.PENDING], {"status": Status.ERROR})
        assert result is not None
        assert result.status is Status.ERROR
        assert result.history == [first]

    def test_transition_from_an_unlisted_status_returns_none_and_changes_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order(status=Status.PAID))
        entry = OrderStatus(date=T0, status=Status.PAID, message="Paid again")
        result = dao.transition(
            created.id, [Status.PENDING, Status.REFUSED], {"status": Status.PAID}, entry
        )
        assert result is None
        assert dao.find_by_id(created.id) == created

    def test_transition_accepts_the_str_form_of_the_id(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order())
        result = dao.transition(str(created.id), [Status.PENDING], {"status": Status.PAID})
        assert result is not None
        assert result.status is Status.PAID
        assert dao.find_by_id(created.id) == result

    def test_transition_of_an_absent_order_raises_entity_not_found(
        self, dao_factory: DaoFactory
    ) -> None:
        absent = self._absent_id(dao_factory)
        dao = dao_factory.get_order_dao()
        with pytest.raises(EntityNotFoundError):
            dao.transition(absent, [Status.PENDING], {"status": Status.PAID})
        with pytest.raises(EntityNotFoundError):
            dao.transition(str(absent), [Status.PENDING], {"status": Status.PAID})
        assert dao.count({}) == 0

    def test_find_due_returns_paid_orders_expired_at_or_before_now_soonest_first(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        now = T0 + 10 * DAY
        day_ago = dao.create(_order(status=Status.PAID, expires=now - DAY))
        dao.create(_order(status=Status.PAID, expires=now + DAY))
        at_now = dao.create(_order(status=Status.PAID, expires=now))
        dao.create(_order(status=Status.PAID))
        dao.create(_order(status=Status.PENDING, expires=now - 5 * DAY))
        dao.create(_order(status=Status.EXPIRED, expires=now - 5 * DAY))
        dao.create(_order(status=Status.REFUNDED, expires=now - 5 * DAY))
        days_ago = dao.create(_order(status=Status.PAID, expires=now - 3 * DAY))
        assert dao.find_due("alice", now) == [days_ago, day_ago, at_now]

    def test_find_due_returns_only_the_users_orders(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        due = {
            user_id: dao.create(_order(user_id, status=Status.PAID, expires=T0))
            for user_id in USER_IDS
        }
        for user_id, order in due.items():
            assert dao.find_due(user_id, T0 + DAY) == [order]
        assert dao.find_due("nobody", T0 + DAY) == []

    def test_find_paid_returns_the_users_paid_orders_of_the_group(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        root = dao.create(_order(1, status=Status.PAID, offer_group="pro"))
        child = dao.create(_order(1, status=Status.PAID, offer_group="pro", parent_id=root.id))
        dao.create(_order(1, status=Status.PENDING, offer_group="pro"))
        dao.create(_order(1, status=Status.EXPIRED, offer_group="pro"))
        dao.create(_order(1, status=Status.PAID, offer_group="basic"))
        dao.create(_order("1", status=Status.PAID, offer_group="pro"))
        assert sorted(str(o.id) for o in dao.find_paid(1, "pro")) == sorted(
            [str(root.id), str(child.id)]
        )
        assert dao.find_paid(1, "none") == []

    def test_find_children_returns_the_child_orders_of_a_bundle(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        parent = dao.create(_order(status=Status.PAID))
        other_parent = dao.create(_order(status=Status.PAID))
        first = dao.create(_order(status=Status.PAID, offer_group="a", parent_id=parent.id))
        dao.create(_order(status=Status.PAID, offer_group="a", parent_id=other_parent.id))
        second = dao.create(_order(status=Status.PAID, offer_group="b", parent_id=parent.id))
        for parent_id in (parent.id, str(parent.id)):
            assert sorted(str(o.id) for o in dao.find_children(parent_id)) == sorted(
                [str(first.id), str(second.id)]
            )
        assert dao.find_children(first.id) == []

    def test_claim_webhook_event_is_true_once_then_false(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        order = dao.create(_order())
        assert dao.claim_webhook_event(order.id, "evt_1") is True
        assert dao.claim_webhook_event(order.id, "evt_1") is False
        assert dao.claim_webhook_event(str(order.id), "evt_1") is False

    def test_claim_webhook_event_is_per_order_and_event(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        first = dao.create(_order())
        second = dao.create(_order())
        assert dao.claim_webhook_event(first.id, "evt_1") is True
        assert dao.claim_webhook_event(first.id, "evt_2") is True
        assert dao.claim_webhook_event(str(second.id), "evt_1") is True

    def test_release_webhook_event_makes_the_event_claimable_again(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        order = dao.create(_order())
        assert dao.claim_webhook_event(order.id, "evt_1") is True
        assert dao.claim_webhook_event(order.id, "evt_2") is True
        dao.release_webhook_event(str(order.id), "evt_1")
        assert dao.claim_webhook_event(order.id, "evt_1") is True
        assert dao.claim_webhook_event(order.id, "evt_2") is False

    def test_concurrent_transitions_from_pending_to_paid_succeed_once(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        orders = [dao.create(_order()) for _ in range(ROUNDS)]

        def pay_all(worker: int) -> list[str]:
            won = []
            for order in orders:
                entry = OrderStatus(date=T0, status=Status.PAID, message=f"worker {worker}")
                if (
                    dao.transition(order.id, [Status.PENDING], {"status": Status.PAID}, entry)
                    is not None
                ):
                    won.append(str(order.id))
            return won

        wins = Counter(_flatten(_race(pay_all)))
        assert wins == Counter(str(o.id) for o in orders)
        for order in orders:
            found = dao.find_by_id(order.id)
            assert found is not None
            assert found.status is Status.PAID
            assert len(found.history) == 1


class TokenTimetableDaoContract(_EntityContract[TokenTimetable]):
    """The guarantees of :class:`usercredits.dao.TokenTimetableDao`."""

    def _dao(self, factory: DaoFactory) -> Dao[TokenTimetable]:
        return factory.get_token_timetable_dao()

    def _new(self, n: int) -> TokenTimetable:
        return _line(f"user-{n}", -(n + 1), idempotency_key=f"key-{n}")

    def _changes(self) -> dict[str, Any]:
        return {"tokens": 42, "reason": LedgerReason.ADJUSTMENT}

    def _scribble(self, entity: TokenTimetable) -> None:
        entity.tokens = -999
        entity.offer_group = "scribbled"

    def test_every_field_round_trips(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        order = _stored_order(dao_factory)
        line = TokenTimetable(
            user_id="alice",
            offer_group="pro",
            tokens=300,
            created_at=T0,
            order_id=order.id,
            reason=LedgerReason.PURCHASE,
            idempotency_key="grant-1",
            expires=T0 + 30 * DAY,
        )
        created = dao.create(line)
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found == _replace(line, id=created.id)
        assert str(found.order_id) == str(order.id)
        assert type(found.reason) is LedgerReason
        _assert_utc(found.created_at, T0)
        _assert_utc(found.expires, T0 + 30 * DAY)

    def test_user_ids_of_different_kinds_are_different_users(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        created = [dao.create(_line(user_id)) for user_id in USER_IDS]
        for user_id, line in zip(USER_IDS, created, strict=True):
            assert dao.find({"user_id": user_id}) == [line]
            assert dao.find_group(user_id, "basic") == [line]
            found = dao.find_by_id(line.id)
            assert found is not None
            assert type(found.user_id) is type(user_id)

    def test_find_filters_on_id_fields_given_as_str(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        order = _stored_order(dao_factory)
        purchase = dao.create(_line(tokens=10, reason=LedgerReason.PURCHASE, order_id=order.id))
        dao.create(_line())
        assert dao.find({"order_id": str(order.id)}) == [purchase]
        assert dao.find({"order_id": order.id, "reason": LedgerReason.PURCHASE}) == [purchase]
        assert dao.count({"order_id": str(order.id), "reason": LedgerReason.EXPIRY}) == 0

    def test_create_refuses_an_idempotency_key_the_user_already_used(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        first = dao.create(_line(tokens=-2, idempotency_key="k"))
        with pytest.raises(DuplicateEntityError):
            dao.create(_line(tokens=-5, offer_group="other", idempotency_key="k"))
        assert dao.find({}) == [first]

    def test_the_same_idempotency_key_is_free_for_another_user(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        dao.create(_line(1, idempotency_key="k"))
        dao.create(_line("1", idempotency_key="k"))
        dao.create(_line("bob", idempotency_key="k"))
        assert dao.count({"idempotency_key": "k"}) == 3

    @pytest.mark.parametrize(
        "reason", [LedgerReason.PURCHASE, LedgerReason.EXPIRY, LedgerReason.REFUND]
    )
    def test_create_refuses_a_second_line_of_one_order_and_reason(
        self, dao_factory: DaoFactory, reason: LedgerReason
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        order = _stored_order(dao_factory)
        first = dao.create(_line(tokens=10, reason=reason, order_id=order.id))
        with pytest.raises(DuplicateEntityError):
            dao.create(_line(tokens=7, reason=reason, order_id=str(order.id)))
        assert dao.find({}) == [first]

    def test_lines_of_one_order_with_different_reasons_coexist(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        order = _stored_order(dao_factory)
        for reason in (LedgerReason.PURCHASE, LedgerReason.EXPIRY, LedgerReason.REFUND):
            dao.create(_line(tokens=1, reason=reason, order_id=order.id))
        assert dao.count({"order_id": order.id}) == 3

    def test_consumption_lines_without_a_key_never_clash(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        order = _stored_order(dao_factory)
        for _ in range(3):
            dao.create(_line(tokens=-1, order_id=order.id))
            dao.create(_line(tokens=-1))
        assert dao.count({"reason": LedgerReason.CONSUMPTION}) == 6

    def test_insert_once_stores_a_new_line(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        line = _line(idempotency_key="k")
        stored, created = dao.insert_once(line)
        assert created is True
        assert stored == _replace(line, id=stored.id)
        assert dao.find_by_id(stored.id) == stored

    def test_insert_once_returns_the_line_of_a_reused_idempotency_key(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        first, _ = dao.insert_once(_line(tokens=-2, idempotency_key="k"))
        existing, created = dao.insert_once(_line(tokens=-9, idempotency_key="k"))
        assert created is False
        assert existing == first
        assert dao.find({}) == [first]

    def test_insert_once_returns_the_line_of_the_same_order_and_reason(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        order = _stored_order(dao_factory)
        first, _ = dao.insert_once(_line(tokens=10, reason=LedgerReason.EXPIRY, order_id=order.id))
        existing, created = dao.insert_once(
            _line(tokens=-4, reason=LedgerReason.EXPIRY, order_id=str(order.id))
        )
        assert created is False
        assert existing == first
        assert dao.count({}) == 1

    def test_find_by_idempotency_key_finds_the_users_line(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        mine = dao.create(_line(1, idempotency_key="k"))
        theirs = dao.create(_line("1", idempotency_key="k"))
        assert dao.find_by_idempotency_key(1, "k") == mine
        assert dao.find_by_idempotency_key("1", "k") == theirs

    def test_find_by_idempotency_key_of_an_unused_key_is_none(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        dao.create(_line("alice", idempotency_key="k"))
        assert dao.find_by_idempotency_key("alice", "other") is None
        assert dao.find_by_idempotency_key("bob", "k") is None

    def test_find_group_returns_the_users_lines_of_the_group_in_recording_order(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        recorded = []
        for tokens in (5, -3, 8, -1, 2):
            recorded.append(dao.create(_line(1, tokens, offer_group="pro")))
            dao.create(_line(1, tokens, offer_group="basic"))
            dao.create(_line("1", tokens, offer_group="pro"))
        assert dao.find_group(1, "pro") == recorded

    def test_find_group_of_a_group_without_lines_is_empty(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        dao.create(_line("alice", offer_group="pro"))
        assert dao.find_group("alice", "basic") == []
        assert dao.find_group("bob", "pro") == []

    def test_concurrent_insert_once_with_one_key_stores_one_line(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()

        def insert_all(worker: int) -> list[tuple[str, str, bool]]:
            results = []
            for key in range(ROUNDS):
                line = _line(tokens=-(worker + 1), idempotency_key=f"key-{key}")
                stored, created = dao.insert_once(line)
                results.append((f"key-{key}", str(stored.id), created))
            return results

        results = _flatten(_race(insert_all))
        assert Counter(key for key, _, created in results if created) == Counter(
            f"key-{key}" for key in range(ROUNDS)
        )
        assert len({(key, line_id) for key, line_id, _ in results}) == ROUNDS
        assert len(dao.find_group("alice", "basic")) == ROUNDS


class UserCreditsDaoContract(_EntityContract[UserCredits]):
    """The guarantees of :class:`usercredits.dao.UserCreditsDao`."""

    def _dao(self, factory: DaoFactory) -> Dao[UserCredits]:
        return factory.get_user_credits_dao()

    def _new(self, n: int) -> UserCredits:
        return UserCredits(
            user_id=f"user-{n}",
            offers=[ActivatedOffer(offer_group="basic", starts=T0, expires=T0 + DAY, tokens=n)],
            subscriptions=[_subscription(None, expires=T0 + DAY)],
        )

    def _changes(self) -> dict[str, Any]:
        return {"subscriptions": [_subscription(None, status=Status.PAID, expires=T0 + 7 * DAY)]}

    def _scribble(self, entity: UserCredits) -> None:
        entity.offers[0].tokens = 999
        entity.subscriptions.clear()

    def test_every_field_round_trips(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        order = _stored_order(dao_factory)
        offer = _stored_offer(dao_factory, "pro")
        credits = UserCredits(
            user_id="alice",
            offers=[ActivatedOffer(offer_group="pro", starts=T0, expires=T0 + DAY, tokens=-4)],
            subscriptions=[
                _subscription(order.id, offer_id=offer.id, status=Status.PAID, expires=T0 + DAY)
            ],
        )
        created = dao.create(credits)
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found == _replace(credits, id=created.id)
        _assert_utc(found.offers[0].starts, T0)
        _assert_utc(found.offers[0].expires, T0 + DAY)
        assert str(found.subscriptions[0].order_id) == str(order.id)
        assert str(found.subscriptions[0].offer_id) == str(offer.id)

    def test_create_refuses_a_second_record_for_a_user(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        first = dao.create(UserCredits(user_id="alice"))
        with pytest.raises(DuplicateEntityError):
            dao.create(UserCredits(user_id="alice", offers=[ActivatedOffer(offer_group="pro")]))
        assert dao.find({}) == [first]

    def test_user_ids_of_different_kinds_are_different_users(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        created = [dao.get_or_create(user_id) for user_id in USER_IDS]
        assert len({str(c.id) for c in created}) == len(USER_IDS)
        for user_id, credits in zip(USER_IDS, created, strict=True):
            assert dao.find({"user_id": user_id}) == [credits]
            found = dao.find_by_user_id(user_id)
            assert found == credits
            assert type(found.user_id) is type(user_id)

    def test_subscription_fields_round_trip(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        order = _stored_order(dao_factory)
        offer = _stored_offer(dao_factory, "pro")
        subscription = Subscription(
            offer_id=offer.id,
            order_id=order.id,
            name="Pro",
            offer_group="pro",
            cycle=Cycle.CUSTOM,
            custom_cycle=3600,
            quantity=2,
            status=Status.PAID,
            starts=T0,
            expires=T0 + DAY,
            tokens=200,
            total=Decimal("19.99"),
            currency="eur",
        )
        dao.add_subscriptions("alice", [subscription])
        found = dao.find_by_user_id("alice")
        assert found is not None
        assert found.subscriptions == [subscription]
        stored = found.subscriptions[0]
        assert type(stored.status) is Status
        assert type(stored.cycle) is Cycle
        _assert_utc(stored.starts, T0)
        _assert_utc(stored.expires, T0 + DAY)

    @pytest.mark.parametrize("amount", AMOUNTS)
    def test_subscription_total_round_trips_exactly(
        self, dao_factory: DaoFactory, amount: str
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.add_subscriptions("alice", [_replace(_subscription(None), total=Decimal(amount))])
        found = dao.find_by_user_id("alice")
        assert found is not None
        _assert_money(found.subscriptions[0].total, amount)

    def test_get_or_create_creates_empty_credits(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        credits = dao.get_or_create("alice")
        assert credits.id is not None
        assert credits == UserCredits(id=credits.id, user_id="alice")
        assert dao.find_by_user_id("alice") == credits

    def test_get_or_create_returns_the_same_record_on_repeated_calls(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        first = dao.get_or_create("alice")
        dao.add_tokens("alice", "pro", 5, now=T0)
        again = dao.get_or_create("alice")
        assert str(again.id) == str(first.id)
        assert again.balance("pro") == 5
        assert dao.count({"user_id": "alice"}) == 1

    def test_find_by_user_id_of_a_user_without_credits_is_none(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.get_or_create("alice")
        assert dao.find_by_user_id("bob") is None

    def test_iter_user_ids_yields_each_user_once(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        users = [*USER_IDS, "alice"]
        for user_id in users:
            dao.get_or_create(user_id)
        dao.add_tokens("alice", "pro", 1, now=T0)
        dao.add_tokens("bob", "pro", 1, now=T0)
        expected = Counter((type(u), u) for u in [*users, "bob"])
        assert Counter((type(u), u) for u in dao.iter_user_ids()) == expected
        assert Counter((type(u), u) for u in dao.iter_user_ids(batch_size=2)) == expected

    def test_iter_user_ids_without_users_yields_nothing(self, dao_factory: DaoFactory) -> None:
        assert list(dao_factory.get_user_credits_dao().iter_user_ids(batch_size=2)) == []

    def test_get_activated_offer_of_an_absent_group_is_none(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.add_tokens("alice", "pro", 5, now=T0)
        assert dao.get_activated_offer("alice", "basic") is None
        assert dao.get_activated_offer("bob", "pro") is None

    def test_add_tokens_creates_the_group_starting_now(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        assert dao.add_tokens("alice", "pro", 5, now=T0) == 5
        group = dao.get_activated_offer("alice", "pro")
        assert group == ActivatedOffer(offer_group="pro", starts=T0, expires=None, tokens=5)
        assert group is not None
        _assert_utc(group.starts, T0)
        credits = dao.find_by_user_id("alice")
        assert credits is not None
        assert credits.offers == [group]

    def test_add_tokens_returns_the_new_balance_and_keeps_the_start(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.add_tokens("alice", "pro", 5, now=T0)
        assert dao.add_tokens("alice", "pro", 3, now=T0 + DAY) == 8
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, tokens=8
        )

    def test_add_tokens_accepts_negative_deltas_below_zero(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.add_tokens("alice", "pro", 2, now=T0)
        assert dao.add_tokens("alice", "pro", -5, now=T0) == -3
        assert dao.add_tokens("alice", "basic", -4, now=T0) == -4
        credits = dao.find_by_user_id("alice")
        assert credits is not None
        assert (credits.balance("pro"), credits.balance("basic")) == (-3, -4)

    def test_add_tokens_keeps_the_balances_of_users_and_groups_apart(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        for n, user_id in enumerate(USER_IDS, start=1):
            dao.add_tokens(user_id, "pro", n, now=T0)
            dao.add_tokens(user_id, "basic", 10 * n, now=T0)
        for n, user_id in enumerate(USER_IDS, start=1):
            credits = dao.find_by_user_id(user_id)
            assert credits is not None
            assert (credits.balance("pro"), credits.balance("basic")) == (n, 10 * n)

    def test_add_tokens_with_a_floor_refuses_to_go_below_it(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.add_tokens("alice", "pro", 5, now=T0)
        assert dao.add_tokens("alice", "pro", -6, now=T0 + DAY, floor=0) is None
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, tokens=5
        )

    def test_add_tokens_with_a_floor_may_reach_it(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.add_tokens("alice", "pro", 5, now=T0)
        assert dao.add_tokens("alice", "pro", -5, now=T0, floor=0) == 0
        assert dao.add_tokens("alice", "pro", -3, now=T0, floor=-3) == -3
        assert dao.add_tokens("alice", "pro", -1, now=T0, floor=-3) is None
        assert dao.add_tokens("alice", "pro", 2, now=T0, floor=0) is None
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, tokens=-3
        )

    def test_add_tokens_refused_by_the_floor_creates_nothing(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        assert dao.add_tokens("alice", "pro", -1, now=T0, floor=0) is None
        assert dao.find_by_user_id("alice") is None
        dao.get_or_create("bob")
        assert dao.add_tokens("bob", "pro", -1, now=T0, floor=0) is None
        assert dao.get_activated_offer("bob", "pro") is None

    def test_open_window_creates_the_group_with_a_zero_balance(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + 30 * DAY)
        group = dao.get_activated_offer("alice", "pro")
        assert group == ActivatedOffer(
            offer_group="pro", starts=T0, expires=T0 + 30 * DAY, tokens=0
        )
        assert group is not None
        _assert_utc(group.starts, T0)
        _assert_utc(group.expires, T0 + 30 * DAY)

    def test_open_window_widens_the_window(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0 + 5 * DAY, T0 + 10 * DAY)
        dao.open_window("alice", "pro", T0, T0 + 7 * DAY)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=T0 + 10 * DAY
        )
        dao.open_window("alice", "pro", T0 + 8 * DAY, T0 + 20 * DAY)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=T0 + 20 * DAY
        )

    def test_open_window_without_an_end_makes_the_group_never_end(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + 10 * DAY)
        dao.open_window("alice", "pro", T0 + DAY, None)
        dao.open_window("alice", "pro", T0, T0 + 20 * DAY)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=None
        )

    def test_open_window_keeps_the_balance(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.add_tokens("alice", "pro", 7, now=T0 + DAY)
        dao.open_window("alice", "pro", T0, T0 + 10 * DAY)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=T0 + 10 * DAY, tokens=7
        )

    def test_chain_window_of_a_new_group_starts_now(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        starts, expires = dao.chain_window("alice", "pro", T0, lambda start: start + DAY)
        _assert_utc(starts, T0)
        _assert_utc(expires, T0 + DAY)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=T0 + DAY
        )

    def test_chain_window_starts_at_the_latest_end_when_it_is_after_now(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + 10 * DAY)
        window = dao.chain_window("alice", "pro", T0 + 2 * DAY, lambda start: start + DAY)
        assert window == (T0 + 10 * DAY, T0 + 11 * DAY)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=T0 + 11 * DAY
        )

    def test_chain_window_starts_now_when_the_latest_end_has_passed(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + DAY)
        window = dao.chain_window("alice", "pro", T0 + 5 * DAY, lambda start: start + DAY)
        assert window == (T0 + 5 * DAY, T0 + 6 * DAY)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=T0 + 6 * DAY
        )

    def test_consecutive_chain_windows_follow_each_other(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        windows = [dao.chain_window("alice", "pro", T0, lambda s: s + DAY) for _ in range(3)]
        assert windows == [(T0, T0 + DAY), (T0 + DAY, T0 + 2 * DAY), (T0 + 2 * DAY, T0 + 3 * DAY)]

    def test_chain_window_follows_the_latest_dated_end_of_a_never_ending_group(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + 10 * DAY)
        dao.open_window("alice", "pro", T0, None)
        window = dao.chain_window("alice", "pro", T0 + DAY, lambda start: start + DAY)
        assert window == (T0 + 10 * DAY, T0 + 11 * DAY)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=None
        )

    def test_chain_window_without_an_end_makes_the_group_never_end(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + 10 * DAY)
        assert dao.chain_window("alice", "pro", T0, lambda start: None) == (T0 + 10 * DAY, None)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=None
        )

    def test_reset_window_replaces_the_window_and_keeps_the_balance(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + 30 * DAY)
        dao.add_tokens("alice", "pro", 7, now=T0)
        dao.reset_window("alice", "pro", T0 + DAY, T0 + 10 * DAY, False)
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0 + DAY, expires=T0 + 10 * DAY, tokens=7
        )
        window = dao.chain_window("alice", "pro", T0 + 2 * DAY, lambda start: start + DAY)
        assert window == (T0 + 10 * DAY, T0 + 11 * DAY)

    def test_reset_window_can_make_the_group_end_or_never_end(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, None)
        dao.reset_window("alice", "pro", T0, T0 + 10 * DAY, False)
        group = dao.get_activated_offer("alice", "pro")
        assert group is not None
        assert group.expires == T0 + 10 * DAY
        dao.reset_window("alice", "pro", T0, T0 + 10 * DAY, True)
        group = dao.get_activated_offer("alice", "pro")
        assert group is not None
        assert group.expires is None

    def test_reset_window_of_an_absent_group_changes_nothing(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.reset_window("alice", "pro", T0, T0 + DAY, False)
        assert dao.find_by_user_id("alice") is None
        dao.add_tokens("bob", "basic", 1, now=T0)
        dao.reset_window("bob", "pro", T0, T0 + DAY, True)
        assert dao.get_activated_offer("bob", "pro") is None

    def test_remove_offer_if_spent_removes_an_empty_group_whose_window_ended(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + DAY)
        dao.add_tokens("alice", "basic", 3, now=T0)
        removed = dao.remove_offer_if_spent("alice", "pro", T0 + DAY)
        assert removed == ActivatedOffer(offer_group="pro", starts=T0, expires=T0 + DAY)
        assert dao.get_activated_offer("alice", "pro") is None
        assert dao.get_activated_offer("alice", "basic") is not None

    @pytest.mark.parametrize("balance", [4, -2])
    def test_remove_offer_if_spent_keeps_a_group_with_a_balance(
        self, dao_factory: DaoFactory, balance: int
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + DAY)
        dao.add_tokens("alice", "pro", balance, now=T0)
        assert dao.remove_offer_if_spent("alice", "pro", T0 + 2 * DAY) is None
        assert dao.get_activated_offer("alice", "pro") is not None

    def test_remove_offer_if_spent_keeps_a_group_whose_window_has_not_ended(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + 2 * DAY)
        assert dao.remove_offer_if_spent("alice", "pro", T0 + DAY) is None
        assert dao.get_activated_offer("alice", "pro") is not None

    def test_remove_offer_if_spent_keeps_a_group_that_never_ends(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + DAY)
        dao.open_window("alice", "pro", T0, None)
        assert dao.remove_offer_if_spent("alice", "pro", T0 + 2 * DAY) is None
        assert dao.get_activated_offer("alice", "pro") is not None

    def test_remove_offer_if_spent_keeps_a_group_without_a_dated_window(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.add_tokens("alice", "pro", 3, now=T0)
        dao.add_tokens("alice", "pro", -3, now=T0)
        assert dao.remove_offer_if_spent("alice", "pro", T0 + DAY) is None
        assert dao.get_activated_offer("alice", "pro") is not None

    def test_remove_offer_if_spent_of_an_absent_group_is_none(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        assert dao.remove_offer_if_spent("alice", "pro", T0) is None
        dao.open_window("bob", "basic", T0, T0 + DAY)
        assert dao.remove_offer_if_spent("bob", "pro", T0 + DAY) is None

    def test_add_subscriptions_appends_in_order_and_creates_the_credits(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        first, second = _stored_order(dao_factory), _stored_order(dao_factory)
        dao.add_subscriptions("alice", [_subscription(first.id)])
        dao.add_subscriptions(
            "alice", [_subscription(second.id, offer_group="a"), _subscription(second.id)]
        )
        credits = dao.find_by_user_id("alice")
        assert credits is not None
        assert credits.subscriptions == [
            _subscription(first.id),
            _subscription(second.id, offer_group="a"),
            _subscription(second.id),
        ]
        assert dao.count({}) == 1

    def _subscribed(self, factory: DaoFactory) -> tuple[Order, Order, Offer, Offer]:
        """Alice's subscriptions: two items of one bundle order, and another order."""
        bundle, other = _stored_order(factory), _stored_order(factory)
        tokens, support = _stored_offer(factory, "tokens"), _stored_offer(factory, "support")
        factory.get_user_credits_dao().add_subscriptions(
            "alice",
            [
                _subscription(bundle.id, offer_id=tokens.id, offer_group="tokens"),
                _subscription(bundle.id, offer_id=support.id, offer_group="support"),
                _subscription(other.id, offer_id=tokens.id, offer_group="tokens"),
            ],
        )
        return bundle, other, tokens, support

    def _statuses(self, factory: DaoFactory) -> list[Status]:
        credits = factory.get_user_credits_dao().find_by_user_id("alice")
        assert credits is not None
        return [s.status for s in credits.subscriptions]

    def test_update_subscriptions_changes_every_subscription_of_the_order(
        self, dao_factory: DaoFactory
    ) -> None:
        bundle, _, _, _ = self._subscribed(dao_factory)
        dao = dao_factory.get_user_credits_dao()
        changes = {"status": Status.PAID, "expires": T0 + DAY}
        assert dao.update_subscriptions("alice", bundle.id, changes) == 2
        credits = dao.find_by_user_id("alice")
        assert credits is not None
        assert [(s.status, s.expires) for s in credits.subscriptions] == [
            (Status.PAID, T0 + DAY),
            (Status.PAID, T0 + DAY),
            (Status.PENDING, None),
        ]

    def test_update_subscriptions_narrows_to_an_offer_id(self, dao_factory: DaoFactory) -> None:
        bundle, _, _, support = self._subscribed(dao_factory)
        dao = dao_factory.get_user_credits_dao()
        changed = dao.update_subscriptions(
            "alice", bundle.id, {"status": Status.PAID}, offer_id=support.id
        )
        assert changed == 1
        assert self._statuses(dao_factory) == [Status.PENDING, Status.PAID, Status.PENDING]

    def test_update_subscriptions_narrows_to_an_offer_group(self, dao_factory: DaoFactory) -> None:
        bundle, _, _, _ = self._subscribed(dao_factory)
        dao = dao_factory.get_user_credits_dao()
        changed = dao.update_subscriptions(
            "alice", bundle.id, {"status": Status.PAID}, offer_group="tokens"
        )
        assert changed == 1
        assert self._statuses(dao_factory) == [Status.PAID, Status.PENDING, Status.PENDING]

    def test_update_subscriptions_accepts_ids_as_str(self, dao_factory: DaoFactory) -> None:
        _, other, tokens, _ = self._subscribed(dao_factory)
        dao = dao_factory.get_user_credits_dao()
        changed = dao.update_subscriptions(
            "alice", str(other.id), {"status": Status.PAID}, offer_id=str(tokens.id)
        )
        assert changed == 1
        assert self._statuses(dao_factory) == [Status.PENDING, Status.PENDING, Status.PAID]

    def test_update_subscriptions_matching_nothing_changes_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        bundle, other, tokens, support = self._subscribed(dao_factory)
        dao = dao_factory.get_user_credits_dao()
        paid = {"status": Status.PAID}
        assert dao.update_subscriptions("bob", bundle.id, paid) == 0
        assert dao.update_subscriptions("alice", other.id, paid, offer_id=support.id) == 0
        assert dao.update_subscriptions("alice", bundle.id, paid, offer_group="none") == 0
        assert dao.update_subscriptions("alice", tokens.id, paid) == 0
        assert self._statuses(dao_factory) == [Status.PENDING] * 3
        assert dao.find_by_user_id("bob") is None

    def test_active_groups_are_those_of_paid_subscriptions_not_ended(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        order = _stored_order(dao_factory)
        now = T0 + 10 * DAY
        dao.add_subscriptions(
            1,
            [
                _subscription(order.id, offer_group="forever", status=Status.PAID),
                _subscription(order.id, offer_group="month", status=Status.PAID, expires=now + DAY),
                _subscription(order.id, offer_group="ended", status=Status.PAID, expires=now),
                _subscription(order.id, offer_group="old", status=Status.PAID, expires=now - DAY),
                _subscription(order.id, offer_group="pending", expires=now + DAY),
                _subscription(
                    order.id, offer_group="refunded", status=Status.REFUNDED, expires=now + DAY
                ),
            ],
        )
        dao.add_subscriptions(
            "1", [_subscription(order.id, offer_group="other", status=Status.PAID)]
        )
        assert dao.active_groups(1, now) == {"forever", "month"}
        assert dao.active_groups("1", now) == {"other"}
        assert dao.active_groups("bob", now) == set()

    def test_updating_the_subscriptions_keeps_the_group_windows(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_window("alice", "pro", T0, T0 + 10 * DAY)
        dao.open_window("alice", "pro", T0, None)
        credits = dao.find_by_user_id("alice")
        assert credits is not None
        dao.update_by_id(credits.id, {"subscriptions": [_subscription(None)]})
        window = dao.chain_window("alice", "pro", T0, lambda start: start + DAY)
        assert window == (T0 + 10 * DAY, T0 + 11 * DAY)

    def test_concurrent_add_tokens_lose_no_increment(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()

        def add(worker: int) -> list[int | None]:
            return [dao.add_tokens("alice", "pro", 1, now=T0) for _ in range(ROUNDS)]

        balances = _flatten(_race(add))
        assert sorted(b for b in balances if b is not None) == list(range(1, WORKERS * ROUNDS + 1))
        credits = dao.find_by_user_id("alice")
        assert credits is not None
        assert credits.balance("pro") == WORKERS * ROUNDS

    def test_concurrent_decrements_with_a_floor_never_overdraw(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        initial = WORKERS * ROUNDS * 3 // 4
        dao.add_tokens("alice", "pro", initial, now=T0)

        def consume(worker: int) -> list[int | None]:
            return [dao.add_tokens("alice", "pro", -1, now=T0, floor=0) for _ in range(ROUNDS)]

        results = _flatten(_race(consume))
        accepted = sorted(b for b in results if b is not None)
        assert accepted == list(range(initial))
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, tokens=0
        )

    def test_concurrent_get_or_create_creates_one_record_per_user(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()

        def create_all(worker: int) -> list[tuple[str, str]]:
            return [(f"user-{n}", str(dao.get_or_create(f"user-{n}").id)) for n in range(ROUNDS)]

        seen = set(_flatten(_race(create_all)))
        assert len(seen) == ROUNDS
        assert dao.count({}) == ROUNDS
        for user_id, credits_id in seen:
            found = dao.find_by_user_id(user_id)
            assert found is not None
            assert str(found.id) == credits_id

    def test_concurrent_chain_windows_follow_each_other(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        calls = 3

        def chain(worker: int) -> list[tuple[datetime, datetime | None]]:
            return [
                dao.chain_window("alice", "pro", T0, lambda start: start + DAY)
                for _ in range(calls)
            ]

        windows = sorted(_flatten(_race(chain)), key=lambda window: window[0])
        expected = [(T0 + n * DAY, T0 + (n + 1) * DAY) for n in range(WORKERS * calls)]
        assert windows == expected
        assert dao.get_activated_offer("alice", "pro") == ActivatedOffer(
            offer_group="pro", starts=T0, expires=T0 + WORKERS * calls * DAY
        )
