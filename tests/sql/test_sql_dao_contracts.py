"""The SQL DAOs run the DAO contract suite of ``usercredits.testing``, on SQLite and on
PostgreSQL; each backend a new database (see ``conftest.py``)."""

from __future__ import annotations

from usercredits.testing import dao_contracts
from usercredits.testing.dao_contracts import (
    CustomerDaoContract,
    OfferDaoContract,
    OrderDaoContract,
    TokenTimetableDaoContract,
    UserCreditsDaoContract,
    WebhookEventDaoContract,
)

from .conftest import PostgresBackend, SqliteBackend


class TestSqliteOfferDao(SqliteBackend, OfferDaoContract):
    pass


class TestSqliteOrderDao(SqliteBackend, OrderDaoContract):
    pass


class TestSqliteTokenTimetableDao(SqliteBackend, TokenTimetableDaoContract):
    pass


class TestSqliteUserCreditsDao(SqliteBackend, UserCreditsDaoContract):
    pass


class TestSqliteCustomerDao(SqliteBackend, CustomerDaoContract):
    pass


class TestSqliteWebhookEventDao(SqliteBackend, WebhookEventDaoContract):
    pass


class TestPostgresOfferDao(PostgresBackend, OfferDaoContract):
    pass


class TestPostgresOrderDao(PostgresBackend, OrderDaoContract):
    pass


class TestPostgresTokenTimetableDao(PostgresBackend, TokenTimetableDaoContract):
    pass


class TestPostgresUserCreditsDao(PostgresBackend, UserCreditsDaoContract):
    pass


class TestPostgresCustomerDao(PostgresBackend, CustomerDaoContract):
    pass


class TestPostgresWebhookEventDao(PostgresBackend, WebhookEventDaoContract):
    pass


def test_every_dao_contract_runs_on_sqlite_and_on_postgresql() -> None:
    contracts = {getattr(dao_contracts, name) for name in dao_contracts.__all__}
    for prefix in ("TestSqlite", "TestPostgres"):
        run_here = {
            base
            for name, test_class in globals().items()
            if name.startswith(prefix)
            for base in test_class.__mro__
        }
        assert sorted(c.__name__ for c in contracts - run_here) == [], prefix
