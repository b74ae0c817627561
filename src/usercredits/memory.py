"""The in-memory backend: the embedded default and the reference behaviour.

All DAOs of one :class:`InMemoryDaoFactory` share one lock, taken around every
operation, so each operation is atomic exactly where a database would be (and
no more). Entities are copied on the way in and out: what a caller holds never
aliases what is stored. Nothing survives the process.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from usercredits.dao import (
    ID_FIELDS,
    ONCE_PER_ORDER,
    DaoFactory,
    Filters,
    OfferDao,
    OrderDao,
    TokenTimetableDao,
    UserCreditsDao,
)
from usercredits.errors import DuplicateEntityError, EntityNotFoundError
from usercredits.models import (
    ActivatedOffer,
    EntityId,
    LedgerReason,
    Offer,
    Order,
    OrderStatus,
    Status,
    Subscription,
    TokenTimetable,
    UserCredits,
    UserId,
)

E = TypeVar("E")


def _new_id() -> str:
    return uuid.uuid4().hex


def _user_key(user_id: UserId) -> tuple[type, Any]:
    # 1, 1.0 and True hash alike in Python but are different user ids in a database.
    return (type(user_id), user_id)


def _same(name: str, stored: Any, wanted: Any) -> bool:
    if name in ID_FIELDS and stored is not None and wanted is not None:
        return str(stored) == str(wanted)
    if name == "user_id":
        return _user_key(stored) == _user_key(wanted)
    return bool(stored == wanted)


def _check_fields(kind: type, names: Collection[str]) -> None:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"{kind.__name__} has no field {', '.join(map(repr, unknown))}")


def _matches(entity: Any, filters: Filters | None) -> bool:
    return all(_same(name, getattr(entity, name), value) for name, value in (filters or {}).items())


def _index_key(name: str, value: Any) -> Any:
    return _user_key(value) if name == "user_id" else str(value)


class _Table(Generic[E]):
    """Entities of one kind by ``str(id)``, in creation order, copied in and out with
    ``clone``, and indexed on ``indexed`` fields like a database would be."""

    def __init__(
        self,
        kind: type[E],
        lock: threading.RLock,
        indexed: tuple[str, ...] = (),
        clone: Callable[[E], E] = copy.deepcopy,
    ):
        self.kind = kind
        self.lock = lock
        self.clone = clone
        self.rows: dict[str, E] = {}
        self.order: dict[str, int] = {}
        self.indexes: dict[str, dict[Any, set[str]]] = {name: {} for name in indexed}

    def _index(self, key: str, row: E, add: bool) -> None:
        for name, index in self.indexes.items():
            value = getattr(row, name)
            if value is None:
                continue
            ids = index.setdefault(_index_key(name, value), set())
            if add:
                ids.add(key)
            else:
                ids.discard(key)

    def insert(self, entity: E) -> E:
        stored = copy.deepcopy(entity)
        if getattr(stored, "id", None) is None:
            stored.id = _new_id()  # type: ignore[attr-defined]
        key = str(stored.id)  # type: ignore[attr-defined]
        if key in self.rows:
            raise DuplicateEntityError(f"{self.kind.__name__} {key!r} already exists")
        self.rows[key] = stored
        self.order[key] = len(self.order)
        self._index(key, stored, add=True)
        return self.clone(stored)

    def get(self, entity_id: EntityId) -> E | None:
        row = self.rows.get(str(entity_id)) if entity_id is not None else None
        return None if row is None else self.clone(row)

    def candidates(self, filters: Filters | None) -> list[E]:
        """The stored rows that may match ``filters`` (narrowed by an index), in creation order."""
        for name, value in (filters or {}).items():
            if name in self.indexes and value is not None:
                ids = self.indexes[name].get(_index_key(name, value), set())
                return [self.rows[i] for i in sorted(ids, key=self.order.__getitem__)]
        return list(self.rows.values())

    def select(self, filters: Filters | None) -> list[E]:
        _check_fields(self.kind, (filters or {}).keys())
        return [self.clone(row) for row in self.candidates(filters) if _matches(row, filters)]

    def replace(self, entity_id: EntityId, changes: Mapping[str, Any]) -> E | None:
        _check_fields(self.kind, changes.keys())
        if "id" in changes:
            raise ValueError("the id of an entity cannot be changed")
        key = str(entity_id)
        if entity_id is None or key not in self.rows:
            return None
        updated = dataclasses.replace(self.rows[key], **copy.deepcopy(dict(changes)))  # type: ignore[type-var]
        self._index(key, self.rows[key], add=False)
        self.rows[key] = updated
        self._index(key, updated, add=True)
        return self.clone(updated)

    def remove(self, entity_id: EntityId) -> bool:
        if entity_id is None or str(entity_id) not in self.rows:
            return False
        row = self.rows.pop(str(entity_id))
        self._index(str(entity_id), row, add=False)
        return True


class _CrudDao(Generic[E]):
    """The generic part of every in-memory DAO."""

    def __init__(self, table: _Table[E]):
        self._table = table
        self._lock = table.lock

    def create(self, entity: E) -> E:
        with self._lock:
            return self._table.insert(entity)

    def find_by_id(self, entity_id: EntityId) -> E | None:
        with self._lock:
            return self._table.get(entity_id)

    def find(self, filters: Filters | None = None) -> list[E]:
        with self._lock:
            return self._table.select(filters)

    def find_one(self, filters: Filters | None = None) -> E | None:
        found = self.find(filters)
        return found[0] if found else None

    def count(self, filters: Filters | None = None) -> int:
        return len(self.find(filters))

    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> E | None:
        with self._lock:
            return self._table.replace(entity_id, changes)

    def delete_by_id(self, entity_id: EntityId) -> bool:
        with self._lock:
            return self._table.remove(entity_id)


class InMemoryOfferDao(_CrudDao[Offer], OfferDao):
    """Offers kept in memory; catalogue keys are unique."""

    def create(self, entity: Offer) -> Offer:
        with self._lock:
            if entity.key is not None and self._by_key(entity.key) is not None:
                raise DuplicateEntityError(f"an offer with key {entity.key!r} already exists")
            return self._table.insert(entity)

    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> Offer | None:
        with self._lock:
            key = changes.get("key")
            if key is not None:
                other = self._by_key(key)
                if other is not None and str(other.id) != str(entity_id):
                    raise DuplicateEntityError(f"an offer with key {key!r} already exists")
            return self._table.replace(entity_id, changes)

    def _by_key(self, key: str) -> Offer | None:
        return next((o for o in self._table.rows.values() if o.key == key), None)

    def find_by_key(self, key: str) -> Offer | None:
        with self._lock:
            return copy.deepcopy(self._by_key(key))

    def find_regular(self, env_tags: Collection[str] | None = None) -> list[Offer]:
        wanted = set(env_tags or ())
        with self._lock:
            return [
                copy.deepcopy(o)
                for o in self._table.rows.values()
                if not o.unlocked_by and wanted.issubset(o.tags)
            ]

    def find_unlocked_by(self, offer_groups: Collection[str]) -> list[Offer]:
        groups = set(offer_groups)
        with self._lock:
            return [
                copy.deepcopy(o)
                for o in self._table.rows.values()
                if groups.intersection(o.unlocked_by)
            ]


class InMemoryOrderDao(_CrudDao[Order], OrderDao):
    """Orders kept in memory; state transitions are conditional under the backend lock."""

    def __init__(self, table: _Table[Order]):
        super().__init__(table)
        self._events: dict[str, set[str]] = {}

    def create(self, entity: Order) -> Order:
        stored = copy.deepcopy(entity)
        stored.payment_intent_secret = None
        with self._lock:
            return self._table.insert(stored)

    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> Order | None:
        changes = {k: v for k, v in changes.items() if k != "payment_intent_secret"}
        return super().update_by_id(entity_id, changes)

    def find_by_payment_intent_id(self, payment_intent_id: str) -> Order | None:
        return self.find_one({"payment_intent_id": payment_intent_id})

    def transition(
        self,
        order_id: EntityId,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        entry: OrderStatus | None = None,
    ) -> Order | None:
        changes = {k: v for k, v in changes.items() if k != "payment_intent_secret"}
        with self._lock:
            current = self._table.rows.get(str(order_id)) if order_id is not None else None
            if current is None:
                raise EntityNotFoundError(f"no order with id {order_id!r}")
            if current.status not in from_statuses:
                return None
            history = list(current.history) + ([copy.deepcopy(entry)] if entry is not None else [])
            return self._table.replace(order_id, {**changes, "history": history})

    def find_due(self, user_id: UserId, now: datetime) -> list[Order]:
        with self._lock:
            due = [
                copy.deepcopy(o)
                for o in self._table.candidates({"user_id": user_id})
                if o.status is Status.PAID
                and o.expires is not None
                and o.expires <= now
                and _same("user_id", o.user_id, user_id)
            ]
        return sorted(due, key=lambda o: o.expires or now)

    def find_paid(self, user_id: UserId, offer_group: str) -> list[Order]:
        return self.find({"user_id": user_id, "offer_group": offer_group, "status": Status.PAID})

    def find_children(self, parent_id: EntityId) -> list[Order]:
        return self.find({"parent_id": parent_id})

    def claim_webhook_event(self, order_id: EntityId, event_id: str) -> bool:
        with self._lock:
            if str(order_id) not in self._table.rows:
                raise EntityNotFoundError(f"no order with id {order_id!r}")
            seen = self._events.setdefault(str(order_id), set())
            if event_id in seen:
                return False
            seen.add(event_id)
            return True

    def release_webhook_event(self, order_id: EntityId, event_id: str) -> None:
        with self._lock:
            self._events.get(str(order_id), set()).discard(event_id)


class InMemoryTokenTimetableDao(_CrudDao[TokenTimetable], TokenTimetableDao):
    """The ledger kept in memory, in recording order, indexed like the database would be."""

    def __init__(self, table: _Table[TokenTimetable]):
        super().__init__(table)
        self._by_key: dict[tuple[tuple[type, Any], str], str] = {}
        self._by_order: dict[tuple[str, LedgerReason], str] = {}
        self._by_group: dict[tuple[tuple[type, Any], str], list[str]] = {}

    @staticmethod
    def _keys(
        line: TokenTimetable,
    ) -> tuple[tuple[tuple[type, Any], str] | None, tuple[str, LedgerReason] | None]:
        idem = (
            None
            if line.idempotency_key is None
            else (_user_key(line.user_id), line.idempotency_key)
        )
        bound = None
        if line.order_id is not None and line.reason in ONCE_PER_ORDER:
            bound = (str(line.order_id), line.reason)
        return idem, bound

    def _clash(self, line: TokenTimetable) -> TokenTimetable | None:
        idem, bound = self._keys(line)
        row_id = (self._by_key.get(idem) if idem else None) or (
            self._by_order.get(bound) if bound else None
        )
        return None if row_id is None else self._table.rows[row_id]

    def _index(self, line: TokenTimetable) -> None:
        idem, bound = self._keys(line)
        if idem:
            self._by_key[idem] = str(line.id)
        if bound:
            self._by_order[bound] = str(line.id)
        self._by_group.setdefault((_user_key(line.user_id), line.offer_group), []).append(
            str(line.id)
        )

    def _unindex(self, line: TokenTimetable) -> None:
        idem, bound = self._keys(line)
        if idem:
            self._by_key.pop(idem, None)
        if bound:
            self._by_order.pop(bound, None)
        ids = self._by_group.get((_user_key(line.user_id), line.offer_group), [])
        if str(line.id) in ids:
            ids.remove(str(line.id))

    def _store(self, line: TokenTimetable) -> TokenTimetable:
        stored = self._table.insert(line)
        self._index(stored)
        return stored

    def create(self, entity: TokenTimetable) -> TokenTimetable:
        with self._lock:
            clash = self._clash(entity)
            if clash is not None:
                raise DuplicateEntityError(
                    f"a ledger line with the same key exists already (line {clash.id!r})"
                )
            return self._store(entity)

    def insert_once(self, line: TokenTimetable) -> tuple[TokenTimetable, bool]:
        with self._lock:
            clash = self._clash(line)
            if clash is not None:
                return self._table.clone(clash), False
            return self._store(line), True

    def update_by_id(
        self, entity_id: EntityId, changes: Mapping[str, Any]
    ) -> TokenTimetable | None:
        with self._lock:
            current = self._table.rows.get(str(entity_id)) if entity_id is not None else None
            if current is None:
                return None
            self._unindex(current)
            try:
                candidate = dataclasses.replace(current, **dict(changes))
                clash = self._clash(candidate)
                if clash is not None:
                    raise DuplicateEntityError(
                        f"a ledger line with the same key exists already (line {clash.id!r})"
                    )
                updated = self._table.replace(entity_id, changes)
            finally:
                self._index(self._table.rows[str(entity_id)])
            return updated

    def delete_by_id(self, entity_id: EntityId) -> bool:
        with self._lock:
            current = self._table.rows.get(str(entity_id)) if entity_id is not None else None
            if current is None:
                return False
            self._unindex(current)
            return self._table.remove(entity_id)

    def find_by_idempotency_key(self, user_id: UserId, key: str) -> TokenTimetable | None:
        with self._lock:
            row_id = self._by_key.get((_user_key(user_id), key))
            return None if row_id is None else self._table.clone(self._table.rows[row_id])

    def find_group(self, user_id: UserId, offer_group: str) -> list[TokenTimetable]:
        with self._lock:
            ids = self._by_group.get((_user_key(user_id), offer_group), [])
            return [self._table.clone(self._table.rows[i]) for i in ids]


@dataclasses.dataclass
class _Group:
    tokens: int = 0
    starts: datetime | None = None
    latest_end: datetime | None = None
    never_ends: bool = False

    def view(self, offer_group: str) -> ActivatedOffer:
        return ActivatedOffer(
            offer_group=offer_group,
            starts=self.starts,
            expires=None if self.never_ends else self.latest_end,
            tokens=self.tokens,
        )

    def widen(self, starts: datetime, expires: datetime | None) -> None:
        self.starts = starts if self.starts is None else min(self.starts, starts)
        if expires is None:
            self.never_ends = True
        elif self.latest_end is None or expires > self.latest_end:
            self.latest_end = expires


@dataclasses.dataclass
class _Credits:
    id: str
    user_id: UserId
    groups: dict[str, _Group] = dataclasses.field(default_factory=dict)
    subscriptions: list[Subscription] = dataclasses.field(default_factory=list)

    def view(self) -> UserCredits:
        return UserCredits(
            id=self.id,
            user_id=self.user_id,
            offers=[group.view(name) for name, group in self.groups.items()],
            subscriptions=copy.deepcopy(self.subscriptions),
        )


class InMemoryUserCreditsDao(UserCreditsDao):
    """User credits kept in memory: one record per user, balances changed under the lock."""

    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._by_user: dict[tuple[type, Any], _Credits] = {}

    def _record(self, user_id: UserId) -> _Credits:
        record = self._by_user.get(_user_key(user_id))
        if record is None:
            record = _Credits(id=_new_id(), user_id=copy.deepcopy(user_id))
            self._by_user[_user_key(user_id)] = record
        return record

    def _by_id(self, entity_id: EntityId) -> _Credits | None:
        if entity_id is None:
            return None
        return next((r for r in self._by_user.values() if r.id == str(entity_id)), None)

    def _group(self, user_id: UserId, offer_group: str) -> _Group | None:
        record = self._by_user.get(_user_key(user_id))
        return None if record is None else record.groups.get(offer_group)

    def create(self, entity: UserCredits) -> UserCredits:
        with self._lock:
            if _user_key(entity.user_id) in self._by_user:
                raise DuplicateEntityError(f"user {entity.user_id!r} already has credits")
            if self._by_id(entity.id) is not None:
                raise DuplicateEntityError(f"UserCredits {entity.id!r} already exists")
            record = self._record(entity.user_id)
            if entity.id is not None:
                record.id = str(entity.id)
            self._load(record, entity)
            return record.view()

    @staticmethod
    def _load(record: _Credits, entity: UserCredits) -> None:
        record.groups = {
            o.offer_group: _Group(tokens=o.tokens, starts=o.starts, latest_end=o.expires)
            for o in entity.offers
        }
        record.subscriptions = copy.deepcopy(entity.subscriptions)

    def find_by_id(self, entity_id: EntityId) -> UserCredits | None:
        with self._lock:
            record = self._by_id(entity_id)
            return None if record is None else record.view()

    def find(self, filters: Filters | None = None) -> list[UserCredits]:
        _check_fields(UserCredits, (filters or {}).keys())
        with self._lock:
            views = [r.view() for r in self._by_user.values()]
        return [v for v in views if _matches(v, filters)]

    def find_one(self, filters: Filters | None = None) -> UserCredits | None:
        found = self.find(filters)
        return found[0] if found else None

    def count(self, filters: Filters | None = None) -> int:
        return len(self.find(filters))

    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> UserCredits | None:
        _check_fields(UserCredits, changes.keys())
        if "id" in changes or "user_id" in changes:
            raise ValueError("the id and user_id of user credits cannot be changed")
        with self._lock:
            record = self._by_id(entity_id)
            if record is None:
                return None
            updated = dataclasses.replace(record.view(), **copy.deepcopy(dict(changes)))
            if "offers" in changes:
                self._load(record, updated)
            else:
                # Rebuilding the groups from their views would lose the dated end they hide.
                record.subscriptions = updated.subscriptions
            return record.view()

    def delete_by_id(self, entity_id: EntityId) -> bool:
        with self._lock:
            record = self._by_id(entity_id)
            if record is None:
                return False
            del self._by_user[_user_key(record.user_id)]
            return True

    def find_by_user_id(self, user_id: UserId) -> UserCredits | None:
        with self._lock:
            record = self._by_user.get(_user_key(user_id))
            return None if record is None else record.view()

    def get_or_create(self, user_id: UserId) -> UserCredits:
        with self._lock:
            return self._record(user_id).view()

    def iter_user_ids(self, batch_size: int = 1000) -> Iterator[UserId]:
        with self._lock:
            users = [copy.deepcopy(r.user_id) for r in self._by_user.values()]
        yield from users

    def get_activated_offer(self, user_id: UserId, offer_group: str) -> ActivatedOffer | None:
        with self._lock:
            group = self._group(user_id, offer_group)
            return None if group is None else group.view(offer_group)

    def add_tokens(
        self,
        user_id: UserId,
        offer_group: str,
        delta: int,
        *,
        now: datetime,
        floor: int | None = None,
    ) -> int | None:
        with self._lock:
            group = self._group(user_id, offer_group)
            current = 0 if group is None else group.tokens
            if floor is not None and current + delta < floor:
                return None
            if group is None:
                group = self._record(user_id).groups.setdefault(offer_group, _Group(starts=now))
            group.tokens += delta
            return group.tokens

    def _ensure_group(self, user_id: UserId, offer_group: str, starts: datetime) -> _Group:
        return self._record(user_id).groups.setdefault(offer_group, _Group(starts=starts))

    def open_window(
        self, user_id: UserId, offer_group: str, starts: datetime, expires: datetime | None
    ) -> None:
        with self._lock:
            self._ensure_group(user_id, offer_group, starts).widen(starts, expires)

    def chain_window(
        self,
        user_id: UserId,
        offer_group: str,
        now: datetime,
        window: Callable[[datetime], datetime | None],
    ) -> tuple[datetime, datetime | None]:
        with self._lock:
            group = self._group(user_id, offer_group)
            latest = None if group is None else group.latest_end
            starts = latest if latest is not None and latest > now else now
            expires = window(starts)
            self._ensure_group(user_id, offer_group, starts).widen(starts, expires)
            return starts, expires

    def reset_window(
        self,
        user_id: UserId,
        offer_group: str,
        starts: datetime | None,
        latest_end: datetime | None,
        never_ends: bool,
    ) -> None:
        with self._lock:
            group = self._group(user_id, offer_group)
            if group is None:
                return
            if starts is not None:
                group.starts = starts
            group.latest_end = latest_end
            group.never_ends = never_ends

    def remove_offer_if_spent(
        self, user_id: UserId, offer_group: str, now: datetime
    ) -> ActivatedOffer | None:
        with self._lock:
            group = self._group(user_id, offer_group)
            if (
                group is None
                or group.tokens != 0
                or group.never_ends
                or group.latest_end is None
                or group.latest_end > now
            ):
                return None
            del self._by_user[_user_key(user_id)].groups[offer_group]
            return group.view(offer_group)

    def add_subscriptions(self, user_id: UserId, subscriptions: Sequence[Subscription]) -> None:
        with self._lock:
            self._record(user_id).subscriptions.extend(copy.deepcopy(list(subscriptions)))

    def update_subscriptions(
        self,
        user_id: UserId,
        order_id: EntityId,
        changes: Mapping[str, Any],
        *,
        offer_id: EntityId = None,
        offer_group: str | None = None,
    ) -> int:
        _check_fields(Subscription, changes.keys())
        with self._lock:
            record = self._by_user.get(_user_key(user_id))
            if record is None:
                return 0
            updated = 0
            for index, sub in enumerate(record.subscriptions):
                if (
                    _same("order_id", sub.order_id, order_id)
                    and (offer_id is None or _same("offer_id", sub.offer_id, offer_id))
                    and (offer_group is None or sub.offer_group == offer_group)
                ):
                    record.subscriptions[index] = dataclasses.replace(
                        sub, **copy.deepcopy(dict(changes))
                    )
                    updated += 1
            return updated

    def active_groups(self, user_id: UserId, now: datetime) -> set[str]:
        with self._lock:
            record = self._by_user.get(_user_key(user_id))
            if record is None:
                return set()
            return {
                s.offer_group
                for s in record.subscriptions
                if s.status is Status.PAID and (s.expires is None or s.expires > now)
            }


class InMemoryDaoFactory(DaoFactory):
    """The embedded in-memory backend: thread-safe, process-local, nothing persisted."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._offers = InMemoryOfferDao(_Table(Offer, self._lock))
        self._orders = InMemoryOrderDao(
            _Table(Order, self._lock, indexed=("user_id", "payment_intent_id", "parent_id"))
        )
        # Ledger lines hold only immutable values: a shallow copy isolates them.
        self._ledger = InMemoryTokenTimetableDao(
            _Table(TokenTimetable, self._lock, indexed=("user_id",), clone=copy.copy)
        )
        self._credits = InMemoryUserCreditsDao(self._lock)

    def get_offer_dao(self) -> InMemoryOfferDao:
        return self._offers

    def get_order_dao(self) -> InMemoryOrderDao:
        return self._orders

    def get_token_timetable_dao(self) -> InMemoryTokenTimetableDao:
        return self._ledger

    def get_user_credits_dao(self) -> InMemoryUserCreditsDao:
        return self._credits
