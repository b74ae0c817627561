"""The MongoDB schema: one mongoengine document per stored entity, and the indexes.

The documents declare field names and types and convert values to and from
BSON (``to_mongo`` / ``_from_son``). They are not bound to a connection: every
read and write goes through the pymongo collection of a factory's database, so
several factories (several databases) coexist in one process.

Collections:

* ``usercredits_offers`` -- the catalogue;
* ``usercredits_orders`` -- orders with their bundle items and history;
* ``usercredits_token_timetable`` -- the token ledger, one document per line, numbered per
  account: inserting an account's next line is the commit point of every balance change;
* ``usercredits_user_credits`` -- one small record per user;
* ``usercredits_accounts`` -- one document per (user, offer group): the snapshot folded from
  the account's lines and the validity window, each changed by compare-and-set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mongoengine as me
from pymongo import ASCENDING

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
    """An offer of the catalogue; ``key`` is unique when set. ``revision`` counts the updates:
    an update validated against one revision is written only onto that revision."""

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
    priority = me.IntField()
    revision = me.IntField()


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
    offer_name = me.StringField()
    append_date = me.BooleanField()
    priority = me.IntField()


class OrderStatusDocument(me.EmbeddedDocument):  # type: ignore[misc]
    """One entry of an order's history."""

    date = me.DateTimeField()
    status = me.EnumField(Status)
    message = me.StringField()
    payload = me.StringField()


class OrderDocument(me.Document):  # type: ignore[misc]
    """An order; a child order of a bundle is unique per (``parent_id``, ``item_index``), and a
    paid ``exclusive`` order per (``user_id``, ``offer_id``)."""

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
    offer_name = me.StringField()
    append_date = me.BooleanField()
    priority = me.IntField()
    item_index = me.IntField()
    exclusive = me.BooleanField()
    refunded_amount = me.Decimal128Field()
    in_progress = me.BooleanField()


class TokenTimetableDocument(me.Document):  # type: ignore[misc]
    """One line of the token ledger: line ``seq`` of the account (``user_id``,
    ``offer_group``)."""

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
    seq = me.IntField()
    grant_id = me.StringField()
    priority = me.IntField()
    operation_key = me.StringField()
    note = me.StringField()
    hold_id = me.StringField()
    held = me.IntField()


class UserCreditsDocument(me.Document):  # type: ignore[misc]
    """The record of a user who has credits: one per user."""

    meta = {**_META, "collection": "usercredits_user_credits"}

    id = me.DynamicField(primary_key=True)
    user_id = me.DynamicField()


class AccountDocument(me.Document):  # type: ignore[misc]
    """A user's account in one offer group.

    ``seq`` is the number of the last line folded into ``snapshot`` and ``window_version`` the
    version of ``window``: the keys of their compare-and-set writes. ``snapshot`` and
    ``window`` hold the rest of the values' ``to_data()``."""

    meta = {**_META, "collection": "usercredits_accounts"}

    id = me.DynamicField(primary_key=True)
    user_id = me.DynamicField()
    offer_group = me.StringField(required=True)
    created_at = me.DateTimeField(required=True)
    seq = me.IntField(required=True)
    snapshot = me.DictField()
    window_version = me.IntField(required=True)
    window = me.DictField()


class CustomerDocument(me.Document):  # type: ignore[misc]
    """A user's customer at a payment processor: one per (processor, user) and per
    (processor, e-mail)."""

    meta = {**_META, "collection": "usercredits_customers"}

    id = me.DynamicField(primary_key=True)
    user_id = me.DynamicField()
    email = me.StringField()
    processor = me.StringField()
    customer_id = me.StringField()
    created_at = me.DateTimeField()


class WebhookEventDocument(me.Document):  # type: ignore[misc]
    """A verified gateway event as received; its ``_id`` is the gateway's event id."""

    meta = {**_META, "collection": "usercredits_webhook_events"}

    id = me.StringField(primary_key=True)
    type = me.StringField()
    created = me.DateTimeField()
    received_at = me.DateTimeField()
    payload = me.StringField()
    order_id = me.DynamicField()
    handled = me.BooleanField()
    message = me.StringField()


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


# Partial filters use only equality, $exists and $type, which every MongoDB version accepts.
INDEXES: dict[type[Any], list[Index]] = {
    OfferDocument: [
        Index("offer_key_unique", _asc("key"), unique=True, partial={"key": {"$type": "string"}}),
        Index("offer_tags", _asc("tags")),
        Index("offer_unlocked_by", _asc("unlocked_by")),
    ],
    OrderDocument: [
        Index(
            "order_child_unique",
            _asc("parent_id", "item_index"),
            unique=True,
            partial={"parent_id": {"$exists": True}},
        ),
        Index(
            "order_user_offer_exclusive_paid_unique",
            _asc("user_id", "offer_id"),
            unique=True,
            partial={"exclusive": True, "status": Status.PAID.value},
        ),
        Index(
            "order_payment_intent",
            _asc("payment_intent_id"),
            partial={"payment_intent_id": {"$type": "string"}},
        ),
        Index("order_user_status_expires", _asc("user_id", "status", "expires")),
        Index("order_user_status_group", _asc("user_id", "status", "offer_group")),
        Index("order_user_offer_status", _asc("user_id", "offer_id", "status")),
        Index("order_user_in_progress", _asc("user_id", "_id"), partial={"in_progress": True}),
    ],
    TokenTimetableDocument: [
        Index("ledger_account_seq_unique", _asc("user_id", "offer_group", "seq"), unique=True),
        Index(
            "ledger_user_idempotency_key_unique",
            _asc("user_id", "idempotency_key"),
            unique=True,
            partial={"idempotency_key": {"$type": "string"}},
        ),
        Index(
            "ledger_user_operation_key_unique",
            _asc("user_id", "operation_key"),
            unique=True,
            partial={"operation_key": {"$type": "string"}},
        ),
        Index("ledger_user_recorded", _asc("user_id", "_id")),
        Index("ledger_user_group_recorded", _asc("user_id", "offer_group", "_id")),
    ],
    UserCreditsDocument: [
        Index("user_credits_user_unique", _asc("user_id"), unique=True),
    ],
    AccountDocument: [
        Index("account_user_group_unique", _asc("user_id", "offer_group"), unique=True),
    ],
    CustomerDocument: [
        Index("customer_processor_user_unique", _asc("processor", "user_id"), unique=True),
        Index("customer_processor_email_unique", _asc("processor", "email"), unique=True),
    ],
    WebhookEventDocument: [
        Index("webhook_event_received", _asc("received_at", "_id")),
    ],
}
"""Every index, per document class: one for each query the DAOs make."""
