"""Conversions between the domain model and the values MongoDB stores.

* Entity ids are ``ObjectId``: an ``ObjectId`` or its 24-digit hex ``str`` is stored and
  matched as the ``ObjectId``; any other value is kept as given, so a malformed id simply
  matches nothing.
* User ids are stored as given (``str``, ``int``, ``ObjectId``...); a ``UUID`` is stored as
  BSON binary subtype 4 (the standard representation) and read back as a ``UUID``.
* Money is ``Decimal128`` (exact, exponent kept) and read back as ``Decimal``.
* Datetimes are stored in UTC with millisecond precision (what MongoDB keeps; a naive
  datetime is taken as UTC, as pymongo does) and read back timezone-aware UTC.
* An account's snapshot and window are stored as the data their ``to_data()`` gives, but
  for the snapshot's ``seq`` and the window's ``version``, which are top-level fields: the
  keys of their compare-and-set writes.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, overload

import mongoengine as me
from bson import ObjectId
from bson.binary import UUID_SUBTYPE, Binary, UuidRepresentation

from usercredits.dao import ID_FIELDS, Account
from usercredits.errors import InvalidInputError
from usercredits.grants import Snapshot
from usercredits.windows import Window

M = TypeVar("M")


_HEX_ID = re.compile(r"[0-9a-fA-F]{24}")


def object_id(value: Any) -> Any:
    """The stored form of an entity id (an ``ObjectId`` when it is one or its hex ``str``)."""
    if isinstance(value, str) and _HEX_ID.fullmatch(value):
        return ObjectId(value)
    return value


def encode_user(user_id: Any) -> Any:
    """The stored form of a user id: as given, but a ``UUID`` as standard BSON binary."""
    if isinstance(user_id, uuid.UUID):
        return Binary.from_uuid(user_id, UuidRepresentation.STANDARD)
    return user_id


def decode_user(value: Any) -> Any:
    """The user id a stored value stands for."""
    if isinstance(value, Binary) and value.subtype == UUID_SUBTYPE:
        return value.as_uuid(UuidRepresentation.STANDARD)
    return value


def store_datetime(value: datetime) -> datetime:
    """``value`` as MongoDB keeps it: UTC, whole milliseconds."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


