"""The MongoDB DAOs: each state change is one atomic server-side operation.

Balances and windows live in one small document per (user, offer group) and change only
through ``$inc``, ``$min``/``$max`` and conditional updates; order states change through
``find_one_and_update`` with the expected status in the filter; uniqueness is enforced by
unique indexes, and a duplicate-key race is turned into the outcome the interface promises.
Driver errors leave as :class:`~usercredits.errors.StorageError` (duplicate keys as
:class:`~usercredits.errors.DuplicateEntityError`) with the driver's error as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import itertools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import mongoengine as me
from bson import Int64, ObjectId
from bson.errors import BSONError
from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection as MongoCollection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from usercredits.dao import (
    ONCE_PER_ORDER,
    Filters,
    OfferDao,
    OrderDao,
    TokenTimetableDao,
    UserCreditsDao,
)
from usercredits.errors import DuplicateEntityError, EntityNotFoundError, StorageError
from usercredits.models import (
    ActivatedOffer,
    CombinedOffer,
    CombinedOrder,
    EntityId,
    Offer,
    Order,
    OrderStatus,
    Status,
    Subscription,
    TokenTimetable,
    UserCredits,
    UserId,
)
from usercredits_mongo.codec import (
    EntityCodec,
    decode_user,
    encode_user,
    load_datetime,
    object_id,
    store_datetime,
)
from usercredits_mongo.documents import (
    INDEXES,
    CombinedOfferDocument,
    CombinedOrderDocument,
    CreditGroupDocument,
    OfferDocument,
    OrderDocument,
    OrderStatusDocument,
    SubscriptionDocument,
    TokenTimetableDocument,
    UserCreditsDocument,
    collection_name,
)

M = TypeVar("M")
P = ParamSpec("P")
R = TypeVar("R")

Raw = dict[str, Any]

_CHAIN_ATTEMPTS = 64
_INSERT_ATTEMPTS = 3

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
SUBSCRIPTION_CODEC = EntityCodec(Subscription, SubscriptionDocument)


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
        self.groups = self.collection(CreditGroupDocument)
        self.subscriptions = self.collection(SubscriptionDocument)

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
            except (BSONError, me.ValidationError, decimal.DecimalException) as e:
                raise StorageError(f"MongoDB cannot store the data of {operation}: {e}") from e


def _guarded(
    method: Callable[Concatenate[Any, P], R],
) -> Callable[Concatenate[Any, P], R]:
    """Run a DAO method through its store's guard."""

    @functools.wraps(method)
    def guarded(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._store.guard(f"{type(self).__name__}.{method.__name__}"):
            return method(self, *args, **kwargs)

    return guarded


def _status_values(statuses: Collection[Status]) -> list[str]:
    return [Status(status).value for status in statuses]


class _MongoCrudDao(Generic[M]):
    """Create, read, update and delete one kind of entity in one collection."""

    _codec: EntityCodec[M]
    _projection: dict[str, int] | None = None

    def __init__(self, store: MongoStore, collection: MongoCollection[Raw]):
        self._store = store
        self._collection = collection

    def _decode(self, raw: Raw | None) -> M | None:
        return None if raw is None else self._codec.decode(raw)

    def _select(self, query: Raw | None, limit: int = 0) -> list[M]:
        if query is None:
            return []
        cursor = self._collection.find(query, self._projection, sort=[("_id", ASCENDING)])
        return [self._codec.decode(raw) for raw in cursor.limit(limit)]

    def _duplicate(self, entity: M, error: DuplicateKeyError) -> DuplicateEntityError:
        return DuplicateEntityError(f"{type(entity).__name__} clashes with a stored one: {error}")

    @_guarded
    def create(self, entity: M) -> M:
        raw = self._codec.encode(entity)
        try:
            self._collection.insert_one(raw)
        except DuplicateKeyError as e:
            raise self._duplicate(entity, e) from e
        return self._codec.decode(raw)

    @_guarded
    def find_by_id(self, entity_id: EntityId) -> M | None:
        if entity_id is None:
            return None
        return self._decode(
            self._collection.find_one({"_id": object_id(entity_id)}, self._projection)
        )

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

    def _changes(self, changes: Mapping[str, Any]) -> Mapping[str, Any]:
        return changes

    @_guarded
    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> M | None:
        update = self._codec.encode_changes(self._changes(changes))
        if entity_id is None:
            return None
        if not update:
            return self._decode(
                self._collection.find_one({"_id": object_id(entity_id)}, self._projection)
            )
        return self._decode(
            self._collection.find_one_and_update(
                {"_id": object_id(entity_id)},
                update,
                projection=self._projection,
                return_document=ReturnDocument.AFTER,
            )
        )

    @_guarded
    def delete_by_id(self, entity_id: EntityId) -> bool:
        if entity_id is None:
            return False
        return self._collection.delete_one({"_id": object_id(entity_id)}).deleted_count == 1


class MongoOfferDao(_MongoCrudDao[Offer], OfferDao):
    """Offers in ``usercredits_offers``; a unique index keeps catalogue keys unique."""

    _codec = OFFER_CODEC

    def __init__(self, store: MongoStore):
        super().__init__(store, store.offers)

    def _duplicate(self, entity: Offer, error: DuplicateKeyError) -> DuplicateEntityError:
        return DuplicateEntityError(
            f"an offer with key {entity.key!r} (or id {entity.id!r}) already exists"
        )

    @_guarded
    def find_by_key(self, key: str) -> Offer | None:
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


class MongoOrderDao(_MongoCrudDao[Order], OrderDao):
    """Orders in ``usercredits_orders``; state changes are conditional ``find_one_and_update``
    calls, webhook events are claimed with ``$addToSet``. The payment intent secret is never
    stored."""

    _codec = ORDER_CODEC
    _projection = {"webhook_events": 0}

    def __init__(self, store: MongoStore):
        super().__init__(store, store.orders)

    def _changes(self, changes: Mapping[str, Any]) -> Mapping[str, Any]:
        return {k: v for k, v in changes.items() if k != "payment_intent_secret"}

    @_guarded
    def find_by_payment_intent_id(self, payment_intent_id: str) -> Order | None:
        if payment_intent_id is None:
            return None
        found = self._select({"payment_intent_id": payment_intent_id}, limit=1)
        return found[0] if found else None

    @_guarded
    def transition(
        self,
        order_id: EntityId,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        entry: OrderStatus | None = None,
    ) -> Order | None:
        settable = {k: v for k, v in self._changes(changes).items() if k != "history"}
        update: Raw = dict(self._codec.encode_changes(settable))
        if entry is not None:
            update["$push"] = {"history": self._codec.encode_value("history", [entry])[0]}
        oid = object_id(order_id)
        condition = {"_id": oid, "status": {"$in": _status_values(from_statuses)}}
        if update:
            raw = self._collection.find_one_and_update(
                condition,
                update,
                projection=self._projection,
                return_document=ReturnDocument.AFTER,
            )
        else:
            raw = self._collection.find_one(condition, self._projection)
        if raw is not None:
            return self._codec.decode(raw)
        if order_id is None or self._collection.find_one({"_id": oid}, {"_id": 1}) is None:
            raise EntityNotFoundError(f"no order with id {order_id!r}")
        return None

    @_guarded
    def find_due(self, user_id: UserId, now: datetime) -> list[Order]:
        cursor = self._collection.find(
            {
                "user_id": encode_user(user_id),
                "status": Status.PAID.value,
                "expires": {"$lte": store_datetime(now)},
            },
            self._projection,
            sort=[("expires", ASCENDING), ("_id", ASCENDING)],
        )
        return [self._codec.decode(raw) for raw in cursor]

    @_guarded
    def find_paid(self, user_id: UserId, offer_group: str) -> list[Order]:
        return self._select(
            {
                "user_id": encode_user(user_id),
                "offer_group": offer_group,
                "status": Status.PAID.value,
            }
        )

    @_guarded
    def find_children(self, parent_id: EntityId) -> list[Order]:
        if parent_id is None:
            return []
        return self._select({"parent_id": object_id(parent_id)})

    @_guarded
    def claim_webhook_event(self, order_id: EntityId, event_id: str) -> bool:
        result = self._collection.update_one(
            {"_id": object_id(order_id)}, {"$addToSet": {"webhook_events": event_id}}
        )
        if order_id is None or result.matched_count == 0:
            raise EntityNotFoundError(f"no order with id {order_id!r}")
        return result.modified_count == 1

    @_guarded
    def release_webhook_event(self, order_id: EntityId, event_id: str) -> None:
        self._collection.update_one(
            {"_id": object_id(order_id)}, {"$pull": {"webhook_events": event_id}}
        )


class MongoTokenTimetableDao(_MongoCrudDao[TokenTimetable], TokenTimetableDao):
    """The ledger in ``usercredits_token_timetable``, one document per line, in recording
    (``_id``) order. Partial unique indexes keep one line per (user, idempotency key) and per
    (order, reason) for purchase, expiry and refund lines."""

    _codec = LEDGER_CODEC

    def __init__(self, store: MongoStore):
        super().__init__(store, store.ledger)

    def _duplicate(self, entity: TokenTimetable, error: DuplicateKeyError) -> DuplicateEntityError:
        clash = self._clash(self._codec.encode(entity))
        return DuplicateEntityError(
            "a ledger line with the same key exists already"
            + ("" if clash is None else f" (line {clash['_id']!r})")
        )

    def _clash(self, raw: Raw) -> Raw | None:
        """The stored line sharing a uniqueness key with ``raw``, None when there is none."""
        user = raw.get("user_id")
        alternatives: list[Raw] = []
        if raw.get("idempotency_key") is not None:
            alternatives.append({"user_id": user, "idempotency_key": raw["idempotency_key"]})
        if raw.get("order_id") is not None and raw.get("reason") in ONCE_PER_ORDER:
            alternatives.append(
                {"user_id": user, "order_id": raw["order_id"], "reason": raw["reason"]}
            )
        if not alternatives:
            return None
        return self._collection.find_one({"$or": alternatives}, sort=[("_id", ASCENDING)])

    @_guarded
    def insert_once(self, line: TokenTimetable) -> tuple[TokenTimetable, bool]:
        raw = self._codec.encode(line)
        for _ in range(_INSERT_ATTEMPTS):
            try:
                self._collection.insert_one(raw)
                return self._codec.decode(raw), True
            except DuplicateKeyError as e:
                clash = self._clash(raw)
                if clash is not None:
                    return self._codec.decode(clash), False
                error = e
            # The clashing line was deleted meanwhile (or the clash was on the id): try again.
        raise DuplicateEntityError(f"ledger line {raw['_id']!r} cannot be stored: {error}")

    @_guarded
    def find_by_idempotency_key(self, user_id: UserId, key: str) -> TokenTimetable | None:
        return self._decode(
            self._collection.find_one({"user_id": encode_user(user_id), "idempotency_key": key})
        )

    @_guarded
    def find_group(self, user_id: UserId, offer_group: str) -> list[TokenTimetable]:
        return self._select({"user_id": encode_user(user_id), "offer_group": offer_group})


def _user_key(stored_user: Any) -> tuple[type, Any]:
    return (type(stored_user), stored_user)


def _activated_offer(raw: Raw) -> ActivatedOffer:
    return ActivatedOffer(
        offer_group=raw["offer_group"],
        starts=load_datetime(raw.get("starts")),
        expires=None if raw.get("never_ends") else load_datetime(raw.get("latest_end")),
        tokens=int(raw.get("tokens", 0)),
    )


def _group_document(user: Any, offer: ActivatedOffer) -> Raw:
    raw: Raw = {
        "user_id": user,
        "offer_group": offer.offer_group,
        "tokens": Int64(offer.tokens),
        "never_ends": False,
    }
    if offer.starts is not None:
        raw["starts"] = store_datetime(offer.starts)
    if offer.expires is not None:
        raw["latest_end"] = store_datetime(offer.expires)
    return raw


class MongoUserCreditsDao(UserCreditsDao):
    """User credits in three collections: ``usercredits_user_credits`` (one document per user,
    unique), ``usercredits_credit_groups`` (one per user and offer group: the balance and the
    window, changed by single atomic updates) and ``usercredits_subscriptions`` (one per
    subscription). ``create``, ``update_by_id`` and ``delete_by_id`` are administrative: they
    write several documents, not atomically."""

    def __init__(self, store: MongoStore):
        self._store = store
        self._users = store.users
        self._groups = store.groups
        self._subscriptions = store.subscriptions

    # -- assembling records --------------------------------------------------------------

    def _assemble(self, user_documents: list[Raw]) -> list[UserCredits]:
        if not user_documents:
            return []
        users = [raw.get("user_id") for raw in user_documents]
        selector: Any = users[0] if len(users) == 1 else {"$in": users}
        offers: dict[tuple[type, Any], list[ActivatedOffer]] = {}
        for raw in self._groups.find({"user_id": selector}, sort=[("_id", ASCENDING)]):
            offers.setdefault(_user_key(raw.get("user_id")), []).append(_activated_offer(raw))
        subscriptions: dict[tuple[type, Any], list[Subscription]] = {}
        for raw in self._subscriptions.find({"user_id": selector}, sort=[("_id", ASCENDING)]):
            subscriptions.setdefault(_user_key(raw.get("user_id")), []).append(
                SUBSCRIPTION_CODEC.decode(raw)
            )
        return [
            UserCredits(
                id=raw["_id"],
                user_id=decode_user(raw.get("user_id")),
                offers=offers.get(_user_key(raw.get("user_id")), []),
                subscriptions=subscriptions.get(_user_key(raw.get("user_id")), []),
            )
            for raw in user_documents
        ]

    def _one(self, raw: Raw | None) -> UserCredits | None:
        return None if raw is None else self._assemble([raw])[0]

    def _ensure_user(self, user: Any) -> None:
        with contextlib.suppress(DuplicateKeyError):  # a racing call created it: as wanted
            self._users.update_one(
                {"user_id": user}, {"$setOnInsert": {"user_id": user}}, upsert=True
            )

    def _insert_groups(self, user: Any, offers: Sequence[ActivatedOffer]) -> None:
        if offers:
            self._groups.insert_many([_group_document(user, offer) for offer in offers])

    def _insert_subscriptions(self, user: Any, subscriptions: Sequence[Subscription]) -> None:
        if subscriptions:
            documents = []
            for subscription in subscriptions:
                raw = SUBSCRIPTION_CODEC.encode(subscription)
                raw["user_id"] = user
                documents.append(raw)
            self._subscriptions.insert_many(documents)

    # -- the generic DAO -------------------------------------------------------------------

    @_guarded
    def create(self, entity: UserCredits) -> UserCredits:
        user = encode_user(entity.user_id)
        raw: Raw = {
            "_id": ObjectId() if entity.id is None else object_id(entity.id),
            "user_id": user,
        }
        try:
            self._users.insert_one(raw)
        except DuplicateKeyError as e:
            if self._users.find_one({"user_id": user}, {"_id": 1}) is not None:
                raise DuplicateEntityError(f"user {entity.user_id!r} already has credits") from e
            raise DuplicateEntityError(f"UserCredits {entity.id!r} already exists") from e
        self._insert_groups(user, entity.offers)
        self._insert_subscriptions(user, entity.subscriptions)
        return self._assemble([raw])[0]

    @_guarded
    def find_by_id(self, entity_id: EntityId) -> UserCredits | None:
        if entity_id is None:
            return None
        return self._one(self._users.find_one({"_id": object_id(entity_id)}))

    @_guarded
    def find(self, filters: Filters | None = None) -> list[UserCredits]:
        filters = dict(filters or {})
        unknown = sorted(set(filters) - {"id", "user_id", "offers", "subscriptions"})
        if unknown:
            raise ValueError(f"UserCredits has no field {', '.join(map(repr, unknown))}")
        query: Raw = {}
        if "id" in filters:
            query["_id"] = object_id(filters.pop("id"))
        if "user_id" in filters:
            query["user_id"] = encode_user(filters.pop("user_id"))
        found = self._assemble(list(self._users.find(query, sort=[("_id", ASCENDING)])))
        return [c for c in found if all(getattr(c, k) == v for k, v in filters.items())]

    def find_one(self, filters: Filters | None = None) -> UserCredits | None:
        found = self.find(filters)
        return found[0] if found else None

    def count(self, filters: Filters | None = None) -> int:
        return len(self.find(filters))

    @_guarded
    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> UserCredits | None:
        unknown = sorted(set(changes) - {"id", "user_id", "offers", "subscriptions"})
        if unknown:
            raise ValueError(f"UserCredits has no field {', '.join(map(repr, unknown))}")
        if "id" in changes or "user_id" in changes:
            raise ValueError("the id and user_id of user credits cannot be changed")
        if entity_id is None:
            return None
        raw = self._users.find_one({"_id": object_id(entity_id)})
        if raw is None:
            return None
        user = raw.get("user_id")
        if "offers" in changes:
            self._groups.delete_many({"user_id": user})
            self._insert_groups(user, changes["offers"])
        if "subscriptions" in changes:
            self._subscriptions.delete_many({"user_id": user})
            self._insert_subscriptions(user, changes["subscriptions"])
        return self._assemble([raw])[0]

    @_guarded
    def delete_by_id(self, entity_id: EntityId) -> bool:
        if entity_id is None:
            return False
        raw = self._users.find_one_and_delete({"_id": object_id(entity_id)})
        if raw is None:
            return False
        self._groups.delete_many({"user_id": raw.get("user_id")})
        self._subscriptions.delete_many({"user_id": raw.get("user_id")})
        return True

    # -- user credits --------------------------------------------------------------------

    @_guarded
    def find_by_user_id(self, user_id: UserId) -> UserCredits | None:
        return self._one(self._users.find_one({"user_id": encode_user(user_id)}))

    @_guarded
    def get_or_create(self, user_id: UserId) -> UserCredits:
        user = encode_user(user_id)
        try:
            raw = self._users.find_one_and_update(
                {"user_id": user},
                {"$setOnInsert": {"user_id": user}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            raw = self._users.find_one({"user_id": user})
        if raw is None:
            raise StorageError(f"the credits of user {user_id!r} vanished while being created")
        return self._assemble([raw])[0]

    def iter_user_ids(self, batch_size: int = 1000) -> Iterator[UserId]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
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

    # -- balances and windows ------------------------------------------------------------

    def _group_key(self, user_id: UserId, offer_group: str) -> Raw:
        return {"user_id": encode_user(user_id), "offer_group": offer_group}

    @_guarded
    def get_activated_offer(self, user_id: UserId, offer_group: str) -> ActivatedOffer | None:
        raw = self._groups.find_one(self._group_key(user_id, offer_group))
        return None if raw is None else _activated_offer(raw)

    @_guarded
    def add_tokens(
        self,
        user_id: UserId,
        offer_group: str,
        delta: int,
        *,
        now: datetime,
        floor: int | None = None,
    ) -> int | None:
        key = self._group_key(user_id, offer_group)
        condition = dict(key)
        if floor is not None:
            condition["tokens"] = {"$gte": floor - delta}
        increment: Raw = {"$inc": {"tokens": Int64(delta)}}
        raw = self._groups.find_one_and_update(
            condition, increment, {"tokens": 1}, return_document=ReturnDocument.AFTER
        )
        if raw is not None:
            return int(raw["tokens"])
        if floor is not None and delta < floor:
            return None  # an absent group starts at 0: refused whether it exists or not
        self._ensure_user(key["user_id"])
        try:
            raw = self._groups.find_one_and_update(
                condition,
                {
                    **increment,
                    "$setOnInsert": {"starts": store_datetime(now), "never_ends": False},
                },
                {"tokens": 1},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            # The group exists: created meanwhile, or its balance is below the floor.
            raw = self._groups.find_one_and_update(
                condition, increment, {"tokens": 1}, return_document=ReturnDocument.AFTER
            )
        return None if raw is None else int(raw["tokens"])

    def _update_group(self, key: Raw, update: Raw, on_insert: Raw) -> None:
        """Apply ``update`` to the group, creating it (and the user's credits) when absent."""
        if self._groups.update_one(key, update).matched_count:
            return
        self._ensure_user(key["user_id"])
        try:
            self._groups.update_one(key, {**update, "$setOnInsert": on_insert}, upsert=True)
        except DuplicateKeyError:
            self._groups.update_one(key, update)

    def _open(self, key: Raw, starts: datetime, expires: datetime | None) -> None:
        update: Raw = {"$min": {"starts": store_datetime(starts)}}
        on_insert: Raw = {"tokens": Int64(0)}
        if expires is None:
            update["$set"] = {"never_ends": True}
        else:
            update["$max"] = {"latest_end": store_datetime(expires)}
            on_insert["never_ends"] = False
        self._update_group(key, update, on_insert)

    @_guarded
    def open_window(
        self, user_id: UserId, offer_group: str, starts: datetime, expires: datetime | None
    ) -> None:
        self._open(self._group_key(user_id, offer_group), starts, expires)

    @_guarded
    def chain_window(
        self,
        user_id: UserId,
        offer_group: str,
        now: datetime,
        window: Callable[[datetime], datetime | None],
    ) -> tuple[datetime, datetime | None]:
        key = self._group_key(user_id, offer_group)
        now = store_datetime(now)
        for _ in range(_CHAIN_ATTEMPTS):
            raw = self._groups.find_one(key, {"latest_end": 1})
            latest = None if raw is None else load_datetime(raw.get("latest_end"))
            starts = latest if latest is not None and latest > now else now
            expires = window(starts)
            if expires is None:
                self._open(key, starts, None)
                return starts, None
            expires = store_datetime(expires)
            # Compare-and-set on the latest end: a racing call that moved it makes this one
            # read it again and take the next window.
            condition = {**key, "latest_end": latest}
            update: Raw = {
                "$set": {"latest_end": expires},
                "$min": {"starts": starts},
            }
            if raw is None:
                self._ensure_user(key["user_id"])
                try:
                    self._groups.update_one(
                        condition,
                        {**update, "$setOnInsert": {"tokens": Int64(0), "never_ends": False}},
                        upsert=True,
                    )
                    return starts, expires
                except DuplicateKeyError:
                    continue
            if self._groups.update_one(condition, update).matched_count:
                return starts, expires
        raise StorageError(
            f"could not reserve a window of group {offer_group!r} for user {user_id!r}: "
            f"{_CHAIN_ATTEMPTS} attempts lost to concurrent changes"
        )

    @_guarded
    def reset_window(
        self,
        user_id: UserId,
        offer_group: str,
        starts: datetime | None,
        latest_end: datetime | None,
        never_ends: bool,
    ) -> None:
        to_set: Raw = {"never_ends": bool(never_ends)}
        update: Raw = {"$set": to_set}
        if starts is not None:
            to_set["starts"] = store_datetime(starts)
        if latest_end is None:
            update["$unset"] = {"latest_end": ""}
        else:
            to_set["latest_end"] = store_datetime(latest_end)
        self._groups.update_one(self._group_key(user_id, offer_group), update)

    @_guarded
    def remove_offer_if_spent(
        self, user_id: UserId, offer_group: str, now: datetime
    ) -> ActivatedOffer | None:
        raw = self._groups.find_one_and_delete(
            {
                **self._group_key(user_id, offer_group),
                "tokens": 0,
                "never_ends": {"$ne": True},
                "latest_end": {"$lte": store_datetime(now)},
            }
        )
        return None if raw is None else _activated_offer(raw)

    # -- subscriptions -------------------------------------------------------------------

    @_guarded
    def add_subscriptions(self, user_id: UserId, subscriptions: Sequence[Subscription]) -> None:
        user = encode_user(user_id)
        self._ensure_user(user)
        self._insert_subscriptions(user, subscriptions)

    @_guarded
    def update_subscriptions(
        self,
        user_id: UserId,
        order_id: EntityId,
        changes: Mapping[str, Any],
        *,
        offer_id: EntityId = None,
        offer_group: str | None = None,
    ) -> int:
        update = SUBSCRIPTION_CODEC.encode_changes(changes)
        query: Raw = {"user_id": encode_user(user_id), "order_id": object_id(order_id)}
        if offer_id is not None:
            query["offer_id"] = object_id(offer_id)
        if offer_group is not None:
            query["offer_group"] = offer_group
        if not update:
            return self._subscriptions.count_documents(query)
        return self._subscriptions.update_many(query, update).matched_count

    @_guarded
    def active_groups(self, user_id: UserId, now: datetime) -> set[str]:
        groups = self._subscriptions.distinct(
            "offer_group",
            {
                "user_id": encode_user(user_id),
                "status": Status.PAID.value,
                "$or": [{"expires": None}, {"expires": {"$gt": store_datetime(now)}}],
            },
        )
        return set(groups)
