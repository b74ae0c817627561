"""The SQL DAOs: each method is one statement, or one short transaction where a read and a
write must be atomic together.

The guarantees of :mod:`usercredits.dao` rest on the constraints of
:mod:`usercredits_sql.schema`: a ledger line is inserted only if its account ``seq`` and its
keys are free (the commit point of every change of an account); an order changes status by
an ``UPDATE`` conditioned on its current status; an account's snapshot and window change by
``UPDATE``\\s conditioned on their ``seq`` and ``window_version``; users and accounts are
created by inserts that do nothing when the row exists.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from usercredits.dao import (
    Account,
    Appended,
    CustomerDao,
    Draft,
    Filters,
    OfferDao,
    OrderDao,
    TokenTimetableDao,
    UserCreditsDao,
    WebhookEventDao,
)
from usercredits.errors import DuplicateEntityError, EntityNotFoundError, InvalidInputError
from usercredits.grants import Snapshot
from usercredits.models import (
    LIVE,
    Customer,
    EntityId,
    Offer,
    Order,
    OrderStatus,
    Status,
    TokenTimetable,
    UserId,
    WebhookEventRecord,
)
from usercredits.windows import Window
from usercredits_sql import schema
from usercredits_sql.append import Appending
from usercredits_sql.codec import (
    EntityCodec,
    NoMatch,
    customer_codec,
    decode_user,
    dumps,
    encode_ref,
    encode_user,
    int64,
    line_codec,
    new_id,
    offer_codec,
    order_codec,
    status_data,
    user_matches,
    webhook_event_codec,
)
from usercredits_sql.store import SqlStore

E = TypeVar("E")

LIVE_STATUSES = sorted(status.value for status in LIVE)


def _insert(store: SqlStore, table: sa.Table) -> Any:
    """An INSERT that can be told to do nothing on a conflict, in the store's dialect."""
    module = postgresql if store.dialect == "postgresql" else sqlite
    return module.insert(table)


class _SqlReader(Generic[E]):
    """Reading entities of one table: by id and by filters, in creation order (``pk``)."""

    def __init__(self, store: SqlStore, codec: EntityCodec[E]):
        self._store = store
        self._codec = codec
        self._table = codec.table
        self._kind = codec.model.__name__
        # Built once, its parameters given at execution: SQLAlchemy compiles it once and
        # reuses it, instead of building a statement for every row.
        self._insert_statement = sa.insert(self._table).returning(*self._table.c)

    def _decode_all(self, rows: Sequence[Row[Any]]) -> list[E]:
        return [self._codec.decode(row) for row in rows]

    def find_by_id(self, entity_id: EntityId) -> E | None:
        try:
            condition = self._codec.id_matches(entity_id)
        except NoMatch:
            return None
        with self._store.connect(f"reading {self._kind} {entity_id!r}") as connection:
            row = connection.execute(sa.select(self._table).where(condition)).first()
        return None if row is None else self._codec.decode(row)

    def _select(
        self, filters: Filters | None, limit: int | None = None, *conditions: Any
    ) -> list[E]:
        try:
            where, remaining = self._codec.where(filters)
        except NoMatch:
            return []
        statement = sa.select(self._table).where(*where, *conditions).order_by(self._table.c.pk)
        if limit is not None and not remaining:
            statement = statement.limit(limit)
        with self._store.connect(f"finding {self._kind} entities") as connection:
            rows = connection.execute(statement).all()
        found = [e for e in self._decode_all(rows) if self._codec.matches(e, remaining)]
        return found if limit is None else found[:limit]

    def find(self, filters: Filters | None = None) -> list[E]:
        return self._select(filters)

    def find_one(self, filters: Filters | None = None) -> E | None:
        found = self._select(filters, 1)
        return found[0] if found else None

    def count(self, filters: Filters | None = None) -> int:
        try:
            where, remaining = self._codec.where(filters)
        except NoMatch:
            return 0
        if remaining:
            return len(self._select(filters))
        statement = sa.select(sa.func.count()).select_from(self._table).where(*where)
        with self._store.connect(f"counting {self._kind} entities") as connection:
            return int(connection.execute(statement).scalar_one())

    def _insert_returning(self, connection: Connection, values: Mapping[str, Any]) -> Row[Any]:
        return connection.execute(self._insert_statement, dict(values)).one()