@overload
def load_datetime(value: datetime) -> datetime: ...
@overload
def load_datetime(value: None) -> None: ...
def load_datetime(value: datetime | None) -> datetime | None:
    """A stored datetime as a timezone-aware UTC datetime (a naive one is UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EntityCodec(Generic[M]):
    """Converts one dataclass of the model to and from its mongoengine document.

    ``nested`` maps list fields of dataclasses (bundle items, history entries) to the codec
    of their items; ``unstored`` names model fields that are never persisted (read as their
    default)."""

    def __init__(
        self,
        model: type[M],
        document: type[Any],
        *,
        nested: Mapping[str, EntityCodec[Any]] | None = None,
        unstored: Collection[str] = (),
    ):
        self.model = model
        self.document = document
        self.model_fields = frozenset(f.name for f in dataclasses.fields(model))  # type: ignore[arg-type]
        self.fields = tuple(
            f.name
            for f in dataclasses.fields(model)  # type: ignore[arg-type]
            if f.name not in unstored
        )
        self.nested = dict(nested or {})
        self._datetimes = frozenset(
            name for name in self.fields if isinstance(document._fields[name], me.DateTimeField)
        )

    def check_fields(self, names: Collection[str]) -> None:
        """Raise ValueError naming the fields the model does not have."""
        unknown = sorted(set(names) - self.model_fields)
        if unknown:
            raise InvalidInputError(
                f"{self.model.__name__} has no field {', '.join(map(repr, unknown))}"
            )

    def _document_value(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if name in ID_FIELDS:
            return object_id(value)
        if name == "user_id":
            return encode_user(value)
        if name in self._datetimes:
            return store_datetime(value)
        codec = self.nested.get(name)
        if codec is not None:
            return [codec.to_document(item) for item in value]
        return value

    def to_document(self, entity: M) -> Any:
        """The mongoengine document holding ``entity``'s stored fields."""
        values = {name: self._document_value(name, getattr(entity, name)) for name in self.fields}
        return self.document(**{name: v for name, v in values.items() if v is not None})

    def encode(self, entity: M) -> dict[str, Any]:
        """The BSON-ready document of ``entity`` (validated; None fields left out; a new
        ``ObjectId`` when it has no id yet)."""
        document = self.to_document(entity)
        if "id" in document._fields and document.id is None:
            document.id = ObjectId()
        document.validate()
        encoded: dict[str, Any] = document.to_mongo().to_dict()
        return encoded

    def encode_value(self, name: str, value: Any) -> Any:
        """The stored form of one field's value (None stays None)."""
        prepared = self._document_value(name, value)
        if prepared is None:
            return None
        field = self.document._fields[name]
        field.validate(prepared)
        return _plain(field.to_mongo(prepared))

    def encode_changes(self, changes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """A ``$set`` / ``$unset`` update setting ``changes`` (None values are unset)."""
        self.check_fields(changes.keys())
        if "id" in changes:
            raise InvalidInputError("the id of an entity cannot be changed")
        to_set: dict[str, Any] = {}
        to_unset: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in self.fields:
                continue
            encoded = self.encode_value(name, value)
            if encoded is None:
                to_unset[name] = ""
            else:
                to_set[name] = encoded
        update: dict[str, dict[str, Any]] = {}
        if to_set:
            update["$set"] = to_set
        if to_unset:
            update["$unset"] = to_unset
        return update

    def query(self, filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The MongoDB filter matching ``filters`` (model field names to required values);
        None when nothing can match (a filter on a field that is never stored)."""
        self.check_fields((filters or {}).keys())
        query: dict[str, Any] = {}
        for name, value in (filters or {}).items():
            if name not in self.fields:
                if value is not None:
                    return None
                continue
            prepared = self._document_value(name, value)
            if prepared is not None and name not in ID_FIELDS and name != "user_id":
                prepared = _plain(self.document._fields[name].to_mongo(prepared))
            query["_id" if name == "id" else name] = prepared
        return query

    def decode(self, raw: Mapping[str, Any]) -> M:
        """The entity a stored document holds."""
        return self.from_document(self.document._from_son(raw))

    def from_document(self, document: Any) -> M:
        """The entity a mongoengine document holds."""
        values: dict[str, Any] = {}
        for name in self.fields:
            value = getattr(document, name)
            if value is None:
                continue
            if name == "user_id":
                value = decode_user(value)
            elif name in self._datetimes:
                value = load_datetime(value)
            elif name in self.nested:
                value = [self.nested[name].from_document(item) for item in value]
            elif isinstance(value, list):
                value = list(value)
            values[name] = value
        return self.model(**values)


class AccountCodec:
    """Converts an :class:`~usercredits.dao.Account` to and from its document."""

    def __init__(self, document: type[Any]):
        self.document = document

    def new(self, offer_group: str, now: datetime) -> dict[str, Any]:
        """The document of a new account opened at ``now``, but for its user id: a new id, an
        empty snapshot and a window starting at ``now``."""
        document = self.document(
            id=ObjectId(),
            offer_group=offer_group,
            created_at=store_datetime(now),
            **self.snapshot_fields(Snapshot()),
            **self.window_fields(Window(starts=now)),
        )
        document.validate()
        encoded: dict[str, Any] = _plain(document.to_mongo())
        return encoded

    @staticmethod
    def snapshot_fields(snapshot: Snapshot) -> dict[str, Any]:
        """The stored fields of ``snapshot``: ``seq`` and ``snapshot``."""
        data = snapshot.to_data()
        return {"seq": data.pop("seq"), "snapshot": data}

    @staticmethod
    def window_fields(window: Window) -> dict[str, Any]:
        """The stored fields of ``window``: ``window_version`` and ``window``."""
        data = window.to_data()
        return {"window_version": data.pop("version"), "window": data}

    @staticmethod
    def decode(raw: Mapping[str, Any]) -> Account:
        """The account a stored document holds."""
        return Account(
            user_id=decode_user(raw["user_id"]),
            offer_group=raw["offer_group"],
            created_at=load_datetime(raw["created_at"]),
            snapshot=Snapshot.from_data({**raw["snapshot"], "seq": raw["seq"]}),
            window=Window.from_data({**raw["window"], "version": raw["window_version"]}),
        )


def _plain(value: Any) -> Any:
    """``value`` with mongoengine's SON containers turned into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
