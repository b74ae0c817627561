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
    EntityNotFoundError,
    InsufficientCreditsError,
    InvalidOfferError,
    LedgerReason,
    ManualPaymentClient,
    Offer,
    OfferKind,
    Order,
    PaymentService,
    Status,
    StorageError,
    TokenTimetable,
    UserCreditsError,
)
from usercredits.clock import FrozenClock
from usercredits.containers import UserCreditsContainer
from usercredits.dao import Account
from usercredits.grants import LiveGrant, Snapshot
from usercredits.models import GrantSource
from usercredits.windows import Window
from usercredits_mongo import MongoDaoFactory
from usercredits_mongo.containers import MongoContainer

T = TypeVar("T")

REAL_URI = os.environ.get("USERCREDITS_TEST_MONGO_URI")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
COLLECTIONS = {
    "usercredits_offers",
    "usercredits_orders",
    "usercredits_token_timetable",
    "usercredits_user_credits",
    "usercredits_accounts",
    "usercredits_customers",
    "usercredits_webhook_events",
}


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


def _offer(key: str = "pack", price: str = "9.90", tokens: int = 100) -> Offer:
    return Offer(
        key=key,
        name=f"Pack {key}",
        kind=OfferKind.TOKENS,
        offer_group="ai",
        cycle=Cycle.MONTHLY,
        price=Decimal(price),
        currency="usd",
        token_count=tokens,
    )


def _line(seq: int = 1, user: Any = "alice", tokens: int = -1, **fields: Any) -> TokenTimetable:
    return TokenTimetable(
        user_id=user, offer_group="ai", seq=seq, tokens=tokens, created_at=T0, **fields
    )


def _grant(grant_id: str, remaining: int) -> LiveGrant:
    return LiveGrant(
        grant_id=grant_id,
        order_id=None,
        source=GrantSource.PROMOTIONAL,
        tokens=remaining,
        remaining=remaining,
        priority=50,
        starts=T0,
        expires=T0 + timedelta(days=30),
        seq=1,
    )


def _raw(factory: MongoDaoFactory, collection: str, query: dict[str, Any]) -> dict[str, Any]:
    """The one stored document matching ``query`` as the server holds it (binary UUIDs left
    undecoded)."""
    as_stored: CodecOptions[dict[str, Any]] = CodecOptions(
        tz_aware=True, uuid_representation=UuidRepresentation.UNSPECIFIED
    )
    documents = factory.database.get_collection(collection, codec_options=as_stored)
    [raw] = list(documents.find(query))
    return raw


def _count(factory: MongoDaoFactory, collection: str) -> int:
    return factory.database[collection].count_documents({})


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
        second.database.client.drop_database("shop")
        first.close()
        second.close()


def test_factories_on_other_databases_keep_their_data_apart() -> None:
    shop = MongoDaoFactory.from_uri("mongomock://localhost", "shop")
    other = MongoDaoFactory.from_uri("mongomock://localhost", "other")
    try:
        shop.get_offer_dao().create(_offer())
        assert other.get_offer_dao().find_by_key("pack") is None
    finally:
        shop.database.client.drop_database("shop")
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


def test_close_can_be_called_twice() -> None:
    factory = MongoDaoFactory.from_uri("mongomock://localhost", _db_name())
    factory.close()
    factory.close()


def test_an_unknown_alias_raises_storage_error() -> None:
    with pytest.raises(StorageError, match="no-such-alias"):
        MongoDaoFactory("no-such-alias")


# -- schema and indexes --------------------------------------------------------------------


def test_start_up_creates_the_seven_collections_and_no_other(factory: MongoDaoFactory) -> None:
    assert set(factory.database.list_collection_names()) == COLLECTIONS


