"""Appending to an account: every balance change of the SQL backend.

Every consumption, grant, hold, expiry and refund appends the account's next ledger line
(:mod:`usercredits.accounts`). On SQL the append is one transaction that holds the account:
``SELECT … FOR UPDATE`` of its row on PostgreSQL, ``BEGIN IMMEDIATE`` (the database's write
lock) on SQLite. The decision is taken on the exact state the line follows, and no race is
ever lost (:meth:`Appending.locked`): the snapshot, as this process last folded it
(:class:`SnapshotCache`) or as stored, with the newer lines folded in, is handed to the
core's decision. The stored snapshot is brought up to the ledger every
:data:`~usercredits.accounts.SNAPSHOT_LAG` lines.

PostgreSQL serves several processes at once, and a lock held across a round trip to the
application makes them queue. There the account's row also keeps, at every append, the
number of the latest line (``last_seq``), the balance after it and how many holds it
leaves, so that the database checks a consumption by itself (:meth:`Appending.consumption`):
on an account without holds, a consumption that keeps the floor takes the next number, its
line is inserted and the row moved on, in one statement that holds the row only while it
runs. The snapshot then follows by compare-and-set, every ``SNAPSHOT_LAG / 2`` lines, off
the lock. SQLite has one writer at a time in process, without round trips: it appends every
line by the general path, reads the latest line number from the ledger, and writes the
account's row only with the snapshot.

The ledger's unique indexes still number and key every line: ``INSERT … ON CONFLICT DO
NOTHING`` stores nothing when a line of the user holds the line's key (that line is the
answer) or when its number is taken, which only a writer without the lock can cause (the
compare-and-set path of :mod:`usercredits.accounts`): the newer lines are then folded in and
the line decided again, still under the lock.

These statements are the hottest of the backend: they go to the driver directly
(:meth:`usercredits_sql.store.SqlStore.driver_transaction`), written once per dialect. The
rare read of the line holding a key goes through the ledger DAO.
"""

from __future__ import annotations

import json
import logging
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

logger = logging.getLogger("usercredits")

ATTEMPTS = 100
"""How many drafts one append makes at most, each after finding its number taken (only
writers without the lock can take it)."""

CACHED_ACCOUNTS = 10_000
"""How many accounts' snapshots a process keeps (the oldest entries are dropped first)."""

AccountKey = tuple[str, str, str]
"""An account as the statements match it: the user's type tag and text, and the group."""

_ACCOUNT = ("user_type", "user_id", "offer_group")


class SnapshotCache:
    """The snapshots a process last folded, by account; bounded, shared by threads. A
    snapshot is a fold of lines that never change: a kept one is never wrong, only
    possibly old, and the latest line number read under the lock says which lines follow."""

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


