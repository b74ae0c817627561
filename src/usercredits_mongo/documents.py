"""The MongoDB schema: one mongoengine document per stored entity, and the indexes.

The documents declare field names and types and convert values to and from
BSON (``to_mongo`` / ``_from_son``). They are not bound to a connection: every
read and write goes through the pymongo collection of a factory's database, so
several factories (several databases) coexist in one process.

Collections, all sharded by ``user_id`` except the offers:

* ``usercredits_offers`` -- the catalogue;
* ``usercredits_orders`` -- orders with their history and the webhook events applied;
* ``usercredits_token_timetable`` -- the token ledger, one document per line;
* ``usercredits_user_credits`` -- one small document per user;
* ``usercredits_credit_groups`` -- one document per (user, offer group): the balance and the
  validity window, the unit of every atomic balance change;
* ``usercredits_subscriptions`` -- one document per subscription (an order or bundle item).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mongoengine as me
from pymongo import ASCENDING

from usercredits.dao import ONCE_PER_ORDER
from usercredits.models import Cycle, LedgerReason, OfferKind, Status

# Documents are never bound to a connection; extra stored fields are ignored on reading.
_META = {"auto_create_index": False, "strict": False}


class CombinedOfferDocument(me.EmbeddedDocument):  # type: ignore[misc]
    """An item of a bundle offer."""

    offer_id = me.DynamicField()
    offer_group = me.StringField()
    quantity = me.IntField()
    cycle = me.EnumField(Cycle)
    custom_cycle = me.IntField()


class OfferDocument(me.Document):  # type: ignore[misc]
    """An offer of the catalogue; ``key`` is unique when set."""

    meta = {**_META, "collection": "usercredits_offers"}

    id = me.DynamicField(primary_key=True)
    key = me.StringField()
    name = me.StringField()
    kind = me.EnumField(OfferKind)
    offer_group = me.StringField()
    cycle = me.EnumField(Cycle)
    custom_cycle = me.IntField()
    price = me.Decimal128Field()
    currency = me.StringField()
    token_count = me.IntField()
    quantity_limit = me.IntField()
    append_date = me.BooleanField()
    tags = me.ListField(me.StringField())
    unlocked_by = me.ListField(me.StringField())
    has_dependent_offers = me.BooleanField()
    overriding_key = me.StringField()
    weight = me.IntField()
    popular = me.IntField()
    combined_items = me.EmbeddedDocumentListField(CombinedOfferDocument)


class CombinedOrderDocument(me.EmbeddedDocument):  # type: ignore[misc]
    """An item of a bundle order, with the tokens and window it grants."""

    offer_id = me.DynamicField()
    offer_group = me.StringField()
    quantity = me.IntField()
    cycle = me.EnumField(Cycle)
    custom_cycle = me.IntField()
    token_count = me.IntField()
    starts = me.DateTimeField()
    expires = me.DateTimeField()


class OrderStatusDocument(me.EmbeddedDocument):  # type: ignore[misc]
    """One entry of an order's history."""

    date = me.DateTimeField()
    status = me.EnumField(Status)
    message = me.StringField()
    payload = me.StringField()


class OrderDocument(me.Document):  # type: ignore[misc]
    """An order; ``webhook_events`` holds the ids of the gateway events applied to it."""

    meta = {**_META, "collection": "usercredits_orders"}

    id = me.DynamicField(primary_key=True)
    user_id = me.DynamicField()
    offer_id = me.DynamicField()
    offer_group = me.StringField()
    status = me.EnumField(Status)
    quantity = me.IntField()
    total = me.Decimal128Field()
    currency = me.StringField()
    cycle = me.EnumField(Cycle)
    custom_cycle = me.IntField()
    token_count = me.IntField()
    starts = me.DateTimeField()
    expires = me.DateTimeField()
    combined_items = me.EmbeddedDocumentListField(CombinedOrderDocument)
    history = me.EmbeddedDocumentListField(OrderStatusDocument)
    payment_intent_id = me.StringField()
    parent_id = me.DynamicField()
    country = me.StringField()
    tax_rate = me.Decimal128Field()
    created_at = me.DateTimeField()
    updated_at = me.DateTimeField()
    webhook_events = me.ListField(me.StringField())


class TokenTimetableDocument(me.Document):  # type: ignore[misc]
    """One line of the token ledger."""

    meta = {**_META, "collection": "usercredits_token_timetable"}

    id = me.DynamicField(primary_key=True)
    user_id = me.DynamicField()
    offer_group = me.StringField()
    tokens = me.IntField()
    created_at = me.DateTimeField()
    order_id = me.DynamicField()
    reason = me.EnumField(LedgerReason)
    idempotency_key = me.StringField()
    expires = me.DateTimeField()