def test_the_ledger_has_a_unique_index_per_account_line_and_per_key(
    factory: MongoDaoFactory,
) -> None:
    indexes = factory.database["usercredits_token_timetable"].index_information()
    seq = indexes["ledger_account_seq_unique"]
    assert [tuple(k) for k in seq["key"]] == [("user_id", 1), ("offer_group", 1), ("seq", 1)]
    assert seq["unique"] is True
    for name, field in [
        ("ledger_user_idempotency_key_unique", "idempotency_key"),
        ("ledger_user_operation_key_unique", "operation_key"),
    ]:
        assert [tuple(k) for k in indexes[name]["key"]] == [("user_id", 1), (field, 1)]
        assert indexes[name]["unique"] is True
        assert indexes[name]["partialFilterExpression"] == {field: {"$type": "string"}}


def test_users_and_accounts_are_unique_per_user_and_group(factory: MongoDaoFactory) -> None:
    users = factory.database["usercredits_user_credits"].index_information()
    assert users["user_credits_user_unique"]["unique"] is True
    accounts = factory.database["usercredits_accounts"].index_information()
    unique = accounts["account_user_group_unique"]
    assert [tuple(k) for k in unique["key"]] == [("user_id", 1), ("offer_group", 1)]
    assert unique["unique"] is True


def test_orders_have_their_unique_indexes_and_an_index_per_query(
    factory: MongoDaoFactory,
) -> None:
    indexes = factory.database["usercredits_orders"].index_information()
    child = indexes["order_child_unique"]
    assert [tuple(k) for k in child["key"]] == [("parent_id", 1), ("item_index", 1)]
    assert child["unique"] is True
    assert child["partialFilterExpression"] == {"parent_id": {"$exists": True}}
    exclusive = indexes["order_user_offer_exclusive_paid_unique"]
    assert [tuple(k) for k in exclusive["key"]] == [("user_id", 1), ("offer_id", 1)]
    assert exclusive["unique"] is True
    assert exclusive["partialFilterExpression"] == {"exclusive": True, "status": "paid"}
    assert indexes["order_user_in_progress"]["partialFilterExpression"] == {"in_progress": True}
    assert {
        "order_payment_intent",
        "order_user_status_expires",
        "order_user_status_group",
        "order_user_offer_status",
    } <= set(indexes)


def test_creating_the_indexes_again_keeps_them_and_the_data(shared_alias: str) -> None:
    first = MongoDaoFactory(shared_alias, "shop")
    stored = first.get_offer_dao().create(_offer())
    before = {name: first.database[name].index_information() for name in COLLECTIONS}
    again = MongoDaoFactory(shared_alias, "shop")
    assert {name: again.database[name].index_information() for name in COLLECTIONS} == before
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
    db["usercredits_token_timetable"].create_index("seq", name="ledger_account_seq_unique")
    with pytest.raises(StorageError, match="ledger_account_seq_unique"):
        MongoDaoFactory(shared_alias, "shop")


def test_an_account_is_one_document_holding_its_snapshot_and_window(
    factory: MongoDaoFactory,
) -> None:
    credits = factory.get_user_credits_dao()
    credits.open_account("alice", "ai", T0)
    snapshot = Snapshot(seq=3, debt=0, grants=(_grant("g1", 7),))
    assert credits.save_snapshot("alice", "ai", snapshot)
    assert credits.save_window("alice", "ai", 0, Window(starts=T0).widened(T0, None))
    raw = _raw(factory, "usercredits_accounts", {"user_id": "alice"})
    assert (raw["offer_group"], raw["seq"], raw["window_version"]) == ("ai", 3, 1)
    assert raw["snapshot"] == {key: v for key, v in snapshot.to_data().items() if key != "seq"}
    assert raw["window"]["never_ends"] is True
    assert raw["created_at"] == T0


def test_an_account_reads_back_exactly_as_saved(factory: MongoDaoFactory) -> None:
    credits = factory.get_user_credits_dao()
    credits.open_account("alice", "ai", T0)
    snapshot = Snapshot(seq=2, debt=3, grants=(_grant("g1", 5), _grant("g2", 1)))
    window = Window(starts=T0).widened(T0, T0 + timedelta(days=30))
    credits.save_snapshot("alice", "ai", snapshot)
    credits.save_window("alice", "ai", 0, window)
    assert credits.get_account("alice", "ai") == Account(
        user_id="alice", offer_group="ai", created_at=T0, snapshot=snapshot, window=window
    )


