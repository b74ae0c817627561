"""The MongoDB DAOs: each method is one atomic server-side operation.

A balance changes by inserting an account's next ledger line under the unique index on
(user, offer group, seq); an account's snapshot and window change by ``update_one`` with
the expected ``seq`` or version in the filter; an order's state changes by
``find_one_and_update`` with the expected statuses in the filter. Uniqueness is enforced
by unique indexes, and a duplicate-key race is turned into the outcome the interface
promises. Driver errors leave as :class:`~usercredits.errors.StorageError` (duplicate keys
as :class:`~usercredits.errors.DuplicateEntityError`) with the driver's error as
``__cause__``.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import itertools
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import bson
import mongoengine as me
from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collection import Collection as MongoCollection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from usercredits.dao import (
    Account,
    CustomerDao,
    Filters,
    OfferDao,
    OrderDao,
    TokenTimetableDao,
    UserCreditsDao,
    WebhookEventDao,
)
from usercredits.errors import (
    DuplicateEntityError,
    EntityNotFoundError,
    InvalidInputError,
    StorageError,
)
from usercredits.grants import Snapshot
from usercredits.models import (
    LIVE,
    CombinedOffer,
    CombinedOrder,
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
from usercredits_mongo.codec import (
    AccountCodec,
    EntityCodec,
    decode_user,
    encode_user,
    object_id,
    store_datetime,
)
from usercredits_mongo.documents import (
    INDEXES,
    AccountDocument,
    CombinedOfferDocument,
    CombinedOrderDocument,
    CustomerDocument,
    OfferDocument,
    OrderDocument,
    OrderStatusDocument,
    TokenTimetableDocument,
    UserCreditsDocument,
    WebhookEventDocument,
    collection_name,
)

M = TypeVar("M")
P = ParamSpec("P")
R = TypeVar("R")

Raw = dict[str, Any]

_UPDATE_ATTEMPTS = 100

OFFER_CODEC = EntityCodec(
    Offer,
    OfferDocument,
    nested={"combined_items": EntityCodec(CombinedOffer, CombinedOfferDocument)},
)
ORDER_CODEC = EntityCodec(
    Order,
    OrderDocument,
    nested={
        "combined_items": EntityCodec(CombinedOrder, CombinedOrderDocument),
        "history": EntityCodec(OrderStatus, OrderStatusDocument),
    },
    unstored={"payment_intent_secret"},
)
LEDGER_CODEC = EntityCodec(TokenTimetable, TokenTimetableDocument)
CUSTOMER_CODEC = EntityCodec(Customer, CustomerDocument)
EVENT_CODEC = EntityCodec(WebhookEventRecord, WebhookEventDocument)
ACCOUNT_CODEC = AccountCodec(AccountDocument)


class MongoStore:
    """The collections of one database, the lock mongomock needs, and error translation.

    With a ``lock``, every operation runs under it: mongomock is not thread-safe, a real
    MongoDB needs no lock."""

    def __init__(self, database: Database[Raw], *, lock: AbstractContextManager[Any] | None):
        self.database = database
        self._lock: AbstractContextManager[Any] = nullcontext() if lock is None else lock
        self.offers = self.collection(OfferDocument)
        self.orders = self.collection(OrderDocument)
        self.ledger = self.collection(TokenTimetableDocument)
        self.users = self.collection(UserCreditsDocument)
        self.accounts = self.collection(AccountDocument)
        self.customers = self.collection(CustomerDocument)
        self.events = self.collection(WebhookEventDocument)

    def collection(self, document: type[Any]) -> MongoCollection[Raw]:
        """The collection of a document class in this database."""
        return self.database[collection_name(document)]

    def create_indexes(self) -> None:
        """Create every index the DAOs rely on; indexes that exist already are kept, and an
        index of the same name with other keys or uniqueness raises StorageError."""
        with self.guard("create the indexes"):
            for document, indexes in INDEXES.items():
                collection = self.collection(document)
                existing = collection.index_information()
                for index in indexes:
                    found = existing.get(index.name)
                    if found is None:
                        collection.create_index(index.keys, **index.create_options())
                    elif [tuple(k) for k in found["key"]] != [tuple(k) for k in index.keys] or (
                        bool(found.get("unique")) != index.unique
                    ):
                        raise StorageError(
                            f"MongoDB failed to create the indexes: index {index.name!r} of "
                            f"{collection.name} exists with other keys or options ({found})"
                        )

    @contextmanager
    def guard(self, operation: str) -> Iterator[None]:
        """Run one DAO operation: under the lock if any, driver errors translated."""
        with self._lock:
            try:
                yield
            except DuplicateKeyError as e:
                raise DuplicateEntityError(f"{operation} would break a uniqueness rule: {e}") from e
            except PyMongoError as e:
                raise StorageError(f"MongoDB failed to {operation}: {e}") from e
            except (BSONError, OverflowError, me.ValidationError, decimal.DecimalException) as e:
                raise StorageError(f"MongoDB cannot store the data of {operation}: {e}") from e


def _encodable(update: Raw) -> Raw:
    """``update``, checked to be encodable: a driver encodes an update before sending it, so a
    value BSON cannot hold (an int beyond 64 bits) fails before anything is written, but
    mongomock applies part of the update before it fails."""
    bson.encode(update)
    return update


def _guarded(
    method: Callable[Concatenate[Any, P], R],
) -> Callable[Concatenate[Any, P], R]:
    """Run a DAO method through its store's guard."""

    @functools.wraps(method)
    def guarded(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._store.guard(f"{type(self).__name__}.{method.__name__}"):
            return method(self, *args, **kwargs)

    return guarded


class _MongoReader(Generic[M]):
    """Create and read one kind of entity in one collection, in creation (``_id``) order."""

    _codec: EntityCodec[M]

    def __init__(self, store: MongoStore, collection: MongoCollection[Raw]):
        self._store = store
        self._collection = collection

    def _decode(self, raw: Raw | None) -> M | None:
        return None if raw is None else self._codec.decode(raw)

    def _select(self, query: Raw | None, limit: int = 0) -> list[M]:
        if query is None:
            return []
        cursor = self._collection.find(query, sort=[("_id", ASCENDING)])
        return [self._codec.decode(raw) for raw in cursor.limit(limit)]

    def _duplicate(self, entity: M, error: DuplicateKeyError) -> DuplicateEntityError:
        return DuplicateEntityError(f"{type(entity).__name__} clashes with a stored one: {error}")

    def _insert(self, raw: Raw, entity: M) -> M:
        try:
            self._collection.insert_one(raw)
        except DuplicateKeyError as e:
            raise self._duplicate(entity, e) from e
        return self._codec.decode(raw)

    @_guarded
    def create(self, entity: M) -> M:
        return self._insert(self._codec.encode(entity), entity)

    @_guarded
    def find_by_id(self, entity_id: EntityId) -> M | None:
        if entity_id is None:
            return None
        return self._decode(self._collection.find_one({"_id": object_id(entity_id)}))

    @_guarded
    def find(self, filters: Filters | None = None) -> list[M]:
        return self._select(self._codec.query(filters))

    @_guarded
    def find_one(self, filters: Filters | None = None) -> M | None:
        found = self._select(self._codec.query(filters), limit=1)
        return found[0] if found else None

    @_guarded
    def count(self, filters: Filters | None = None) -> int:
        query = self._codec.query(filters)
        return 0 if query is None else self._collection.count_documents(query)


class MongoOfferDao(_MongoReader[Offer], OfferDao):
    """Offers in ``usercredits_offers``; a unique index keeps catalogue keys unique.

    ``update_by_id`` validates the changed offer, then writes the changes in one update
    conditional on the revision it validated (a concurrent update makes it validate again)."""

    _codec = OFFER_CODEC

    def __init__(self, store: MongoStore):
        super().__init__(store, store.offers)

    def _duplicate(self, entity: Offer, error: DuplicateKeyError) -> DuplicateEntityError:
        return DuplicateEntityError(
            f"an offer with key {entity.key!r} (or id {entity.id!r}) already exists"
        )

    @_guarded
    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> Offer | None:
        self._codec.check_fields(changes.keys())
        if "id" in changes:
            raise InvalidInputError("the id of an offer cannot be changed")
        if entity_id is None:
            return None
        oid = object_id(entity_id)
        for _ in range(_UPDATE_ATTEMPTS):
            raw = self._collection.find_one({"_id": oid})
            if raw is None:
                return None
            # Rebuilding the offer validates the changed fields (InvalidOfferError) and
            # normalises them as a new offer would be, before anything is written.
            updated = dataclasses.replace(self._codec.decode(raw), **changes)
            if not changes:
                return updated
            update: Raw = self._codec.encode_changes({n: getattr(updated, n) for n in changes})
            update["$inc"] = {"revision": 1}
            try:
                stored = self._collection.find_one_and_update(
                    {"_id": oid, "revision": raw.get("revision")},
                    _encodable(update),
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError as e:
                raise DuplicateEntityError(
                    f"an offer with key {updated.key!r} already exists"
                ) from e
            if stored is not None:
                return self._codec.decode(stored)
        raise StorageError(
            f"could not update offer {entity_id!r}: {_UPDATE_ATTEMPTS} attempts lost to "
            "concurrent updates"
        )

    @_guarded
    def delete_by_id(self, entity_id: EntityId) -> bool:
        if entity_id is None:
            return False
        return self._collection.delete_one({"_id": object_id(entity_id)}).deleted_count == 1

    @_guarded
    def find_by_key(self, key: str) -> Offer | None:
        if not isinstance(key, str):
            return None
        return self._decode(self._collection.find_one({"key": key}))

    @_guarded
    def find_regular(self, env_tags: Collection[str] | None = None) -> list[Offer]:
        query: Raw = {"unlocked_by.0": {"$exists": False}}
        tags = sorted(set(env_tags or ()))
        if tags:
            query["tags"] = {"$all": tags}
        return self._select(query)

    @_guarded
    def find_unlocked_by(self, offer_groups: Collection[str]) -> list[Offer]:
        groups = sorted(set(offer_groups))
        if not groups:
            return []
        return self._select({"unlocked_by": {"$in": groups}})


_LIVE = sorted(status.value for status in LIVE)


class MongoOrderDao(_MongoReader[Order], OrderDao):
    """Orders in ``usercredits_orders``; state changes are conditional ``find_one_and_update``
    calls. Partial unique indexes keep one child order per bundle item and one paid exclusive
    order per user and offer. The payment intent secret is never stored."""

    _codec = ORDER_CODEC

    def __init__(self, store: MongoStore):
        super().__init__(store, store.orders)

    def _duplicate(self, entity: Order, error: DuplicateKeyError) -> DuplicateEntityError:
        # A real server names the index broken; on mongomock, the order tells.
        child = "order_child_unique" in str(error)
        exclusive = "order_user_offer_exclusive_paid_unique" in str(error)
        if not (child or exclusive):
            child = entity.parent_id is not None
            exclusive = entity.exclusive and entity.status is Status.PAID
        if child:
            return DuplicateEntityError(
                f"item {entity.item_index!r} of bundle order {entity.parent_id!r} has a child "
                "order already"
            )
        if exclusive:
            return DuplicateEntityError(
                f"user {entity.user_id!r} holds a paid exclusive order of offer "
                f"{entity.offer_id!r} already"
            )
        return DuplicateEntityError(f"order {entity.id!r} exists already")

    @_guarded
    def transition(
        self,
        order_id: EntityId,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        entry: OrderStatus | None = None,
        *,
        expected: Mapping[str, Any] | None = None,
    ) -> Order | None:
        settable = {
            k: v for k, v in changes.items() if k not in ("payment_intent_secret", "history")
        }
        self._codec.check_fields(settable.keys())
        if "id" in settable:
            raise InvalidInputError("the id of an order cannot be changed")
        # An order holding only the changes checks and normalises them as the model does.
        checked = Order(**settable)
        update: Raw = dict(self._codec.encode_changes({k: getattr(checked, k) for k in settable}))
        if entry is not None:
            update["$push"] = {"history": self._codec.encode_value("history", [entry])[0]}
        if order_id is None:
            raise EntityNotFoundError(f"no order with id {order_id!r}")
        oid = object_id(order_id)
        condition = {"_id": oid, "status": {"$in": [Status(s).value for s in from_statuses]}}
        for name, value in (expected or {}).items():
            condition[name] = self._codec.encode_value(name, value)
        if update:
            try:
                raw = self._collection.find_one_and_update(
                    condition, _encodable(update), return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError as e:
                raise DuplicateEntityError(
                    f"order {order_id!r} cannot be changed so: its user holds a paid exclusive "
                    "order of its offer already"
                ) from e
        else:
            raw = self._collection.find_one(condition)
        if raw is not None:
            return self._codec.decode(raw)
        if self._collection.find_one({"_id": oid}, {"_id": 1}) is None:
            raise EntityNotFoundError(f"no order with id {order_id!r}")
        return None

    @_guarded
    def find_by_payment_intent_id(self, payment_intent_id: str) -> Order | None:
        if not isinstance(payment_intent_id, str):
            return None
        found = self._select({"payment_intent_id": payment_intent_id}, limit=1)
        return found[0] if found else None

    @_guarded
    def find_child(self, parent_id: EntityId, item_index: int) -> Order | None:
        if parent_id is None:
            return None
        return self._decode(
            self._collection.find_one({"parent_id": object_id(parent_id), "item_index": item_index})
        )

    @_guarded
    def find_due(self, user_id: UserId, now: datetime) -> list[Order]:
        cursor = self._collection.find(
            {
                "user_id": encode_user(user_id),
                "status": {"$in": _LIVE},
                "expires": {"$lte": store_datetime(now)},
            },
            sort=[("expires", ASCENDING), ("_id", ASCENDING)],
        )
        return [self._codec.decode(raw) for raw in cursor]

    @_guarded
    def find_live(self, user_id: UserId, offer_group: str | None = None) -> list[Order]:
        query: Raw = {"user_id": encode_user(user_id), "status": {"$in": _LIVE}}
        if offer_group is not None:
            query["offer_group"] = offer_group
        return self._select(query)

    @_guarded
    def find_in_progress(self, user_id: UserId) -> list[Order]:
        return self._select({"user_id": encode_user(user_id), "in_progress": True})


class MongoTokenTimetableDao(_MongoReader[TokenTimetable], TokenTimetableDao):
    """The ledger in ``usercredits_token_timetable``, one document per line, append-only.

    Unique indexes keep one line per (user, offer group, ``seq``), per (user, idempotency
    key) and per (user, operation key): ``create`` is a single ``insert_one``, so of racing
    creates of one number exactly one is stored. Lines are listed in recording (``_id``)
    order, the lines of an account in ``seq`` order."""

    _codec = LEDGER_CODEC

    def __init__(self, store: MongoStore):
        super().__init__(store, store.ledger)

    def _duplicate(self, entity: TokenTimetable, error: DuplicateKeyError) -> DuplicateEntityError:
        # A real server names the index broken; on mongomock, the line tells when it can.
        index = str(error)
        user = entity.user_id
        if "ledger_user_idempotency_key_unique" in index:
            clash = f"the idempotency key {entity.idempotency_key!r} of user {user!r} is used"
        elif "ledger_user_operation_key_unique" in index:
            clash = f"the operation key {entity.operation_key!r} of user {user!r} is used"
        elif "ledger_account_seq_unique" in index or (
            entity.idempotency_key is None and entity.operation_key is None and entity.id is None
        ):
            clash = f"line {entity.seq} of account {entity.offer_group!r} of user {user!r} exists"
        else:
            clash = (
                f"line {entity.seq} of account {entity.offer_group!r} of user {user!r}, its "
                f"idempotency key {entity.idempotency_key!r}, its operation key "
                f"{entity.operation_key!r} or its id {entity.id!r} is used"
            )
        return DuplicateEntityError(f"{clash} already")

    @_guarded
    def create(self, entity: TokenTimetable) -> TokenTimetable:
        if entity.seq < 1:
            # Line 0 is the empty account every account starts from.
            raise DuplicateEntityError(
                f"line {entity.seq} of account {entity.offer_group!r} of user "
                f"{entity.user_id!r} exists already"
            )
        return self._insert(self._codec.encode(entity), entity)

    @_guarded
    def lines_after(self, user_id: UserId, offer_group: str, seq: int) -> list[TokenTimetable]:
        cursor = self._collection.find(
            {"user_id": encode_user(user_id), "offer_group": offer_group, "seq": {"$gt": seq}},
            sort=[("seq", ASCENDING)],
        )
        return [self._codec.decode(raw) for raw in cursor]

    @_guarded
    def find_by_key(
        self,
        user_id: UserId,
        *,
        idempotency_key: str | None = None,
        operation_key: str | None = None,
    ) -> TokenTimetable | None:
        user = encode_user(user_id)
        wanted = [
            (name, key)
            for name, key in (
                ("idempotency_key", idempotency_key),
                ("operation_key", operation_key),
            )
            if key is not None
        ]
        if not wanted:
            return None
        found = list(self._collection.find({"$or": [{"user_id": user, n: k} for n, k in wanted]}))
        for name, key in wanted:
            for raw in found:
                if raw.get(name) == key:
                    return self._codec.decode(raw)
        return None

    @_guarded
    def history(
        self,
        user_id: UserId,
        offer_group: str | None,
        limit: int,
        before: EntityId = None,
    ) -> list[TokenTimetable]:
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, got {limit!r}")
        query: Raw = {"user_id": encode_user(user_id)}
        if offer_group is not None:
            query["offer_group"] = offer_group
        if before is not None:
            cursor_id = object_id(before)
            if self._collection.find_one({"_id": cursor_id, "user_id": query["user_id"]}) is None:
                return []
            query["_id"] = {"$lt": cursor_id}
        cursor = self._collection.find(query, sort=[("_id", DESCENDING)]).limit(limit)
        return [self._codec.decode(raw) for raw in cursor]


class MongoUserCreditsDao(UserCreditsDao):
    """Users in ``usercredits_user_credits`` (one record per user, unique) and their accounts
    in ``usercredits_accounts`` (one per user and offer group, unique). A snapshot is stored
    by ``update_one`` filtered on a lower ``seq``, a window by ``update_one`` filtered on its
    version."""

    def __init__(self, store: MongoStore):
        self._store = store
        self._users = store.users
        self._accounts = store.accounts

    def _register(self, user: Any) -> Any:
        """The id of the record of the (encoded) user, created when absent."""
        try:
            raw = self._users.find_one_and_update(
                {"user_id": user},
                _encodable({"$setOnInsert": {"user_id": user}}),
                {"_id": 1},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # a racing call created it: as wanted
            raw = self._users.find_one({"user_id": user}, {"_id": 1})
        if raw is None:
            raise StorageError(f"the record of user {decode_user(user)!r} vanished on creation")
        return raw["_id"]

    @_guarded
    def register(self, user_id: UserId) -> EntityId:
        return self._register(encode_user(user_id))

    @_guarded
    def find_record_id(self, user_id: UserId) -> EntityId | None:
        raw = self._users.find_one({"user_id": encode_user(user_id)}, {"_id": 1})
        return None if raw is None else raw["_id"]

    def iter_user_ids(self, batch_size: int = 1000) -> Iterator[UserId]:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size!r}")
        operation = f"{type(self).__name__}.iter_user_ids"
        with self._store.guard(operation):
            cursor = self._users.find(
                {}, {"user_id": 1}, sort=[("_id", ASCENDING)], batch_size=batch_size
            )
        try:
            while True:
                with self._store.guard(operation):
                    batch = [raw.get("user_id") for raw in itertools.islice(cursor, batch_size)]
                if not batch:
                    return
                yield from (decode_user(user) for user in batch)
        finally:
            cursor.close()

    @staticmethod
    def _key(user_id: UserId, offer_group: str) -> Raw:
        return {"user_id": encode_user(user_id), "offer_group": offer_group}

    @_guarded
    def open_account(self, user_id: UserId, offer_group: str, now: datetime) -> Account:
        key = self._key(user_id, offer_group)
        fields = ACCOUNT_CODEC.new(offer_group, now)
        self._register(key["user_id"])
        try:
            raw = self._accounts.find_one_and_update(
                key,
                _encodable({"$setOnInsert": fields}),
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # a racing call opened it: as wanted
            raw = self._accounts.find_one(key)
        if raw is None:
            raise StorageError(
                f"the account {offer_group!r} of user {user_id!r} vanished on creation"
            )
        return ACCOUNT_CODEC.decode(raw)

    @_guarded
    def get_account(self, user_id: UserId, offer_group: str) -> Account | None:
        raw = self._accounts.find_one(self._key(user_id, offer_group))
        return None if raw is None else ACCOUNT_CODEC.decode(raw)

    @_guarded
    def accounts(self, user_id: UserId) -> list[Account]:
        cursor = self._accounts.find({"user_id": encode_user(user_id)}, sort=[("_id", ASCENDING)])
        return [ACCOUNT_CODEC.decode(raw) for raw in cursor]

    @_guarded
    def save_snapshot(self, user_id: UserId, offer_group: str, snapshot: Snapshot) -> bool:
        fields = ACCOUNT_CODEC.snapshot_fields(snapshot)
        result = self._accounts.update_one(
            {**self._key(user_id, offer_group), "seq": {"$lt": fields["seq"]}},
            _encodable({"$set": fields}),
        )
        return result.matched_count == 1

    @_guarded
    def save_window(
        self, user_id: UserId, offer_group: str, expected_version: int, window: Window
    ) -> bool:
        result = self._accounts.update_one(
            {**self._key(user_id, offer_group), "window_version": expected_version},
            _encodable({"$set": ACCOUNT_CODEC.window_fields(window)}),
        )
        return result.matched_count == 1


class MongoCustomerDao(_MongoReader[Customer], CustomerDao):
    """Customers in ``usercredits_customers``; unique indexes keep one per (processor, user)
    and per (processor, e-mail)."""

    _codec = CUSTOMER_CODEC

    def __init__(self, store: MongoStore):
        super().__init__(store, store.customers)

    def _duplicate(self, entity: Customer, error: DuplicateKeyError) -> DuplicateEntityError:
        return DuplicateEntityError(
            f"a {entity.processor} customer exists already for user {entity.user_id!r} or "
            f"e-mail {entity.email!r}"
        )

    @_guarded
    def find_by_user(self, processor: str, user_id: UserId) -> Customer | None:
        return self._decode(
            self._collection.find_one({"processor": processor, "user_id": encode_user(user_id)})
        )

    @_guarded
    def find_by_email(self, processor: str, email: str) -> Customer | None:
        return self._decode(self._collection.find_one({"processor": processor, "email": email}))


class MongoWebhookEventDao(_MongoReader[WebhookEventRecord], WebhookEventDao):
    """Received gateway events in ``usercredits_webhook_events``, by the gateway's event id
    (the ``_id``, so a second delivery cannot be stored twice)."""

    _codec = EVENT_CODEC

    def __init__(self, store: MongoStore):
        super().__init__(store, store.events)

    def _duplicate(
        self, entity: WebhookEventRecord, error: DuplicateKeyError
    ) -> DuplicateEntityError:
        return DuplicateEntityError(f"gateway event {entity.id!r} is stored already")

    @_guarded
    def finish(
        self, event_id: str, *, handled: bool, message: str, order_id: EntityId = None
    ) -> WebhookEventRecord | None:
        update = self._codec.encode_changes(
            {"handled": handled, "message": message, "order_id": order_id}
        )
        return self._decode(
            self._collection.find_one_and_update(
                {"_id": event_id}, update, return_document=ReturnDocument.AFTER
            )
        )

    @_guarded
    def latest(self, limit: int, before: str | None = None) -> list[WebhookEventRecord]:
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, got {limit!r}")
        query: Raw = {}
        if before is not None:
            cursor_event = self._collection.find_one({"_id": before}, {"received_at": 1})
            if cursor_event is None:
                return []
            at = cursor_event.get("received_at")
            query = {
                "$or": [{"received_at": {"$lt": at}}, {"received_at": at, "_id": {"$lt": before}}]
            }
        cursor = self._collection.find(
            query, sort=[("received_at", DESCENDING), ("_id", DESCENDING)]
        ).limit(limit)
        return [self._codec.decode(raw) for raw in cursor]
