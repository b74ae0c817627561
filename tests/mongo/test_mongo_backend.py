"""What the MongoDB backend guarantees beyond the contract suite: how it connects, what it
stores, which indexes it relies on, and how it reports driver errors.

They run on the embedded mongomock; the tests racing several factories on one database
race for real when ``USERCREDITS_TEST_MONGO_URI`` names a MongoDB server.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from importlib.metadata import entry_points
from typing import Any, TypeVar

import mongoengine
import mongomock
import pytest
from bson import Decimal128, ObjectId
from bson.binary import UUID_SUBTYPE, Binary, UuidRepresentation
from bson.codec_options import CodecOptions
from pymongo.errors import DuplicateKeyError, PyMongoError

from usercredits import (
    Cycle,
    DuplicateEntityError,
    InsufficientCreditsError,
    LedgerReason,
    ManualPaymentClient,
    Offer,
    OfferKind,
    Order,
    PaymentService,
    StorageError,
    TokenTimetable,
)
from usercredits.clock import FrozenClock
from usercredits.containers import UserCreditsContainer
from usercredits_mongo import MongoDaoFactory
from usercredits_mongo.containers import MongoContainer

T = TypeVar("T")

REAL_URI = os.environ.get("USERCREDITS_TEST_MONGO_URI")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _db_name() -> str:
    return f"usercredits_test_{uuid.uuid4().hex}"


@pytest.fixture
def factory() -> Iterator[MongoDaoFactory]:
    """A factory on a new database: on a real MongoDB when ``USERCREDITS_TEST_MONGO_URI`` is
    set (dropped afterwards), else on mongomock."""
    dao_factory = MongoDaoFactory.from_uri(REAL_URI or "mongomock://localhost", _db_name())
    yield dao_factory
    dao_factory.database.client.drop_database(dao_factory.database.name)
    dao_factory.close()


@pytest.fixture
def shared_alias() -> Iterator[str]:
    """A mongoengine connection made by the application itself (on mongomock)."""
    alias = f"app-{uuid.uuid4().hex}"
    mongoengine.connect(
        alias=alias,
        host="mongodb://localhost",
        mongo_client_class=mongomock.MongoClient,
        tz_aware=True,
        uuidRepresentation="standard",
    )
    yield alias
    mongoengine.disconnect(alias)


def _offer(key: str = "pack", price: str = "9.90") -> Offer:
    return Offer(
        key=key,
        name=f"Pack {key}",
        kind=OfferKind.TOKENS,
        offer_group="ai",
        cycle=Cycle.MONTHLY,
        price=Decimal(price),
        currency="usd",
        token_count=100,
    )


def _raw(factory: MongoDaoFactory, collection: str, entity_id: Any) -> dict[str, Any]:
    """The stored document as the server holds it (binary UUIDs left undecoded)."""
    as_stored: CodecOptions[dict[str, Any]] = CodecOptions(
        tz_aware=True, uuid_representation=UuidRepresentation.UNSPECIFIED
    )
    documents = factory.database.get_collection(collection, codec_options=as_stored)
    raw: dict[str, Any] | None = documents.find_one({"_id": entity_id})
    assert raw is not None
    return raw


# -- connecting ----------------------------------------------------------------------------


def test_from_uri_with_mongomock_uses_the_named_database() -> None:
    factory = MongoDaoFactory.from_uri("mongomock://localhost", "shop")
    try:
        assert isinstance(factory.database.client, mongomock.MongoClient)
        assert factory.database.name == "shop"
    finally:
        factory.close()


def test_from_uri_without_a_name_uses_the_database_of_the_uri() -> None:
    factory = MongoDaoFactory.from_uri("mongomock://localhost/catalogue")
    try:
        assert factory.database.name == "catalogue"
    finally:
        factory.close()


def test_from_uri_without_any_name_uses_the_usercredits_database() -> None:
    factory = MongoDaoFactory.from_uri("mongomock://")
    try:
        assert factory.database.name == "usercredits"
    finally:
        factory.close()


@pytest.mark.parametrize("uri", ["", "localhost:27017", None])
def test_from_uri_refuses_what_is_not_a_uri(uri: Any) -> None:
    with pytest.raises(ValueError, match="URI"):
        MongoDaoFactory.from_uri(uri, "shop")


def test_an_unreachable_server_raises_storage_error_with_the_driver_error_as_cause() -> None:
    with pytest.raises(StorageError, match="MongoDB failed") as raised:
        MongoDaoFactory.from_uri("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", "shop")
    assert isinstance(raised.value.__cause__, PyMongoError)


def test_the_backend_entry_point_is_from_uri() -> None:
    [backend] = [e for e in entry_points(group="usercredits.backends") if e.name == "mongodb"]
    assert backend.load() == MongoDaoFactory.from_uri


def test_factories_on_one_mongomock_uri_share_its_server() -> None:
    first = MongoDaoFactory.from_uri("mongomock://localhost", "shop")
    second = MongoDaoFactory.from_uri("mongomock://localhost", "shop")
    try:
        stored = first.get_offer_dao().create(_offer())
        assert second.get_offer_dao().find_by_key("pack") == stored
        first.close()
        assert second.get_offer_dao().find_by_id(stored.id) == stored
    finally:
        first.close()
        second.close()


def test_factories_on_other_databases_keep_their_data_apart() -> None:
    shop = MongoDaoFactory.from_uri("mongomock://localhost", "shop")
    other = MongoDaoFactory.from_uri("mongomock://localhost", "other")
    try:
        shop.get_offer_dao().create(_offer())
        assert other.get_offer_dao().find_by_key("pack") is None
    finally:
        shop.close()
        other.close()


def test_factories_on_one_connection_share_the_database(shared_alias: str) -> None:
    writer = MongoDaoFactory(shared_alias, "shop")
    reader = MongoDaoFactory(shared_alias, "shop")
    stored = writer.get_offer_dao().create(_offer())
    assert reader.get_offer_dao().find_by_id(stored.id) == stored


def test_close_leaves_a_connection_it_did_not_open(shared_alias: str) -> None:
    MongoDaoFactory(shared_alias, "shop").close()
    reopened = MongoDaoFactory(shared_alias, "shop")
    assert reopened.get_offer_dao().count() == 0


def test_an_unknown_alias_raises_storage_error() -> None:
    with pytest.raises(StorageError, match="no-such-alias"):
        MongoDaoFactory("no-such-alias")


# -- indexes -------------------------------------------------------------------------------


def test_indexes_are_created_at_start_up(factory: MongoDaoFactory) -> None:
    db = factory.database
    ledger = db["usercredits_token_timetable"].index_information()
    assert ledger["ledger_user_idempotency_key_unique"]["unique"] is True
    assert ledger["ledger_purchase_once_per_order"]["partialFilterExpression"] == {
        "reason": "purchase",
        "order_id": {"$exists": True},
    }
    assert db["usercredits_user_credits"].index_information()["user_credits_user_unique"]["unique"]
    groups = db["usercredits_credit_groups"].index_information()
    assert groups["credit_group_user_group_unique"]["unique"] is True
    assert "order_payment_intent" in db["usercredits_orders"].index_information()
    assert "offer_unlocked_by" in db["usercredits_offers"].index_information()


def test_creating_the_indexes_again_keeps_them_and_the_data(shared_alias: str) -> None:
    first = MongoDaoFactory(shared_alias, "shop")
    stored = first.get_offer_dao().create(_offer())
    before = first.database["usercredits_offers"].index_information()
    again = MongoDaoFactory(shared_alias, "shop")
    assert again.database["usercredits_offers"].index_information() == before
    assert again.get_offer_dao().find({}) == [stored]


def test_reopening_a_database_with_offers_without_key_keeps_its_indexes(
    shared_alias: str,
) -> None:
    first = MongoDaoFactory(shared_alias, "shop")
    for _ in range(2):
        first.get_offer_dao().create(dataclasses.replace(_offer(), key=None))
    again = MongoDaoFactory(shared_alias, "shop")
    assert again.get_offer_dao().count({}) == 2


def test_a_conflicting_index_raises_storage_error(shared_alias: str) -> None:
    db = mongoengine.connection.get_connection(shared_alias)["shop"]
    db["usercredits_offers"].create_index("name", name="offer_key_unique")
    with pytest.raises(StorageError, match="indexes"):
        MongoDaoFactory(shared_alias, "shop")


# -- ids -----------------------------------------------------------------------------------


def test_entity_ids_are_object_ids(factory: MongoDaoFactory) -> None:
    offer = factory.get_offer_dao().create(_offer())
    order = factory.get_order_dao().create(Order(user_id="alice", offer_id=offer.id))
    line = factory.get_token_timetable_dao().create(TokenTimetable(user_id="alice", tokens=-1))
    credits = factory.get_user_credits_dao().get_or_create("alice")
    assert all(isinstance(e.id, ObjectId) for e in (offer, order, line, credits))


def test_an_id_given_as_hex_str_is_stored_as_an_object_id(factory: MongoDaoFactory) -> None:
    offer = factory.get_offer_dao().create(_offer())
    order = factory.get_order_dao().create(Order(user_id="alice", offer_id=str(offer.id)))
    assert _raw(factory, "usercredits_orders", order.id)["offer_id"] == offer.id
    assert order.offer_id == offer.id


@pytest.mark.parametrize("malformed", ["", "not-an-id", "0" * 23, "z" * 24, "abcdefghijkl"])
def test_a_malformed_id_is_simply_absent(factory: MongoDaoFactory, malformed: str) -> None:
    orders = factory.get_order_dao()
    orders.create(Order(user_id="alice"))
    assert orders.find_by_id(malformed) is None
    assert orders.find({"id": malformed}) == []
    assert orders.find({"parent_id": malformed}) == []
    assert orders.delete_by_id(malformed) is False
    assert orders.count() == 1


def test_user_ids_are_stored_as_given(factory: MongoDaoFactory) -> None:
    ledger = factory.get_token_timetable_dao()
    user_ids: list[Any] = [7, "7", ObjectId(), uuid.uuid4()]
    lines = [ledger.create(TokenTimetable(user_id=u, tokens=-1)) for u in user_ids]
    stored = [_raw(factory, "usercredits_token_timetable", line.id)["user_id"] for line in lines]
    assert stored[:3] == user_ids[:3]
    assert [type(s) for s in stored[:3]] == [int, str, ObjectId]
    assert stored[3] == Binary(user_ids[3].bytes, UUID_SUBTYPE)
    assert [line.user_id for line in lines] == user_ids


# -- money and time ------------------------------------------------------------------------


def test_money_is_stored_as_decimal128_keeping_its_exponent(factory: MongoDaoFactory) -> None:
    offer = factory.get_offer_dao().create(_offer(price="9.90"))
    assert _raw(factory, "usercredits_offers", offer.id)["price"] == Decimal128("9.90")
    found = factory.get_offer_dao().find_by_id(offer.id)
    assert found is not None
    assert found.price.as_tuple() == Decimal("9.90").as_tuple()


def test_money_that_decimal128_cannot_hold_exactly_is_refused(factory: MongoDaoFactory) -> None:
    too_precise = Decimal("0." + "1" * 40)
    orders = factory.get_order_dao()
    with pytest.raises(StorageError, match="cannot store"):
        orders.create(Order(user_id="alice", total=too_precise))
    assert orders.count() == 0


def test_datetimes_come_back_in_utc_at_the_same_instant(factory: MongoDaoFactory) -> None:
    paris = timezone(timedelta(hours=1))
    created = datetime(2025, 3, 1, 13, 0, 0, 250_000, tzinfo=paris)
    line = factory.get_token_timetable_dao().create(
        TokenTimetable(user_id="alice", tokens=-1, created_at=created)
    )
    found = factory.get_token_timetable_dao().find_by_id(line.id)
    assert found is not None
    assert found.created_at == created
    assert found.created_at is not None
    assert found.created_at.utcoffset() == timedelta(0)


def test_datetimes_keep_milliseconds_as_mongodb_does(factory: MongoDaoFactory) -> None:
    ledger = factory.get_token_timetable_dao()
    line = ledger.create(
        TokenTimetable(user_id="alice", tokens=-1, created_at=T0.replace(microsecond=123_456))
    )
    expected = T0.replace(microsecond=123_000)
    assert line.created_at == expected
    assert ledger.find_by_id(line.id) == line


def test_balances_are_stored_as_integers(factory: MongoDaoFactory) -> None:
    factory.get_user_credits_dao().add_tokens("alice", "ai", 5, now=T0)
    [group] = factory.database["usercredits_credit_groups"].find({"user_id": "alice"})
    assert group["tokens"] == 5
    assert isinstance(group["tokens"], int)


# -- driver errors -------------------------------------------------------------------------


def test_a_duplicate_key_is_raised_as_duplicate_entity_error_from_the_driver_error(
    factory: MongoDaoFactory,
) -> None:
    factory.get_offer_dao().create(_offer("starter"))
    with pytest.raises(DuplicateEntityError, match="starter") as raised:
        factory.get_offer_dao().create(_offer("starter"))
    assert isinstance(raised.value.__cause__, DuplicateKeyError)


def test_an_update_breaking_a_unique_index_raises_duplicate_entity_error(
    factory: MongoDaoFactory,
) -> None:
    offers = factory.get_offer_dao()
    offers.create(_offer("starter"))
    business = offers.create(_offer("business"))
    with pytest.raises(DuplicateEntityError):
        offers.update_by_id(business.id, {"key": "starter"})
    assert offers.find_by_id(business.id) == business


def test_a_value_bson_cannot_encode_raises_storage_error(factory: MongoDaoFactory) -> None:
    ledger = factory.get_token_timetable_dao()
    with pytest.raises(StorageError) as raised:
        ledger.create(TokenTimetable(user_id=object(), tokens=-1))
    assert raised.value.__cause__ is not None
    assert ledger.count() == 0


def test_unknown_filter_fields_raise_value_error(factory: MongoDaoFactory) -> None:
    with pytest.raises(ValueError, match="colour"):
        factory.get_order_dao().find({"colour": "red"})


# -- the container -------------------------------------------------------------------------


def test_mongo_container_overrides_the_core_dao_factory() -> None:
    mongo = MongoContainer(config={"uri": "mongomock://localhost", "db": "shop"})
    core = UserCreditsContainer(dao_factory=mongo.dao_factory)
    try:
        core.check_dependencies()
        service = core.service()
        dao_factory = service.get_dao_factory()
        assert isinstance(dao_factory, MongoDaoFactory)
        assert dao_factory.database.name == "shop"
        offer = dao_factory.get_offer_dao().create(_offer(price="0"))
        order = service.create_order(offer.id, "alice")
        assert service.remaining_tokens("alice", "ai") == 100
        assert isinstance(order.id, ObjectId)
    finally:
        mongo.shutdown_resources()


def test_mongo_container_gives_one_factory_per_container() -> None:
    mongo = MongoContainer(config={"uri": "mongomock://localhost/shop"})
    try:
        first = mongo.dao_factory()
        assert mongo.dao_factory() is first
        assert first.database.name == "shop"
    finally:
        mongo.shutdown_resources()


def test_a_core_provider_override_reaches_the_mongo_backend() -> None:
    mongo = MongoContainer(config={"uri": "mongomock://localhost", "db": "shop"})
    core = UserCreditsContainer(dao_factory=mongo.dao_factory)
    clock = FrozenClock(T0)
    try:
        with core.clock.override(clock), core.payment_client.override(ManualPaymentClient()):
            service = core.service()
            offer = service.get_dao_factory().get_offer_dao().create(_offer(price="0"))
            order = service.create_order(offer.id, 42)
        assert order.created_at == T0
        stored = mongo.dao_factory().get_order_dao().find_by_id(str(order.id))
        assert stored is not None
        assert stored.user_id == 42
    finally:
        mongo.shutdown_resources()


# -- several factories racing on one database -----------------------------------------


@pytest.fixture
def racing_factories() -> Iterator[list[MongoDaoFactory]]:
    """Four factories on one database, as four processes would have: on a real MongoDB when
    ``USERCREDITS_TEST_MONGO_URI`` is set, else on one mongomock server (serialised)."""
    name = _db_name()
    factories = [
        MongoDaoFactory.from_uri(REAL_URI or "mongomock://localhost", name) for _ in range(4)
    ]
    yield factories
    factories[0].database.client.drop_database(name)
    for dao_factory in factories:
        dao_factory.close()


def _race(task: Callable[[MongoDaoFactory], T], factories: list[MongoDaoFactory]) -> list[T]:
    """Run ``task`` once per factory, in threads released at the same moment."""
    start = threading.Barrier(len(factories))

    def run(dao_factory: MongoDaoFactory) -> T:
        start.wait(timeout=30)
        return task(dao_factory)

    with ThreadPoolExecutor(max_workers=len(factories)) as pool:
        return [f.result(timeout=60) for f in [pool.submit(run, f) for f in factories]]


def test_racing_factories_create_one_user_credits_record(
    racing_factories: list[MongoDaoFactory],
) -> None:
    results = _race(lambda f: f.get_user_credits_dao().get_or_create("alice"), racing_factories)
    assert len({r.id for r in results}) == 1
    assert racing_factories[0].get_user_credits_dao().count({}) == 1


def test_racing_factories_never_overdraw(racing_factories: list[MongoDaoFactory]) -> None:
    racing_factories[0].get_user_credits_dao().add_tokens("alice", "ai", 30, now=T0)

    def consume(dao_factory: MongoDaoFactory) -> int:
        service = PaymentService(dao_factory, ManualPaymentClient())
        done = 0
        for _ in range(10):
            try:
                service.consume_tokens("alice", "ai", 1)
                done += 1
            except InsufficientCreditsError:
                pass
        return done

    assert sum(_race(consume, racing_factories)) == 30
    assert (
        PaymentService(racing_factories[0], ManualPaymentClient()).remaining_tokens("alice", "ai")
        == 0
    )


def test_racing_factories_record_one_line_per_idempotency_key(
    racing_factories: list[MongoDaoFactory],
) -> None:
    line = TokenTimetable(user_id="alice", tokens=-1, idempotency_key="k")
    results = _race(lambda f: f.get_token_timetable_dao().insert_once(line), racing_factories)
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert len({stored.id for stored, _ in results}) == 1


def test_racing_factories_chain_consecutive_windows(
    racing_factories: list[MongoDaoFactory],
) -> None:
    def chain(dao_factory: MongoDaoFactory) -> list[tuple[datetime, datetime | None]]:
        credits = dao_factory.get_user_credits_dao()
        return [
            credits.chain_window("alice", "ai", T0, lambda s: s + timedelta(days=1))
            for _ in range(3)
        ]

    windows = sorted(w for ws in _race(chain, racing_factories) for w in ws)
    assert windows == [
        (T0 + timedelta(days=n), T0 + timedelta(days=n + 1)) for n in range(len(windows))
    ]


def test_racing_factories_settle_a_ledger_purchase_once(
    racing_factories: list[MongoDaoFactory],
) -> None:
    order = racing_factories[0].get_order_dao().create(Order(user_id="alice"))
    line = TokenTimetable(
        user_id="alice", tokens=10, order_id=order.id, reason=LedgerReason.PURCHASE
    )
    results = _race(lambda f: f.get_token_timetable_dao().insert_once(line), racing_factories)
    assert sum(created for _, created in results) == 1