def test_a_snapshot_is_stored_only_over_a_lower_seq(factory: MongoDaoFactory) -> None:
    credits = factory.get_user_credits_dao()
    credits.open_account("alice", "ai", T0)
    newer = Snapshot(seq=2, grants=(_grant("g1", 5),))
    assert credits.save_snapshot("alice", "ai", newer)
    assert not credits.save_snapshot("alice", "ai", Snapshot(seq=1, grants=(_grant("g1", 9),)))
    assert not credits.save_snapshot("alice", "ai", Snapshot(seq=2, debt=1))
    account = credits.get_account("alice", "ai")
    assert account is not None
    assert account.snapshot == newer


def test_a_window_is_stored_only_over_the_expected_version(factory: MongoDaoFactory) -> None:
    credits = factory.get_user_credits_dao()
    credits.open_account("alice", "ai", T0)
    first = Window(starts=T0).widened(T0, T0 + timedelta(days=1))
    assert credits.save_window("alice", "ai", 0, first)
    assert not credits.save_window("alice", "ai", 0, first.closed(0))
    account = credits.get_account("alice", "ai")
    assert account is not None
    assert account.window == first


def test_saving_to_an_absent_account_creates_nothing(factory: MongoDaoFactory) -> None:
    credits = factory.get_user_credits_dao()
    assert not credits.save_snapshot("alice", "ai", Snapshot(seq=1))
    assert not credits.save_window("alice", "ai", 0, Window(starts=T0).closed(0))
    assert _count(factory, "usercredits_accounts") == 0


def test_opening_an_account_registers_its_user(factory: MongoDaoFactory) -> None:
    credits = factory.get_user_credits_dao()
    credits.open_account("alice", "ai", T0)
    credits.open_account("alice", "chat", T0)
    assert credits.find_record_id("alice") is not None
    assert _count(factory, "usercredits_user_credits") == 1
    assert _count(factory, "usercredits_accounts") == 2


# -- ids -----------------------------------------------------------------------------------


def test_entity_ids_are_object_ids(factory: MongoDaoFactory) -> None:
    offer = factory.get_offer_dao().create(_offer())
    order = factory.get_order_dao().create(Order(user_id="alice", offer_id=offer.id))
    line = factory.get_token_timetable_dao().create(_line())
    record = factory.get_user_credits_dao().register("alice")
    assert all(isinstance(i, ObjectId) for i in (offer.id, order.id, line.id, record))


def test_an_id_given_as_hex_str_is_stored_as_an_object_id(factory: MongoDaoFactory) -> None:
    offer = factory.get_offer_dao().create(_offer())
    order = factory.get_order_dao().create(Order(user_id="alice", offer_id=str(offer.id)))
    assert _raw(factory, "usercredits_orders", {"_id": order.id})["offer_id"] == offer.id
    assert order.offer_id == offer.id


def test_a_child_order_is_found_by_its_parent_id_as_str(factory: MongoDaoFactory) -> None:
    orders = factory.get_order_dao()
    parent = orders.create(Order(user_id="alice"))
    child = orders.create(Order(user_id="alice", parent_id=str(parent.id), item_index=1))
    assert orders.find_child(str(parent.id), 1) == child
    assert orders.find_child(parent.id, 1) == child
    assert orders.find_child(parent.id, 0) is None


@pytest.mark.parametrize("malformed", ["", "not-an-id", "0" * 23, "z" * 24, "abcdefghijkl"])
def test_a_malformed_id_is_simply_absent(factory: MongoDaoFactory, malformed: str) -> None:
    orders = factory.get_order_dao()
    offers = factory.get_offer_dao()
    orders.create(Order(user_id="alice"))
    offers.create(_offer())
    assert orders.find_by_id(malformed) is None
    assert orders.find({"id": malformed}) == []
    assert orders.find({"parent_id": malformed}) == []
    assert orders.find_child(malformed, 0) is None
    with pytest.raises(EntityNotFoundError):
        orders.transition(malformed, [Status.PENDING], {"status": Status.PAID})
    assert offers.update_by_id(malformed, {"weight": 3}) is None
    assert offers.delete_by_id(malformed) is False
    assert (orders.count(), offers.count()) == (1, 1)


