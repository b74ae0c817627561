"""Conversions between the domain model and the rows of :mod:`usercredits_sql.schema`.

* Entity ids are UUID hex strings (new ones) or the ``str()`` of an id given to ``create``;
  an id is matched by its ``str()``, so a value that is no stored id matches nothing.
* A column holding the id of another entity stores the id's ``str()``.
* User ids keep their type: a tag (``str``, ``int``, ``uuid``) and the text form.
* Integers must fit in 64 bits (StorageError otherwise); lists and nested records are JSON.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from usercredits.dao import ID_FIELDS
from usercredits.errors import InvalidInputError, StorageError
from usercredits.models import (
    CombinedOffer,
    CombinedOrder,
    Customer,
    Cycle,
    LedgerReason,
    Offer,
    OfferKind,
    Order,
    OrderStatus,
    Status,
    TokenTimetable,
    WebhookEventRecord,
)
from usercredits_sql import schema

M = TypeVar("M")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

USER_TYPES: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "uuid": uuid.UUID}
"""How each user id type tag reads back its text form."""


class NoMatch(Exception):
    """A filter value no stored row can hold (a user id of a type never stored, no id...)."""


def new_id() -> str:
    """A new entity id."""
    return uuid.uuid4().hex


def encode_ref(value: Any) -> str | None:
    """The stored text of an entity id, or of a reference to one (None stays None)."""
    if value is None:
        return None
    return str(value)


def encode_user(user_id: Any) -> tuple[str, str]:
    """The stored (type tag, text) of a user id; InvalidInputError for a type not kept."""
    if isinstance(user_id, bool) or user_id is None:
        raise InvalidInputError(f"user ids must be str, int or UUID, got {user_id!r}")
    if isinstance(user_id, str):
        return "str", user_id
    if isinstance(user_id, int):
        return "int", str(user_id)
    if isinstance(user_id, uuid.UUID):
        return "uuid", str(user_id)
    raise InvalidInputError(
        f"user ids must be str, int or UUID, got {type(user_id).__name__} {user_id!r}"
    )


def decode_user(user_type: str, text: str) -> Any:
    """The user id a stored (type tag, text) stands for."""
    return USER_TYPES[user_type](text)


def user_matches(table: sa.FromClause, user_id: Any) -> sa.ColumnElement[bool]:
    """The condition selecting the rows of one user (NoMatch for a type never stored)."""
    try:
        user_type, text = encode_user(user_id)
    except InvalidInputError:
        raise NoMatch from None
    return sa.and_(table.c.user_type == user_type, table.c.user_id == text)


def int64(value: Any, what: str) -> Any:
    """``value`` checked to fit in a 64-bit integer column when it is an int."""
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise StorageError(f"{what} {value} does not fit in a 64-bit integer")
    return value


def to_utc(value: datetime | None) -> datetime | None:
    """``value`` in UTC (a naive one is taken as UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    moment = to_utc(value)
    return None if moment is None else moment.isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else to_utc(datetime.fromisoformat(text))


def dumps(data: Any) -> str:
    """Compact JSON text."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _json_ref(value: Any) -> Any:
    """A reference kept in JSON as given (an int or a str; another id type as its text)."""
    if value is None or (isinstance(value, int | str) and not isinstance(value, bool)):
        return value
    return str(value)


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _combined_offer_data(item: CombinedOffer) -> dict[str, Any]:
    return {
        "offer_id": _json_ref(item.offer_id),
        "offer_group": item.offer_group,
        "quantity": item.quantity,
        "cycle": _enum_value(item.cycle),
        "custom_cycle": item.custom_cycle,
    }


def _combined_offer(data: Mapping[str, Any]) -> CombinedOffer:
    return CombinedOffer(**data)


def _combined_order_data(item: CombinedOrder) -> dict[str, Any]:
    return {
        "offer_id": _json_ref(item.offer_id),
        "offer_group": item.offer_group,
        "quantity": item.quantity,
        "cycle": _enum_value(item.cycle),
        "custom_cycle": item.custom_cycle,
        "token_count": item.token_count,
        "starts": _iso(item.starts),
        "expires": _iso(item.expires),
        "offer_name": item.offer_name,
        "append_date": item.append_date,
        "priority": item.priority,
    }


def _combined_order(data: Mapping[str, Any]) -> CombinedOrder:
    values = dict(data)
    values["starts"] = _parse(values.get("starts"))
    values["expires"] = _parse(values.get("expires"))
    return CombinedOrder(**values)


def status_data(entry: OrderStatus) -> dict[str, Any]:
    """The JSON data of one history entry."""
    return {
        "date": _iso(entry.date),
        "status": _enum_value(entry.status),
        "message": entry.message,
        "payload": entry.payload,
    }


def _status(data: Mapping[str, Any]) -> OrderStatus:
    return OrderStatus(
        date=_parse(data.get("date")),
        status=data["status"],
        message=data.get("message", ""),
        payload=data.get("payload"),
    )


def _json_list(encode_item: Callable[[Any], Any]) -> Callable[[Any], str]:
    def encode(values: Sequence[Any] | None) -> str:
        return dumps([encode_item(v) for v in values or ()])

    return encode


def _from_json_list(decode_item: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def decode(text: str | None) -> list[Any]:
        return [decode_item(v) for v in json.loads(text or "[]")]

    return decode


def _same(value: Any) -> Any:
    return value


@dataclasses.dataclass(frozen=True)
class Field:
    """How one field of a model is stored: its column, and the conversions both ways.
    ``in_sql`` fields are filtered by the database; the others (JSON, exact money on
    SQLite) are compared on the decoded entities, as the model compares them."""

    name: str
    column: str
    encode: Callable[[Any], Any] = _same
    decode: Callable[[Any], Any] = _same
    in_sql: bool = True


def _int_field(name: str) -> Field:
    def encode(value: Any) -> Any:
        return int64(value, name)

    return Field(name, name, encode=encode)


def _enum_field(name: str, kind: type[enum.StrEnum]) -> Field:
    def encode(value: Any) -> str | None:
        return None if value is None else kind(value).value

    return Field(name, name, encode=encode)


def _ref_field(name: str) -> Field:
    return Field(name, name, encode=encode_ref)


class EntityCodec(Generic[M]):
    """Converts one dataclass of the model to and from rows of its table.

    ``user_id`` (a type tag and a text) and ``id`` are handled here: an ``id`` column holding
    a new id given at insert, or, for a table without one, the ``pk`` given by the database
    (as text); ``fields`` says how the other stored fields map to columns; a model field in
    neither is never stored (read as its default)."""

    def __init__(
        self,
        model: type[M],
        table: sa.Table,
        fields: Sequence[Field],
        *,
        unstored: Collection[str] = (),
    ):
        self.model = model
        self.table = table
        self.fields = {f.name: f for f in fields}
        self.model_fields = frozenset(f.name for f in dataclasses.fields(model))  # type: ignore[arg-type]
        self.has_user = "user_type" in table.c
        self.id_is_pk = "id" not in table.c
        self.unmapped = self.model_fields - {"id", "user_id", *self.fields, *unstored}
        """Model fields neither stored nor declared unstored (none, unless the model grew)."""

    def check_fields(self, names: Collection[str]) -> None:
        """Raise ValueError naming the fields the model does not have."""
        unknown = sorted(set(names) - self.model_fields)
        if unknown:
            raise InvalidInputError(
                f"{self.model.__name__} has no field {', '.join(map(repr, unknown))}"
            )

    def values(self, entity: M) -> dict[str, Any]:
        """The column values storing ``entity`` (a new id when it has none, or none at all when
        the database numbers the rows)."""
        entity_id = getattr(entity, "id", None)
        row: dict[str, Any] = {}
        if not self.id_is_pk:
            row["id"] = new_id() if entity_id is None else encode_ref(entity_id)
        elif entity_id is not None:
            row["pk"] = self.pk(entity_id)
        if self.has_user:
            row["user_type"], row["user_id"] = encode_user(getattr(entity, "user_id"))  # noqa: B009
        for field in self.fields.values():
            row[field.column] = field.encode(getattr(entity, field.name))
        return row

    def pk(self, entity_id: Any) -> int:
        """The ``pk`` of an id, for a table whose ids are its ``pk``; NoMatch when no row can
        have this id."""
        try:
            pk = int(str(entity_id))
        except ValueError:
            raise NoMatch from None
        if not 0 < pk <= INT64_MAX or str(pk) != str(entity_id):
            raise NoMatch
        return pk

    def id_matches(self, entity_id: Any) -> sa.ColumnElement[bool]:
        """The condition selecting the row of this id; NoMatch when no row can have it."""
        if entity_id is None:
            raise NoMatch
        if self.id_is_pk:
            return self.table.c.pk == self.pk(entity_id)
        return self.table.c.id == encode_ref(entity_id)

    def check_changes(self, changes: Mapping[str, Any]) -> None:
        """Raise ValueError for changes of unknown fields, or of the id."""
        self.check_fields(changes.keys())
        if "id" in changes:
            raise InvalidInputError(f"the id of a {self.model.__name__} cannot be changed")

    def changes(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """The column values setting ``changes`` (unstored fields are left out)."""
        self.check_changes(changes)
        row: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "user_id" and self.has_user:
                row["user_type"], row["user_id"] = encode_user(value)
            elif name in self.fields:
                field = self.fields[name]
                row[field.column] = field.encode(value)
        return row

    def decode(self, row: Any) -> M:
        """The entity a row holds."""
        mapping = row._mapping
        values: dict[str, Any] = {"id": str(mapping["pk"]) if self.id_is_pk else mapping["id"]}
        if self.has_user:
            values["user_id"] = decode_user(mapping["user_type"], mapping["user_id"])
        for field in self.fields.values():
            values[field.name] = field.decode(mapping[field.column])
        return self.model(**values)

    def where(self, filters: Mapping[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
        """The SQL conditions of ``filters`` and the filters left to compare on the decoded
        entities; raises NoMatch when nothing can match, ValueError for unknown fields."""
        filters = dict(filters or {})
        self.check_fields(filters.keys())
        conditions: list[Any] = []
        remaining: dict[str, Any] = {}
        for name, value in filters.items():
            if name == "id":
                conditions.append(self.id_matches(value))
            elif name == "user_id" and self.has_user:
                conditions.append(user_matches(self.table, value))
            elif name not in self.fields:
                if value is not None:
                    raise NoMatch
            elif not self.fields[name].in_sql:
                remaining[name] = value
            else:
                column = self.table.c[self.fields[name].column]
                try:
                    stored = self.fields[name].encode(value)
                except (StorageError, ValueError, TypeError, AttributeError):
                    raise NoMatch from None
                conditions.append(column.is_(None) if stored is None else column == stored)
        return conditions, remaining

    def matches(self, entity: M, remaining: Mapping[str, Any]) -> bool:
        """Whether ``entity`` holds the values of the filters left to Python."""
        for name, wanted in remaining.items():
            stored = getattr(entity, name)
            if name in ID_FIELDS and stored is not None and wanted is not None:
                if str(stored) != str(wanted):
                    return False
            elif stored != wanted:
                return False
        return True


def _money_field(name: str, *, exact_in_sql: bool) -> Field:
    return Field(name, name, in_sql=exact_in_sql)


def offer_codec(exact_money: bool) -> EntityCodec[Offer]:
    """The codec of offers (``exact_money``: the database compares decimals by value)."""
    return EntityCodec(
        Offer,
        schema.offers,
        [
            Field("key", "key"),
            Field("name", "name"),
            _enum_field("kind", OfferKind),
            Field("offer_group", "offer_group"),
            _enum_field("cycle", Cycle),
            _int_field("custom_cycle"),
            _money_field("price", exact_in_sql=exact_money),
            Field("currency", "currency"),
            _int_field("token_count"),
            _int_field("quantity_limit"),
            Field("append_date", "append_date"),
            Field("tags", "tags", _json_list(str), _from_json_list(str), in_sql=False),
            Field(
                "unlocked_by", "unlocked_by", _json_list(str), _from_json_list(str), in_sql=False
            ),
            Field("has_dependent_offers", "has_dependent_offers"),
            Field("overriding_key", "overriding_key"),
            _int_field("weight"),
            _int_field("popular"),
            Field(
                "combined_items",
                "combined_items",
                _json_list(_combined_offer_data),
                _from_json_list(_combined_offer),
                in_sql=False,
            ),
            _int_field("priority"),
        ],
    )


def order_codec(exact_money: bool) -> EntityCodec[Order]:
    """The codec of orders; ``payment_intent_secret`` is never stored."""
    return EntityCodec(
        Order,
        schema.orders,
        [
            _ref_field("offer_id"),
            Field("offer_group", "offer_group"),
            _enum_field("status", Status),
            _int_field("quantity"),
            _money_field("total", exact_in_sql=exact_money),
            Field("currency", "currency"),
            _enum_field("cycle", Cycle),
            _int_field("custom_cycle"),
            _int_field("token_count"),
            Field("starts", "starts"),
            Field("expires", "expires"),
            Field(
                "combined_items",
                "combined_items",
                _json_list(_combined_order_data),
                _from_json_list(_combined_order),
                in_sql=False,
            ),
            Field(
                "history",
                "history",
                _json_list(status_data),
                _from_json_list(_status),
                in_sql=False,
            ),
            Field("payment_intent_id", "payment_intent_id"),
            _ref_field("parent_id"),
            Field("country", "country"),
            _money_field("tax_rate", exact_in_sql=exact_money),
            Field("created_at", "created_at"),
            Field("updated_at", "updated_at"),
            Field("offer_name", "offer_name"),
            Field("append_date", "append_date"),
            _int_field("priority"),
            _int_field("item_index"),
            Field("exclusive", "exclusive"),
            _money_field("refunded_amount", exact_in_sql=exact_money),
            Field("in_progress", "in_progress"),
        ],
        unstored={"payment_intent_secret"},
    )


def line_codec() -> EntityCodec[TokenTimetable]:
    """The codec of ledger lines."""
    return EntityCodec(
        TokenTimetable,
        schema.ledger,
        [
            Field("offer_group", "offer_group"),
            _int_field("tokens"),
            Field("created_at", "created_at"),
            _ref_field("order_id"),
            _enum_field("reason", LedgerReason),
            Field("idempotency_key", "idempotency_key"),
            Field("expires", "expires"),
            _int_field("seq"),
            Field("grant_id", "grant_id"),
            _int_field("priority"),
            Field("operation_key", "operation_key"),
            Field("note", "note"),
            Field("hold_id", "hold_id"),
            _int_field("held"),
        ],
    )


def customer_codec() -> EntityCodec[Customer]:
    """The codec of payment processors' customers."""
    return EntityCodec(
        Customer,
        schema.customers,
        [
            Field("email", "email"),
            Field("processor", "processor"),
            Field("customer_id", "customer_id"),
            Field("created_at", "created_at"),
        ],
    )


def webhook_event_codec() -> EntityCodec[WebhookEventRecord]:
    """The codec of received gateway events."""
    return EntityCodec(
        WebhookEventRecord,
        schema.webhook_events,
        [
            Field("type", "type"),
            Field("created", "created"),
            Field("received_at", "received_at"),
            Field("payload", "payload"),
            _ref_field("order_id"),
            Field("handled", "handled"),
            Field("message", "message"),
        ],
    )
