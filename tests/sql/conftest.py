"""Fixtures of the SQL backend's tests: SQLite files, and a real PostgreSQL server.

The session starts a throwaway PostgreSQL cluster of its own (``initdb`` into a temporary
directory, as the ``postgres`` OS user when the tests run as root; trust authentication on
127.0.0.1 only, a free port, no fsync) and stops it at the end, unless
``USERCREDITS_TEST_POSTGRES_URL`` names an existing server (a role allowed to create
databases). When PostgreSQL cannot be had, the PostgreSQL tests fail: they never skip.

Every backend made for a test is an empty database: on PostgreSQL one of a pool of
databases holding the schema, emptied when its factory is closed (a new one is created from
a template when none is free); on SQLite a new file.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

from usercredits_sql import SqlDaoFactory, metadata
from usercredits_sql.store import SqlStore, create_engine

URL_VARIABLE = "USERCREDITS_TEST_POSTGRES_URL"
BIN_VARIABLE = "USERCREDITS_TEST_POSTGRES_BIN"
DEFAULT_BIN = Path("/usr/lib/postgresql/15/bin")
START_SECONDS = 60.0
COMMAND_SECONDS = 120.0
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "300",
}
HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
STOP_OPTIONS = ("-m", "immediate", "-w", "-t", "30", "stop")
INITDB_OPTIONS = "-U postgres -A trust -E UTF8 --locale=C --no-sync"


class ThrowawaySqlDaoFactory(SqlDaoFactory):
    """A factory on a database of the server's pool, given back empty when it is closed."""

    server: PostgresServer | None = None
    database: str = ""

    def close(self) -> None:
        super().close()
        if self.server is not None:
            self.server.release(self.database)
            self.server = None


EMPTY_TABLES = "; ".join(
    f'DELETE FROM "{table.name}"' for table in reversed(metadata.sorted_tables)
)


class PostgresServer:
    """A PostgreSQL server the tests may create databases on, each a copy of a template
    that holds the schema; databases given back are emptied and used again."""

    def __init__(self, url: URL):
        self.url = url
        self._lock = threading.Lock()
        self._free: list[str] = []
        self._made: list[str] = []
        self._cleaners: dict[str, psycopg.Connection[Any]] = {}
        self._admin = psycopg.connect(self._conninfo(url), autocommit=True, connect_timeout=10)
        version = self._admin.info.server_version
        self._strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""
        self.template = f"usercredits_template_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{self.template}"')
        SqlDaoFactory.from_url(self.url_of(self.template)).close()

    @staticmethod
    def _conninfo(url: URL) -> str:
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _execute(self, sql: str) -> None:
        with self._lock:
            self._admin.execute(sql)  # type: ignore[arg-type]

    def url_of(self, database: str) -> URL:
        """The URL of one database of the server, for the backend (psycopg 3)."""
        return self.url.set(drivername="postgresql+psycopg", database=database)

    def create_database(self) -> str:
        """A new database holding the schema and nothing else; its name."""
        name = f"usercredits_test_{uuid.uuid4().hex[:16]}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"{self._strategy}')
        with self._lock:
            self._made.append(name)
        return name

    def create_empty_database(self) -> str:
        """A new database without any table; its name (drop it with :meth:`drop_database`)."""
        name = f"usercredits_empty_{uuid.uuid4().hex[:16]}"
        self._execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def acquire(self) -> str:
        """An empty database holding the schema, for one user at a time; its name."""
        with self._lock:
            if self._free:
                return self._free.pop()
        return self.create_database()

    def release(self, name: str) -> None:
        """Empty a database and make it available again (dropped if it cannot be emptied)."""
        try:
            cleaner = self._cleaners.get(name)
            if cleaner is None:
                cleaner = psycopg.connect(
                    self._conninfo(self.url_of(name)), autocommit=True, connect_timeout=10
                )
                cleaner.execute("SET lock_timeout = '10s'")
                self._cleaners[name] = cleaner
            cleaner.execute(EMPTY_TABLES)  # type: ignore[arg-type]
        except psycopg.Error:
            self._forget(name)
            self.drop_database(name)
            return
        with self._lock:
            self._free.append(name)

    def _forget(self, name: str) -> None:
        cleaner = self._cleaners.pop(name, None)
        if cleaner is not None:
            cleaner.close()

    def factory(self) -> ThrowawaySqlDaoFactory:
        """A factory on an empty database, emptied again when the factory is closed."""
        name = self.acquire()
        factory = ThrowawaySqlDaoFactory(SqlStore(create_engine(self.url_of(name))))
        factory.server = self
        factory.database = name
        return factory

    def close(self) -> None:
        for name in list(self._cleaners):
            self._forget(name)
        for name in [*self._made, self.template]:
            with contextlib.suppress(psycopg.Error):
                self.drop_database(name)
        self._admin.close()