class SqlOfferDao(_SqlReader[Offer], OfferDao):
    """Offers; catalogue keys are unique (a constraint). Tags and unlocking groups are also
    kept one per row, for the storefront's queries."""

    def __init__(self, store: SqlStore):
        super().__init__(store, offer_codec(exact_money=store.dialect != "sqlite"))

    def _write_lists(self, connection: Connection, pk: int, offer: Offer) -> None:
        tags = schema.offer_tags
        unlocks = schema.offer_unlocks
        connection.execute(sa.delete(tags).where(tags.c.offer_pk == pk))
        connection.execute(sa.delete(unlocks).where(unlocks.c.offer_pk == pk))
        if offer.tags:
            connection.execute(
                sa.insert(tags), [{"offer_pk": pk, "tag": tag} for tag in dict.fromkeys(offer.tags)]
            )
        if offer.unlocked_by:
            connection.execute(
                sa.insert(unlocks),
                [{"offer_pk": pk, "offer_group": g} for g in dict.fromkeys(offer.unlocked_by)],
            )

    def _duplicate_key(self, key: str | None) -> DuplicateEntityError:
        return DuplicateEntityError(f"an offer with key {key!r} already exists")

    def create(self, entity: Offer) -> Offer:
        values = self._codec.values(entity)
        try:
            with self._store.transaction(f"creating offer {entity.name!r}") as connection:
                row = self._insert_returning(connection, values)
                created = self._codec.decode(row)
                self._write_lists(connection, row.pk, created)
        except DuplicateEntityError as e:
            if entity.key is not None and self.find_by_key(entity.key) is not None:
                raise self._duplicate_key(entity.key) from e
            raise
        return created

    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> Offer | None:
        self._codec.check_changes(changes)
        key = encode_ref(entity_id)
        if key is None:
            return None
        table = self._table
        try:
            with self._store.transaction(f"updating offer {entity_id!r}") as connection:
                row = connection.execute(
                    sa.select(table).where(table.c.id == key).with_for_update()
                ).first()
                if row is None:
                    return None
                current = self._codec.decode(row)
                # Rebuilding the offer validates the changed fields before anything is stored.
                updated = dataclasses.replace(current, **copy.deepcopy(dict(changes)))
                pk = row.pk
                values = self._codec.values(updated)
                del values["id"]
                row = connection.execute(
                    sa.update(table).where(table.c.pk == pk).values(**values).returning(*table.c)
                ).one()
                if (updated.tags, updated.unlocked_by) != (current.tags, current.unlocked_by):
                    self._write_lists(connection, pk, updated)
        except DuplicateEntityError as e:
            raise self._duplicate_key(changes.get("key")) from e
        return self._codec.decode(row)

    def delete_by_id(self, entity_id: EntityId) -> bool:
        key = encode_ref(entity_id)
        if key is None:
            return False
        table = self._table
        with self._store.transaction(f"deleting offer {entity_id!r}") as connection:
            pk = connection.execute(sa.select(table.c.pk).where(table.c.id == key)).scalar()
            if pk is None:
                return False
            for side in (schema.offer_tags, schema.offer_unlocks):
                connection.execute(sa.delete(side).where(side.c.offer_pk == pk))
            connection.execute(sa.delete(table).where(table.c.pk == pk))
            return True

    def find_by_key(self, key: str) -> Offer | None:
        with self._store.connect(f"reading offer {key!r}") as connection:
            row = connection.execute(sa.select(self._table).where(self._table.c.key == key)).first()
        return None if row is None else self._codec.decode(row)

    def find_regular(self, env_tags: Collection[str] | None = None) -> list[Offer]:
        offers = self._table
        unlocks = schema.offer_unlocks
        tags = schema.offer_tags
        conditions: list[Any] = [
            ~sa.exists().where(unlocks.c.offer_pk == offers.c.pk),
            *(
                sa.exists().where(tags.c.offer_pk == offers.c.pk, tags.c.tag == tag)
                for tag in dict.fromkeys(env_tags or ())
            ),
        ]
        return self._select(None, None, *conditions)

    def find_unlocked_by(self, offer_groups: Collection[str]) -> list[Offer]:
        groups = list(dict.fromkeys(offer_groups))
        if not groups:
            return []
        unlocks = schema.offer_unlocks
        unlocked = sa.select(unlocks.c.offer_pk).where(unlocks.c.offer_group.in_(groups))
        return self._select(None, None, self._table.c.pk.in_(unlocked))


