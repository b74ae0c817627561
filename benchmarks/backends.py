"""The backends the benchmarks run on, each with its raw baseline.

A baseline is the cheapest code doing the same storage work *outside* the library, on the
same database: recording a consumption is one ledger record appended and one balance
changed, reading a balance is one lookup.

* memory: a ``threading.Lock``, a list append and a dict update;
* MongoDB (mongomock or a real server): a bare pymongo ``insert_one`` of a ledger document
  and an ``update_one`` of a balance document, on the backend's own client;
* SQL: one transaction inserting a ledger row and updating a balance row, with the driver
  itself (the standard library's ``sqlite3``, or ``psycopg`` for PostgreSQL).
"""

from __future__ import annotations

import abc
import importlib.util
import os
import shutil
import sqlite3
import tempfile
import threading
import uuid
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from counting import Counter, MongomockCounter, PymongoCounter, SqlCounter
from usercredits import DaoFactory, InMemoryDaoFactory

ROOT = Path(__file__).resolve().parent.parent
MONGO_URI_VARIABLE = "USERCREDITS_TEST_MONGO_URI"
POSTGRES_URL_VARIABLE = "USERCREDITS_TEST_POSTGRES_URL"


class Raw(abc.ABC):
    """The baseline: the same storage work as the library, written directly."""

    @abc.abstractmethod
    def prepare(self, user: str, group: str, balance: int) -> None:
        """Create the balance record of ``user``'s ``group``."""

    @abc.abstractmethod
    def consume(self, user: str, group: str, tokens: int, now: datetime) -> None:
        """Append one ledger record of ``-tokens`` and take ``tokens`` from the balance."""

    @abc.abstractmethod
    def balance(self, user: str, group: str) -> int:
        """Read the balance."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections."""


class MemoryRaw(Raw):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[tuple[str, str, int, datetime, str]] = []
        self._balances: dict[tuple[str, str], int] = {}

    def prepare(self, user: str, group: str, balance: int) -> None:
        with self._lock:
            self._balances[(user, group)] = balance

    def consume(self, user: str, group: str, tokens: int, now: datetime) -> None:
        with self._lock:
            self._lines.append((user, group, -tokens, now, "consumption"))
            self._balances[(user, group)] = self._balances.get((user, group), 0) - tokens

    def balance(self, user: str, group: str) -> int:
        with self._lock:
            return self._balances.get((user, group), 0)


class MongoRaw(Raw):
    """Two collections beside the backend's, on the same client. mongomock is not
    thread-safe: its calls are serialised by a lock, as the backend's are."""

    def __init__(self, database: Any, lock: AbstractContextManager[Any]):
        from pymongo import ASCENDING

        self._ledger = database["bench_raw_ledger"]
        self._balances = database["bench_raw_balances"]
        self._lock = lock
        self._ledger.create_index([("user_id", ASCENDING), ("offer_group", ASCENDING)])
        self._balances.create_index(
            [("user_id", ASCENDING), ("offer_group", ASCENDING)], unique=True
        )

    def prepare(self, user: str, group: str, balance: int) -> None:
        with self._lock:
            self._balances.insert_one({"user_id": user, "offer_group": group, "balance": balance})

    def consume(self, user: str, group: str, tokens: int, now: datetime) -> None:
        with self._lock:
            self._ledger.insert_one(
                {
                    "user_id": user,
                    "offer_group": group,
                    "tokens": -tokens,
                    "created_at": now,
                    "reason": "consumption",
                }
            )
            self._balances.update_one(
                {"user_id": user, "offer_group": group}, {"$inc": {"balance": -tokens}}
            )

    def balance(self, user: str, group: str) -> int:
        with self._lock:
            found = self._balances.find_one({"user_id": user, "offer_group": group})
        return 0 if found is None else int(found["balance"])


SQL_TABLES = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS bench_raw_ledger (pk INTEGER PRIMARY KEY AUTOINCREMENT, "
        "user_id TEXT NOT NULL, offer_group TEXT NOT NULL, tokens INTEGER NOT NULL, "
        "created_at TEXT NOT NULL, reason TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ix_bench_raw_ledger ON bench_raw_ledger (user_id, offer_group)",
        "CREATE TABLE IF NOT EXISTS bench_raw_balances (user_id TEXT NOT NULL, "
        "offer_group TEXT NOT NULL, balance INTEGER NOT NULL, PRIMARY KEY (user_id, offer_group))",
    ),
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS bench_raw_ledger (pk BIGSERIAL PRIMARY KEY, "
        "user_id TEXT NOT NULL, offer_group TEXT NOT NULL, tokens BIGINT NOT NULL, "
        "created_at TIMESTAMPTZ NOT NULL, reason TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ix_bench_raw_ledger ON bench_raw_ledger (user_id, offer_group)",
        "CREATE TABLE IF NOT EXISTS bench_raw_balances (user_id TEXT NOT NULL, "
        "offer_group TEXT NOT NULL, balance BIGINT NOT NULL, PRIMARY KEY (user_id, offer_group))",
    ),
}
_INSERT_LINE = (
    "INSERT INTO bench_raw_ledger (user_id, offer_group, tokens, created_at, reason) "
    "VALUES ({p}, {p}, {p}, {p}, 'consumption')"
)
_UPDATE_BALANCE = (
    "UPDATE bench_raw_balances SET balance = balance - {p} "
    "WHERE user_id = {p} AND offer_group = {p}"
)
_SELECT_BALANCE = "SELECT balance FROM bench_raw_balances WHERE user_id = {p} AND offer_group = {p}"


