"""The engine of the SQL backend: URLs, connections, transactions and driver errors.

Connections run in autocommit mode, so a DAO method made of one statement is one round
trip and one atomic commit. A method that must read and write atomically opens an explicit
transaction (:meth:`SqlStore.transaction`): ``BEGIN IMMEDIATE`` on SQLite, which takes the
database's write lock at once, so that concurrent writers queue on the busy timeout
instead of failing. SQLite files are opened in WAL mode (readers never wait for the
writer), with a busy timeout and foreign keys on, and are safe for several processes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from usercredits.errors import (
    DuplicateEntityError,
    InvalidInputError,
    StorageError,
    UserCreditsError,
)

SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds an SQLite connection waits for another writer (thread or process) to finish."""

_POSTGRES_NAMES = {"postgresql", "postgres", "postgresql+psycopg"}
_SQLITE_NAMES = {"sqlite", "sqlite+pysqlite"}
_UNIQUE_SQLITE_ERRORS = {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}
_UNIQUE_VIOLATION = "23505"
_SCHEMA_LOCK = 0x75736572637265
"""The PostgreSQL advisory lock serialising the schema creation of concurrent processes."""


def normalize_url(url: str | URL) -> URL:
    """The SQLAlchemy URL of a backend URL: ``sqlite:///path.db`` (``sqlite://`` is an
    in-memory database), ``postgresql://`` or ``postgresql+psycopg://`` (psycopg 3).
    InvalidInputError (a ValueError) for any other URL."""
    if isinstance(url, str) and "://" not in url:
        raise InvalidInputError(
            f"a database URL is required (sqlite:///… or postgresql://…), got {url!r}"
        )
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as e:
        raise InvalidInputError(f"not a database URL: {url!r}") from e
    name = parsed.drivername
    if name in _SQLITE_NAMES:
        return parsed.set(drivername="sqlite+pysqlite")
    if name in _POSTGRES_NAMES:
        return parsed.set(drivername="postgresql+psycopg")
    raise InvalidInputError(
        f"the SQL backend takes sqlite:// and postgresql:// (psycopg) URLs, not {name}:// "
        f"({parsed.render_as_string(hide_password=True)!r})"
    )


def is_memory(url: URL) -> bool:
    """Whether an SQLite URL names an in-memory database."""
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def create_engine(url: str | URL) -> Engine:
    """An engine for a backend URL (see :func:`normalize_url`), in autocommit mode."""
    parsed = normalize_url(url)
    # Every thread using the backend keeps a connection (see SqlStore): no bound on how many.
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "max_overflow": -1}
    if parsed.get_backend_name() == "sqlite":
        connect_args: dict[str, Any] = {"check_same_thread": False}
        if is_memory(parsed):
            options["poolclass"] = StaticPool
            del options["max_overflow"]
        else:
            connect_args["timeout"] = SQLITE_BUSY_TIMEOUT
        options["connect_args"] = connect_args
    engine = sa.create_engine(parsed, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "connect", _remember_pid)
    event.listen(engine, "checkout", _refuse_inherited)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _remember_pid(dbapi_connection: Any, record: Any) -> None:
    record.info["pid"] = os.getpid()


