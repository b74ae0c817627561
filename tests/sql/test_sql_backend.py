"""What the SQL backend guarantees beyond the contract suite: the URLs it opens, what it
stores and how, the schema it relies on, how it reports driver errors, and its wiring.

Each test runs on an SQLite file and on the session's PostgreSQL server where both apply.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import sqlalchemy as sa

from usercredits import (
    Cycle,
    DuplicateEntityError,
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
from usercredits.models import Status
from usercredits_sql import SqlDaoFactory, metadata, open_dao_factory
from usercredits_sql.codec import (
    customer_codec,
    line_codec,
    offer_codec,
    order_codec,
    webhook_event_codec,
)
from usercredits_sql.containers import SqlContainer
from usercredits_sql.store import normalize_url

from .conftest import PostgresServer, sqlite_factory

T0 = datetime(2025, 3, 1, 12, 0, 0, 123_000, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlDaoFactory]:
    """A factory on an empty database: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        made = sqlite_factory(tmp_path)
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        made = server.factory()
    try:
        yield made
    finally:
        made.close()


def pack(**fields: object) -> Offer:
    values: dict[str, object] = {
        "name": "pack",
        "kind": OfferKind.TOKENS,
        "offer_group": "pack",
        "cycle": Cycle.MONTHLY,
        "price": Decimal("9.90"),
        "token_count": 10,
        **fields,
    }
    return Offer(**values)  # type: ignore[arg-type]


def line(**fields: object) -> TokenTimetable:
    values: dict[str, object] = {
        "user_id": "alice",
        "offer_group": "pack",
        "tokens": -1,
        "seq": 1,
        "created_at": T0,
        **fields,
    }
    return TokenTimetable(**values)  # type: ignore[arg-type]