def _bin_dir() -> Path:
    configured = os.environ.get(BIN_VARIABLE)
    if configured:
        return Path(configured)
    if DEFAULT_BIN.is_dir():
        return DEFAULT_BIN
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    return found[-1] if found else DEFAULT_BIN


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """A PostgreSQL cluster in a temporary directory, run by ``postgres`` when we are root."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.base = Path(tempfile.mkdtemp(prefix="usercredits-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.port = 0
        self.started = False
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def _run(self, *command: str, timeout: float = COMMAND_SECONDS) -> str:
        done = subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.base,
            **self._as,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def start(self) -> URL:
        self._run("initdb", "-D", str(self.data), *INITDB_OPTIONS.split())
        (self.data / "pg_hba.conf").write_text(HBA)
        for attempt in range(3):
            self.port = _free_port()
            options = " ".join(f"-c {name}={value}" for name, value in SETTINGS.items())
            options += f" -p {self.port} -c unix_socket_directories={self.base}"
            try:
                self._run(
                    *("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options),
                    *("-w", "-t", str(int(START_SECONDS)), "start"),
                    timeout=START_SECONDS + 30,
                )
            except RuntimeError:
                if attempt == 2:
                    raise
                self.stop()
                continue
            self.started = True
            break
        self._wait_ready()
        return make_url(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), *f"-U postgres -h 127.0.0.1 -p {self.port}".split()],
                capture_output=True,
                timeout=30,
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} not ready in {START_SECONDS}s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(
                    "pg_ctl", "-D", str(self.data), *["-m", "immediate", "-w", "-t", "30", "stop"]
                )

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return "(no server log)"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server of the session (a throwaway cluster unless
    ``USERCREDITS_TEST_POSTGRES_URL`` names one). Fails, never skips, when there is none."""
    configured = os.environ.get(URL_VARIABLE)
    if configured:
        try:
            server = PostgresServer(make_url(configured))
        except Exception as e:
            pytest.fail(f"cannot use the PostgreSQL server of {URL_VARIABLE}: {e}")
        try:
            yield server
        finally:
            server.close()
        return
    cluster = Cluster()
    try:
        try:
            server = PostgresServer(cluster.start())
        except Exception as e:
            pytest.fail(
                f"cannot start a PostgreSQL cluster with {cluster.bin} (set {URL_VARIABLE} to "
                f"use a running server): {e}\n--- server log ---\n{cluster.log_tail()}"
            )
        try:
            yield server
        finally:
            server.close()
    finally:
        cluster.stop()
        cluster.remove()


def sqlite_factory(directory: Path) -> SqlDaoFactory:
    """A factory on a new SQLite file in ``directory``."""
    return SqlDaoFactory.from_url(f"sqlite:///{directory / uuid.uuid4().hex}.db")


class SqliteBackend:
    """Contract classes on SQLite: each backend a new file of the test's temporary dir."""

    @pytest.fixture(autouse=True)
    def _sqlite_directory(self, tmp_path: Path) -> None:
        self._directory = tmp_path

    def make_dao_factory(self) -> SqlDaoFactory:
        return sqlite_factory(self._directory)


class PostgresBackend:
    """Contract classes on PostgreSQL: each backend a new database of the session's server."""

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_server: PostgresServer) -> None:
        self._server = postgres_server

    def make_dao_factory(self) -> SqlDaoFactory:
        return self._server.factory()