class SqliteRaw(Raw):
    """``sqlite3`` on the backend's file, set up as the backend sets its connections up (WAL,
    ``synchronous = NORMAL``, the same busy timeout)."""

    def __init__(self, path: str):
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        for pragma in (
            "PRAGMA busy_timeout = 30000",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",
        ):
            self._db.execute(pragma)
        for statement in SQL_TABLES["sqlite"]:
            self._db.execute(statement)
        self._insert = _INSERT_LINE.format(p="?")
        self._update = _UPDATE_BALANCE.format(p="?")
        self._select = _SELECT_BALANCE.format(p="?")

    def prepare(self, user: str, group: str, balance: int) -> None:
        self._db.execute("INSERT INTO bench_raw_balances VALUES (?, ?, ?)", (user, group, balance))

    def consume(self, user: str, group: str, tokens: int, now: datetime) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(self._insert, (user, group, -tokens, now.isoformat(" ")))
            db.execute(self._update, (tokens, user, group))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def balance(self, user: str, group: str) -> int:
        row = self._db.execute(self._select, (user, group)).fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        self._db.close()


class PostgresRaw(Raw):
    """``psycopg`` on the backend's database."""

    def __init__(self, conninfo: str):
        import psycopg

        self._db = psycopg.connect(conninfo, autocommit=True)
        for statement in SQL_TABLES["postgresql"]:
            self._db.execute(statement)
        self._insert = _INSERT_LINE.format(p="%s")
        self._update = _UPDATE_BALANCE.format(p="%s")
        self._select = _SELECT_BALANCE.format(p="%s")

    def prepare(self, user: str, group: str, balance: int) -> None:
        self._db.execute(
            "INSERT INTO bench_raw_balances VALUES (%s, %s, %s)", (user, group, balance)
        )

    def consume(self, user: str, group: str, tokens: int, now: datetime) -> None:
        with self._db.transaction():
            self._db.execute(self._insert, (user, group, -tokens, now))
            self._db.execute(self._update, (tokens, user, group))

    def balance(self, user: str, group: str) -> int:
        row = self._db.execute(self._select, (user, group)).fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        self._db.close()


class Backend(abc.ABC):
    """One backend: fresh empty databases on demand, the baseline on the same database, and
    the counter of what a call sends to the database (None in memory)."""

    name: str
    kind: str
    """``memory``, ``mongo`` or ``sql``."""
    counter: Counter | None = None
    timed: bool = True
    """Whether timings say something of the library (mongomock's do not: it scans whole
    collections on every query and on every insert into a uniquely indexed collection)."""

    @abc.abstractmethod
    def open(self) -> DaoFactory:
        """A factory on a new, empty database."""

    def discard(self, factory: DaoFactory) -> None:
        """Close the factory and remove its database."""
        factory.close()

    @abc.abstractmethod
    def raw(self, factory: DaoFactory) -> Raw:
        """The baseline, on the factory's database."""

    def url(self, factory: DaoFactory) -> str:
        """The URL another process opens the factory's database with (SQL only)."""
        raise NotImplementedError

    def raw_for_url(self, url: str) -> Raw:
        """The baseline on the database of ``url``, from another process (SQL only)."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release what the backend holds (a throwaway server)."""


class MemoryBackend(Backend):
    name = "memory"
    kind = "memory"

    def open(self) -> DaoFactory:
        return InMemoryDaoFactory()

    def raw(self, factory: DaoFactory) -> Raw:
        return MemoryRaw()


class MongoBackend(Backend):
    kind = "mongo"

    def __init__(self, name: str, uri: str):
        self.name = name
        self._uri = uri
        self._mock = uri.startswith("mongomock://")
        self.timed = not self._mock
        if self._mock:
            self.counter = MongomockCounter()
        else:
            counter = PymongoCounter()
            counter.register()
            self.counter = counter

    def open(self) -> DaoFactory:
        from usercredits_mongo import MongoDaoFactory

        return MongoDaoFactory.from_uri(self._uri, f"uc_bench_{uuid.uuid4().hex[:12]}")

    def discard(self, factory: DaoFactory) -> None:
        database = factory.database
        database.client.drop_database(database.name)
        factory.close()

    def raw(self, factory: DaoFactory) -> Raw:
        lock: AbstractContextManager[Any] = threading.Lock() if self._mock else nullcontext()
        return MongoRaw(factory.database, lock)