class UserCreditsDocument(me.Document):  # type: ignore[misc]
    """The record of a user who has credits: one per user."""

    meta = {**_META, "collection": "usercredits_user_credits"}

    id = me.DynamicField(primary_key=True)
    user_id = me.DynamicField()


class CreditGroupDocument(me.Document):  # type: ignore[misc]
    """A user's balance and validity window in one offer group.

    ``latest_end`` is the latest end of a dated window; ``never_ends`` is set once an order
    that never expires opened the group."""

    meta = {**_META, "collection": "usercredits_credit_groups"}

    id = me.DynamicField(primary_key=True)
    user_id = me.DynamicField()
    offer_group = me.StringField()
    tokens = me.LongField()
    starts = me.DateTimeField()
    latest_end = me.DateTimeField()
    never_ends = me.BooleanField()


class SubscriptionDocument(me.Document):  # type: ignore[misc]
    """One subscription of a user (an order, or an item of a bundle order)."""

    meta = {**_META, "collection": "usercredits_subscriptions"}

    id = me.DynamicField(primary_key=True)
    user_id = me.DynamicField()
    offer_id = me.DynamicField()
    order_id = me.DynamicField()
    name = me.StringField()
    offer_group = me.StringField()
    cycle = me.EnumField(Cycle)
    custom_cycle = me.IntField()
    quantity = me.IntField()
    status = me.EnumField(Status)
    starts = me.DateTimeField()
    expires = me.DateTimeField()
    tokens = me.IntField()
    total = me.Decimal128Field()
    currency = me.StringField()


def collection_name(document: type[Any]) -> str:
    """The collection a document class is stored in."""
    name: str = document._meta["collection"]
    return name


@dataclass(frozen=True)
class Index:
    """One index of a collection, created idempotently at start-up."""

    name: str
    keys: list[tuple[str, int]]
    unique: bool = False
    partial: dict[str, Any] | None = None

    def create_options(self) -> dict[str, Any]:
        """The keyword arguments of ``Collection.create_index`` for this index."""
        options: dict[str, Any] = {"name": self.name}
        if self.unique:
            options["unique"] = True
        if self.partial is not None:
            options["partialFilterExpression"] = self.partial
        return options


def _asc(*names: str) -> list[tuple[str, int]]:
    return [(name, ASCENDING) for name in names]


def _once_per_order(reason: LedgerReason) -> Index:
    # One partial index per reason (equality filters only) works on every MongoDB version; the
    # user id leads the key because unique indexes of a sharded collection must start with it.
    return Index(
        f"ledger_{reason.value}_once_per_order",
        _asc("user_id", "order_id"),
        unique=True,
        partial={"reason": reason.value, "order_id": {"$exists": True}},
    )


INDEXES: dict[type[Any], list[Index]] = {
    OfferDocument: [
        Index("offer_key_unique", _asc("key"), unique=True, partial={"key": {"$type": "string"}}),
        Index("offer_tags", _asc("tags")),
        Index("offer_unlocked_by", _asc("unlocked_by")),
    ],
    OrderDocument: [
        Index("order_user_status_expires", _asc("user_id", "status", "expires")),
        Index("order_user_group_status", _asc("user_id", "offer_group", "status")),
        Index("order_user_offer_status", _asc("user_id", "offer_id", "status")),
        Index(
            "order_payment_intent",
            _asc("payment_intent_id"),
            partial={"payment_intent_id": {"$type": "string"}},
        ),
        Index("order_parent", _asc("parent_id"), partial={"parent_id": {"$exists": True}}),
    ],
    TokenTimetableDocument: [
        Index("ledger_user_group_recorded", _asc("user_id", "offer_group", "_id")),
        Index(
            "ledger_user_idempotency_key_unique",
            _asc("user_id", "idempotency_key"),
            unique=True,
            partial={"idempotency_key": {"$type": "string"}},
        ),
        *(_once_per_order(reason) for reason in ONCE_PER_ORDER),
    ],
    UserCreditsDocument: [
        Index("user_credits_user_unique", _asc("user_id"), unique=True),
    ],
    CreditGroupDocument: [
        Index("credit_group_user_group_unique", _asc("user_id", "offer_group"), unique=True),
    ],
    SubscriptionDocument: [
        Index("subscription_user_order", _asc("user_id", "order_id")),
        Index("subscription_user_status_expires", _asc("user_id", "status", "expires")),
    ],
}
"""Every index, per document class: one for each query the services make."""