class SqlOrderDao(_SqlReader[Order], OrderDao):
    """Orders; a status changes by an UPDATE conditioned on the current status, which also
    appends the history entry. One child order per (bundle order, item) (a unique index)."""

    def __init__(self, store: SqlStore):
        super().__init__(store, order_codec(exact_money=store.dialect != "sqlite"))

    def create(self, entity: Order) -> Order:
        values = self._codec.values(entity)
        try:
            with self._store.connect("creating an order") as connection:
                return self._codec.decode(self._insert_returning(connection, values))
        except DuplicateEntityError as e:
            raise DuplicateEntityError(
                f"order {entity.id!r} of user {entity.user_id!r} breaks a uniqueness rule (one "
                "id per order, one child order per bundle item, one paid exclusive order per "
                f"offer): {e}"
            ) from e

    def _appended(self, entry: OrderStatus) -> Any:
        """The history column with ``entry`` appended, in one expression of the dialect."""
        history = self._table.c.history
        if self._store.dialect == "postgresql":
            jsonb = postgresql.JSONB
            added = sa.cast(sa.literal(dumps([status_data(entry)]), sa.Text), jsonb)
            return sa.cast(sa.cast(history, jsonb).op("||")(added), sa.Text)
        return sa.func.json_insert(
            history, "$[#]", sa.func.json(sa.literal(dumps(status_data(entry)), sa.Text))
        )

    def transition(
        self,
        order_id: EntityId,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        entry: OrderStatus | None = None,
        *,
        expected: Mapping[str, Any] | None = None,
    ) -> Order | None:
        changes = {k: v for k, v in changes.items() if k != "payment_intent_secret"}
        if entry is not None and "history" in changes:
            changes["history"] = [*changes["history"], entry]
            entry = None
        values = self._codec.changes(changes)
        statuses = [Status(s).value for s in from_statuses]
        table = self._table
        try:
            conditions, remaining = self._codec.where(expected)
        except NoMatch:
            conditions, remaining = [sa.false()], {}
        key = encode_ref(order_id)
        if key is None:
            raise EntityNotFoundError(f"no order with id {order_id!r}")
        if entry is not None:
            values["history"] = self._appended(entry)
        where = [table.c.id == key, table.c.status.in_(statuses), *conditions]
        if remaining:
            # Values the database cannot compare as the model does (exact money on SQLite):
            # compared on the row read in the same transaction, which holds it locked.
            with self._store.transaction(f"changing order {order_id!r}") as connection:
                row = connection.execute(
                    sa.select(table).where(table.c.id == key).with_for_update()
                ).first()
                if row is None:
                    raise EntityNotFoundError(f"no order with id {order_id!r}")
                if not self._codec.matches(self._codec.decode(row), remaining):
                    return None
                return self._change(connection, where, values, order_id)
        with self._store.connect(f"changing order {order_id!r}") as connection:
            return self._change(connection, where, values, order_id)

    def _change(
        self, connection: Connection, where: list[Any], values: dict[str, Any], order_id: Any
    ) -> Order | None:
        table = self._table
        if values:
            statement: Any = sa.update(table).where(*where).values(**values)
            row = connection.execute(statement.returning(*table.c)).first()
        else:
            row = connection.execute(sa.select(table).where(*where)).first()
        if row is None:
            exists = connection.execute(sa.select(table.c.pk).where(where[0])).first()
            if exists is None:
                raise EntityNotFoundError(f"no order with id {order_id!r}")
            return None
        return self._codec.decode(row)

    def find_by_payment_intent_id(self, payment_intent_id: str) -> Order | None:
        table = self._table
        statement = (
            sa.select(table)
            .where(table.c.payment_intent_id == payment_intent_id)
            .order_by(table.c.pk.desc())
            .limit(1)
        )
        with self._store.connect(f"finding the order of intent {payment_intent_id!r}") as conn:
            row = conn.execute(statement).first()
        return None if row is None else self._codec.decode(row)

    def find_child(self, parent_id: EntityId, item_index: int) -> Order | None:
        table = self._table
        position = schema.CHILD_INDEX
        statement = sa.select(table).where(
            table.c.parent_id == encode_ref(parent_id),
            position == int64(item_index, "item_index"),
        )
        with self._store.connect(f"finding item {item_index} of order {parent_id!r}") as conn:
            row = conn.execute(statement).first()
        return None if row is None else self._codec.decode(row)

    def _of_user(self, user_id: UserId, *conditions: Any, order_by: Any = None) -> list[Order]:
        table = self._table
        try:
            user = user_matches(table, user_id)
        except NoMatch:
            return []
        statement = sa.select(table).where(user, *conditions)
        statement = statement.order_by(*(order_by or ()), table.c.pk)
        with self._store.connect(f"finding the orders of user {user_id!r}") as connection:
            return self._decode_all(connection.execute(statement).all())

    def find_due(self, user_id: UserId, now: datetime) -> list[Order]:
        table = self._table
        return self._of_user(
            user_id,
            table.c.status.in_(LIVE_STATUSES),
            table.c.expires.is_not(None),
            table.c.expires <= now,
            order_by=(table.c.expires,),
        )

    def find_live(self, user_id: UserId, offer_group: str | None = None) -> list[Order]:
        table = self._table
        conditions: list[Any] = [table.c.status.in_(LIVE_STATUSES)]
        if offer_group is not None:
            conditions.append(table.c.offer_group == offer_group)
        return self._of_user(user_id, *conditions)

    def find_in_progress(self, user_id: UserId) -> list[Order]:
        return self._of_user(user_id, self._table.c.in_progress.is_(True))


