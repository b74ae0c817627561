"""The tables of the SQL backend, in one :class:`~sqlalchemy.MetaData` (:data:`metadata`).

Every table is prefixed ``usercredits_`` so that it can live in an application's own
database, and every constraint is named (for migration tools). The uniqueness rules the
storage contract relies on are constraints of the database:

* ``usercredits_ledger``: one line per (user, offer group, ``seq``) -- the commit point of
  every change of an account -- and one per (user, ``idempotency_key``) and per (user,
  ``operation_key``) when the key is set;
* ``usercredits_orders``: one child order per (``parent_id``, ``item_index``), and one paid
  ``exclusive`` order per (user, ``offer_id``);
* ``usercredits_users``: one row per user; ``usercredits_accounts``: one per (user, group);
* ``usercredits_offers``: one offer per catalogue ``key``;
* ``usercredits_customers``: one per (processor, user) and one per (processor, e-mail);
* ``usercredits_webhook_events``: one per gateway event id.

A user id is stored as a type tag (``user_type``: ``str``, ``int`` or ``uuid``) next to its
text form (``user_id``), so that ``1`` and ``"1"`` are different users. Entity ids are
UUID hex strings (``id``), unique across every kind of entity; each table also has an
integer primary key (``pk``) numbering its rows in creation order. A column holding the id
of another entity (``offer_id``, ``order_id``, ``parent_id``) stores its text. Money is
exact (``NUMERIC`` on PostgreSQL, the decimal's text on SQLite), datetimes are stored in UTC
and read back timezone-aware.
Lists of values and nested records (tags, bundle items, an order's history, an account's
snapshot and window) are JSON text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
"""The tables of the SQL backend, for applications that run their own migrations."""


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A datetime stored in UTC and read back timezone-aware UTC (a naive one is UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite keeps the text of the datetime: naive UTC, so that texts sort like instants.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Money(sa.types.TypeDecorator[Decimal]):
    """An exact decimal: ``NUMERIC`` without a fixed scale, or its text on SQLite (which has
    no exact decimal type); read back as :class:`~decimal.Decimal`."""

    impl = sa.Numeric(asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(64))
        return dialect.type_descriptor(sa.Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


Key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""A 64-bit primary key; an ``INTEGER`` on SQLite, where only that type autoincrements."""


def _id_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("pk", Key, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
    ]


def _user_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("user_type", sa.String(8), nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
    ]


