"""Contract tests of the storage interfaces of :mod:`usercredits.dao`.

One class per DAO interface, each checking the guarantees its docstrings state,
through the public DAO methods only. A backend runs them by subclassing each
class once (``class TestMyOfferDao(OfferDaoContract)``) and implementing
``make_dao_factory``; the classes here are not named ``Test*`` so that pytest
collects only those subclasses. Every test stores a handful of entities at most:
some backends (mongomock) scan whole collections. Races run in a few threads
released at the same moment, every wait bounded by a timeout.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

import pytest

from usercredits.accounts import SNAPSHOT_LAG
from usercredits.dao import DaoFactory, Reader, UserCreditsDao
from usercredits.errors import DuplicateEntityError, EntityNotFoundError, InvalidOfferError
from usercredits.grants import LiveGrant, Snapshot
from usercredits.models import (
    CombinedOffer,
    CombinedOrder,
    Customer,
    Cycle,
    GrantSource,
    LedgerReason,
    Offer,
    OfferKind,
    Order,
    OrderStatus,
    Status,
    TokenTimetable,
    UserId,
    WebhookEventRecord,
)
from usercredits.testing.base import BackendContract
from usercredits.windows import Claim, Window

__all__ = [
    "CustomerDaoContract",
    "OfferDaoContract",
    "OrderDaoContract",
    "TokenTimetableDaoContract",
    "UserCreditsDaoContract",
    "WebhookEventDaoContract",
]

E = TypeVar("E")
R = TypeVar("R")

T0 = datetime(2024, 1, 31, 9, 30, 15, 250_000, tzinfo=UTC)
"""A reference instant, in whole milliseconds like every time the service stores."""
DAY = timedelta(days=1)

WORKERS = 8
ROUNDS = 10
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
"""An id of no backend's form: it matches nothing, and is never an error."""


def _replace(entity: Any, **changes: Any) -> Any:
    return dataclasses.replace(entity, **changes)


def _ids(entities: Iterable[Any]) -> list[str]:
    return [str(entity.id) for entity in entities]


def _user_set(user_ids: Iterable[UserId]) -> list[tuple[str, str]]:
    """User ids as a sorted list that tells ``1`` from ``"1"``."""
    return sorted((type(user_id).__name__, str(user_id)) for user_id in user_ids)


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
    item_index: int | None = None,
    payment_intent_id: str | None = None,
    in_progress: bool = False,
    offer_id: Any = None,
    exclusive: bool = False,
) -> Order:
    return Order(
        user_id=user_id,
        offer_id=offer_id,
        exclusive=exclusive,
        offer_group=offer_group,
        status=status,
        total=Decimal("9.99"),
        currency="usd",
        cycle=Cycle.MONTHLY,
        token_count=100,
        starts=None if expires is None else expires - 30 * DAY,
        expires=expires,
        parent_id=parent_id,
        item_index=item_index,
        payment_intent_id=payment_intent_id,
        created_at=T0,
        in_progress=in_progress,
    )


def _line(
    user_id: UserId = "alice",
    seq: int = 1,
    tokens: int = -1,
    *,
    offer_group: str = "basic",
    reason: LedgerReason = LedgerReason.CONSUMPTION,
    order_id: Any = None,
    idempotency_key: str | None = None,
    operation_key: str | None = None,
) -> TokenTimetable:
    return TokenTimetable(
        user_id=user_id,
        offer_group=offer_group,
        seq=seq,
        tokens=tokens,
        created_at=T0,
        order_id=order_id,
        reason=reason,
        idempotency_key=idempotency_key,
        operation_key=operation_key,
    )


def _in_debt(seq: int) -> Snapshot:
    """A snapshot at line ``seq``, told apart from the others by its debt."""
    return Snapshot(seq=seq, debt=seq)


SNAPSHOTS = [
    pytest.param(
        Snapshot(
            seq=5,
            grants=(
                LiveGrant(
                    grant_id="purchase:1",
                    order_id="order-1",
                    source=GrantSource.PURCHASE,
                    tokens=100,
                    remaining=40,
                    priority=10,
                    starts=T0,
                    expires=T0 + 30 * DAY,
                    seq=2,
                ),
                LiveGrant(
                    grant_id="line-5",
                    order_id=None,
                    source=GrantSource.PROMOTIONAL,
                    tokens=7,
                    remaining=7,
                    priority=50,
                    starts=T0 + DAY,
                    expires=None,
                    seq=5,
                ),
            ),
        ),
        id="grants",
    ),
    pytest.param(Snapshot(seq=3, debt=12), id="debt"),
]

WINDOWS = [
    pytest.param(
        Window(
            version=3,
            starts=T0,
            latest_end=T0 + 60 * DAY,
            never_ends=True,
            claims=(
                Claim(key="order:1", starts=T0 + 30 * DAY, expires=T0 + 60 * DAY),
                Claim(key="order:2:0", starts=T0 + 60 * DAY, expires=None),
            ),
        ),
        id="claims",
    ),
    pytest.param(
        Window(version=1, starts=T0, latest_end=T0 + DAY, closed_seq=4),
        id="closed",
    ),
]


def _window_moments(window: Window) -> list[datetime | None]:
    moments = [window.starts, window.latest_end]
    for claim in window.claims:
        moments += [claim.starts, claim.expires]
    return moments


def _snapshot_moments(snapshot: Snapshot) -> list[datetime | None]:
    return [moment for g in snapshot.grants for moment in (g.starts, g.expires)]