class SqlTokenTimetableDao(_SqlReader[TokenTimetable], TokenTimetableDao):
    """The ledger, append-only. A line is inserted only if its (user, group, seq) and its
    keys are free: the unique constraints of the table make the insert the commit point."""

    def __init__(self, store: SqlStore):
        super().__init__(store, line_codec())

    def create(self, entity: TokenTimetable) -> TokenTimetable:
        if entity.seq < 1:
            raise DuplicateEntityError(
                f"line {entity.seq} of account {entity.offer_group!r} of user "
                f"{entity.user_id!r}: lines are numbered from 1"
            )
        values = self._codec.values(entity)
        try:
            with self._store.connect("appending a ledger line") as connection:
                return self._codec.decode(self._insert_returning(connection, values))
        except DuplicateEntityError as e:
            raise DuplicateEntityError(
                f"line {entity.seq} of account {entity.offer_group!r} of user "
                f"{entity.user_id!r} (idempotency key {entity.idempotency_key!r}, operation key "
                f"{entity.operation_key!r}) breaks a uniqueness rule of the ledger: {e}"
            ) from e

    def lines_after(self, user_id: UserId, offer_group: str, seq: int) -> list[TokenTimetable]:
        table = self._table
        try:
            user = user_matches(table, user_id)
        except NoMatch:
            return []
        statement = (
            sa.select(table)
            .where(user, table.c.offer_group == offer_group, table.c.seq > int64(seq, "seq"))
            .order_by(table.c.seq)
        )
        with self._store.connect(f"reading the ledger of {offer_group!r}") as connection:
            return self._decode_all(connection.execute(statement).all())

    def find_by_key(
        self,
        user_id: UserId,
        *,
        idempotency_key: str | None = None,
        operation_key: str | None = None,
    ) -> TokenTimetable | None:
        table = self._table
        keys = []
        if idempotency_key is not None:
            keys.append(table.c.idempotency_key == idempotency_key)
        if operation_key is not None:
            keys.append(table.c.operation_key == operation_key)
        if not keys:
            return None
        try:
            user = user_matches(table, user_id)
        except NoMatch:
            return None
        statement = sa.select(table).where(user, sa.or_(*keys))
        with self._store.connect("finding a ledger line by key") as connection:
            found = self._decode_all(connection.execute(statement).all())
        by_idempotency = [line for line in found if line.idempotency_key == idempotency_key]
        return next(iter(by_idempotency or found), None)

    def history(
        self,
        user_id: UserId,
        offer_group: str | None,
        limit: int,
        before: EntityId = None,
    ) -> list[TokenTimetable]:
        table = self._table
        if limit <= 0:
            return []
        try:
            user = user_matches(table, user_id)
        except NoMatch:
            return []
        conditions: list[Any] = [user]
        if offer_group is not None:
            conditions.append(table.c.offer_group == offer_group)
        if before is not None:
            try:
                pk = self._codec.pk(before)
            except NoMatch:
                return []
            mark = table.alias("mark")
            cursor = sa.select(mark.c.pk).where(mark.c.pk == pk, user_matches(mark, user_id))
            conditions.append(table.c.pk < cursor.scalar_subquery())
        statement = sa.select(table).where(*conditions).order_by(table.c.pk.desc()).limit(limit)
        with self._store.connect(f"reading the history of user {user_id!r}") as connection:
            return self._decode_all(connection.execute(statement).all())