offers = sa.Table(
    "usercredits_offers",
    metadata,
    *_id_columns(),
    sa.Column("key", sa.Text, nullable=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("offer_group", sa.Text, nullable=False),
    sa.Column("cycle", sa.String(32), nullable=False),
    sa.Column("custom_cycle", sa.BigInteger, nullable=True),
    sa.Column("price", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=True),
    sa.Column("token_count", sa.BigInteger, nullable=True),
    sa.Column("quantity_limit", sa.BigInteger, nullable=True),
    sa.Column("append_date", sa.Boolean, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("unlocked_by", sa.Text, nullable=False),
    sa.Column("has_dependent_offers", sa.Boolean, nullable=False),
    sa.Column("overriding_key", sa.Text, nullable=True),
    sa.Column("weight", sa.BigInteger, nullable=False),
    sa.Column("popular", sa.BigInteger, nullable=True),
    sa.Column("combined_items", sa.Text, nullable=False),
    sa.Column("priority", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("key"),
    sqlite_autoincrement=True,
)
"""The catalogue; ``tags``, ``unlocked_by`` and ``combined_items`` are JSON lists."""

offer_tags = sa.Table(
    "usercredits_offer_tags",
    metadata,
    sa.Column("offer_pk", Key, sa.ForeignKey(offers.c.pk, ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.Text, primary_key=True),
)
"""The distinct tags of each offer, for the storefront's query on environment tags."""

offer_unlocks = sa.Table(
    "usercredits_offer_unlocks",
    metadata,
    sa.Column("offer_pk", Key, sa.ForeignKey(offers.c.pk, ondelete="CASCADE"), primary_key=True),
    sa.Column("offer_group", sa.Text, primary_key=True),
    sa.Index(None, "offer_group"),
)
"""The offer groups whose purchase unlocks each offer, for the storefront's queries."""

orders = sa.Table(
    "usercredits_orders",
    metadata,
    *_id_columns(),
    *_user_columns(),
    sa.Column("offer_id", sa.Text, nullable=True),
    sa.Column("offer_group", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("total", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=True),
    sa.Column("cycle", sa.String(32), nullable=False),
    sa.Column("custom_cycle", sa.BigInteger, nullable=True),
    sa.Column("token_count", sa.BigInteger, nullable=False),
    sa.Column("starts", UtcDateTime, nullable=True),
    sa.Column("expires", UtcDateTime, nullable=True),
    sa.Column("combined_items", sa.Text, nullable=False),
    sa.Column("history", sa.Text, nullable=False),
    sa.Column("payment_intent_id", sa.Text, nullable=True),
    sa.Column("parent_id", sa.Text, nullable=True),
    sa.Column("item_index", sa.BigInteger, nullable=True),
    sa.Column("country", sa.Text, nullable=True),
    sa.Column("tax_rate", Money, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=True),
    sa.Column("offer_name", sa.Text, nullable=False),
    sa.Column("append_date", sa.Boolean, nullable=False),
    sa.Column("priority", sa.BigInteger, nullable=False),
    sa.Column("exclusive", sa.Boolean, nullable=False),
    sa.Column("refunded_amount", Money, nullable=False),
    sa.Column("in_progress", sa.Boolean, nullable=False),
    sqlite_autoincrement=True,
)
"""Orders; ``combined_items`` and ``history`` are JSON lists. A user holds at most one paid
``exclusive`` order per offer (a partial unique index)."""

CHILD_INDEX = sa.func.coalesce(orders.c.item_index, 0)
"""The position of a child order's item in its bundle (an unset one counts as 0)."""

sa.Index("ix_usercredits_orders_user", orders.c.user_type, orders.c.user_id, orders.c.status)
sa.Index("ix_usercredits_orders_payment_intent_id", orders.c.payment_intent_id)
sa.Index("uq_usercredits_orders_child", orders.c.parent_id, CHILD_INDEX, unique=True)
PAID_EXCLUSIVE = sa.and_(orders.c.exclusive, orders.c.status == "paid")
sa.Index(
    "uq_usercredits_orders_paid_exclusive",
    orders.c.user_type,
    orders.c.user_id,
    orders.c.offer_id,
    unique=True,
    sqlite_where=PAID_EXCLUSIVE,
    postgresql_where=PAID_EXCLUSIVE,
)
sa.Index(
    "ix_usercredits_orders_in_progress",
    orders.c.user_type,
    orders.c.user_id,
    sqlite_where=orders.c.in_progress,
    postgresql_where=orders.c.in_progress,
)

ledger = sa.Table(
    "usercredits_ledger",
    metadata,
    sa.Column("pk", Key, primary_key=True, autoincrement=True),
    *_user_columns(),
    sa.Column("offer_group", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=True),
    sa.Column("order_id", sa.Text, nullable=True),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=True),
    sa.Column("expires", UtcDateTime, nullable=True),
    sa.Column("grant_id", sa.Text, nullable=True),
    sa.Column("priority", sa.BigInteger, nullable=True),
    sa.Column("operation_key", sa.Text, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("hold_id", sa.Text, nullable=True),
    sa.Column("held", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("user_type", "user_id", "offer_group", "seq"),
    sa.CheckConstraint("seq >= 1", name="seq_positive"),
)
"""The token ledger, append-only. A line's ``seq`` numbers it in its account; its id is its
``pk`` (as text): one index fewer to write on every line. No line is ever deleted, so SQLite
numbers rows upwards without ``AUTOINCREMENT`` (and its extra write per insert)."""

sa.Index(
    "uq_usercredits_ledger_idempotency_key",
    ledger.c.user_type,
    ledger.c.user_id,
    ledger.c.idempotency_key,
    unique=True,
    sqlite_where=ledger.c.idempotency_key.is_not(None),
    postgresql_where=ledger.c.idempotency_key.is_not(None),
)
sa.Index(
    "uq_usercredits_ledger_operation_key",
    ledger.c.user_type,
    ledger.c.user_id,
    ledger.c.operation_key,
    unique=True,
    sqlite_where=ledger.c.operation_key.is_not(None),
    postgresql_where=ledger.c.operation_key.is_not(None),
)
sa.Index("ix_usercredits_ledger_user", ledger.c.user_type, ledger.c.user_id, ledger.c.pk)

users = sa.Table(
    "usercredits_users",
    metadata,
    *_id_columns(),
    *_user_columns(),
    sa.UniqueConstraint("user_type", "user_id"),
    sqlite_autoincrement=True,
)
"""One row per user with credits."""

accounts = sa.Table(
    "usercredits_accounts",
    metadata,
    sa.Column("pk", Key, primary_key=True, autoincrement=True),
    *_user_columns(),
    sa.Column("offer_group", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("snapshot_json", sa.Text, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("balance", sa.BigInteger, nullable=False),
    sa.Column("holds", sa.Integer, nullable=False),
    sa.Column("window_version", sa.BigInteger, nullable=False),
    sa.Column("window_json", sa.Text, nullable=False),
    sa.UniqueConstraint("user_type", "user_id", "offer_group"),
    sqlite_autoincrement=True,
)
"""One row per (user, offer group): the snapshot (the fold of the account's ledger lines up
to ``seq``) and the validity window (at ``window_version``), each changed by
compare-and-set on its integer column; and, kept by every append, the number of the latest
line (``last_seq``), the balance after it and how many holds it leaves, with which the
database checks a consumption by itself (:mod:`usercredits_sql.append`)."""

customers = sa.Table(
    "usercredits_customers",
    metadata,
    *_id_columns(),
    *_user_columns(),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("processor", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("processor", "user_type", "user_id"),
    sa.UniqueConstraint("processor", "email"),
    sqlite_autoincrement=True,
)
"""Customers of payment processors."""

webhook_events = sa.Table(
    "usercredits_webhook_events",
    metadata,
    *_id_columns(),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("created", UtcDateTime, nullable=True),
    sa.Column("received_at", UtcDateTime, nullable=True),
    sa.Column("payload", sa.Text, nullable=True),
    sa.Column("order_id", sa.Text, nullable=True),
    sa.Column("handled", sa.Boolean, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sqlite_autoincrement=True,
)
"""Gateway events as received, by the gateway's event id (``id``), in the order received."""