USER_IDS: list[Any] = [7, "7", ObjectId(), uuid.uuid4()]


def test_user_ids_are_stored_as_given(factory: MongoDaoFactory) -> None:
    ledger = factory.get_token_timetable_dao()
    lines = [ledger.create(_line(user=u)) for u in USER_IDS]
    stored = [
        _raw(factory, "usercredits_token_timetable", {"_id": ln.id})["user_id"] for ln in lines
    ]
    assert stored[:3] == USER_IDS[:3]
    assert [type(s) for s in stored[:3]] == [int, str, ObjectId]
    assert stored[3] == Binary(USER_IDS[3].bytes, UUID_SUBTYPE)
    assert [line.user_id for line in lines] == USER_IDS


@pytest.mark.parametrize("user", USER_IDS, ids=lambda u: type(u).__name__)
def test_each_kind_of_user_id_has_its_own_record_and_accounts(
    factory: MongoDaoFactory, user: Any
) -> None:
    credits = factory.get_user_credits_dao()
    for other in USER_IDS:
        credits.open_account(other, "ai", T0)
    [account] = credits.accounts(user)
    assert type(account.user_id) is type(user)
    assert account.user_id == user
    assert sorted(map(repr, credits.iter_user_ids())) == sorted(map(repr, USER_IDS))
    assert credits.find_record_id(user) == credits.register(user)


def test_the_int_and_the_str_of_a_number_are_two_users(factory: MongoDaoFactory) -> None:
    ledger = factory.get_token_timetable_dao()
    ledger.create(_line(user=7, idempotency_key="k"))
    ledger.create(_line(user="7", idempotency_key="k"))
    found = ledger.find_by_key(7, idempotency_key="k")
    assert found is not None
    assert found.user_id == 7
    assert [line.user_id for line in ledger.lines_after("7", "ai", 0)] == ["7"]


# -- money and time ------------------------------------------------------------------------


def test_money_is_stored_as_decimal128_keeping_its_exponent(factory: MongoDaoFactory) -> None:
    offer = factory.get_offer_dao().create(_offer(price="9.90"))
    assert _raw(factory, "usercredits_offers", {"_id": offer.id})["price"] == Decimal128("9.90")
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
    ledger = factory.get_token_timetable_dao()
    line = ledger.create(dataclasses.replace(_line(), created_at=created))
    found = ledger.find_by_id(line.id)
    assert found is not None
    assert found.created_at == created
    assert found.created_at is not None
    assert found.created_at.utcoffset() == timedelta(0)


def test_datetimes_keep_milliseconds_as_mongodb_does(factory: MongoDaoFactory) -> None:
    ledger = factory.get_token_timetable_dao()
    line = ledger.create(dataclasses.replace(_line(), created_at=T0.replace(microsecond=123_456)))
    assert line.created_at == T0.replace(microsecond=123_000)
    assert ledger.find_by_id(line.id) == line


def test_an_account_opened_at_a_local_time_is_dated_in_utc(factory: MongoDaoFactory) -> None:
    paris = timezone(timedelta(hours=1))
    credits = factory.get_user_credits_dao()
    opened = credits.open_account("alice", "ai", T0.astimezone(paris))
    assert opened.created_at == T0
    assert opened.created_at.utcoffset() == timedelta(0)
    assert credits.get_account("alice", "ai") == opened


# -- offers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"price": Decimal("NaN")},
        {"price": Decimal("-0.01")},
        {"price": 9.99},
        {"cycle": Cycle.CUSTOM},
        {"custom_cycle": 60},
        {"currency": "euro"},
        {"token_count": -1},
    ],
    ids=[
        "nan-price",
        "negative-price",
        "float-price",
        "custom-no-seconds",
        "seconds",
        "currency",
        "negative-tokens",
    ],
)
def test_an_invalid_offer_update_is_refused_and_leaves_the_stored_offer_unchanged(
    factory: MongoDaoFactory, changes: dict[str, Any]
) -> None:
    offers = factory.get_offer_dao()
    offer = offers.create(_offer())
    before = _raw(factory, "usercredits_offers", {"_id": offer.id})
    with pytest.raises(InvalidOfferError):
        offers.update_by_id(offer.id, changes)
    assert _raw(factory, "usercredits_offers", {"_id": offer.id}) == before
    assert offers.find_by_id(offer.id) == offer