def _account_row() -> sa.ColumnElement[bool]:
    table = schema.accounts
    return sa.and_(
        table.c.user_type == sa.bindparam("account_user_type"),
        table.c.user_id == sa.bindparam("account_user_id"),
        table.c.offer_group == sa.bindparam("account_group"),
    )


# The statements of the hottest paths (every consumption reads an account and saves its
# snapshot), built once with named parameters so that SQLAlchemy compiles them once.
_GET_ACCOUNT = sa.select(schema.accounts).where(_account_row())
_SAVE_SNAPSHOT = (
    sa.update(schema.accounts)
    .where(_account_row(), schema.accounts.c.seq < sa.bindparam("account_seq"))
    .values(seq=sa.bindparam("account_seq"), snapshot_json=sa.bindparam("account_snapshot"))
)


def _account(row: Row[Any]) -> Account:
    values = row._mapping
    return Account(
        user_id=decode_user(values["user_type"], values["user_id"]),
        offer_group=values["offer_group"],
        created_at=values["created_at"],
        snapshot=Snapshot.from_data(json.loads(values["snapshot_json"])),
        window=Window.from_data(json.loads(values["window_json"])),
    )


class SqlUserCreditsDao(UserCreditsDao):
    """Users and their accounts: one row per user and per (user, group), created by inserts
    that do nothing when the row exists; snapshots and windows change by compare-and-set."""

    def __init__(self, store: SqlStore, ledger: TokenTimetableDao):
        self._store = store
        self._append = Appending(store, ledger)

    def _user_id(self, connection: Connection, user: tuple[str, str]) -> str | None:
        users = schema.users
        found: str | None = connection.execute(
            sa.select(users.c.id).where(users.c.user_type == user[0], users.c.user_id == user[1])
        ).scalar()
        return found

    def _insert_user(self, connection: Connection, user: tuple[str, str]) -> str | None:
        statement = (
            _insert(self._store, schema.users)
            .values(id=new_id(), user_type=user[0], user_id=user[1])
            .on_conflict_do_nothing(index_elements=["user_type", "user_id"])
            .returning(schema.users.c.id)
        )
        found: str | None = connection.execute(statement).scalar()
        return found

    def register(self, user_id: UserId) -> EntityId:
        user = encode_user(user_id)
        with self._store.connect(f"registering user {user_id!r}") as connection:
            found = self._user_id(connection, user) or self._insert_user(connection, user)
            if found is None:
                found = self._user_id(connection, user)
        if found is None:
            raise EntityNotFoundError(f"user {user_id!r} vanished while being registered")
        return found

    def find_record_id(self, user_id: UserId) -> EntityId | None:
        try:
            user = encode_user(user_id)
        except ValueError:
            return None
        with self._store.connect(f"finding user {user_id!r}") as connection:
            return self._user_id(connection, user)

    def iter_user_ids(self, batch_size: int = 1000) -> Iterator[UserId]:
        users = schema.users
        size = max(1, int(batch_size))
        last = 0
        while True:
            statement = (
                sa.select(users.c.pk, users.c.user_type, users.c.user_id)
                .where(users.c.pk > last)
                .order_by(users.c.pk)
                .limit(size)
            )
            with self._store.connect("listing users") as connection:
                rows = connection.execute(statement).all()
            for row in rows:
                yield decode_user(row.user_type, row.user_id)
            if len(rows) < size:
                return
            last = rows[-1].pk

    def _select_account(self, user_id: UserId, offer_group: str) -> Any:
        table = schema.accounts
        return sa.select(table).where(
            user_matches(table, user_id), table.c.offer_group == offer_group
        )

    @staticmethod
    def _account_key(user_id: UserId, offer_group: str) -> dict[str, Any] | None:
        """The parameters of the account statements below, None for a user type never stored."""
        try:
            user_type, text = encode_user(user_id)
        except InvalidInputError:
            return None
        return {
            "account_user_type": user_type,
            "account_user_id": text,
            "account_group": offer_group,
        }

    def open_account(self, user_id: UserId, offer_group: str, now: datetime) -> Account:
        user = encode_user(user_id)
        table = schema.accounts
        window = Window(starts=now)
        statement = (
            _insert(self._store, table)
            .values(
                user_type=user[0],
                user_id=user[1],
                offer_group=offer_group,
                created_at=now,
                seq=0,
                snapshot_json=dumps(Snapshot().to_data()),
                last_seq=0,
                balance=0,
                holds=0,
                window_version=window.version,
                window_json=dumps(window.to_data()),
            )
            .on_conflict_do_nothing(index_elements=["user_type", "user_id", "offer_group"])
            .returning(*table.c)
        )
        with self._store.transaction(f"opening account {offer_group!r} of {user_id!r}") as conn:
            self._insert_user(conn, user)
            row = conn.execute(statement).first()
            if row is None:
                row = conn.execute(self._select_account(user_id, offer_group)).one()
        return _account(row)

    def get_account(self, user_id: UserId, offer_group: str) -> Account | None:
        key = self._account_key(user_id, offer_group)
        if key is None:
            return None
        with self._store.connect(f"reading account {offer_group!r} of {user_id!r}") as conn:
            row = conn.execute(_GET_ACCOUNT, key).first()
        return None if row is None else _account(row)

    def accounts(self, user_id: UserId) -> list[Account]:
        table = schema.accounts
        try:
            user = user_matches(table, user_id)
        except NoMatch:
            return []
        statement = sa.select(table).where(user).order_by(table.c.pk)
        with self._store.connect(f"reading the accounts of {user_id!r}") as connection:
            return [_account(row) for row in connection.execute(statement).all()]

    def save_snapshot(self, user_id: UserId, offer_group: str, snapshot: Snapshot) -> bool:
        key = self._account_key(user_id, offer_group)
        if key is None:
            return False
        key["account_seq"] = int64(snapshot.seq, "seq")
        key["account_snapshot"] = dumps(snapshot.to_data())
        with self._store.connect(f"saving the snapshot of {offer_group!r}") as connection:
            return bool(connection.execute(_SAVE_SNAPSHOT, key).rowcount)

    def append_locked(self, user_id: UserId, offer_group: str, draft: Draft) -> Appended | None:
        return self._append.locked(user_id, offer_group, draft)

    def append_consumption(
        self, user_id: UserId, offer_group: str, line: TokenTimetable, floor: int | None
    ) -> TokenTimetable | None:
        return self._append.consumption(user_id, offer_group, line, floor)

    def save_window(
        self, user_id: UserId, offer_group: str, expected_version: int, window: Window
    ) -> bool:
        table = schema.accounts
        try:
            user = user_matches(table, user_id)
        except NoMatch:
            return False
        statement = (
            sa.update(table)
            .where(
                user,
                table.c.offer_group == offer_group,
                table.c.window_version == int64(expected_version, "window version"),
            )
            .values(
                window_version=int64(window.version, "window version"),
                window_json=dumps(window.to_data()),
            )
        )
        with self._store.connect(f"saving the window of {offer_group!r}") as connection:
            return bool(connection.execute(statement).rowcount)