class SqliteBackend(Backend):
    """A new SQLite file per database, in a temporary directory removed at the end."""

    name = "sqlite"
    kind = "sql"

    def __init__(self) -> None:
        self.counter = SqlCounter()
        self._directory = Path(tempfile.mkdtemp(prefix="usercredits-bench-"))

    def open(self) -> DaoFactory:
        from usercredits_sql import SqlDaoFactory

        return SqlDaoFactory.from_url(f"sqlite:///{self._directory / uuid.uuid4().hex}.db")

    @staticmethod
    def _path(url: str) -> str:
        from sqlalchemy.engine import make_url

        return str(make_url(url).database)

    def url(self, factory: DaoFactory) -> str:
        return str(factory.url.render_as_string(hide_password=False))

    def discard(self, factory: DaoFactory) -> None:
        path = Path(self._path(self.url(factory)))
        factory.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def raw(self, factory: DaoFactory) -> Raw:
        return self.raw_for_url(self.url(factory))

    def raw_for_url(self, url: str) -> Raw:
        return SqliteRaw(self._path(url))

    def close(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)


def _load_cluster() -> type[Any]:
    """The throwaway PostgreSQL cluster of the SQL test suite (``tests/sql/conftest.py``)."""
    path = ROOT / "tests" / "sql" / "conftest.py"
    spec = importlib.util.spec_from_file_location("usercredits_bench_sql_conftest", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cluster: type[Any] = module.Cluster
    return cluster


class PostgresBackend(Backend):
    """A new database per use on a PostgreSQL server: the one ``USERCREDITS_TEST_POSTGRES_URL``
    names (a role allowed to create databases), else a throwaway cluster started as the SQL
    test suite starts it, and stopped at the end."""

    name = "postgresql"
    kind = "sql"

    def __init__(self) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        self.counter = SqlCounter()
        self._cluster: Any = None
        configured = os.environ.get(POSTGRES_URL_VARIABLE)
        if configured:
            admin = make_url(configured)
        else:
            self._cluster = _load_cluster()()
            try:
                admin = self._cluster.start()
            except BaseException:
                self._stop_cluster()
                raise
        self._admin_url = admin
        self._admin = psycopg.connect(self._conninfo(admin), autocommit=True, connect_timeout=10)
        self._databases: dict[int, str] = {}

    @staticmethod
    def _conninfo(url: Any) -> str:
        return str(url.set(drivername="postgresql").render_as_string(hide_password=False))

    def _url_of(self, database: str) -> Any:
        return self._admin_url.set(drivername="postgresql+psycopg", database=database)

    def open(self) -> DaoFactory:
        from usercredits_sql import SqlDaoFactory

        name = f"usercredits_bench_{uuid.uuid4().hex[:16]}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        factory = SqlDaoFactory.from_url(self._url_of(name))
        self._databases[id(factory)] = name
        return factory

    def url(self, factory: DaoFactory) -> str:
        return str(self._url_of(self._databases[id(factory)]).render_as_string(hide_password=False))

    def discard(self, factory: DaoFactory) -> None:
        factory.close()
        name = self._databases.pop(id(factory))
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def raw(self, factory: DaoFactory) -> Raw:
        return self.raw_for_url(self.url(factory))

    def raw_for_url(self, url: str) -> Raw:
        from sqlalchemy.engine import make_url

        return PostgresRaw(self._conninfo(make_url(url)))

    def _stop_cluster(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster.remove()
            self._cluster = None

    def close(self) -> None:
        for name in list(self._databases.values()):
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin.close()
        self._stop_cluster()


def sql_available() -> str | None:
    """Why the SQL backend cannot run here, None when it can."""
    try:
        import usercredits_sql  # noqa: F401
    except Exception as e:
        return f"usercredits_sql cannot be imported: {type(e).__name__}: {e}"
    return None


def make_backend(name: str) -> Backend:
    """The backend of this name (memory, mongomock, mongodb, sqlite, postgresql)."""
    if name == "memory":
        return MemoryBackend()
    if name == "mongomock":
        return MongoBackend(name, "mongomock://localhost")
    if name == "mongodb":
        return MongoBackend(name, os.environ[MONGO_URI_VARIABLE])
    if name in ("sqlite", "postgresql"):
        missing = sql_available()
        if missing:
            raise RuntimeError(missing)
        return SqliteBackend() if name == "sqlite" else PostgresBackend()
    raise ValueError(f"unknown backend {name!r}")


BACKENDS = ("memory", "mongomock", "mongodb", "sqlite", "postgresql")
