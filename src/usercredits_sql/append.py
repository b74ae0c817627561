"""The locked append: an account's next ledger line in one transaction holding the account.

Every consumption, grant, hold, expiry and refund appends a line to an account
(:mod:`usercredits.accounts`). On SQL the append is one transaction that first locks the
account (``SELECT … FOR UPDATE`` of its row on PostgreSQL; ``BEGIN IMMEDIATE`` takes the
database's write lock on SQLite) and reads, in the same statement, the number of its latest
line. The decision is therefore taken on the exact state the line follows, and no race is
ever lost.

The ledger's unique indexes still number and key the line: ``INSERT … ON CONFLICT DO
NOTHING`` stores nothing when a line of the user holds the draft's key (that line is the
answer) or when the number is taken, which only a writer without the lock can cause (the
compare-and-set path of :mod:`usercredits.accounts`): the newer lines are folded in and the
draft made again, still under the lock.

The stored snapshot is brought up to the ledger every
:data:`~usercredits.accounts.SNAPSHOT_LAG` lines rather than at every line, and each process
keeps the snapshots it last folded (:class:`SnapshotCache`). A snapshot is a fold of lines
that never change: a kept one is never wrong, only possibly old, and the latest line number
read under the lock says which lines to fold in.

These statements are the hottest of the backend: they go to the driver directly
(:meth:`usercredits_sql.store.SqlStore.driver_transaction`), written once per dialect. The
rare read of the line holding a key goes through the ledger DAO, on the same connection,
inside the same transaction.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from usercredits.accounts import SNAPSHOT_LAG
from usercredits.dao import Appended, Draft, TokenTimetableDao
from usercredits.errors import StorageError
from usercredits.grants import Snapshot
from usercredits.models import TokenTimetable, UserId
from usercredits_sql import schema
from usercredits_sql.codec import dumps, encode_user, int64, line_codec
from usercredits_sql.store import SqlStore

ATTEMPTS = 100
"""How many drafts one locked append makes at most, each after finding its number taken
(only writers without the lock can take it)."""

CACHED_ACCOUNTS = 10_000
"""How many accounts' snapshots a process keeps (the oldest entries are dropped first)."""

AccountKey = tuple[str, str, str]
"""An account as the statements match it: the user's type tag and text, and the group."""