class SqlCustomerDao(_SqlReader[Customer], CustomerDao):
    """Customers of payment processors, unique per (processor, user) and per (processor,
    e-mail): two unique constraints."""

    def __init__(self, store: SqlStore):
        super().__init__(store, customer_codec())

    def create(self, entity: Customer) -> Customer:
        values = self._codec.values(entity)
        try:
            with self._store.connect("creating a customer") as connection:
                return self._codec.decode(self._insert_returning(connection, values))
        except DuplicateEntityError as e:
            raise DuplicateEntityError(
                f"a {entity.processor} customer exists already for user {entity.user_id!r} or "
                f"e-mail {entity.email!r}"
            ) from e

    def _find(self, *conditions: Any) -> Customer | None:
        statement = sa.select(self._table).where(*conditions).order_by(self._table.c.pk).limit(1)
        with self._store.connect("finding a customer") as connection:
            row = connection.execute(statement).first()
        return None if row is None else self._codec.decode(row)

    def find_by_user(self, processor: str, user_id: UserId) -> Customer | None:
        try:
            user = user_matches(self._table, user_id)
        except NoMatch:
            return None
        return self._find(self._table.c.processor == processor, user)

    def find_by_email(self, processor: str, email: str) -> Customer | None:
        return self._find(self._table.c.processor == processor, self._table.c.email == email)