# -- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///credits.db", "sqlite+pysqlite"),
        ("sqlite://", "sqlite+pysqlite"),
        ("postgresql://app@db/shop", "postgresql+psycopg"),
        ("postgresql+psycopg://app@db/shop", "postgresql+psycopg"),
        ("postgres://app@db/shop", "postgresql+psycopg"),
    ],
)
def test_sqlite_and_postgresql_urls_are_accepted(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


@pytest.mark.parametrize(
    "url",
    ["mysql://app@db/shop", "postgresql+psycopg2://app@db/shop", "mongodb://db/shop", "shop.db"],
)
def test_other_urls_are_refused_with_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        SqlDaoFactory.from_url(url)


def test_an_unreachable_postgresql_server_raises_storage_error() -> None:
    with socket_closed() as port, pytest.raises(StorageError) as raised:
        SqlDaoFactory.from_url(f"postgresql://nobody@127.0.0.1:{port}/shop")
    assert raised.value.__cause__ is not None


@contextlib.contextmanager
def socket_closed() -> Iterator[int]:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    yield port


def test_an_in_memory_sqlite_database_is_private_to_its_factory() -> None:
    first = SqlDaoFactory.from_url("sqlite://")
    second = SqlDaoFactory.from_url("sqlite://")
    try:
        first.get_offer_dao().create(pack())
        assert first.get_offer_dao().count() == 1
        assert second.get_offer_dao().count() == 0
    finally:
        first.close()
        second.close()


def test_an_in_memory_sqlite_database_serves_several_threads() -> None:
    factory = SqlDaoFactory.from_url("sqlite://")
    service = PaymentService(factory, ManualPaymentClient())
    try:
        service.create_order(factory.get_offer_dao().create(pack(price="0")).id, "alice")
        threads = [
            threading.Thread(target=lambda: [service.consume_tokens("alice", "pack", 1)])
            for _ in range(5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert service.remaining_tokens("alice", "pack") == 5
    finally:
        factory.close()


def test_more_threads_than_a_default_pool_holds_work_at_once_and_give_back_their_connections(
    factory: SqlDaoFactory,
) -> None:
    service = PaymentService(factory, ManualPaymentClient())
    service.grant_tokens("alice", "pack", 40)
    start, end = threading.Barrier(40), threading.Barrier(40)
    failures: list[BaseException] = []

    def consume() -> None:
        try:
            start.wait(timeout=30)
            service.consume_tokens("alice", "pack", 1)
        except BaseException as e:
            failures.append(e)
        end.wait(timeout=30)  # every thread holds its connection until all have consumed

    threads = [threading.Thread(target=consume) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert service.remaining_tokens("alice", "pack") == 0
    gc.collect()
    pool = factory.engine.pool
    assert pool.checkedout() <= 1  # this thread's own connection


def test_a_sqlite_file_is_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "credits.db"
    factory = SqlDaoFactory.from_url(f"sqlite:///{path}")
    try:
        with factory.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 5000
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    finally:
        factory.close()
    with contextlib.closing(sqlite3.connect(path)) as database:
        assert database.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_opening_a_database_twice_keeps_its_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    with contextlib.closing(SqlDaoFactory.from_url(url)) as first:
        created = first.get_offer_dao().create(pack())
    with contextlib.closing(SqlDaoFactory.from_url(url)) as second:
        assert second.get_offer_dao().find_by_id(created.id) == created


# -- schema ------------------------------------------------------------------------------


def test_the_metadata_holds_every_table_of_the_backend_prefixed() -> None:
    assert sorted(metadata.tables) == [
        "usercredits_accounts",
        "usercredits_customers",
        "usercredits_ledger",
        "usercredits_offer_tags",
        "usercredits_offer_unlocks",
        "usercredits_offers",
        "usercredits_orders",
        "usercredits_users",
        "usercredits_webhook_events",
    ]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_factories_opened_at_once_on_a_new_database_create_its_schema_once(
    request: pytest.FixtureRequest, tmp_path: Path, database: str
) -> None:
    if database == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'new.db'}", None
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = server.create_empty_database()
        url, drop = server.url_of(name).render_as_string(hide_password=False), name
    start = threading.Barrier(4)
    opened: list[SqlDaoFactory | Exception] = []

    def open_one() -> None:
        start.wait(30)
        try:
            opened.append(SqlDaoFactory.from_url(url))
        except Exception as e:
            opened.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert [type(f) for f in opened] == [SqlDaoFactory] * 4
        factories = [f for f in opened if isinstance(f, SqlDaoFactory)]
        factories[0].get_offer_dao().create(pack())
        assert factories[-1].get_offer_dao().count() == 1
    finally:
        for factory in opened:
            if isinstance(factory, SqlDaoFactory):
                factory.close()
        if drop is not None:
            request.getfixturevalue("postgres_server").drop_database(drop)


def test_a_schema_made_by_the_applications_migrations_is_used_as_is(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    with contextlib.closing(SqlDaoFactory.from_url(url, create_schema=False)) as factory:
        assert factory.get_offer_dao().create(pack()).id is not None


def test_without_the_schema_calls_raise_storage_error_with_the_drivers_cause(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    factory = SqlDaoFactory.from_url(url, create_schema=False)
    with contextlib.closing(factory), pytest.raises(StorageError) as raised:
        factory.get_offer_dao().find()
    assert isinstance(raised.value.__cause__, sa.exc.SQLAlchemyError)


def test_every_field_of_the_stored_models_has_a_column() -> None:
    codecs = [
        offer_codec(True),
        order_codec(True),
        line_codec(),
        customer_codec(),
        webhook_event_codec(),
    ]
    assert {codec.model.__name__: sorted(codec.unmapped) for codec in codecs} == {
        codec.model.__name__: [] for codec in codecs
    }


# -- values ------------------------------------------------------------------------------


def test_money_keeps_its_exponent(factory: SqlDaoFactory) -> None:
    offer = factory.get_offer_dao().create(pack(price=Decimal("9.90")))
    found = factory.get_offer_dao().find_by_id(offer.id)
    assert found is not None
    assert str(found.price) == "9.90"


def test_datetimes_come_back_as_the_same_instant_in_utc(factory: SqlDaoFactory) -> None:
    paris = timezone(timedelta(hours=2))
    stored = factory.get_order_dao().create(
        Order(user_id="alice", created_at=datetime(2025, 3, 1, 14, 0, 0, 250_000, tzinfo=paris))
    )
    found = factory.get_order_dao().find_by_id(stored.id)
    assert found is not None
    assert found.created_at == datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    assert found.created_at.tzinfo is UTC


def test_due_orders_are_compared_as_instants(factory: SqlDaoFactory) -> None:
    orders = factory.get_order_dao()
    plus_two = timezone(timedelta(hours=2))
    due = orders.create(Order(user_id="alice", status=Status.PAID, expires=T0))
    orders.create(Order(user_id="alice", status=Status.PAID, expires=T0 + timedelta(seconds=1)))
    now = T0.astimezone(plus_two)
    assert [o.id for o in orders.find_due("alice", now)] == [due.id]


def test_an_integer_beyond_64_bits_raises_storage_error_and_stores_nothing(
    factory: SqlDaoFactory,
) -> None:
    ledger = factory.get_token_timetable_dao()
    with pytest.raises(StorageError, match="64-bit"):
        ledger.create(line(tokens=2**63))
    assert ledger.count() == 0
    assert ledger.create(line(tokens=-(2**63))).tokens == -(2**63)


@pytest.mark.parametrize("user_id", ["1", 1, uuid.UUID(int=1), -5, 10**30])
def test_user_ids_come_back_with_their_type(factory: SqlDaoFactory, user_id: object) -> None:
    stored = factory.get_token_timetable_dao().create(line(user_id=user_id))
    assert type(stored.user_id) is type(user_id)
    assert stored.user_id == user_id
    assert list(factory.get_user_credits_dao().iter_user_ids()) == []
    factory.get_user_credits_dao().register(user_id)
    assert [(type(u), u) for u in factory.get_user_credits_dao().iter_user_ids()] == [
        (type(user_id), user_id)
    ]


@pytest.mark.parametrize("user_id", [True, 1.5, b"alice", None])
def test_a_user_id_of_another_type_is_refused_on_write_and_matches_nothing_on_read(
    factory: SqlDaoFactory, user_id: object
) -> None:
    credits = factory.get_user_credits_dao()
    with pytest.raises(ValueError, match="user ids"):
        credits.register(user_id)
    assert credits.find_record_id(user_id) is None
    assert factory.get_order_dao().find({"user_id": user_id}) == []


def test_a_compare_and_set_on_money_compares_values(factory: SqlDaoFactory) -> None:
    orders = factory.get_order_dao()
    order = orders.create(
        Order(
            user_id="alice",
            status=Status.PAID,
            total=Decimal("10.00"),
            refunded_amount=Decimal("2.50"),
        )
    )
    changed = orders.transition(
        order.id,
        {Status.PAID},
        {"refunded_amount": Decimal("5")},
        expected={"refunded_amount": Decimal("2.5")},
    )
    assert changed is not None
    assert changed.refunded_amount == Decimal(5)
    stale = orders.transition(
        order.id,
        {Status.PAID},
        {"refunded_amount": Decimal("7")},
        expected={"refunded_amount": Decimal("2.50")},
    )
    assert stale is None


def test_a_second_paid_exclusive_order_of_an_offer_is_refused(factory: SqlDaoFactory) -> None:
    orders = factory.get_order_dao()
    offer_id = factory.get_offer_dao().create(pack(price="0")).id
    orders.create(Order(user_id="alice", offer_id=offer_id, status=Status.PAID, exclusive=True))
    pending = orders.create(Order(user_id="alice", offer_id=offer_id, exclusive=True))
    with pytest.raises(DuplicateEntityError):
        orders.transition(pending.id, {Status.PENDING}, {"status": Status.PAID})
    assert orders.count({"status": Status.PAID}) == 1


def test_the_ledger_holds_one_line_per_account_number(factory: SqlDaoFactory) -> None:
    ledger = factory.get_token_timetable_dao()
    ledger.create(line(seq=1))
    with pytest.raises(DuplicateEntityError):
        ledger.create(line(seq=1, tokens=5, reason=LedgerReason.ADJUSTMENT))
    assert [stored.tokens for stored in ledger.find()] == [-1]


# -- wiring ------------------------------------------------------------------------------


def test_the_backends_entry_points_open_sqlite_and_postgresql_urls(tmp_path: Path) -> None:
    names = {e.name: e.value for e in entry_points(group="usercredits.backends")}
    for scheme in ("sqlite", "postgresql", "postgresql+psycopg"):
        assert names.get(scheme) == "usercredits_sql:open_dao_factory"
    opened = next(iter(entry_points(group="usercredits.backends", name="sqlite"))).load()
    assert opened is open_dao_factory
    factory = opened(f"sqlite:///{tmp_path / 'cli.db'}", "cli.db")
    try:
        assert isinstance(factory, SqlDaoFactory)
    finally:
        factory.close()


def test_the_container_provides_a_factory_the_core_container_uses(tmp_path: Path) -> None:
    sql = SqlContainer(config={"url": f"sqlite:///{tmp_path / 'wired.db'}"})
    core = UserCreditsContainer(dao_factory=sql.dao_factory)
    core.clock.override(FrozenClock(T0))
    try:
        service = core.service()
        assert isinstance(service.get_dao_factory(), SqlDaoFactory)
        offer = service.get_dao_factory().get_offer_dao().create(pack(price="0"))
        service.create_order(offer.id, "alice")
        assert service.remaining_tokens("alice", "pack") == 10
    finally:
        sql.shutdown_resources()


def test_the_container_gives_one_factory_per_container(tmp_path: Path) -> None:
    sql = SqlContainer(config={"url": f"sqlite:///{tmp_path / 'wired.db'}"})
    try:
        assert sql.dao_factory() is sql.dao_factory()
    finally:
        sql.shutdown_resources()


def test_threads_asking_a_fresh_container_at_once_share_one_factory(tmp_path: Path) -> None:
    sql = SqlContainer(config={"url": f"sqlite:///{tmp_path / 'wired.db'}"})
    core = UserCreditsContainer(dao_factory=sql.dao_factory)
    start = threading.Barrier(8)
    services: list[PaymentService] = []
    factories: list[object] = []

    def ask() -> None:
        start.wait(timeout=10)
        factories.append(sql.dao_factory())
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
        sql.shutdown_resources()
