"""The SQL backend runs every service contract of ``usercredits.testing``, on SQLite and on
PostgreSQL; each test on a new database (see ``conftest.py``)."""

from __future__ import annotations

from usercredits.testing import (
    credits_contracts,
    gateway_contracts,
    json_contracts,
    service_contracts,
)
from usercredits.testing.credits_contracts import (
    GrantContract,
    HistoryContract,
    HoldContract,
    SellingRuleContract,
)
from usercredits.testing.gateway_contracts import (
    DisputeContract,
    PartialRefundContract,
    WebhookStoreContract,
)
from usercredits.testing.json_contracts import JsonContract
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


class TestSqliteSellingRules(SqliteBackend, SellingRuleContract):
    pass


class TestSqliteGrants(SqliteBackend, GrantContract):
    pass


class TestSqliteHolds(SqliteBackend, HoldContract):
    pass


class TestSqliteHistory(SqliteBackend, HistoryContract):
    pass


class TestSqlitePartialRefunds(SqliteBackend, PartialRefundContract):
    pass


class TestSqliteDisputes(SqliteBackend, DisputeContract):
    pass


class TestSqliteWebhookStore(SqliteBackend, WebhookStoreContract):
    pass


class TestSqliteJson(SqliteBackend, JsonContract):
    pass


class TestPostgresSellingRules(PostgresBackend, SellingRuleContract):
    pass


class TestPostgresGrants(PostgresBackend, GrantContract):
    pass


class TestPostgresHolds(PostgresBackend, HoldContract):
    pass


class TestPostgresHistory(PostgresBackend, HistoryContract):
    pass


class TestPostgresPartialRefunds(PostgresBackend, PartialRefundContract):
    pass


class TestPostgresDisputes(PostgresBackend, DisputeContract):
    pass


class TestPostgresWebhookStore(PostgresBackend, WebhookStoreContract):
    pass


class TestPostgresJson(PostgresBackend, JsonContract):
    pass


def test_every_service_contract_runs_on_sqlite_and_on_postgresql() -> None:
    modules = (service_contracts, credits_contracts, gateway_contracts, json_contracts)
    contracts = {getattr(m, name) for m in modules for name in m.__all__}
    with_tests = {c for c in contracts if any(n.startswith("test_") for n in dir(c))}
    for prefix in ("TestSqlite", "TestPostgres"):
        run_here = {
            base
            for name, test_class in globals().items()
            if name.startswith(prefix)
            for base in test_class.__mro__
        }
        assert sorted(c.__name__ for c in with_tests - run_here) == [], prefix