def test_an_offer_update_is_normalised_as_a_new_offer_would_be(factory: MongoDaoFactory) -> None:
    offers = factory.get_offer_dao()
    offer = offers.create(_offer())
    updated = offers.update_by_id(
        offer.id, {"currency": "EUR", "price": "5.50", "kind": "subscription"}
    )
    assert updated is not None
    assert (updated.currency, updated.price, updated.kind) == (
        "eur",
        Decimal("5.50"),
        OfferKind.SUBSCRIPTION,
    )
    assert offers.find_by_id(offer.id) == updated


def test_an_offer_update_sets_only_the_changed_fields(factory: MongoDaoFactory) -> None:
    offers = factory.get_offer_dao()
    offer = offers.create(_offer())
    updated = offers.update_by_id(offer.id, {"weight": 3, "popular": None})
    assert updated == dataclasses.replace(offer, weight=3)
    assert offers.update_by_id(offer.id, {}) == updated


def test_an_offer_update_breaking_the_unique_key_raises_duplicate_entity_error(
    factory: MongoDaoFactory,
) -> None:
    offers = factory.get_offer_dao()
    offers.create(_offer("starter"))
    business = offers.create(_offer("business"))
    with pytest.raises(DuplicateEntityError, match="starter") as raised:
        offers.update_by_id(business.id, {"key": "starter"})
    assert isinstance(raised.value.__cause__, DuplicateKeyError)
    assert offers.find_by_id(business.id) == business


def test_racing_offer_updates_each_land_on_the_offer_they_validated(
    factory: MongoDaoFactory,
) -> None:
    offers = factory.get_offer_dao()
    offer = offers.create(_offer())
    _race(
        lambda n: offers.update_by_id(offer.id, {"weight": n} if n % 2 else {"popular": n}),
        list(range(8)),
    )
    found = offers.find_by_id(offer.id)
    assert found is not None
    assert found.weight in {1, 3, 5, 7}
    assert found.popular in {0, 2, 4, 6}


# -- ints MongoDB cannot store -------------------------------------------------------------

TOO_LARGE = [2**63, -(2**63) - 1]


@pytest.mark.parametrize("tokens", TOO_LARGE)
def test_a_ledger_line_with_an_int_beyond_64_bits_is_refused_and_nothing_stored(
    factory: MongoDaoFactory, tokens: int
) -> None:
    ledger = factory.get_token_timetable_dao()
    with pytest.raises(UserCreditsError):
        ledger.create(_line(tokens=tokens))
    assert ledger.count() == 0


@pytest.mark.parametrize("weight", TOO_LARGE)
def test_an_offer_update_with_an_int_beyond_64_bits_leaves_the_offer_unchanged(
    factory: MongoDaoFactory, weight: int
) -> None:
    offers = factory.get_offer_dao()
    offer = offers.create(_offer())
    with pytest.raises(UserCreditsError):
        offers.update_by_id(offer.id, {"weight": weight})
    assert offers.find_by_id(offer.id) == offer


@pytest.mark.parametrize("debt", TOO_LARGE)
def test_a_snapshot_with_an_int_beyond_64_bits_raises_storage_error_from_the_driver_error(
    factory: MongoDaoFactory, debt: int
) -> None:
    credits = factory.get_user_credits_dao()
    opened = credits.open_account("alice", "ai", T0)
    with pytest.raises(StorageError) as raised:
        credits.save_snapshot("alice", "ai", Snapshot(seq=1, debt=debt))
    assert isinstance(raised.value.__cause__, OverflowError)
    assert credits.get_account("alice", "ai") == opened


# -- driver errors -------------------------------------------------------------------------


