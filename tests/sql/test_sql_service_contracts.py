"""The SQL backend runs every service contract of ``usercredits.testing``, on SQLite and on
PostgreSQL; each test on a new database (see ``conftest.py``)."""

from __future__ import annotations

from usercredits.testing import service_contracts
from usercredits.testing.service_contracts import (
    BadInputContract,
    ConcurrencyContract,
    ConsumptionContract,
    ExpiryContract,
    OfferCatalogContract,
    OrderContract,
    RefundContract,
    SettlementContract,
    WebhookContract,
)

from .conftest import PostgresBackend, SqliteBackend


class TestSqliteOfferCatalog(SqliteBackend, OfferCatalogContract):
    pass


class TestSqliteOrders(SqliteBackend, OrderContract):
    pass


class TestSqliteSettlement(SqliteBackend, SettlementContract):
    pass


class TestSqliteConsumption(SqliteBackend, ConsumptionContract):
    pass


class TestSqliteExpiry(SqliteBackend, ExpiryContract):
    pass


class TestSqliteWebhooks(SqliteBackend, WebhookContract):
    pass


class TestSqliteRefunds(SqliteBackend, RefundContract):
    pass


class TestSqliteBadInput(SqliteBackend, BadInputContract):
    pass


class TestSqliteConcurrency(SqliteBackend, ConcurrencyContract):
    pass


class TestPostgresOfferCatalog(PostgresBackend, OfferCatalogContract):
    pass


class TestPostgresOrders(PostgresBackend, OrderContract):
    pass


class TestPostgresSettlement(PostgresBackend, SettlementContract):
    pass


class TestPostgresConsumption(PostgresBackend, ConsumptionContract):
    pass


class TestPostgresExpiry(PostgresBackend, ExpiryContract):
    pass


class TestPostgresWebhooks(PostgresBackend, WebhookContract):
    pass


class TestPostgresRefunds(PostgresBackend, RefundContract):
    pass


class TestPostgresBadInput(PostgresBackend, BadInputContract):
    pass


class TestPostgresConcurrency(PostgresBackend, ConcurrencyContract):
    pass


def test_every_service_contract_runs_on_sqlite_and_on_postgresql() -> None:
    contracts = {getattr(service_contracts, name) for name in service_contracts.__all__}
    with_tests = {c for c in contracts if any(n.startswith("test_") for n in dir(c))}
    for prefix in ("TestSqlite", "TestPostgres"):
        run_here = {
            base
            for name, test_class in globals().items()
            if name.startswith(prefix)
            for base in test_class.__mro__
        }
        assert sorted(c.__name__ for c in with_tests - run_here) == [], prefix