def _refuse_inherited(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # A connection opened before a fork belongs to the parent process: never share it.
    if record.info.get("pid") != os.getpid():
        record.dbapi_connection = proxy.dbapi_connection = None
        raise sa.exc.DisconnectionError("connection opened in another process; reconnecting")


def _is_unique_violation(driver_error: object) -> bool:
    if getattr(driver_error, "sqlstate", None) == _UNIQUE_VIOLATION:
        return True
    return getattr(driver_error, "sqlite_errorname", None) in _UNIQUE_SQLITE_ERRORS


class SqlStore:
    """The engine shared by the DAOs of one factory, with the connection helpers that
    translate driver errors (StorageError; DuplicateEntityError for a broken uniqueness
    rule). An in-memory SQLite database has one connection, used under a lock."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name
        memory = self.dialect == "sqlite" and is_memory(engine.url)
        self._guard: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if memory else contextlib.nullcontext()
        )
        # Each thread keeps one connection: taking a connection out of the pool and back for
        # every statement costs as much as running the statement. The pool is unbounded (see
        # create_engine), so that any number of threads keep one each; a thread's connection
        # goes back to the pool when the thread ends.
        self._driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"
        # psycopg pipelines statements when its libpq can (version 14 or later).
        pipeline = getattr(engine.dialect.loaded_dbapi, "Pipeline", None)
        self._pipelined = pipeline is not None and bool(pipeline.is_supported())
        self._local = threading.local()
        self._kept: weakref.WeakSet[_Kept] = weakref.WeakSet()
        self._kept_lock = threading.Lock()

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Raise the driver's errors of ``what`` as StorageError (or DuplicateEntityError)."""
        try:
            yield
        except UserCreditsError:
            raise
        except sa.exc.IntegrityError as e:
            detail = getattr(e, "orig", None) or e
            if _is_unique_violation(detail):
                raise DuplicateEntityError(f"{what}: {detail}") from e
            raise StorageError(f"{what}: {detail}") from e
        except sa.exc.SQLAlchemyError as e:
            detail = getattr(e, "orig", None) or e
            raise StorageError(f"{what} failed: {detail}") from e
        except self._driver_error as e:
            if _is_unique_violation(e):
                raise DuplicateEntityError(f"{what}: {e}") from e
            raise StorageError(f"{what} failed: {e}") from e
        except OverflowError as e:
            raise StorageError(f"{what}: an integer does not fit in 64 bits ({e})") from e

    @contextlib.contextmanager
    def connect(self, what: str) -> Iterator[Connection]:
        """The thread's connection, for statements that each commit on their own; dropped
        (and a new one opened next time) when a statement fails."""
        with self._guard, self.errors(what):
            connection = self._thread_connection()
            try:
                yield connection
            except BaseException:
                self._drop(connection)
                raise

    def _thread_connection(self) -> Connection:
        kept: _Kept | None = getattr(self._local, "kept", None)
        if kept is None or kept.pid != os.getpid() or kept.connection.closed:
            # A connection kept by the parent of a forked process is never used here.
            kept = _Kept(self.engine.connect())
            self._local.kept = kept
            with self._kept_lock:
                self._kept.add(kept)
        return kept.connection

    def _drop(self, connection: Connection) -> None:
        kept: _Kept | None = getattr(self._local, "kept", None)
        if kept is not None and kept.connection is connection:
            self._local.kept = None
            kept.close()

    @contextlib.contextmanager
    def transaction(self, what: str) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block ends and rolled back when
        it raises; on SQLite it holds the write lock from the start."""
        with self.connect(what) as connection:
            connection.exec_driver_sql(self._begin)
            try:
                yield connection
            except BaseException:
                with contextlib.suppress(Exception):
                    connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")

    @contextlib.contextmanager
    def driver_connection(self, what: str) -> Iterator[Any]:
        """The driver's connection (``sqlite3``, ``psycopg``) of the thread, in autocommit
        mode. Statements sent through it (:meth:`execute`) skip SQLAlchemy's compilation and
        result processing: it serves the hottest paths only (:mod:`usercredits_sql.append`).
        The connection is dropped after any failure but a refusal (a UserCreditsError that
        is not a StorageError)."""
        with self._guard, self.errors(what):
            connection = self._thread_connection()
            try:
                yield connection.connection.dbapi_connection
            except BaseException as e:
                if not isinstance(e, UserCreditsError) or isinstance(e, StorageError):
                    self._drop(connection)
                raise

    @contextlib.contextmanager
    def driver_transaction(self, what: str) -> Iterator[Any]:
        """The driver's connection (:meth:`driver_connection`) in a transaction committed
        when the block ends and rolled back when it raises; on SQLite it holds the write lock
        from the start. On PostgreSQL the statements are pipelined: each is sent at once and
        its result awaited only when read, so ``BEGIN`` travels with the first statement and
        ``COMMIT`` with the last ones (results not read before the block ends are read
        after it)."""
        with (
            self.driver_connection(what) as driver,
            driver.pipeline() if self._pipelined else contextlib.nullcontext(),
        ):
            self.execute(driver, self._begin)
            try:
                yield driver
            except BaseException:
                self.execute(driver, "ROLLBACK")
                raise
            self.execute(driver, "COMMIT")

    @staticmethod
    def execute(driver: Any, statement: str, parameters: Sequence[Any] = ()) -> Any:
        """Send one statement on a driver's connection (of :meth:`driver_transaction`); the
        cursor holding its result."""
        return driver.execute(statement, parameters)

    def create_schema(self, metadata: sa.MetaData) -> None:
        """Create the tables and indexes that do not exist yet; concurrent calls (from
        several processes) are serialised."""
        with self.transaction("creating the schema") as connection:
            if self.dialect == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            metadata.create_all(connection, checkfirst=True)

    def ping(self) -> None:
        """Check that the database answers (StorageError when it does not)."""
        with self.connect("connecting to the database") as connection:
            connection.execute(sa.select(1))

    def dispose(self) -> None:
        """Close the connections the threads keep (of this process) and every pooled one."""
        with self._kept_lock:
            kept, self._kept = list(self._kept), weakref.WeakSet()
        for holder in kept:
            holder.close()
        self._local = threading.local()
        self.engine.dispose()


class _Kept:
    """A thread's connection: closed (back to the pool) when the thread ends and its
    thread-local storage goes, unless it belongs to the parent of a forked process."""

    __slots__ = ("__weakref__", "connection", "pid")

    def __init__(self, connection: Connection):
        self.connection = connection
        self.pid = os.getpid()

    def close(self) -> None:
        if self.pid == os.getpid():
            with contextlib.suppress(Exception):
                self.connection.close()

    def __del__(self) -> None:
        self.close()