def test_a_duplicate_key_is_raised_as_duplicate_entity_error_from_the_driver_error(
    factory: MongoDaoFactory,
) -> None:
    factory.get_offer_dao().create(_offer("starter"))
    with pytest.raises(DuplicateEntityError, match="starter") as raised:
        factory.get_offer_dao().create(_offer("starter"))
    assert isinstance(raised.value.__cause__, DuplicateKeyError)


def test_a_second_line_of_one_number_is_refused_naming_the_line(
    factory: MongoDaoFactory,
) -> None:
    ledger = factory.get_token_timetable_dao()
    first = ledger.create(_line(seq=1))
    with pytest.raises(DuplicateEntityError, match="line 1 of account 'ai'") as raised:
        ledger.create(_line(seq=1, tokens=5))
    assert isinstance(raised.value.__cause__, DuplicateKeyError)
    assert ledger.find({}) == [first]


def test_a_second_child_of_one_bundle_item_is_refused(factory: MongoDaoFactory) -> None:
    orders = factory.get_order_dao()
    parent = orders.create(Order(user_id="alice"))
    child = orders.create(Order(user_id="alice", parent_id=parent.id, item_index=0))
    with pytest.raises(DuplicateEntityError, match="item 0"):
        orders.create(Order(user_id="alice", parent_id=parent.id, item_index=0))
    assert orders.find({"parent_id": parent.id}) == [child]


def test_a_second_paid_exclusive_order_of_an_offer_is_refused(factory: MongoDaoFactory) -> None:
    orders = factory.get_order_dao()
    offer_id = ObjectId()
    paid = Order(user_id="alice", offer_id=offer_id, status=Status.PAID, exclusive=True)
    first = orders.create(paid)
    with pytest.raises(DuplicateEntityError, match="exclusive") as raised:
        orders.create(paid)
    assert isinstance(raised.value.__cause__, DuplicateKeyError)
    orders.create(dataclasses.replace(paid, exclusive=False))
    orders.create(dataclasses.replace(paid, user_id="bob"))
    assert orders.find({"user_id": "alice", "exclusive": True}) == [first]


def test_an_exclusive_order_cannot_become_the_second_paid_one(factory: MongoDaoFactory) -> None:
    orders = factory.get_order_dao()
    offer_id = ObjectId()
    orders.create(Order(user_id="alice", offer_id=offer_id, status=Status.PAID, exclusive=True))
    pending = orders.create(Order(user_id="alice", offer_id=offer_id, exclusive=True))
    with pytest.raises(DuplicateEntityError, match="exclusive"):
        orders.transition(pending.id, [Status.PENDING], {"status": Status.PAID})
    assert orders.find_by_id(pending.id) == pending


def test_a_value_bson_cannot_encode_raises_storage_error(factory: MongoDaoFactory) -> None:
    ledger = factory.get_token_timetable_dao()
    with pytest.raises(StorageError) as raised:
        ledger.create(_line(user=object()))
    assert raised.value.__cause__ is not None
    assert ledger.count() == 0


def test_unknown_filter_fields_raise_value_error(factory: MongoDaoFactory) -> None:
    with pytest.raises(ValueError, match="colour"):
        factory.get_order_dao().find({"colour": "red"})


# -- the container -------------------------------------------------------------------------


def test_mongo_container_overrides_the_core_dao_factory() -> None:
    mongo = MongoContainer(config={"uri": "mongomock://localhost", "db": _db_name()})
    core = UserCreditsContainer(dao_factory=mongo.dao_factory)
    try:
        core.check_dependencies()
        service = core.service()
        dao_factory = service.get_dao_factory()
        assert isinstance(dao_factory, MongoDaoFactory)
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


def test_threads_asking_a_fresh_container_at_once_share_one_service_and_one_client() -> None:
    mongo = MongoContainer(config={"uri": "mongomock://localhost", "db": _db_name()})
    core = UserCreditsContainer(dao_factory=mongo.dao_factory)
    start = threading.Barrier(8)
    services: list[Any] = []
    factories: list[Any] = []

    def ask() -> None:
        start.wait(timeout=10)
        factories.append(mongo.dao_factory())
        services.append(core.service())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len({id(s) for s in services}) == 1
        assert len({id(f) for f in factories}) == 1
        assert services[0].get_dao_factory() is factories[0]
    finally:
        mongo.shutdown_resources()