class Appending:
    """The appends to the accounts of one store."""

    def __init__(self, store: SqlStore, ledger: TokenTimetableDao):
        self._store = store
        self._ledger = ledger
        self._cache = SnapshotCache()
        self._codec = line_codec()
        dialect = store.engine.dialect
        # PostgreSQL draws the line's pk with the lock, so that a snapshot naming the line's
        # grant or hold is stored by the statement inserting the line; sqlite3 tells the pk
        # of the row it inserted (lastrowid).
        self._numbered = store.dialect == "postgresql"
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        accounts, lines = schema.accounts.name, schema.ledger.name
        account = " AND ".join(f"{name} = {mark}" for name in _ACCOUNT)
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
        self._seq_at = columns.index("seq")
        self._decoders = [
            (c.name, c.type.dialect_impl(dialect).result_processor(dialect, None))
            for c in schema.ledger.c
        ]
        selected = ", ".join(name for name, _ in self._decoders)
        self._newer = (
            f"SELECT {selected} FROM {lines} WHERE {account} AND seq > {mark} ORDER BY seq"
        )
        kept = f"last_seq = {mark}, balance = {mark}, holds = {mark}"
        saved = f"{kept}, seq = {mark}, snapshot_json = {mark}"

        def insert(names: list[str]) -> str:
            return (
                f"INSERT INTO {lines} ({', '.join(names)}) "
                f"VALUES ({', '.join(mark for _ in names)}) ON CONFLICT DO NOTHING"
            )

        if self._numbered:
            self._catch_up_select = (
                f"SELECT seq, snapshot_json, last_seq FROM {accounts} WHERE {account}"
            )
            self._catch_up_save = (
                f"UPDATE {accounts} SET seq = {mark}, snapshot_json = {mark} "
                f"WHERE {account} AND seq < {mark}"
            )
            self._select = (
                f"SELECT seq, snapshot_json, last_seq, "
                f"nextval(pg_get_serial_sequence('{lines}', 'pk')) "
                f"FROM {accounts} WHERE {account} FOR UPDATE"
            )
            self._insert_kept, self._insert_saved = (
                f"WITH line AS ({insert(['pk', *columns])} RETURNING pk), "
                f"kept AS (UPDATE {accounts} SET {update} WHERE {account} "
                f"AND EXISTS (SELECT 1 FROM line)) SELECT pk FROM line"
                for update in (kept, saved)
            )
            # The checks the database makes; past a long lag (a snapshot not caught up, after
            # a crash), the general path folds the lines and stores the snapshot.
            checks = f"holds = 0 AND last_seq - seq < {4 * SNAPSHOT_LAG}"
            values = [mark] * len(columns)
            values[self._seq_at] = "last_seq + 1"
            self._consume, self._consume_above = (
                f"WITH account AS (SELECT last_seq, seq FROM {accounts} "
                f"WHERE {account} AND {checks}{extra} FOR UPDATE), "
                f"line AS (INSERT INTO {lines} ({', '.join(columns)}) "
                f"SELECT {', '.join(values)} FROM account ON CONFLICT DO NOTHING "
                f"RETURNING pk, seq), "
                f"moved AS (UPDATE {accounts} SET last_seq = line.seq, "
                f"balance = balance + {mark} FROM line WHERE {account}) "
                f"SELECT line.pk, line.seq, account.seq FROM line, account"
                for extra in ("", f" AND balance + {mark} >= {mark}")
            )
        else:
            same = " AND ".join(f"l.{name} = a.{name}" for name in _ACCOUNT)
            where = " AND ".join(f"a.{name} = {mark}" for name in _ACCOUNT)
            self._select = (
                f"SELECT a.seq, a.snapshot_json, (SELECT max(l.seq) FROM {lines} l "
                f"WHERE {same}) FROM {accounts} a WHERE {where}"
            )
            self._insert = insert(columns)
            self._update_saved = f"UPDATE {accounts} SET {saved} WHERE {account}"

    # -- a consumption the database checks ------------------------------------------------

    def consumption(
        self, user_id: UserId, offer_group: str, line: TokenTimetable, floor: int | None
    ) -> TokenTimetable | None:
        """See :meth:`usercredits.dao.UserCreditsDao.append_consumption`; a line of the user
        holding the consumption's key is answered instead of None. PostgreSQL only: None on
        SQLite, whose general path is the shorter one."""
        if not self._numbered:
            return None
        key: AccountKey = (*encode_user(user_id), offer_group)
        parameters = self._parameters(key, line)
        del parameters[self._seq_at]
        tokens = int64(line.tokens, "tokens")
        above = () if floor is None else (tokens, int64(floor, "floor"))
        statement = self._consume if floor is None else self._consume_above
        with self._store.driver_connection("recording a consumption") as driver:
            found = self._store.execute(
                driver, statement, [*key, *above, *parameters, tokens, *key]
            ).fetchone()
        if found is None:
            return self._holder(line)
        pk, seq, stored = found
        line.seq, line.id = seq, str(pk)
        lag = seq - stored
        if lag and lag % (SNAPSHOT_LAG // 2) == 0:
            self._catch_up(key)
        return line

    def _catch_up(self, key: AccountKey) -> None:
        """Store the account's snapshot with the lines beyond it folded in: a cache written
        by compare-and-set, without the lock, so that consumptions the database checked
        keep finding the snapshot close enough. Failing to store it loses nothing."""
        execute = self._store.execute
        try:
            with self._store.driver_connection("storing a snapshot") as driver:
                row = execute(driver, self._catch_up_select, key).fetchone()
                stored = row[0]
                snapshot = self._current(driver, key, row, behind=True)
                if snapshot.seq > stored:
                    seq = int64(snapshot.seq, "seq")
                    execute(
                        driver, self._catch_up_save, (seq, dumps(snapshot.to_data()), *key, seq)
                    )
        except StorageError:
            logger.warning("could not store the snapshot of account %r", key, exc_info=True)
            return
        self._cache.put(key, snapshot)

    # -- any line, decided on the snapshot ---------------------------------------------------

    def locked(self, user_id: UserId, offer_group: str, draft: Draft) -> Appended | None:
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
            stored = row[0]
            snapshot = self._current(driver, key, row, behind=behind)
            line = draft(snapshot)
            if line is None:
                self._cache.put(key, snapshot)
                return Appended(None, False, snapshot)
            if line.seq != snapshot.seq + 1:
                raise StorageError(f"line {line.seq} drafted after line {snapshot.seq}")
            parameters = self._parameters(key, line)
            save = line.seq - stored >= SNAPSHOT_LAG
            if self._numbered:
                line.id = str(row[3])
                after = snapshot.apply(line)
                statement = self._insert_saved if save else self._insert_kept
                # Its answer is read once the block has sent COMMIT along with it.
                inserted = execute(
                    driver, statement, [row[3], *parameters, *self._kept(after, save), *key]
                )
            else:
                inserted = execute(driver, self._insert, parameters)
                if inserted.rowcount != 1:
                    return _Refused(line, snapshot)
                line.id = str(inserted.lastrowid)
                after = snapshot.apply(line)
                if save:
                    execute(driver, self._update_saved, (*self._kept(after, save), *key))
        if self._numbered and inserted.fetchone() is None:
            line.id = None
            return _Refused(line, snapshot)
        # Kept once committed: a snapshot ahead of the ledger would number lines wrongly.
        self._cache.put(key, after)
        return Appended(line, True, after)

    def _current(self, driver: Any, key: AccountKey, row: Any, *, behind: bool) -> Snapshot:
        """The account's snapshot with every line folded in, from its row (the stored ``seq``,
        ``snapshot_json`` and the latest line number): the one this process keeps when the
        row's numbers allow it, else the stored one, then the lines beyond it. ``behind``:
        lines may exist beyond the latest number the row tells, read them anyway."""
        stored, latest = row[0], row[2] or 0
        snapshot = self._cache.get(key)
        if snapshot is None or not stored <= snapshot.seq <= latest:
            snapshot = Snapshot.from_data(json.loads(row[1]))
        if behind or snapshot.seq < latest:
            snapshot = snapshot.apply_all(self._lines_after(driver, key, snapshot.seq))
        return snapshot

    @staticmethod
    def _kept(after: Snapshot, save: bool) -> tuple[Any, ...]:
        """What the account's row keeps after a line: its number, the balance and how many
        holds are left; with ``save``, the snapshot too."""
        seq = int64(after.seq, "seq")
        kept = (seq, int64(after.balance, "balance"), len(after.holds))
        return (*kept, seq, dumps(after.to_data())) if save else kept

    def _parameters(self, key: AccountKey, line: TokenTimetable) -> list[Any]:
        """The values of the line's columns, in the order of the statements."""
        parameters: list[Any] = [key[0], key[1]]
        for name, encode in self._encoders:
            value = getattr(line, name)
            parameters.append(None if value is None else encode(value))
        return parameters

    def _lines_after(self, driver: Any, key: AccountKey, seq: int) -> list[TokenTimetable]:
        rows = self._store.execute(driver, self._newer, (*key, seq)).fetchall()
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
