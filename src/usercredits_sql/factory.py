"""The SQL backend's factory: one database (SQLite or PostgreSQL), its DAOs and its engine."""

from __future__ import annotations

from typing import Self

from sqlalchemy.engine import URL, Engine

from usercredits.dao import DaoFactory
from usercredits_sql.dao import (
    SqlCustomerDao,
    SqlOfferDao,
    SqlOrderDao,
    SqlTokenTimetableDao,
    SqlUserCreditsDao,
    SqlWebhookEventDao,
)
from usercredits_sql.schema import metadata
from usercredits_sql.store import SqlStore, create_engine


class SqlDaoFactory(DaoFactory):
    """The SQL backend: the DAOs of one database, safe to share between threads, and between
    processes working on the same database (each process opens its own factory).

    Driver errors are raised as :class:`~usercredits.errors.StorageError`, broken uniqueness
    rules as :class:`~usercredits.errors.DuplicateEntityError`."""

    def __init__(self, store: SqlStore):
        self._store = store
        self._offers = SqlOfferDao(store)
        self._orders = SqlOrderDao(store)
        self._ledger = SqlTokenTimetableDao(store)
        self._credits = SqlUserCreditsDao(store, self._ledger)
        self._customers = SqlCustomerDao(store)
        self._events = SqlWebhookEventDao(store)

    @classmethod
    def from_url(cls, url: str | URL, *, create_schema: bool = True) -> Self:
        """A factory on the database ``url`` names: ``sqlite:///path.db`` (``sqlite://`` is an
        in-memory database, private to the factory), ``postgresql://…`` or
        ``postgresql+psycopg://…`` (psycopg 3).

        With ``create_schema``, the tables and indexes of :data:`usercredits_sql.metadata` that
        do not exist yet are created (concurrent processes may do so at once); without it,
        the schema is the application's (its own migrations). ValueError for another kind of
        URL; StorageError when the database cannot be reached."""
        store = SqlStore(create_engine(url))
        try:
            if create_schema:
                store.create_schema(metadata)
            else:
                store.ping()
        except BaseException:
            store.dispose()
            raise
        return cls(store)

    @property
    def url(self) -> URL:
        """The database URL (render it with ``hide_password=True`` for messages)."""
        return self._store.engine.url

    @property
    def engine(self) -> Engine:
        """The factory's SQLAlchemy engine, for an application's own reads of the database. Its
        connections are in autocommit mode: each statement commits on its own."""
        return self._store.engine

    def get_offer_dao(self) -> SqlOfferDao:
        return self._offers

    def get_order_dao(self) -> SqlOrderDao:
        return self._orders

    def get_token_timetable_dao(self) -> SqlTokenTimetableDao:
        return self._ledger

    def get_user_credits_dao(self) -> SqlUserCreditsDao:
        return self._credits

    def get_customer_dao(self) -> SqlCustomerDao:
        return self._customers

    def get_webhook_event_dao(self) -> SqlWebhookEventDao:
        return self._events

    def close(self) -> None:
        """Close the engine's connections (an in-memory database is gone with them)."""
        self._store.dispose()


def open_dao_factory(url: str, db_name: str | None = None) -> SqlDaoFactory:
    """The ``usercredits.backends`` entry point of ``sqlite://`` and ``postgresql://`` URLs:
    a factory creating its schema when absent. ``db_name`` is ignored: a SQL URL names its
    database itself."""
    return SqlDaoFactory.from_url(url)