class SqlWebhookEventDao(_SqlReader[WebhookEventRecord], WebhookEventDao):
    """Received gateway events, one per event id (a unique constraint), in the order received."""

    def __init__(self, store: SqlStore):
        super().__init__(store, webhook_event_codec())

    def create(self, entity: WebhookEventRecord) -> WebhookEventRecord:
        values = self._codec.values(entity)
        try:
            with self._store.connect(f"recording event {entity.id!r}") as connection:
                return self._codec.decode(self._insert_returning(connection, values))
        except DuplicateEntityError as e:
            raise DuplicateEntityError(f"event {entity.id!r} is recorded already") from e

    def finish(
        self, event_id: str, *, handled: bool, message: str, order_id: EntityId = None
    ) -> WebhookEventRecord | None:
        table = self._table
        statement = (
            sa.update(table)
            .where(table.c.id == str(event_id))
            .values(handled=bool(handled), message=message, order_id=encode_ref(order_id))
            .returning(*table.c)
        )
        with self._store.connect(f"finishing event {event_id!r}") as connection:
            row = connection.execute(statement).first()
        return None if row is None else self._codec.decode(row)

    def latest(self, limit: int, before: str | None = None) -> list[WebhookEventRecord]:
        table = self._table
        statement = sa.select(table).order_by(table.c.pk.desc()).limit(max(1, int(limit)))
        if before is not None:
            cursor = sa.select(table.c.pk).where(table.c.id == str(before)).scalar_subquery()
            statement = statement.where(table.c.pk < cursor)
        with self._store.connect("listing events") as connection:
            return self._decode_all(connection.execute(statement).all())