class SnapshotCache:
    """The snapshots a process last folded, by account; bounded, shared by threads."""

    def __init__(self, size: int = CACHED_ACCOUNTS):
        self._size = size
        self._snapshots: dict[AccountKey, Snapshot] = {}
        self._lock = threading.Lock()

    def get(self, key: AccountKey) -> Snapshot | None:
        return self._snapshots.get(key)

    def put(self, key: AccountKey, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshots.pop(key, None)
            self._snapshots[key] = snapshot
            while len(self._snapshots) > self._size:
                del self._snapshots[next(iter(self._snapshots))]


class _Row:
    """A row of the driver, named as :meth:`usercredits_sql.codec.EntityCodec.decode` reads."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: Mapping[str, Any]):
        self._mapping = mapping


class _Refused(NamedTuple):
    """A line the ledger refused (its number or a key taken), and the snapshot it followed."""

    line: TokenTimetable
    snapshot: Snapshot


class LockedAppend:
    """Appends to the accounts of one store under the account's lock."""

    def __init__(self, store: SqlStore, ledger: TokenTimetableDao):
        self._store = store
        self._ledger = ledger
        self._cache = SnapshotCache()
        self._codec = line_codec()
        dialect = store.engine.dialect
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        accounts, lines = schema.accounts.name, schema.ledger.name
        names = ("user_type", "user_id", "offer_group")
        account = " AND ".join(f"{name} = {mark}" for name in names)
        same = " AND ".join(f"l.{name} = a.{name}" for name in names)
        self._update = (
            f"UPDATE {accounts} SET seq = {mark}, snapshot_json = {mark} "
            f"WHERE {account} AND seq < {mark}"
        )
        self._encoders: list[tuple[str, Callable[[Any], Any]]] = [
            (
                c.name,
                _then(
                    self._codec.fields[c.name].encode,
                    c.type.dialect_impl(dialect).bind_processor(dialect),
                ),
            )
            for c in schema.ledger.c
            if c.name not in ("pk", "user_type", "user_id")
        ]
        columns = ["user_type", "user_id", *(name for name, _ in self._encoders)]
        # PostgreSQL serves writers from several processes at once: the row lock is held
        # from the first statement to COMMIT, and a statement that waited for it reads the
        # row as its holder left it. Every append there stores the snapshot, so the locked
        # row tells the latest line; the line's pk is drawn in the same statement, so that
        # the snapshot naming the line's grant or hold is stored by the statement inserting
        # it. SQLite has one writer at a time: it reads the latest line number besides the
        # snapshot, stores the snapshot every SNAPSHOT_LAG lines, and tells the pk of the
        # row it inserted (lastrowid).
        self._numbered = store.dialect == "postgresql"
        self._lag = 1 if self._numbered else SNAPSHOT_LAG
        where = " AND ".join(f"a.{name} = {mark}" for name in names)
        latest = f"(SELECT max(l.seq) FROM {lines} l WHERE {same})"
        if self._numbered:
            pk = f"nextval(pg_get_serial_sequence('{lines}', 'pk'))"
            self._select = (
                f"SELECT a.seq, a.snapshot_json, a.seq, {pk} FROM {accounts} a "
                f"WHERE {where} FOR UPDATE"
            )
        else:
            self._select = (
                f"SELECT a.seq, a.snapshot_json, {latest} FROM {accounts} a WHERE {where}"
            )
        if self._numbered:
            columns.insert(0, "pk")
        values = ", ".join(mark for _ in columns)
        self._insert = (
            f"INSERT INTO {lines} ({', '.join(columns)}) VALUES ({values}) ON CONFLICT DO NOTHING"
        )
        self._insert_numbered = f"{self._insert} RETURNING pk"
        self._insert_saving = (
            f"WITH line AS ({self._insert_numbered}), "
            f"saved AS ({self._update} AND EXISTS (SELECT 1 FROM line)) SELECT pk FROM line"
        )
        self._decoders = [
            (c.name, c.type.dialect_impl(dialect).result_processor(dialect, None))
            for c in schema.ledger.c
        ]
        selected = ", ".join(name for name, _ in self._decoders)
        self._newer = (
            f"SELECT {selected} FROM {lines} WHERE {account} AND seq > {mark} ORDER BY seq"
        )

    def __call__(self, user_id: UserId, offer_group: str, draft: Draft) -> Appended | None:
        """See :meth:`usercredits.dao.UserCreditsDao.append_locked`."""
        key: AccountKey = (*encode_user(user_id), offer_group)
        behind = False
        for _ in range(ATTEMPTS):
            outcome = self._attempt(key, draft, behind)
            if not isinstance(outcome, _Refused):
                return outcome
            behind = True
            holder = self._holder(outcome.line)
            if holder is not None:
                return Appended(holder, False, outcome.snapshot)
        raise StorageError(
            f"appending to account {offer_group!r} of user {user_id!r}: "
            f"{ATTEMPTS} drafts found their number taken"
        )

    def _attempt(self, key: AccountKey, draft: Draft, behind: bool) -> Appended | _Refused | None:
        """One transaction: the append, or the line the ledger refused, or None when the
        account does not exist. ``behind``: a line was refused its number, so lines may
        exist beyond the one the account's row tells."""
        execute = self._store.execute
        with self._store.driver_transaction("appending to an account") as driver:
            row = execute(driver, self._select, key).fetchone()
            if row is None:
                return None
            stored, latest = row[0], row[2] or 0
            snapshot = self._cache.get(key)
            if snapshot is None or not stored <= snapshot.seq <= latest:
                snapshot = Snapshot.from_data(json.loads(row[1]))
            if behind or snapshot.seq < latest:
                snapshot = snapshot.apply_all(self._lines_after(driver, key, snapshot.seq))
            line = draft(snapshot)
            if line is None:
                self._cache.put(key, snapshot)
                return Appended(None, False, snapshot)
            if line.seq != snapshot.seq + 1:
                raise StorageError(f"line {line.seq} drafted after line {snapshot.seq}")
            parameters: list[Any] = [key[0], key[1]]
            for name, encode in self._encoders:
                value = getattr(line, name)
                parameters.append(None if value is None else encode(value))
            save = line.seq - stored >= self._lag
            if self._numbered:
                line.id = str(row[3])
                after = snapshot.apply(line)
                if save:
                    seq = int64(after.seq, "seq")
                    parameters += [seq, dumps(after.to_data()), *key, seq]
                statement = self._insert_saving if save else self._insert_numbered
                # Its answer is read once the block has sent COMMIT along with it.
                inserted = execute(driver, statement, [row[3], *parameters])
            else:
                inserted = execute(driver, self._insert, parameters)
                if inserted.rowcount != 1:
                    return _Refused(line, snapshot)
                line.id = str(inserted.lastrowid)
                after = snapshot.apply(line)
                if save:
                    seq = int64(after.seq, "seq")
                    execute(driver, self._update, (seq, dumps(after.to_data()), *key, seq))
        if self._numbered and inserted.fetchone() is None:
            line.id = None
            return _Refused(line, snapshot)
        # Kept once committed: a snapshot ahead of the ledger would number lines wrongly.
        self._cache.put(key, after)
        return Appended(line, True, after)

    def _lines_after(self, cursor: Any, key: AccountKey, seq: int) -> list[TokenTimetable]:
        rows = self._store.execute(cursor, self._newer, (*key, seq)).fetchall()
        decoders = self._decoders
        return [
            self._codec.decode(
                _Row(
                    {
                        name: value if process is None or value is None else process(value)
                        for (name, process), value in zip(decoders, row, strict=True)
                    }
                )
            )
            for row in rows
        ]

    def _holder(self, line: TokenTimetable) -> TokenTimetable | None:
        if line.idempotency_key is None and line.operation_key is None:
            return None
        return self._ledger.find_by_key(
            line.user_id, idempotency_key=line.idempotency_key, operation_key=line.operation_key
        )


def _then(
    encode: Callable[[Any], Any], process: Callable[[Any], Any] | None
) -> Callable[[Any], Any]:
    """``encode`` followed by the driver's conversion ``process``, if any."""
    if process is None:
        return encode

    def both(value: Any) -> Any:
        return process(encode(value))

    return both
