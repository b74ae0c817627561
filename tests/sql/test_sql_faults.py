"""The SQL backend survives a failure at every write of every call, on SQLite and on
PostgreSQL."""

from usercredits.testing.faults import FaultInjectionContract

from .conftest import PostgresBackend, SqliteBackend


class TestSqliteFaults(SqliteBackend, FaultInjectionContract):
    pass


class TestPostgresFaults(PostgresBackend, FaultInjectionContract):
    pass