class _ReaderContract(BackendContract, Generic[E]):
    """What every :class:`~usercredits.dao.Reader` guarantees: create, read by id and by
    filters, ids in ``str`` form, and copies that never alias what is stored."""

    def _dao(self, factory: DaoFactory) -> Reader[E]:
        raise NotImplementedError

    def _new(self, n: int) -> E:
        """The ``n``-th of a series of distinct entities, not stored yet."""
        raise NotImplementedError

    def _scribble(self, entity: E) -> None:
        """Change ``entity`` in place."""
        raise NotImplementedError

    def _create(self, factory: DaoFactory, n: int) -> E:
        return self._dao(factory).create(self._new(n))

    def _absent_id(self) -> Any:
        """A well-formed id matching nothing in a backend holding at most two entities of the
        kind: the id of the third one stored in another, fresh backend."""
        other = self.make_dao_factory()
        try:
            return _ids(self._create(other, n) for n in range(3))[-1]
        finally:
            other.close()

    def test_create_returns_the_entity_with_an_id(self, dao_factory: DaoFactory) -> None:
        entity = self._new(0)
        created: Any = self._dao(dao_factory).create(entity)
        assert created.id is not None
        assert created == _replace(entity, id=created.id)

    def test_find_by_id_finds_the_created_entity(self, dao_factory: DaoFactory) -> None:
        created: Any = self._create(dao_factory, 0)
        assert self._dao(dao_factory).find_by_id(created.id) == created

    def test_find_by_id_accepts_the_str_form_of_the_id(self, dao_factory: DaoFactory) -> None:
        created: Any = self._create(dao_factory, 0)
        assert self._dao(dao_factory).find_by_id(str(created.id)) == created

    def test_find_by_id_of_an_absent_id_is_none(self, dao_factory: DaoFactory) -> None:
        self._create(dao_factory, 0)
        dao = self._dao(dao_factory)
        assert dao.find_by_id(self._absent_id()) is None
        assert dao.find_by_id(NO_SUCH_ID) is None

    def test_find_returns_every_entity_in_creation_order(self, dao_factory: DaoFactory) -> None:
        created = [self._create(dao_factory, n) for n in range(3)]
        dao = self._dao(dao_factory)
        assert dao.find({}) == created
        assert dao.find() == created

    def test_find_on_an_empty_store_is_empty(self, dao_factory: DaoFactory) -> None:
        assert self._dao(dao_factory).find({}) == []

    def test_find_one_returns_the_first_created_entity(self, dao_factory: DaoFactory) -> None:
        created = [self._create(dao_factory, n) for n in range(3)]
        dao = self._dao(dao_factory)
        assert dao.find_one({}) == created[0]
        assert dao.find_one() == created[0]

    def test_find_one_on_an_empty_store_is_none(self, dao_factory: DaoFactory) -> None:
        assert self._dao(dao_factory).find_one({}) is None

    def test_count_counts_every_entity(self, dao_factory: DaoFactory) -> None:
        dao = self._dao(dao_factory)
        assert dao.count({}) == 0
        for n in range(3):
            self._create(dao_factory, n)
        assert dao.count({}) == 3
        assert dao.count() == 3

    def test_an_id_filter_accepts_the_id_and_its_str_form(self, dao_factory: DaoFactory) -> None:
        created: list[Any] = [self._create(dao_factory, n) for n in range(3)]
        dao = self._dao(dao_factory)
        wanted = created[1].id
        assert dao.find({"id": wanted}) == [created[1]]
        assert dao.find({"id": str(wanted)}) == [created[1]]
        assert dao.find_one({"id": str(wanted)}) == created[1]
        assert dao.count({"id": str(wanted)}) == 1

    def test_an_id_filter_of_an_absent_id_matches_nothing(self, dao_factory: DaoFactory) -> None:
        self._create(dao_factory, 0)
        dao = self._dao(dao_factory)
        for absent in (self._absent_id(), NO_SUCH_ID):
            assert dao.find({"id": absent}) == []
            assert dao.find_one({"id": absent}) is None
            assert dao.count({"id": absent}) == 0

    def test_mutating_a_returned_entity_does_not_change_the_stored_one(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._dao(dao_factory)
        created: Any = self._create(dao_factory, 0)
        stored = copy.deepcopy(created)
        returned = [created, dao.find_by_id(created.id), dao.find_one({}), *dao.find({})]
        for entity in returned:
            assert entity is not None
            self._scribble(entity)
        assert returned[0] != stored
        assert dao.find_by_id(created.id) == stored

    def test_mutating_the_entity_given_to_create_does_not_change_the_stored_one(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._dao(dao_factory)
        entity = self._new(0)
        created: Any = dao.create(entity)
        stored = copy.deepcopy(created)
        self._scribble(entity)
        assert dao.find_by_id(created.id) == stored


INVALID_OFFER_CHANGES = [
    pytest.param({"price": Decimal("NaN")}, id="price-nan"),
    pytest.param({"price": Decimal("-1")}, id="price-negative"),
    pytest.param({"price": 9.99}, id="price-float"),
    pytest.param({"cycle": "fortnightly"}, id="unknown-cycle"),
    pytest.param({"cycle": Cycle.CUSTOM}, id="custom-cycle-without-seconds"),
    pytest.param({"name": ""}, id="empty-name"),
    pytest.param({"name": "Renamed", "price": Decimal("NaN")}, id="valid-and-invalid"),
]


class OfferDaoContract(_ReaderContract[Offer]):
    """The guarantees of :class:`usercredits.dao.OfferDao`."""

    def _dao(self, factory: DaoFactory) -> Reader[Offer]:
        return factory.get_offer_dao()

    def _new(self, n: int) -> Offer:
        return _offer(f"offer-{n}", offer_group=f"group-{n}")

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
            priority=10,
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
        created = dao.create(_replace(_offer("bundle"), combined_items=items))
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found.combined_items == items
        assert [str(item.offer_id) for item in found.combined_items] == _ids([tokens, support])
        assert type(found.combined_items[1].cycle) is Cycle

    def test_find_filters_on_field_values(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        first = dao.create(_offer("a", offer_group="pro", kind=OfferKind.SUBSCRIPTION))
        second = dao.create(_offer("b", offer_group="pro"))
        third = dao.create(_offer("c", offer_group="basic", kind=OfferKind.SUBSCRIPTION))
        assert dao.find({"offer_group": "pro"}) == [first, second]
        assert dao.find({"kind": OfferKind.SUBSCRIPTION}) == [first, third]
        assert dao.find({"offer_group": "pro", "kind": OfferKind.SUBSCRIPTION}) == [first]
        assert dao.find_one({"kind": OfferKind.TOKENS}) == second
        assert dao.count({"offer_group": "pro"}) == 2
        assert dao.find({"offer_group": "none"}) == []
        assert dao.find_one({"offer_group": "none"}) is None
        assert dao.count({"offer_group": "none"}) == 0

    def test_create_refuses_a_key_already_used_and_stores_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
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

    def test_update_by_id_changes_only_the_given_fields(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        created = dao.create(_offer("starter"))
        other = dao.create(_offer("business"))
        changes = {"name": "Renamed", "price": Decimal("12.50"), "tags": ["renamed"]}
        expected = _replace(created, **changes)
        assert dao.update_by_id(created.id, changes) == expected
        assert dao.find_by_id(created.id) == expected
        assert dao.find_by_id(other.id) == other

    def test_update_by_id_accepts_the_str_form_of_the_id(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        created = dao.create(_offer("starter"))
        expected = _replace(created, name="Renamed")
        assert dao.update_by_id(str(created.id), {"name": "Renamed"}) == expected
        assert dao.find_by_id(created.id) == expected

    def test_update_by_id_of_an_absent_id_returns_none_and_stores_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_offer_dao()
        kept = dao.create(_offer("starter"))
        assert dao.update_by_id(self._absent_id(), {"name": "Renamed"}) is None
        assert dao.update_by_id(NO_SUCH_ID, {"name": "Renamed"}) is None
        assert dao.find({}) == [kept]

    @pytest.mark.parametrize("changes", INVALID_OFFER_CHANGES)
    def test_update_by_id_with_an_invalid_value_raises_and_leaves_the_offer_unchanged(
        self, dao_factory: DaoFactory, changes: dict[str, Any]
    ) -> None:
        dao = dao_factory.get_offer_dao()
        created = dao.create(_offer("starter"))
        with pytest.raises(InvalidOfferError):
            dao.update_by_id(created.id, changes)
        assert dao.find_by_id(created.id) == created

    def test_update_by_id_refuses_a_key_used_by_another_offer_and_changes_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_offer_dao()
        starter = dao.create(_offer("starter"))
        business = dao.create(_offer("business"))
        with pytest.raises(DuplicateEntityError):
            dao.update_by_id(business.id, {"key": "starter", "name": "Renamed"})
        assert dao.find({}) == [starter, business]
        assert dao.find_by_key("starter") == starter

    def test_update_by_id_may_set_the_offers_own_key(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        created = dao.create(_offer("starter"))
        changes = {"key": "starter", "name": "Renamed"}
        assert dao.update_by_id(created.id, changes) == _replace(created, **changes)

    def test_find_by_key_follows_an_update_of_the_key(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        created = dao.create(_offer("starter"))
        updated = dao.update_by_id(created.id, {"key": "basic"})
        assert updated is not None
        assert dao.find_by_key("basic") == updated
        assert dao.find_by_key("starter") is None

    def test_delete_by_id_removes_only_that_offer(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        doomed = dao.create(_offer("starter"))
        kept = dao.create(_offer("business"))
        assert dao.delete_by_id(doomed.id) is True
        assert dao.find_by_id(doomed.id) is None
        assert dao.find({}) == [kept]

    def test_delete_by_id_accepts_the_str_form_of_the_id(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        doomed = dao.create(_offer("starter"))
        assert dao.delete_by_id(str(doomed.id)) is True
        assert dao.find_by_id(doomed.id) is None

    def test_delete_by_id_of_an_absent_id_returns_false(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        kept = dao.create(_offer("starter"))
        gone = dao.create(_offer("business"))
        dao.delete_by_id(gone.id)
        assert dao.delete_by_id(gone.id) is False
        assert dao.delete_by_id(str(gone.id)) is False
        assert dao.delete_by_id(self._absent_id()) is False
        assert dao.delete_by_id(NO_SUCH_ID) is False
        assert dao.find({}) == [kept]

    def test_the_key_of_a_deleted_offer_is_free_again(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_offer_dao()
        dao.delete_by_id(dao.create(_offer("starter")).id)
        again = dao.create(_offer("starter", offer_group="second"))
        assert dao.find_by_key("starter") == again

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

    def test_mutating_what_the_queries_return_does_not_change_the_stored_offers(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_offer_dao()
        regular = dao.create(_offer("regular"))
        unlocked = dao.create(_offer("unlocked", unlocked_by=["pro"]))
        stored = [copy.deepcopy(regular), copy.deepcopy(unlocked)]
        returned = [
            dao.find_by_key("regular"),
            dao.update_by_id(unlocked.id, {}),
            *dao.find_regular(),
            *dao.find_unlocked_by(["pro"]),
        ]
        for offer in returned:
            assert offer is not None
            self._scribble(offer)
        assert dao.find({}) == stored


class OrderDaoContract(_ReaderContract[Order]):
    """The guarantees of :class:`usercredits.dao.OrderDao`."""

    def _dao(self, factory: DaoFactory) -> Reader[Order]:
        return factory.get_order_dao()

    def _new(self, n: int) -> Order:
        return _order(f"user-{n}", payment_intent_id=f"pi_{n}")

    def _scribble(self, entity: Order) -> None:
        entity.status = Status.REFUNDED
        entity.history.append(OrderStatus(date=T0, status=Status.REFUNDED, message="scribbled"))

    def test_every_field_round_trips(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        item_offer = dao_factory.get_offer_dao().create(_offer("support"))
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
                    offer_name="Support",
                    append_date=True,
                    priority=10,
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
            offer_name="Pro",
            append_date=True,
            priority=20,
            item_index=1,
            in_progress=True,
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
        created = [dao.create(_order(user_id, status=Status.PAID)) for user_id in USER_IDS]
        for user_id, order in zip(USER_IDS, created, strict=True):
            assert dao.find({"user_id": user_id}) == [order]
            assert dao.count({"user_id": user_id}) == 1
            assert dao.find_live(user_id) == [order]
            found = dao.find_by_id(order.id)
            assert found is not None
            assert type(found.user_id) is type(user_id)
            assert found.user_id == user_id

    def test_find_filters_on_id_fields_given_as_str(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        offers = dao_factory.get_offer_dao()
        offer, other_offer = offers.create(_offer("starter")), offers.create(_offer("business"))
        parent = dao.create(_replace(_order(), offer_id=offer.id))
        child = dao.create(
            _replace(_order(parent_id=parent.id, item_index=0), offer_id=other_offer.id)
        )
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

    def test_create_never_stores_the_payment_intent_secret(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(
            _replace(_order(payment_intent_id="pi_1"), payment_intent_secret="pi_1_secret")
        )
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found.payment_intent_id == "pi_1"
        assert found.payment_intent_secret is None
        assert [o.payment_intent_secret for o in dao.find({})] == [None]

    def test_transition_never_stores_the_payment_intent_secret(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order())
        changes = {"payment_intent_id": "pi_2", "payment_intent_secret": "pi_2_secret"}
        dao.transition(created.id, [Status.PENDING], changes)
        found = dao.find_by_id(created.id)
        assert found is not None
        assert found.payment_intent_id == "pi_2"
        assert found.payment_intent_secret is None

    def test_transition_from_a_listed_status_applies_the_changes(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order(status=Status.ERROR))
        other = dao.create(_order(status=Status.ERROR))
        entry = OrderStatus(date=T0 + DAY, status=Status.PAID, message="Paid")
        changes = {"status": Status.PAID, "updated_at": T0 + DAY, "in_progress": True}
        result = dao.transition(created.id, [Status.PENDING, Status.ERROR], changes, entry)
        expected = _replace(created, **changes, history=[entry])
        assert result == expected
        assert dao.find_by_id(created.id) == expected
        assert dao.find_by_id(other.id) == other

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

    def test_transition_with_expected_values_applies_when_they_match(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order(status=Status.PAID))
        changes = {"status": Status.PARTIAL, "refunded_amount": Decimal("2.50")}
        result = dao.transition(
            created.id, [Status.PAID], changes, expected={"refunded_amount": Decimal(0)}
        )
        assert result is not None
        assert (result.status, result.refunded_amount) == (Status.PARTIAL, Decimal("2.50"))
        assert dao.find_by_id(created.id) == result

    def test_transition_with_an_expected_value_that_differs_changes_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order(status=Status.PAID))
        result = dao.transition(
            created.id,
            [Status.PAID],
            {"refunded_amount": Decimal("4")},
            expected={"refunded_amount": Decimal("2.50")},
        )
        assert result is None
        assert dao.find_by_id(created.id) == created

    def test_racing_transitions_expecting_one_value_succeed_once(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        created = dao.create(_order(status=Status.PAID))

        def refund(worker: int) -> Order | None:
            return dao.transition(
                created.id,
                [Status.PAID, Status.PARTIAL],
                {"status": Status.PARTIAL, "refunded_amount": Decimal(worker + 1)},
                expected={"refunded_amount": Decimal(0)},
            )

        won = [order for order in _race(refund) if order is not None]
        assert len(won) == 1
        assert dao.find_by_id(created.id) == won[0]

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
        dao = dao_factory.get_order_dao()
        kept = dao.create(_order())
        for absent in (self._absent_id(), NO_SUCH_ID):
            with pytest.raises(EntityNotFoundError):
                dao.transition(absent, [Status.PENDING], {"status": Status.PAID})
        assert dao.find({}) == [kept]

    def test_racing_transitions_from_pending_to_paid_succeed_once(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        orders = [dao.create(_order()) for _ in range(ROUNDS)]

        def pay_all(worker: int) -> list[str]:
            won = []
            for order in orders:
                entry = OrderStatus(date=T0, status=Status.PAID, message=f"worker {worker}")
                paid = dao.transition(order.id, [Status.PENDING], {"status": Status.PAID}, entry)
                if paid is not None:
                    won.append(str(order.id))
            return won

        wins = Counter(_flatten(_race(pay_all)))
        assert wins == Counter(_ids(orders))
        for order in orders:
            found = dao.find_by_id(order.id)
            assert found is not None
            assert found.status is Status.PAID
            assert len(found.history) == 1

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
        updated = dao.transition(created.id, [Status.PENDING], {"payment_intent_id": "pi_new"})
        assert updated is not None
        assert dao.find_by_payment_intent_id("pi_old") is None
        assert dao.find_by_payment_intent_id("pi_new") == updated

    def test_a_second_child_order_of_one_item_is_refused_and_stores_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        parent = dao.create(_order(status=Status.PAID))
        first = dao.create(_order(parent_id=parent.id, item_index=0))
        with pytest.raises(DuplicateEntityError):
            dao.create(_order(offer_group="other", parent_id=parent.id, item_index=0))
        assert dao.find({}) == [parent, first]
        assert dao.find_child(parent.id, 0) == first

    def test_child_orders_of_other_items_or_other_bundles_coexist(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        parent, other_parent = dao.create(_order()), dao.create(_order())
        children = [
            dao.create(_order(parent_id=parent.id, item_index=0)),
            dao.create(_order(parent_id=parent.id, item_index=1)),
            dao.create(_order(parent_id=other_parent.id, item_index=0)),
        ]
        assert dao.find({"parent_id": parent.id}) == children[:2]
        assert dao.count({}) == 5

    def test_racing_creates_of_one_child_order_store_one(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        parent = dao.create(_order(status=Status.PAID))

        def create_child(worker: int) -> str | None:
            try:
                child = _order(offer_group=f"group-{worker}", parent_id=parent.id, item_index=0)
                return str(dao.create(child).id)
            except DuplicateEntityError:
                return None

        created = [child_id for child_id in _race(create_child) if child_id is not None]
        assert len(created) == 1
        assert _ids(dao.find({"parent_id": parent.id})) == created
        assert _ids([dao.find_child(parent.id, 0)]) == created

    def _free_offers(self, factory: DaoFactory) -> tuple[Offer, Offer]:
        offers = factory.get_offer_dao()
        return offers.create(_offer("trial", price="0")), offers.create(_offer("sample", price="0"))

    def test_a_second_paid_exclusive_order_of_an_offer_is_refused_and_stores_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        trial, _ = self._free_offers(dao_factory)
        dao = dao_factory.get_order_dao()
        first = dao.create(_order(status=Status.PAID, offer_id=trial.id, exclusive=True))
        second = _order(
            status=Status.PAID, offer_id=trial.id, exclusive=True, payment_intent_id="pi_2"
        )
        with pytest.raises(DuplicateEntityError):
            dao.create(second)
        assert dao.find({}) == [first]
        assert dao.find_by_payment_intent_id("pi_2") is None

    def test_a_transition_to_paid_of_a_second_exclusive_order_is_refused_and_changes_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        trial, _ = self._free_offers(dao_factory)
        dao = dao_factory.get_order_dao()
        paid = dao.create(_order(status=Status.PAID, offer_id=trial.id, exclusive=True))
        pending = dao.create(_order(offer_id=trial.id, exclusive=True))
        entry = OrderStatus(date=T0, status=Status.PAID, message="Paid")
        changes = {"status": Status.PAID, "in_progress": True}
        with pytest.raises(DuplicateEntityError):
            dao.transition(pending.id, [Status.PENDING], changes, entry)
        assert dao.find({}) == [paid, pending]

    def test_paid_exclusive_orders_of_other_offers_or_other_users_coexist(
        self, dao_factory: DaoFactory
    ) -> None:
        trial, sample = self._free_offers(dao_factory)
        dao = dao_factory.get_order_dao()
        orders = [
            dao.create(_order(1, status=Status.PAID, offer_id=trial.id, exclusive=True)),
            dao.create(_order(1, status=Status.PAID, offer_id=sample.id, exclusive=True)),
            dao.create(_order("1", status=Status.PAID, offer_id=trial.id, exclusive=True)),
        ]
        assert dao.find({"exclusive": True}) == orders

    def test_exclusive_orders_not_paid_and_paid_orders_not_exclusive_never_clash(
        self, dao_factory: DaoFactory
    ) -> None:
        trial, _ = self._free_offers(dao_factory)
        dao = dao_factory.get_order_dao()
        orders = [
            dao.create(_order(status=Status.PAID, offer_id=trial.id, exclusive=True)),
            dao.create(_order(status=Status.PENDING, offer_id=trial.id, exclusive=True)),
            dao.create(_order(status=Status.EXPIRED, offer_id=trial.id, exclusive=True)),
            dao.create(_order(status=Status.PAID, offer_id=trial.id)),
            dao.create(_order(status=Status.PAID, offer_id=trial.id)),
        ]
        assert dao.find({"offer_id": trial.id}) == orders

    def test_an_exclusive_order_no_longer_paid_frees_its_offer(
        self, dao_factory: DaoFactory
    ) -> None:
        trial, _ = self._free_offers(dao_factory)
        dao = dao_factory.get_order_dao()
        first = dao.create(_order(status=Status.PAID, offer_id=trial.id, exclusive=True))
        dao.transition(first.id, [Status.PAID], {"status": Status.EXPIRED})
        second = dao.create(_order(status=Status.PAID, offer_id=trial.id, exclusive=True))
        assert dao.find_live("alice") == [second]

    def test_racing_creates_of_paid_exclusive_orders_of_an_offer_store_one(
        self, dao_factory: DaoFactory
    ) -> None:
        trial, _ = self._free_offers(dao_factory)
        dao = dao_factory.get_order_dao()

        def create(worker: int) -> str | None:
            order = _order(status=Status.PAID, offer_id=trial.id, exclusive=True)
            try:
                return str(dao.create(order).id)
            except DuplicateEntityError:
                return None

        created = [order_id for order_id in _race(create) if order_id is not None]
        assert len(created) == 1
        assert _ids(dao.find({})) == created

    def test_racing_transitions_to_paid_of_exclusive_orders_of_an_offer_succeed_once(
        self, dao_factory: DaoFactory
    ) -> None:
        trial, _ = self._free_offers(dao_factory)
        dao = dao_factory.get_order_dao()
        orders = [dao.create(_order(offer_id=trial.id, exclusive=True)) for _ in range(WORKERS)]

        def pay(worker: int) -> str | None:
            try:
                paid = dao.transition(orders[worker].id, [Status.PENDING], {"status": Status.PAID})
            except DuplicateEntityError:
                return None
            return None if paid is None else str(paid.id)

        won = [order_id for order_id in _race(pay) if order_id is not None]
        assert len(won) == 1
        assert _ids(dao.find_live("alice")) == won

    def test_find_child_finds_the_child_order_of_an_item(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        parent = dao.create(_order(status=Status.PAID))
        first = dao.create(_order(offer_group="a", parent_id=parent.id, item_index=0))
        second = dao.create(_order(offer_group="b", parent_id=parent.id, item_index=1))
        assert dao.find_child(parent.id, 0) == first
        assert dao.find_child(parent.id, 1) == second
        assert dao.find_child(str(parent.id), 1) == second

    def test_find_child_of_an_item_without_a_child_order_is_none(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        parent, other_parent = dao.create(_order()), dao.create(_order())
        child = dao.create(_order(parent_id=parent.id, item_index=0))
        assert dao.find_child(parent.id, 1) is None
        assert dao.find_child(other_parent.id, 0) is None
        assert dao.find_child(child.id, 0) is None
        assert dao.find_child(NO_SUCH_ID, 0) is None

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
        days_ago = dao.create(_order(status=Status.PAID, expires=now - 3 * DAY))
        partial = dao.create(_order(status=Status.PARTIAL, expires=now - 2 * DAY))
        assert dao.find_due("alice", now) == [days_ago, partial, day_ago, at_now]

    def test_find_due_returns_only_the_users_orders(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        due = {
            user_id: dao.create(_order(user_id, status=Status.PAID, expires=T0))
            for user_id in USER_IDS
        }
        for user_id, order in due.items():
            assert dao.find_due(user_id, T0 + DAY) == [order]
        assert dao.find_due("nobody", T0 + DAY) == []

    def test_find_live_returns_the_users_paid_orders_in_creation_order(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        root = dao.create(_order(1, status=Status.PAID, offer_group="pro"))
        dao.create(_order(1, status=Status.PENDING, offer_group="pro"))
        basic = dao.create(_order(1, status=Status.PAID, offer_group="basic"))
        child = dao.create(
            _order(1, status=Status.PAID, offer_group="pro", parent_id=root.id, item_index=0)
        )
        dao.create(_order(1, status=Status.EXPIRED, offer_group="pro"))
        dao.create(_order("1", status=Status.PAID, offer_group="pro"))
        partial = dao.create(_order(1, status=Status.PARTIAL, offer_group="pro"))
        assert dao.find_live(1) == [root, basic, child, partial]

    def test_find_live_of_a_group_returns_only_its_orders(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        root = dao.create(_order(status=Status.PAID, offer_group="pro"))
        dao.create(_order(status=Status.PAID, offer_group="basic"))
        child = dao.create(
            _order(status=Status.PAID, offer_group="pro", parent_id=root.id, item_index=0)
        )
        dao.create(_order(status=Status.REFUNDED, offer_group="pro"))
        assert dao.find_live("alice", "pro") == [root, child]
        assert dao.find_live("alice", "none") == []

    def test_find_in_progress_returns_the_users_orders_in_progress_in_creation_order(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        first = dao.create(_order(1, in_progress=True))
        dao.create(_order(1))
        second = dao.create(_order(1, status=Status.PAID, in_progress=True))
        dao.create(_order("1", in_progress=True))
        assert dao.find_in_progress(1) == [first, second]
        assert dao.find_in_progress("nobody") == []

    def test_find_in_progress_follows_transitions(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_order_dao()
        done = dao.create(_order(in_progress=True))
        started = dao.create(_order())
        dao.transition(done.id, [Status.PENDING], {"in_progress": False})
        now_in_progress = dao.transition(
            started.id, [Status.PENDING], {"status": Status.PAID, "in_progress": True}
        )
        assert dao.find_in_progress("alice") == [now_in_progress]

    def test_mutating_what_the_queries_return_does_not_change_the_stored_orders(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_order_dao()
        parent = dao.create(_order(status=Status.PAID, expires=T0, payment_intent_id="pi_1"))
        child = dao.create(_order(parent_id=parent.id, item_index=0, in_progress=True))
        stored = [copy.deepcopy(parent), copy.deepcopy(child)]
        returned = [
            dao.find_by_payment_intent_id("pi_1"),
            dao.find_child(parent.id, 0),
            *dao.find_due("alice", T0),
            *dao.find_live("alice"),
            *dao.find_in_progress("alice"),
        ]
        for order in returned:
            assert order is not None
            self._scribble(order)
        assert dao.find({}) == stored


class TokenTimetableDaoContract(_ReaderContract[TokenTimetable]):
    """The guarantees of :class:`usercredits.dao.TokenTimetableDao`."""

    def _dao(self, factory: DaoFactory) -> Reader[TokenTimetable]:
        return factory.get_token_timetable_dao()

    def _new(self, n: int) -> TokenTimetable:
        return _line(f"user-{n}", tokens=-(n + 1), idempotency_key=f"key-{n}")

    def _scribble(self, entity: TokenTimetable) -> None:
        entity.tokens = -999
        entity.note = "scribbled"

    def test_every_field_round_trips(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        order = dao_factory.get_order_dao().create(_order())
        line = TokenTimetable(
            user_id="alice",
            offer_group="pro",
            tokens=300,
            created_at=T0,
            order_id=order.id,
            reason=LedgerReason.PURCHASE,
            idempotency_key="grant-1",
            expires=T0 + 30 * DAY,
            seq=4,
            grant_id="purchase:1",
            priority=10,
            operation_key=f"purchase:{order.id}",
            note="welcome",
            hold_id="hold-1",
            held=25,
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
        created = [dao.create(_line(user_id, idempotency_key="k")) for user_id in USER_IDS]
        for user_id, line in zip(USER_IDS, created, strict=True):
            assert dao.find({"user_id": user_id}) == [line]
            assert dao.lines_after(user_id, "basic", 0) == [line]
            assert dao.history(user_id, None, 10) == [line]
            assert dao.find_by_key(user_id, idempotency_key="k") == line
            found = dao.find_by_id(line.id)
            assert found is not None
            assert type(found.user_id) is type(user_id)

    def test_find_filters_on_id_fields_given_as_str(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        order = dao_factory.get_order_dao().create(_order())
        purchase = dao.create(
            _line(seq=1, tokens=10, reason=LedgerReason.PURCHASE, order_id=order.id)
        )
        dao.create(_line(seq=2))
        assert dao.find({"order_id": str(order.id)}) == [purchase]
        assert dao.find({"order_id": order.id, "reason": LedgerReason.PURCHASE}) == [purchase]
        assert dao.count({"order_id": str(order.id), "reason": LedgerReason.EXPIRY}) == 0

    def test_the_ledger_has_no_way_to_change_or_delete_a_line(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        assert not hasattr(dao, "update_by_id")
        assert not hasattr(dao, "delete_by_id")

    def test_create_refuses_a_seq_already_used_in_the_account_and_stores_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        first = dao.create(_line(seq=1, tokens=5))
        with pytest.raises(DuplicateEntityError):
            dao.create(_line(seq=1, tokens=-2, idempotency_key="k", operation_key="op"))
        assert dao.find({}) == [first]
        assert dao.lines_after("alice", "basic", 0) == [first]
        assert dao.find_by_key("alice", idempotency_key="k", operation_key="op") is None

    def test_the_same_seq_is_free_in_another_account(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        lines = [
            dao.create(_line(1, seq=1)),
            dao.create(_line(1, seq=1, offer_group="pro")),
            dao.create(_line("1", seq=1)),
            dao.create(_line("bob", seq=1)),
        ]
        assert dao.find({"seq": 1}) == lines

    def test_create_refuses_an_idempotency_key_the_user_already_used_and_stores_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        first = dao.create(_line(seq=1, tokens=-2, idempotency_key="k"))
        with pytest.raises(DuplicateEntityError):
            dao.create(_line(seq=1, tokens=-5, offer_group="pro", idempotency_key="k"))
        assert dao.find({}) == [first]
        assert dao.lines_after("alice", "pro", 0) == []
        assert dao.create(_line(seq=1, offer_group="pro")).seq == 1

    def test_create_refuses_an_operation_key_the_user_already_used_and_stores_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        first = dao.create(_line(seq=1, tokens=10, operation_key="purchase:1"))
        with pytest.raises(DuplicateEntityError):
            dao.create(_line(seq=1, tokens=10, offer_group="pro", operation_key="purchase:1"))
        assert dao.find({}) == [first]
        assert dao.lines_after("alice", "pro", 0) == []
        assert dao.create(_line(seq=1, offer_group="pro")).seq == 1

    def test_the_same_keys_are_free_for_another_user(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        lines = [
            dao.create(_line(user_id, idempotency_key="k", operation_key="op"))
            for user_id in (1, "1", "bob")
        ]
        assert dao.find({"idempotency_key": "k", "operation_key": "op"}) == lines

    def test_an_idempotency_key_and_an_operation_key_of_one_value_do_not_clash(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        by_idempotency = dao.create(_line(seq=1, idempotency_key="k"))
        by_operation = dao.create(_line(seq=2, operation_key="k"))
        assert dao.find({}) == [by_idempotency, by_operation]

    def test_lines_without_keys_never_clash(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        for seq in (1, 2, 3):
            dao.create(_line(seq=seq))
        assert dao.count({"idempotency_key": None, "operation_key": None}) == 3

    def test_racing_creates_of_one_seq_store_one_line(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()

        def create_all(worker: int) -> list[int]:
            won = []
            for seq in range(1, ROUNDS + 1):
                try:
                    dao.create(_line(seq=seq, tokens=-(worker + 1)))
                except DuplicateEntityError:
                    continue
                won.append(seq)
            return won

        wins = Counter(_flatten(_race(create_all)))
        assert wins == Counter(range(1, ROUNDS + 1))
        assert [line.seq for line in dao.lines_after("alice", "basic", 0)] == list(
            range(1, ROUNDS + 1)
        )

    def test_racing_creates_with_one_key_store_one_line(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()

        def create(worker: int) -> str | None:
            line = _line(seq=worker + 1, idempotency_key="k", operation_key=f"op-{worker}")
            try:
                return str(dao.create(line).id)
            except DuplicateEntityError:
                return None

        created = [line_id for line_id in _race(create) if line_id is not None]
        assert len(created) == 1
        assert _ids(dao.find({})) == created
        assert _ids([dao.find_by_key("alice", idempotency_key="k")]) == created

    def test_lines_after_returns_the_accounts_lines_numbered_above_seq_in_order(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        lines = [dao.create(_line(seq=seq, tokens=seq)) for seq in (1, 2, 3, 4)]
        assert dao.lines_after("alice", "basic", 0) == lines
        assert dao.lines_after("alice", "basic", 2) == lines[2:]
        assert dao.lines_after("alice", "basic", 4) == []
        assert dao.lines_after("alice", "basic", 9) == []

    def test_lines_after_is_in_seq_order_whatever_the_recording_order(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        third, first, second = (dao.create(_line(seq=seq)) for seq in (3, 1, 2))
        assert dao.find({}) == [third, first, second]
        assert dao.lines_after("alice", "basic", 0) == [first, second, third]
        assert dao.lines_after("alice", "basic", 1) == [second, third]

    def test_lines_after_keeps_accounts_apart(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        mine = dao.create(_line(1, seq=1))
        dao.create(_line(1, seq=1, offer_group="pro"))
        dao.create(_line("1", seq=1))
        dao.create(_line("1", seq=2))
        assert dao.lines_after(1, "basic", 0) == [mine]
        assert dao.lines_after(1, "none", 0) == []
        assert dao.lines_after("bob", "basic", 0) == []

    def test_find_by_key_finds_the_users_line_by_its_idempotency_key(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        mine = dao.create(_line(1, idempotency_key="k"))
        theirs = dao.create(_line("1", idempotency_key="k"))
        assert dao.find_by_key(1, idempotency_key="k") == mine
        assert dao.find_by_key("1", idempotency_key="k") == theirs

    def test_find_by_key_finds_the_users_line_by_its_operation_key(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        mine = dao.create(_line(1, operation_key="purchase:1"))
        theirs = dao.create(_line("1", operation_key="purchase:1"))
        assert dao.find_by_key(1, operation_key="purchase:1") == mine
        assert dao.find_by_key("1", operation_key="purchase:1") == theirs

    def test_find_by_key_prefers_the_idempotency_key_then_the_operation_key(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        by_idempotency = dao.create(_line(seq=1, idempotency_key="k"))
        by_operation = dao.create(_line(seq=2, operation_key="op"))
        assert dao.find_by_key("alice", idempotency_key="k", operation_key="op") == by_idempotency
        assert dao.find_by_key("alice", idempotency_key="x", operation_key="op") == by_operation

    def test_find_by_key_of_unused_keys_is_none(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_token_timetable_dao()
        dao.create(_line("alice", idempotency_key="k", operation_key="op"))
        assert dao.find_by_key("alice", idempotency_key="other") is None
        assert dao.find_by_key("alice", operation_key="other") is None
        assert dao.find_by_key("alice", idempotency_key="op", operation_key="k") is None
        assert dao.find_by_key("alice") is None
        assert dao.find_by_key("bob", idempotency_key="k", operation_key="op") is None

    def _recorded(self, factory: DaoFactory) -> list[TokenTimetable]:
        """Alice's lines in two groups, in recording order, among another user's."""
        dao = factory.get_token_timetable_dao()
        recorded = []
        for seq in (1, 2, 3):
            recorded.append(dao.create(_line(seq=seq, tokens=seq, offer_group="pro")))
            dao.create(_line("bob", seq=seq, offer_group="pro"))
            recorded.append(dao.create(_line(seq=seq, tokens=-seq, offer_group="basic")))
        return recorded

    def test_history_returns_the_users_lines_newest_first(self, dao_factory: DaoFactory) -> None:
        recorded = self._recorded(dao_factory)
        dao = dao_factory.get_token_timetable_dao()
        assert dao.history("alice", None, 10) == recorded[::-1]

    def test_history_of_a_group_returns_only_its_lines(self, dao_factory: DaoFactory) -> None:
        recorded = self._recorded(dao_factory)
        dao = dao_factory.get_token_timetable_dao()
        assert dao.history("alice", "pro", 10) == [
            line for line in reversed(recorded) if line.offer_group == "pro"
        ]
        assert dao.history("alice", "none", 10) == []
        assert dao.history("carol", None, 10) == []

    def test_history_returns_at_most_limit_lines(self, dao_factory: DaoFactory) -> None:
        recorded = self._recorded(dao_factory)
        dao = dao_factory.get_token_timetable_dao()
        assert dao.history("alice", None, 2) == recorded[:-3:-1]
        assert dao.history("alice", "basic", 1) == [recorded[-1]]

    def test_history_before_a_line_returns_the_lines_recorded_before_it(
        self, dao_factory: DaoFactory
    ) -> None:
        recorded = self._recorded(dao_factory)
        dao = dao_factory.get_token_timetable_dao()
        cursor = recorded[3]
        assert dao.history("alice", None, 10, cursor.id) == recorded[2::-1]
        assert dao.history("alice", None, 10, str(cursor.id)) == recorded[2::-1]
        assert dao.history("alice", "pro", 10, cursor.id) == [recorded[2], recorded[0]]
        assert dao.history("alice", None, 10, recorded[0].id) == []

    def test_history_pages_through_every_line_once(self, dao_factory: DaoFactory) -> None:
        recorded = self._recorded(dao_factory)
        dao = dao_factory.get_token_timetable_dao()
        pages = [dao.history("alice", None, 4)]
        while pages[-1]:
            pages.append(dao.history("alice", None, 4, pages[-1][-1].id))
        assert [len(page) for page in pages] == [4, 2, 0]
        assert _flatten(pages) == recorded[::-1]

    def test_mutating_what_the_queries_return_does_not_change_the_stored_lines(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_token_timetable_dao()
        line = dao.create(_line(idempotency_key="k"))
        stored = copy.deepcopy(line)
        returned = [
            dao.find_by_key("alice", idempotency_key="k"),
            *dao.lines_after("alice", "basic", 0),
            *dao.history("alice", None, 10),
        ]
        for found in returned:
            assert found is not None
            self._scribble(found)
        assert dao.find({}) == [stored]


class UserCreditsDaoContract(BackendContract):
    """The guarantees of :class:`usercredits.dao.UserCreditsDao`."""

    def test_register_returns_the_same_id_on_repeated_calls(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        first = dao.register("alice")
        assert first is not None
        assert str(dao.register("alice")) == str(first)

    def test_user_ids_of_different_kinds_get_different_records(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        records = [str(dao.register(user_id)) for user_id in USER_IDS]
        assert len(set(records)) == len(USER_IDS)
        for user_id, record in zip(USER_IDS, records, strict=True):
            assert str(dao.find_record_id(user_id)) == record

    def test_find_record_id_is_the_id_register_returned(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        record = dao.register("alice")
        dao.register("bob")
        assert str(dao.find_record_id("alice")) == str(record)

    def test_find_record_id_of_an_unregistered_user_is_none(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.register("alice")
        assert dao.find_record_id("bob") is None

    def test_racing_registers_create_one_record_per_user(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        users = [f"user-{n}" for n in range(ROUNDS)]

        def register_all(worker: int) -> list[tuple[str, str]]:
            return [(user, str(dao.register(user))) for user in users]

        seen = set(_flatten(_race(register_all)))
        assert len(seen) == ROUNDS
        for user, record in seen:
            assert str(dao.find_record_id(user)) == record
        assert sorted(dao.iter_user_ids()) == sorted(users)

    @pytest.mark.parametrize("batch_size", [1, 3, 1000])
    def test_iter_user_ids_yields_every_registered_user_once(
        self, dao_factory: DaoFactory, batch_size: int
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        for user_id in USER_IDS:
            dao.register(user_id)
            dao.register(user_id)
        dao.open_account(USER_IDS[0], "pro", T0)
        dao.open_account("bob", "pro", T0)
        yielded = list(dao.iter_user_ids(batch_size))
        assert _user_set(yielded) == _user_set([*USER_IDS, "bob"])

    def test_iter_user_ids_streams_the_users(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.register("alice")
        users = dao.iter_user_ids(batch_size=1)
        assert isinstance(users, Iterator)
        assert list(users) == ["alice"]

    def test_iter_user_ids_of_an_empty_store_yields_nothing(self, dao_factory: DaoFactory) -> None:
        assert list(dao_factory.get_user_credits_dao().iter_user_ids()) == []

    def test_open_account_creates_an_empty_account_with_a_window_starting_now(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        account = dao.open_account("alice", "pro", T0)
        assert account.user_id == "alice"
        assert account.offer_group == "pro"
        assert account.snapshot == Snapshot()
        assert account.window == Window(version=account.window.version, starts=T0)
        _assert_utc(account.window.starts, T0)
        assert dao.get_account("alice", "pro") == account

    def test_open_account_registers_the_user(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_account("alice", "pro", T0)
        record = dao.find_record_id("alice")
        assert record is not None
        assert str(dao.register("alice")) == str(record)
        assert list(dao.iter_user_ids()) == ["alice"]

    def test_open_account_returns_the_existing_account(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        opened = dao.open_account("alice", "pro", T0)
        dao.save_snapshot("alice", "pro", _in_debt(1))
        changed = dao.get_account("alice", "pro")
        assert changed is not None
        assert changed.snapshot == _in_debt(1)
        assert dao.open_account("alice", "pro", T0 + DAY) == changed
        assert dao.accounts("alice") == [changed]
        assert changed.window == opened.window

    def test_racing_open_account_calls_create_one_account(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        opened = _race(lambda worker: dao.open_account("alice", "pro", T0 + worker * DAY))
        assert all(account == opened[0] for account in opened)
        assert dao.accounts("alice") == [opened[0]]
        assert list(dao.iter_user_ids()) == ["alice"]

    def test_get_account_of_an_absent_account_is_none(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        assert dao.get_account("alice", "pro") is None
        dao.open_account("alice", "basic", T0)
        dao.register("bob")
        assert dao.get_account("alice", "pro") is None
        assert dao.get_account("bob", "basic") is None

    def test_accounts_returns_every_account_of_the_user_in_creation_order(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        pro = dao.open_account("alice", "pro", T0)
        dao.open_account("bob", "pro", T0)
        basic = dao.open_account("alice", "basic", T0 + DAY)
        assert dao.accounts("alice") == [pro, basic]

    def test_accounts_of_a_user_without_accounts_is_empty(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.register("alice")
        dao.open_account("bob", "pro", T0)
        assert dao.accounts("alice") == []
        assert dao.accounts("carol") == []

    def test_user_ids_of_different_kinds_have_different_accounts(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        opened = [
            dao.open_account(user_id, "pro", T0 + n * DAY) for n, user_id in enumerate(USER_IDS)
        ]
        for user_id, account in zip(USER_IDS, opened, strict=True):
            assert dao.accounts(user_id) == [account]
            found = dao.get_account(user_id, "pro")
            assert found == account
            assert type(found.user_id) is type(user_id)

    def test_save_snapshot_stores_a_snapshot_of_a_higher_seq(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_account("alice", "pro", T0)
        assert dao.save_snapshot("alice", "pro", _in_debt(1)) is True
        assert dao.save_snapshot("alice", "pro", _in_debt(3)) is True
        account = dao.get_account("alice", "pro")
        assert account is not None
        assert account.snapshot == _in_debt(3)

    @pytest.mark.parametrize("seq", [2, 1, 0], ids=["equal", "lower", "initial"])
    def test_save_snapshot_refuses_a_snapshot_not_newer_than_the_stored_one(
        self, dao_factory: DaoFactory, seq: int
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_account("alice", "pro", T0)
        dao.save_snapshot("alice", "pro", _in_debt(2))
        assert dao.save_snapshot("alice", "pro", Snapshot(seq=seq, debt=99)) is False
        account = dao.get_account("alice", "pro")
        assert account is not None
        assert account.snapshot == _in_debt(2)

    @pytest.mark.parametrize("snapshot", SNAPSHOTS)
    def test_snapshots_round_trip_exactly(
        self, dao_factory: DaoFactory, snapshot: Snapshot
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        dao.open_account("alice", "pro", T0)
        assert dao.save_snapshot("alice", "pro", snapshot) is True
        account = dao.get_account("alice", "pro")
        assert account is not None
        assert account.snapshot == snapshot
        assert dao.accounts("alice") == [account]
        for found, expected in zip(
            _snapshot_moments(account.snapshot), _snapshot_moments(snapshot), strict=True
        ):
            if expected is not None:
                _assert_utc(found, expected)

    def test_racing_save_snapshots_keep_the_highest_seq(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        groups = [f"group-{n}" for n in range(ROUNDS)]
        for group in groups:
            dao.open_account("alice", group, T0)

        def seq_of(worker: int, group_index: int) -> int:
            # Which worker saves the highest seq changes from one account to the next.
            return (worker + group_index) % WORKERS + 1

        def save_all(worker: int) -> list[tuple[int, bool]]:
            return [
                (seq_of(worker, n), dao.save_snapshot("alice", group, _in_debt(seq_of(worker, n))))
                for n, group in enumerate(groups)
            ]

        saves = _flatten(_race(save_all))
        assert all(stored for seq, stored in saves if seq == WORKERS)
        assert [account.snapshot for account in dao.accounts("alice")] == [
            _in_debt(WORKERS)
        ] * ROUNDS

    def test_save_window_stores_the_window_of_the_expected_version(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        opened = dao.open_account("alice", "pro", T0)
        widened = opened.window.widened(T0, T0 + DAY)
        assert dao.save_window("alice", "pro", opened.window.version, widened) is True
        assert dao.get_account("alice", "pro") == opened._replace(window=widened)
        closed = widened.closed(0)
        assert dao.save_window("alice", "pro", widened.version, closed) is True
        assert dao.get_account("alice", "pro") == opened._replace(window=closed)

    def test_save_window_refuses_a_stale_version(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_user_credits_dao()
        opened = dao.open_account("alice", "pro", T0)
        widened = opened.window.widened(T0, T0 + DAY)
        dao.save_window("alice", "pro", opened.window.version, widened)
        stale = opened.window.widened(T0, T0 + 9 * DAY)
        assert dao.save_window("alice", "pro", opened.window.version, stale) is False
        assert dao.save_window("alice", "pro", widened.version + 1, stale) is False
        account = dao.get_account("alice", "pro")
        assert account is not None
        assert account.window == widened

    @pytest.mark.parametrize("window", WINDOWS)
    def test_windows_round_trip_exactly(self, dao_factory: DaoFactory, window: Window) -> None:
        dao = dao_factory.get_user_credits_dao()
        opened = dao.open_account("alice", "pro", T0)
        assert dao.save_window("alice", "pro", opened.window.version, window) is True
        account = dao.get_account("alice", "pro")
        assert account is not None
        assert account.window == window
        assert dao.accounts("alice") == [account]
        for found, expected in zip(
            _window_moments(account.window), _window_moments(window), strict=True
        ):
            if expected is not None:
                _assert_utc(found, expected)

    def test_racing_save_windows_of_one_version_have_one_winner(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        opened = dao.open_account("alice", "pro", T0)

        def proposal(worker: int) -> Window:
            return opened.window.widened(T0, T0 + (worker + 1) * DAY)

        def save(worker: int) -> bool:
            return dao.save_window("alice", "pro", opened.window.version, proposal(worker))

        results = _race(save)
        assert results.count(True) == 1
        account = dao.get_account("alice", "pro")
        assert account is not None
        assert account.window == proposal(results.index(True))

    def test_save_snapshot_and_save_window_each_change_only_their_part_of_one_account(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        opened = dao.open_account("alice", "pro", T0)
        others = [dao.open_account("alice", "basic", T0), dao.open_account(1, "pro", T0)]
        widened = opened.window.widened(T0, T0 + DAY)
        dao.save_window("alice", "pro", opened.window.version, widened)
        dao.save_snapshot("alice", "pro", _in_debt(1))
        expected = opened._replace(snapshot=_in_debt(1), window=widened)
        assert dao.get_account("alice", "pro") == expected
        assert [dao.get_account(a.user_id, a.offer_group) for a in others] == others

    # -- append_locked, for backends that offer it ----------------------------------------

    @staticmethod
    def _locking(dao_factory: DaoFactory) -> UserCreditsDao:
        """The DAO of a backend that appends under a lock; the test is skipped otherwise."""
        dao = dao_factory.get_user_credits_dao()
        dao.open_account("probe", "basic", T0)
        if dao.append_locked("probe", "basic", lambda snapshot: None) is None:
            pytest.skip("this backend appends by compare-and-set only")
        return dao

    def test_append_locked_to_an_absent_account_is_none_and_calls_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_user_credits_dao()
        seen: list[Snapshot] = []

        def draft(snapshot: Snapshot) -> TokenTimetable:
            seen.append(snapshot)
            return _line(seq=snapshot.seq + 1)

        assert dao.append_locked("alice", "basic", draft) is None
        assert seen == []
        assert dao.get_account("alice", "basic") is None
        assert dao_factory.get_token_timetable_dao().find() == []

    def test_append_locked_stores_each_line_after_the_snapshot_it_was_drafted_from(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._locking(dao_factory)
        ledger = dao_factory.get_token_timetable_dao()
        dao.open_account("alice", "basic", T0)
        seen: list[Snapshot] = []

        def draft(snapshot: Snapshot) -> TokenTimetable:
            seen.append(snapshot)
            return _line(seq=snapshot.seq + 1, tokens=-2)

        first = dao.append_locked("alice", "basic", draft)
        second = dao.append_locked("alice", "basic", draft)
        assert first is not None
        assert second is not None
        assert first.created
        assert second.created
        assert first.line is not None
        assert second.line is not None
        assert [s.seq for s in seen] == [0, 1]
        assert seen[1] == first.snapshot == Snapshot(seq=1, debt=2)
        assert second.snapshot == Snapshot(seq=2, debt=4)
        stored = ledger.lines_after("alice", "basic", 0)
        assert [(line.id, line.seq, line.tokens) for line in stored] == [
            (first.line.id, 1, -2),
            (second.line.id, 2, -2),
        ]
        assert ledger.find_by_id(second.line.id) == stored[1]

    def test_append_locked_stores_nothing_for_a_refused_or_empty_draft(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._locking(dao_factory)
        ledger = dao_factory.get_token_timetable_dao()
        dao.open_account("alice", "basic", T0)
        done = dao.append_locked("alice", "basic", lambda s: _line(seq=s.seq + 1))
        assert done is not None
        assert done.created

        def refuse(snapshot: Snapshot) -> TokenTimetable:
            raise InvalidOfferError("refused")

        with pytest.raises(InvalidOfferError):
            dao.append_locked("alice", "basic", refuse)
        nothing = dao.append_locked("alice", "basic", lambda s: None)
        assert nothing is not None
        assert (nothing.line, nothing.created, nothing.snapshot) == (None, False, done.snapshot)
        assert [line.seq for line in ledger.lines_after("alice", "basic", 0)] == [1]
        after = dao.append_locked("alice", "basic", lambda s: _line(seq=s.seq + 1))
        assert after is not None
        assert after.line is not None
        assert after.line.seq == 2

    def test_append_locked_answers_with_the_line_holding_the_drafts_key(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._locking(dao_factory)
        ledger = dao_factory.get_token_timetable_dao()
        dao.open_account("alice", "basic", T0)
        dao.open_account("alice", "pro", T0)

        def keyed(group: str) -> Callable[[Snapshot], TokenTimetable]:
            return lambda s: _line(seq=s.seq + 1, offer_group=group, idempotency_key="k")

        first = dao.append_locked("alice", "basic", keyed("basic"))
        again = dao.append_locked("alice", "pro", keyed("pro"))
        assert first is not None
        assert again is not None
        assert first.created
        assert not again.created
        assert first.line is not None
        assert again.line == ledger.find_by_id(first.line.id)
        assert [line.offer_group for line in ledger.find({"user_id": "alice"})] == ["basic"]
        account = dao.get_account("alice", "pro")
        assert account is not None
        assert account.snapshot == Snapshot()

    def test_append_locked_folds_lines_appended_without_the_lock(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._locking(dao_factory)
        ledger = dao_factory.get_token_timetable_dao()
        dao.open_account("alice", "basic", T0)
        seen: list[int] = []

        def draft(snapshot: Snapshot) -> TokenTimetable:
            seen.append(snapshot.seq)
            return _line(seq=snapshot.seq + 1)

        for seq in (1, 2):
            ledger.create(_line(seq=seq))
        done = dao.append_locked("alice", "basic", draft)
        assert done is not None
        assert done.line is not None
        assert (done.line.seq, done.snapshot) == (3, Snapshot(seq=3, debt=3))
        ledger.create(_line(seq=4))
        done = dao.append_locked("alice", "basic", draft)
        assert done is not None
        assert done.line is not None
        assert (done.line.seq, done.snapshot) == (5, Snapshot(seq=5, debt=5))
        assert seen[-1] == 4
        assert [line.seq for line in ledger.lines_after("alice", "basic", 0)] == [1, 2, 3, 4, 5]

    def test_append_locked_keeps_the_stored_snapshot_within_the_lag(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._locking(dao_factory)
        dao.open_account("alice", "basic", T0)
        for total in range(1, 3 * SNAPSHOT_LAG + 1):
            dao.append_locked("alice", "basic", lambda s: _line(seq=s.seq + 1))
            account = dao.get_account("alice", "basic")
            assert account is not None
            assert total - SNAPSHOT_LAG < account.snapshot.seq <= total
            assert account.snapshot == Snapshot(seq=account.snapshot.seq, debt=account.snapshot.seq)

    @staticmethod
    def _checking(dao_factory: DaoFactory) -> UserCreditsDao:
        """The DAO of a backend that checks consumptions itself; the test is skipped
        otherwise. Alice's account "basic" holds 5 tokens (line 1)."""
        dao = dao_factory.get_user_credits_dao()
        dao.open_account("alice", "basic", T0)
        funded = dao.append_locked("alice", "basic", lambda s: _line(seq=s.seq + 1, tokens=5))
        if funded is None:
            pytest.skip("this backend appends by compare-and-set only")
        dao.open_account("probe", "basic", T0)
        if dao.append_consumption("probe", "basic", _line("probe", seq=0), None) is None:
            pytest.skip("this backend does not check consumptions itself")
        return dao

    def test_append_consumption_numbers_a_consumption_that_keeps_the_floor(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._checking(dao_factory)
        ledger = dao_factory.get_token_timetable_dao()
        first = dao.append_consumption("alice", "basic", _line(seq=0, tokens=-3), 0)
        assert first is not None
        assert first.seq == 2
        assert dao.append_consumption("alice", "basic", _line(seq=0, tokens=-3), 0) is None
        below = dao.append_consumption("alice", "basic", _line(seq=0, tokens=-3), -1)
        assert below is not None
        assert below.seq == 3
        unbounded = dao.append_consumption("alice", "basic", _line(seq=0, tokens=-9), None)
        assert unbounded is not None
        stored = ledger.lines_after("alice", "basic", 0)
        assert [(line.seq, line.tokens) for line in stored] == [(1, 5), (2, -3), (3, -3), (4, -9)]
        assert ledger.find_by_id(first.id) == stored[1]
        last = dao.append_locked("alice", "basic", lambda s: None)
        assert last is not None
        assert last.snapshot.balance == -10

    def test_append_consumption_of_an_absent_account_stores_nothing(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._checking(dao_factory)
        assert dao.append_consumption("bob", "basic", _line("bob", seq=0), None) is None
        assert dao.get_account("bob", "basic") is None
        assert dao_factory.get_token_timetable_dao().find({"user_id": "bob"}) == []

    def test_append_consumption_answers_with_the_line_holding_its_key(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._checking(dao_factory)
        first = dao.append_consumption("alice", "basic", _line(seq=0, idempotency_key="k"), 0)
        again = dao.append_consumption("alice", "basic", _line(seq=0, idempotency_key="k"), 0)
        assert first is not None
        assert again == first
        assert len(dao_factory.get_token_timetable_dao().lines_after("alice", "basic", 0)) == 2

    def test_racing_consumptions_checked_by_the_backend_never_cross_the_floor(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = self._checking(dao_factory)

        def consume(worker: int) -> list[bool]:
            return [
                dao.append_consumption("alice", "basic", _line(seq=0), 0) is not None
                for _ in range(ROUNDS)
            ]

        taken = sum(sum(done) for done in _race(consume))
        assert taken == 5
        lines = dao_factory.get_token_timetable_dao().lines_after("alice", "basic", 0)
        assert [line.seq for line in lines] == list(range(1, 7))
        assert sum(line.tokens for line in lines) == 0

    def test_racing_locked_appends_take_every_number_once(self, dao_factory: DaoFactory) -> None:
        dao = self._locking(dao_factory)
        ledger = dao_factory.get_token_timetable_dao()
        dao.open_account("alice", "basic", T0)

        def append_all(worker: int) -> list[bool]:
            done = []
            for _ in range(ROUNDS):
                appended = dao.append_locked("alice", "basic", lambda s: _line(seq=s.seq + 1))
                done.append(appended is not None and appended.created)
            return done

        assert all(all(created) for created in _race(append_all))
        total = WORKERS * ROUNDS
        lines = ledger.lines_after("alice", "basic", 0)
        assert [line.seq for line in lines] == list(range(1, total + 1))
        last = dao.append_locked("alice", "basic", lambda s: None)
        assert last is not None
        assert last.snapshot == Snapshot(seq=total, debt=total)


class CustomerDaoContract(_ReaderContract[Customer]):
    """The guarantees of :class:`usercredits.dao.CustomerDao`."""

    def _dao(self, factory: DaoFactory) -> Reader[Customer]:
        return factory.get_customer_dao()

    def _new(self, n: int) -> Customer:
        return Customer(
            user_id=f"user-{n}",
            email=f"user{n}@example.com",
            processor="stripe",
            customer_id=f"cus_{n}",
            created_at=T0,
        )

    def _scribble(self, entity: Customer) -> None:
        entity.email = "changed@example.com"

    def test_every_field_round_trips(self, dao_factory: DaoFactory) -> None:
        for n, user_id in enumerate(USER_IDS):
            created = dao_factory.get_customer_dao().create(_replace(self._new(n), user_id=user_id))
            found = dao_factory.get_customer_dao().find_by_id(created.id)
            assert found == created
            assert found is not None
            assert type(found.user_id) is type(user_id)
            _assert_utc(found.created_at, T0)

    def test_a_second_customer_of_a_user_at_a_processor_is_refused(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_customer_dao()
        first = dao.create(self._new(0))
        with pytest.raises(DuplicateEntityError):
            dao.create(_replace(self._new(1), user_id=first.user_id))
        assert dao.find({}) == [first]

    def test_a_second_customer_of_an_email_at_a_processor_is_refused(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_customer_dao()
        first = dao.create(self._new(0))
        with pytest.raises(DuplicateEntityError):
            dao.create(_replace(self._new(1), email=first.email))
        assert dao.find({}) == [first]

    def test_another_processor_may_hold_the_same_user_and_email(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_customer_dao()
        dao.create(self._new(0))
        other = dao.create(_replace(self._new(0), processor="paypal"))
        assert dao.find_by_user("paypal", "user-0") == other

    def test_find_by_user_and_by_email_find_the_processors_customer(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_customer_dao()
        created = dao.create(self._new(0))
        assert dao.find_by_user("stripe", "user-0") == created
        assert dao.find_by_email("stripe", "user0@example.com") == created
        assert dao.find_by_user("stripe", "user-1") is None
        assert dao.find_by_email("paypal", "user0@example.com") is None

    def test_user_ids_of_different_kinds_are_different_customers(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_customer_dao()
        for n, user_id in enumerate(USER_IDS):
            dao.create(_replace(self._new(n), user_id=user_id))
        for n, user_id in enumerate(USER_IDS):
            found = dao.find_by_user("stripe", user_id)
            assert found is not None
            assert found.customer_id == f"cus_{n}"

    def test_racing_creates_for_one_user_store_one_customer(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_customer_dao()

        def create(worker: int) -> bool:
            try:
                dao.create(_replace(self._new(worker), user_id="alice"))
            except DuplicateEntityError:
                return False
            return True

        assert _race(create).count(True) == 1
        assert dao.count({"user_id": "alice"}) == 1


class WebhookEventDaoContract(_ReaderContract[WebhookEventRecord]):
    """The guarantees of :class:`usercredits.dao.WebhookEventDao`."""

    def _dao(self, factory: DaoFactory) -> Reader[WebhookEventRecord]:
        return factory.get_webhook_event_dao()

    def _new(self, n: int) -> WebhookEventRecord:
        return WebhookEventRecord(
            id=f"evt_{n}",
            type="payment_intent.succeeded",
            created=T0,
            received_at=T0 + n * timedelta(seconds=1),
            payload=f'{{"id": "evt_{n}"}}',
        )

    def _scribble(self, entity: WebhookEventRecord) -> None:
        entity.message = "changed"

    def test_every_field_round_trips(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_webhook_event_dao()
        order = dao_factory.get_order_dao().create(_order())
        record = _replace(self._new(0), order_id=order.id, handled=True, message="applied")
        created = dao.create(record)
        found = dao.find_by_id("evt_0")
        assert found == created == record
        assert found is not None
        _assert_utc(found.created, T0)
        _assert_utc(found.received_at, T0)

    def test_an_event_id_is_stored_once(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_webhook_event_dao()
        first = dao.create(self._new(0))
        with pytest.raises(DuplicateEntityError):
            dao.create(_replace(self._new(1), id="evt_0"))
        assert dao.find({}) == [first]

    def test_racing_creates_of_one_event_store_it_once(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_webhook_event_dao()

        def create(worker: int) -> bool:
            try:
                dao.create(_replace(self._new(worker), id="evt_same"))
            except DuplicateEntityError:
                return False
            return True

        assert _race(create).count(True) == 1
        assert dao.count({}) == 1

    def test_finish_records_how_the_event_was_handled(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_webhook_event_dao()
        order = dao_factory.get_order_dao().create(_order())
        dao.create(self._new(0))
        finished = dao.finish("evt_0", handled=True, message="applied", order_id=str(order.id))
        assert finished is not None
        assert (finished.handled, finished.message) == (True, "applied")
        assert str(finished.order_id) == str(order.id)
        assert dao.find_by_id("evt_0") == finished

    def test_finish_of_an_unknown_event_is_none(self, dao_factory: DaoFactory) -> None:
        dao = dao_factory.get_webhook_event_dao()
        assert dao.finish("evt_none", handled=True, message="") is None
        assert dao.find({}) == []

    def test_latest_lists_the_last_received_first_page_by_page(
        self, dao_factory: DaoFactory
    ) -> None:
        dao = dao_factory.get_webhook_event_dao()
        for n in range(5):
            dao.create(self._new(n))
        first = dao.latest(2)
        assert [r.id for r in first] == ["evt_4", "evt_3"]
        assert [r.id for r in dao.latest(2, before=first[-1].id)] == ["evt_2", "evt_1"]
        assert [r.id for r in dao.latest(10, before="evt_1")] == ["evt_0"]
        assert dao.latest(10, before="evt_none") == []
