"""Counting what a service call asks of its database: round trips and what they return.

On MongoDB: ``reads`` and ``writes`` (commands sent) and ``docs`` (documents returned to the
client), by pymongo command monitoring on a real server and by a wrapper of mongomock's
collection methods otherwise. On SQL: ``reads`` (``SELECT``), ``writes`` (``INSERT``,
``UPDATE``, ``DELETE``), ``other`` statements (``BEGIN``, ``COMMIT``...), each one round trip,
counted with SQLAlchemy's ``before_cursor_execute`` event, and ``rows`` returned to the
library. Counts do not depend on the machine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Counts = dict[str, int]


class Counter:
    """Counts what one call sends to the database; inactive outside :meth:`measure`."""

    kinds: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.counts: Counts = dict.fromkeys(self.kinds, 0)
        self.active = False

    def add(self, kind: str, n: int = 1) -> None:
        if self.active:
            self.counts[kind] += n

    @contextmanager
    def installed(self) -> Iterator[None]:
        """The counting hooks, in place for the block."""
        yield

    def measure(self, call: Callable[[], Any]) -> Counts:
        """What ``call()`` sent to the database."""
        with self.installed():
            self.counts = dict.fromkeys(self.kinds, 0)
            self.active = True
            try:
                call()
            finally:
                self.active = False
        return dict(self.counts)


_MONGO_OPERATIONS = {
    **dict.fromkeys(
        ("find", "find_one", "count_documents", "aggregate", "distinct"),
        "reads",
    ),
    **dict.fromkeys(
        (
            "insert_one",
            "insert_many",
            "update_one",
            "update_many",
            "replace_one",
            "delete_one",
            "delete_many",
            "find_one_and_update",
            "find_one_and_replace",
            "find_one_and_delete",
            "bulk_write",
        ),
        "writes",
    ),
}
_RETURNS_ONE = {"find_one", "find_one_and_update", "find_one_and_replace", "find_one_and_delete"}


class MongomockCounter(Counter):
    """Wraps mongomock's collection methods: mongomock implements some calls with others
    (``find_one`` with ``find``), so only the outermost call is one round trip. Documents
    are counted as the client takes them from a cursor, or one per ``find_one*`` answer."""

    kinds = ("reads", "writes", "docs")

    def __init__(self) -> None:
        super().__init__()
        self._depth = threading.local()

    @contextmanager
    def installed(self) -> Iterator[None]:
        import mongomock.collection

        collection = mongomock.collection.Collection
        cursor = mongomock.collection.Cursor
        originals = {n: getattr(collection, n) for n in _MONGO_OPERATIONS if hasattr(collection, n)}
        next_document = cursor.__next__

        def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                depth = getattr(self._depth, "value", 0)
                if depth == 0:
                    self.add(_MONGO_OPERATIONS[name])
                self._depth.value = depth + 1
                try:
                    result = method(*args, **kwargs)
                finally:
                    self._depth.value = depth
                if depth == 0:
                    if name == "find":
                        result._bench_counted = True
                    elif name in _RETURNS_ONE and result is not None:
                        self.add("docs")
                return result

            return wrapper

        def counting_next(this: Any) -> Any:
            document = next_document(this)
            if getattr(this, "_bench_counted", False):
                self.add("docs")
            return document

        for name, method in originals.items():
            setattr(collection, name, counting(name, method))
        cursor.__next__ = counting_next
        cursor.next = counting_next
        try:
            yield
        finally:
            for name, method in originals.items():
                setattr(collection, name, method)
            cursor.__next__ = next_document
            cursor.next = next_document


_SERVER_COMMANDS = {
    **dict.fromkeys(("find", "aggregate", "count", "distinct", "getMore"), "reads"),
    **dict.fromkeys(("insert", "update", "delete", "findAndModify"), "writes"),
}


class PymongoCounter(Counter):
    """Counts the commands a real server receives (pymongo command monitoring) and the
    documents of their answers. :meth:`register` must run before the clients are made."""

    kinds = ("reads", "writes", "docs")
    _registered = False

    def register(self) -> None:
        if self._registered:
            return
        from pymongo import monitoring

        counter = self

        class Listener(monitoring.CommandListener):
            def started(self, event: monitoring.CommandStartedEvent) -> None:
                kind = _SERVER_COMMANDS.get(event.command_name)
                if kind:
                    counter.add(kind)

            def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
                reply = event.reply
                if event.command_name == "findAndModify":
                    counter.add("docs", 1 if reply.get("value") is not None else 0)
                    return
                cursor = reply.get("cursor")
                if isinstance(cursor, dict):
                    batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
                    counter.add("docs", len(batch))

            def failed(self, event: monitoring.CommandFailedEvent) -> None:
                pass

        monitoring.register(Listener())
        self._registered = True


def _statement_kind(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
    if word == "WITH" and any(f"{verb} " in statement for verb in ("INSERT", "UPDATE", "DELETE")):
        return "writes"
    if word in ("SELECT", "WITH", "VALUES"):
        return "reads"
    if word in ("INSERT", "UPDATE", "DELETE"):
        return "writes"
    return "other"


class SqlCounter(Counter):
    """Counts the statements SQLAlchemy sends (``before_cursor_execute`` on every engine) and
    the rows the library takes from their results."""

    kinds = ("reads", "writes", "other", "rows")

    @contextmanager
    def installed(self) -> Iterator[None]:
        import sqlalchemy as sa
        from sqlalchemy.engine import cursor as results

        def before(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            self.add(_statement_kind(statement))

        patched: list[tuple[type, str, Any]] = []
        strategies = [
            getattr(results, name)
            for name in (
                "CursorFetchStrategy",
                "BufferedRowCursorFetchStrategy",
                "FullyBufferedCursorFetchStrategy",
            )
            if hasattr(results, name)
        ]
        for strategy in strategies:
            for name in ("fetchone", "fetchmany", "fetchall"):
                if name in vars(strategy):
                    original = vars(strategy)[name]
                    patched.append((strategy, name, original))
                    setattr(strategy, name, self._counting_fetch(name, original))
        # The hottest statements go to the driver directly, through SqlStore.execute.
        from usercredits_sql.store import SqlStore

        send = SqlStore.execute

        def execute(cursor: Any, statement: str, parameters: Any = ()) -> Any:
            kind = _statement_kind(statement)
            self.add(kind)
            result = send(cursor, statement, parameters)
            return _CountingRows(self, result) if kind == "reads" else result

        sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
        SqlStore.execute = staticmethod(execute)  # type: ignore[method-assign]
        try:
            yield
        finally:
            SqlStore.execute = staticmethod(send)  # type: ignore[method-assign]
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", before)
            for strategy, name, original in patched:
                setattr(strategy, name, original)

    def _counting_fetch(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def fetch(*args: Any, **kwargs: Any) -> Any:
            found = original(*args, **kwargs)
            if name == "fetchone":
                self.add("rows", 0 if found is None else 1)
            elif found:
                self.add("rows", len(found))
            return found

        return fetch


class _CountingRows:
    """A driver's cursor whose fetched rows are counted."""

    def __init__(self, counter: Counter, cursor: Any):
        self._counter = counter
        self._cursor = cursor

    def fetchone(self) -> Any:
        row = self._cursor.fetchone()
        self._counter.add("rows", 0 if row is None else 1)
        return row

    def fetchall(self) -> Any:
        rows = self._cursor.fetchall()
        self._counter.add("rows", len(rows))
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def total(counts: Counts) -> int:
    """Round trips: every command or statement sent."""
    return sum(v for k, v in counts.items() if k in ("reads", "writes", "other"))