def test_a_core_provider_override_reaches_the_mongo_backend() -> None:
    mongo = MongoContainer(config={"uri": "mongomock://localhost", "db": _db_name()})
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


def _race(task: Callable[[Any], T], arguments: list[Any]) -> list[T | Exception]:
    """Run ``task`` once per argument, in threads released at the same moment; each result
    or the exception raised."""
    start = threading.Barrier(len(arguments))

    def run(argument: Any) -> T | Exception:
        start.wait(timeout=30)
        try:
            return task(argument)
        except Exception as e:
            return e

    with ThreadPoolExecutor(max_workers=len(arguments)) as pool:
        return [f.result(timeout=60) for f in [pool.submit(run, a) for a in arguments]]


def test_racing_factories_store_one_line_of_one_number(
    racing_factories: list[MongoDaoFactory],
) -> None:
    results = _race(lambda f: f.get_token_timetable_dao().create(_line(seq=1)), racing_factories)
    stored = [r for r in results if isinstance(r, TokenTimetable)]
    assert len(stored) == 1
    assert all(isinstance(r, DuplicateEntityError) for r in results if r not in stored)
    assert racing_factories[0].get_token_timetable_dao().find({}) == stored


@pytest.mark.parametrize("key", ["idempotency_key", "operation_key"])
def test_racing_factories_store_one_line_per_key(
    racing_factories: list[MongoDaoFactory], key: str
) -> None:
    numbered = list(enumerate(racing_factories, start=1))
    results = _race(
        lambda n_f: n_f[1].get_token_timetable_dao().create(_line(seq=n_f[0], **{key: "k"})),
        numbered,
    )
    assert sum(isinstance(r, TokenTimetable) for r in results) == 1
    assert racing_factories[0].get_token_timetable_dao().count() == 1


def test_racing_factories_open_one_account_and_one_user_record(
    racing_factories: list[MongoDaoFactory],
) -> None:
    results = _race(
        lambda f: f.get_user_credits_dao().open_account("alice", "ai", T0), racing_factories
    )
    assert all(isinstance(r, Account) for r in results)
    assert len({repr(r) for r in results}) == 1
    assert _count(racing_factories[0], "usercredits_accounts") == 1
    assert _count(racing_factories[0], "usercredits_user_credits") == 1


def test_racing_factories_register_one_user_record(
    racing_factories: list[MongoDaoFactory],
) -> None:
    results = _race(lambda f: f.get_user_credits_dao().register("alice"), racing_factories)
    assert len(set(results)) == 1
    assert _count(racing_factories[0], "usercredits_user_credits") == 1


def test_racing_factories_store_one_snapshot_per_number(
    racing_factories: list[MongoDaoFactory],
) -> None:
    racing_factories[0].get_user_credits_dao().open_account("alice", "ai", T0)
    numbered = list(enumerate(racing_factories, start=1))
    results = _race(
        lambda n_f: (
            n_f[1].get_user_credits_dao().save_snapshot("alice", "ai", Snapshot(seq=n_f[0]))
        ),
        numbered,
    )
    assert results[-1] is True
    account = racing_factories[0].get_user_credits_dao().get_account("alice", "ai")
    assert account is not None
    assert account.snapshot.seq == len(racing_factories)


def test_racing_factories_never_overdraw(racing_factories: list[MongoDaoFactory]) -> None:
    free = racing_factories[0].get_offer_dao().create(_offer(price="0", tokens=30))
    PaymentService(racing_factories[0], ManualPaymentClient()).create_order(free.id, "alice")

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

    assert sum(r for r in _race(consume, racing_factories) if isinstance(r, int)) == 30
    service = PaymentService(racing_factories[0], ManualPaymentClient())
    assert service.remaining_tokens("alice", "ai") == 0
    lines = racing_factories[0].get_token_timetable_dao().lines_after("alice", "ai", 0)
    assert [line.seq for line in lines] == list(range(1, 32))
    assert [line.reason for line in lines[1:]] == [LedgerReason.CONSUMPTION] * 30
