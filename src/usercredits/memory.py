"""The in-memory backend: the embedded default and the reference behaviour.

All DAOs of one :class:`InMemoryDaoFactory` share one lock, taken around every
operation, so each operation is atomic exactly where a database would be (and
no more). Offers and orders are copied on the way in and out, so what a caller
holds never aliases what is stored; ledger lines get a shallow copy (they hold
immutable values) and accounts are immutable. Nothing survives the process.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import itertools
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from usercredits.dao import (
    ID_FIELDS,
    Account,
    Appended,
    CustomerDao,
    DaoFactory,
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

E = TypeVar("E")
UserKey = tuple[type, Any]


_IDS = itertools.count(1)
_PREFIX = uuid.uuid4().hex[:16]


def _new_id() -> str:
    """A new id, unique in this process: cheap, and never reused."""
    return f"{_PREFIX}{next(_IDS):016x}"


def _clone_line(line: TokenTimetable) -> TokenTimetable:
    """A copy of a ledger line (its fields are immutable values): faster than copy.copy."""
    clone = object.__new__(TokenTimetable)
    clone.__dict__.update(line.__dict__)
    return clone


def _clone_order(order: Order) -> Order:
    """A copy of an order sharing nothing mutable with it: its lists are new, their items
    (history entries, bundle items) copied; every other field holds an immutable value."""
    clone = copy.copy(order)
    clone.history = [copy.copy(entry) for entry in order.history]
    clone.combined_items = [copy.copy(item) for item in order.combined_items]
    return clone


def _user_key(user_id: UserId) -> UserKey:
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
        raise InvalidInputError(f"{kind.__name__} has no field {', '.join(map(repr, unknown))}")


class _Table(Generic[E]):
    """Entities of one kind by ``str(id)``, in creation order, copied out with ``clone``."""

    def __init__(self, kind: type[E], lock: threading.RLock, clone: Callable[[E], E]):
        self.kind = kind
        self.lock = lock
        self.clone = clone
        self.rows: dict[str, E] = {}
        self.by_user: dict[UserKey, list[str]] = {}

    def insert(self, stored: E) -> E:
        """Store ``stored`` (a private copy), giving it an id when it has none."""
        if getattr(stored, "id", None) is None:
            stored.id = _new_id()  # type: ignore[attr-defined]
        key = str(stored.id)  # type: ignore[attr-defined]
        if key in self.rows:
            raise DuplicateEntityError(f"{self.kind.__name__} {key!r} already exists")
        self.rows[key] = stored
        user = getattr(stored, "user_id", None)
        if user is not None:
            self.by_user.setdefault(_user_key(user), []).append(key)
        return self.clone(stored)

    def get(self, entity_id: EntityId) -> E | None:
        row = self.rows.get(str(entity_id)) if entity_id is not None else None
        return None if row is None else self.clone(row)

    def select(self, filters: Filters | None, limit: int | None = None) -> list[E]:
        filters = dict(filters or {})
        _check_fields(self.kind, filters.keys())
        if "user_id" in filters:
            keys = self.by_user.get(_user_key(filters["user_id"]), [])
            rows: Iterator[E] | list[E] = (self.rows[k] for k in keys)
        else:
            rows = list(self.rows.values())
        found = []
        for row in rows:
            if all(_same(name, getattr(row, name), value) for name, value in filters.items()):
                found.append(self.clone(row))
                if limit is not None and len(found) >= limit:
                    break
        return found


class _Reader(Generic[E]):
    """The reading part of every in-memory DAO."""

    def __init__(self, table: _Table[E]):
        self._table = table
        self._lock = table.lock

    def find_by_id(self, entity_id: EntityId) -> E | None:
        with self._lock:
            return self._table.get(entity_id)

    def find(self, filters: Filters | None = None) -> list[E]:
        with self._lock:
            return self._table.select(filters)

    def find_one(self, filters: Filters | None = None) -> E | None:
        with self._lock:
            found = self._table.select(filters, limit=1)
        return found[0] if found else None

    def count(self, filters: Filters | None = None) -> int:
        return len(self.find(filters))


class InMemoryOfferDao(_Reader[Offer], OfferDao):
    """Offers kept in memory; catalogue keys are unique."""

    def create(self, entity: Offer) -> Offer:
        with self._lock:
            if entity.key is not None and self._by_key(entity.key) is not None:
                raise DuplicateEntityError(f"an offer with key {entity.key!r} already exists")
            return self._table.insert(copy.deepcopy(entity))

    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> Offer | None:
        _check_fields(Offer, changes.keys())
        if "id" in changes:
            raise InvalidInputError("the id of an offer cannot be changed")
        with self._lock:
            current = self._table.rows.get(str(entity_id)) if entity_id is not None else None
            if current is None:
                return None
            key = changes.get("key")
            if key is not None:
                other = self._by_key(key)
                if other is not None and str(other.id) != str(entity_id):
                    raise DuplicateEntityError(f"an offer with key {key!r} already exists")
            # Rebuilding the offer validates the changed fields before anything is stored.
            updated = dataclasses.replace(current, **copy.deepcopy(dict(changes)))
            self._table.rows[str(entity_id)] = updated
            return copy.deepcopy(updated)

    def delete_by_id(self, entity_id: EntityId) -> bool:
        with self._lock:
            return self._table.rows.pop(str(entity_id), None) is not None

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


class InMemoryOrderDao(_Reader[Order], OrderDao):
    """Orders kept in memory; state transitions are conditional under the backend lock."""

    def __init__(self, table: _Table[Order]):
        super().__init__(table)
        self._by_intent: dict[str, str] = {}
        self._children: dict[tuple[str, int | None], str] = {}
        self._exclusive: dict[tuple[UserKey, str], str] = {}
        # The user's live and in-progress orders, by key, as a database indexes them.
        self._live: dict[UserKey, set[str]] = {}
        self._busy: dict[UserKey, set[str]] = {}
        self._position: dict[str, int] = {}

    def _reindex(self, key: str, order: Order) -> None:
        user = _user_key(order.user_id)
        for index, member in ((self._live, order.status in LIVE), (self._busy, order.in_progress)):
            if member:
                index.setdefault(user, set()).add(key)
            else:
                index.get(user, set()).discard(key)

    @staticmethod
    def _slot(order: Order) -> tuple[UserKey, str] | None:
        """The place a paid exclusive order takes, None for any other order."""
        if not order.exclusive or order.status is not Status.PAID:
            return None
        return (_user_key(order.user_id), str(order.offer_id))

    def _check_slot(self, order: Order) -> None:
        slot = self._slot(order)
        holder = None if slot is None else self._exclusive.get(slot)
        if holder is not None and holder != str(order.id):
            raise DuplicateEntityError(
                f"user {order.user_id!r} holds a paid exclusive order of offer "
                f"{order.offer_id!r} already (order {holder!r})"
            )

    def create(self, entity: Order) -> Order:
        stored = _clone_order(entity)
        stored.payment_intent_secret = None
        with self._lock:
            child = None
            if stored.parent_id is not None:
                child = (str(stored.parent_id), stored.item_index)
                if child in self._children:
                    raise DuplicateEntityError(
                        f"item {child[1]} of bundle order {child[0]!r} has a child order already"
                    )
            self._check_slot(stored)
            created = self._table.insert(stored)
            slot = self._slot(stored)
            if slot is not None:
                self._exclusive[slot] = str(stored.id)
            if child is not None:
                self._children[child] = str(stored.id)
            if stored.payment_intent_id is not None:
                self._by_intent[stored.payment_intent_id] = str(stored.id)
            self._position[str(stored.id)] = len(self._position)
            self._reindex(str(stored.id), stored)
            return created

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
        _check_fields(Order, changes.keys())
        _check_fields(Order, (expected or {}).keys())
        with self._lock:
            current = self._table.rows.get(str(order_id)) if order_id is not None else None
            if current is None:
                raise EntityNotFoundError(f"no order with id {order_id!r}")
            if current.status not in from_statuses or not all(
                _same(name, getattr(current, name), value)
                for name, value in (expected or {}).items()
            ):
                return None
            history = list(current.history) + ([copy.deepcopy(entry)] if entry is not None else [])
            updated = dataclasses.replace(current, **copy.deepcopy(changes), history=history)
            self._check_slot(updated)
            before, after = self._slot(current), self._slot(updated)
            if before is not None and before != after:
                del self._exclusive[before]
            if after is not None:
                self._exclusive[after] = str(order_id)
            self._table.rows[str(order_id)] = updated
            self._reindex(str(order_id), updated)
            intent = changes.get("payment_intent_id")
            if intent is not None:
                self._by_intent[intent] = str(order_id)
            return _clone_order(updated)

    def find_by_payment_intent_id(self, payment_intent_id: str) -> Order | None:
        with self._lock:
            key = self._by_intent.get(payment_intent_id)
            found = self._table.rows.get(key) if key is not None else None
            if found is None or found.payment_intent_id != payment_intent_id:
                return None
            return _clone_order(found)

    def find_child(self, parent_id: EntityId, item_index: int) -> Order | None:
        with self._lock:
            key = self._children.get((str(parent_id), item_index))
            return None if key is None else self._table.get(key)

    def _indexed(
        self, index: dict[UserKey, set[str]], user_id: UserId, keep: Callable[[Order], bool]
    ) -> list[Order]:
        """The user's orders of an index that ``keep`` keeps, in creation order."""
        with self._lock:
            keys = sorted(index.get(_user_key(user_id), ()), key=self._position.__getitem__)
            return [_clone_order(o) for k in keys if keep(o := self._table.rows[k])]

    def find_due(self, user_id: UserId, now: datetime) -> list[Order]:
        due = self._indexed(
            self._live, user_id, lambda o: o.expires is not None and o.expires <= now
        )
        return sorted(due, key=lambda o: o.expires or now)

    def find_live(self, user_id: UserId, offer_group: str | None = None) -> list[Order]:
        return self._indexed(
            self._live, user_id, lambda o: offer_group is None or o.offer_group == offer_group
        )

    def find_in_progress(self, user_id: UserId) -> list[Order]:
        return self._indexed(self._busy, user_id, lambda o: True)


class InMemoryTokenTimetableDao(_Reader[TokenTimetable], TokenTimetableDao):
    """The ledger kept in memory, append-only, indexed like the database would be."""

    def __init__(self, table: _Table[TokenTimetable]):
        super().__init__(table)
        self._accounts: dict[tuple[UserKey, str], list[TokenTimetable]] = {}
        self._keys: dict[tuple[UserKey, str, str], TokenTimetable] = {}

    @staticmethod
    def _key_names(line: TokenTimetable) -> list[tuple[UserKey, str, str]]:
        user = _user_key(line.user_id)
        names = []
        if line.idempotency_key is not None:
            names.append((user, "idempotency", line.idempotency_key))
        if line.operation_key is not None:
            names.append((user, "operation", line.operation_key))
        return names

    def create(self, entity: TokenTimetable) -> TokenTimetable:
        stored = _clone_line(entity)
        user = _user_key(stored.user_id)
        with self._lock:
            lines = self._accounts.setdefault((user, stored.offer_group), [])
            if lines and lines[-1].seq < stored.seq:
                position = len(lines)
            else:
                position = bisect.bisect_left(lines, stored.seq, key=lambda line: line.seq)
            if stored.seq < 1 or (position < len(lines) and lines[position].seq == stored.seq):
                raise DuplicateEntityError(
                    f"line {stored.seq} of account {stored.offer_group!r} of user "
                    f"{stored.user_id!r} exists already"
                )
            names = (
                self._key_names(stored) if stored.idempotency_key or stored.operation_key else ()
            )
            for name in names:
                if name in self._keys:
                    raise DuplicateEntityError(
                        f"the {name[1]} key {name[2]!r} of user {stored.user_id!r} is used "
                        f"by line {self._keys[name].id!r}"
                    )
            if stored.id is None:
                stored.id = _new_id()
            key = str(stored.id)
            table = self._table
            if key in table.rows:
                raise DuplicateEntityError(f"ledger line {key!r} already exists")
            table.rows[key] = stored
            table.by_user.setdefault(user, []).append(key)
            if position == len(lines):
                lines.append(stored)
            else:
                lines.insert(position, stored)
            for name in names:
                self._keys[name] = stored
            return _clone_line(stored)

    def lines_after(self, user_id: UserId, offer_group: str, seq: int) -> list[TokenTimetable]:
        with self._lock:
            lines = self._accounts.get((_user_key(user_id), offer_group), [])
            if not lines or lines[-1].seq <= seq:
                return []
            start = bisect.bisect_right(lines, seq, key=lambda line: line.seq)
            return [_clone_line(line) for line in lines[start:]]

    def find_by_key(
        self,
        user_id: UserId,
        *,
        idempotency_key: str | None = None,
        operation_key: str | None = None,
    ) -> TokenTimetable | None:
        user = _user_key(user_id)
        with self._lock:
            for kind, key in (("idempotency", idempotency_key), ("operation", operation_key)):
                if key is not None and (user, kind, key) in self._keys:
                    return _clone_line(self._keys[(user, kind, key)])
        return None

    def history(
        self,
        user_id: UserId,
        offer_group: str | None,
        limit: int,
        before: EntityId = None,
    ) -> list[TokenTimetable]:
        with self._lock:
            keys = self._table.by_user.get(_user_key(user_id), [])
            end = len(keys)
            if before is not None:
                try:
                    end = keys.index(str(before))
                except ValueError:
                    return []
            found: list[TokenTimetable] = []
            for key in reversed(keys[:end]):
                line = self._table.rows[key]
                if offer_group is None or line.offer_group == offer_group:
                    found.append(_clone_line(line))
                    if len(found) >= limit:
                        break
            return found


class InMemoryUserCreditsDao(UserCreditsDao):
    """Users and their accounts kept in memory; accounts are immutable values replaced under
    the lock by compare-and-set. With ``locking``, appends run under the backend's lock
    (:meth:`append_locked`, :meth:`append_consumption`): the reference implementation of
    these optional methods. Without, the core appends by compare-and-set, which keeps the
    lock shorter and is faster with many threads."""

    def __init__(
        self, lock: threading.RLock, ledger: InMemoryTokenTimetableDao, *, locking: bool = False
    ):
        self._lock = lock
        self._ledger = ledger
        self._locking = locking
        self._users: dict[UserKey, tuple[str, UserId]] = {}
        self._accounts: dict[UserKey, dict[str, Account]] = {}

    def register(self, user_id: UserId) -> EntityId:
        with self._lock:
            return self._register(user_id)

    def _register(self, user_id: UserId) -> str:
        key = _user_key(user_id)
        if key not in self._users:
            self._users[key] = (_new_id(), copy.deepcopy(user_id))
        return self._users[key][0]

    def find_record_id(self, user_id: UserId) -> EntityId | None:
        with self._lock:
            found = self._users.get(_user_key(user_id))
            return None if found is None else found[0]

    def iter_user_ids(self, batch_size: int = 1000) -> Iterator[UserId]:
        with self._lock:
            users = [copy.deepcopy(user) for _, user in self._users.values()]
        yield from users

    def open_account(self, user_id: UserId, offer_group: str, now: datetime) -> Account:
        with self._lock:
            self._register(user_id)
            accounts = self._accounts.setdefault(_user_key(user_id), {})
            if offer_group not in accounts:
                accounts[offer_group] = Account(
                    user_id=copy.deepcopy(user_id),
                    offer_group=offer_group,
                    created_at=now,
                    snapshot=Snapshot(),
                    window=Window(starts=now),
                )
            return accounts[offer_group]

    def get_account(self, user_id: UserId, offer_group: str) -> Account | None:
        # Accounts are immutable values replaced whole under the lock, and reading a dict is
        # atomic: a reader needs no lock to see one of them entirely.
        return self._accounts.get(_user_key(user_id), {}).get(offer_group)

    def accounts(self, user_id: UserId) -> list[Account]:
        with self._lock:
            return list(self._accounts.get(_user_key(user_id), {}).values())

    def save_snapshot(self, user_id: UserId, offer_group: str, snapshot: Snapshot) -> bool:
        with self._lock:
            accounts = self._accounts.get(_user_key(user_id), {})
            current = accounts.get(offer_group)
            if current is None or current.snapshot.seq >= snapshot.seq:
                return False
            accounts[offer_group] = Account(
                current.user_id, offer_group, current.created_at, snapshot, current.window
            )
            return True

    def append_locked(self, user_id: UserId, offer_group: str, draft: Draft) -> Appended | None:
        if not self._locking:
            return None
        with self._lock:
            account = self.get_account(user_id, offer_group)
            if account is None:
                return None
            snapshot = account.snapshot.apply_all(
                self._ledger.lines_after(user_id, offer_group, account.snapshot.seq)
            )
            line = draft(snapshot)
            if line is None:
                return Appended(None, False, snapshot)
            try:
                stored = self._ledger.create(line)
            except DuplicateEntityError:
                # Under the lock the number is free: a key of the line is taken.
                holder = self._ledger.find_by_key(
                    user_id, idempotency_key=line.idempotency_key, operation_key=line.operation_key
                )
                if holder is None:
                    raise
                return Appended(holder, False, snapshot)
            snapshot = snapshot.apply(stored)
            self.save_snapshot(user_id, offer_group, snapshot)
            return Appended(stored, True, snapshot)

    def append_consumption(
        self, user_id: UserId, offer_group: str, line: TokenTimetable, floor: int | None
    ) -> TokenTimetable | None:
        def allowed(snapshot: Snapshot) -> TokenTimetable | None:
            if snapshot.holds or (floor is not None and snapshot.balance + line.tokens < floor):
                return None
            line.seq = snapshot.seq + 1
            return line

        appended = self.append_locked(user_id, offer_group, allowed)
        return None if appended is None else appended.line

    def save_window(
        self, user_id: UserId, offer_group: str, expected_version: int, window: Window
    ) -> bool:
        with self._lock:
            accounts = self._accounts.get(_user_key(user_id), {})
            current = accounts.get(offer_group)
            if current is None or current.window.version != expected_version:
                return False
            accounts[offer_group] = current._replace(window=window)
            return True


class InMemoryCustomerDao(_Reader[Customer], CustomerDao):
    """Customers kept in memory, unique per processor and user, and per processor and e-mail."""

    def create(self, entity: Customer) -> Customer:
        with self._lock:
            clash = self._by_user(entity.processor, entity.user_id) or self._by_email(
                entity.processor, entity.email
            )
            if clash is not None:
                raise DuplicateEntityError(
                    f"{entity.processor} customer {clash.customer_id!r} exists already for user "
                    f"{clash.user_id!r} / {clash.email!r}"
                )
            return self._table.insert(copy.deepcopy(entity))

    def _by_user(self, processor: str, user_id: UserId) -> Customer | None:
        keys = self._table.by_user.get(_user_key(user_id), [])
        return next((c for k in keys if (c := self._table.rows[k]).processor == processor), None)

    def _by_email(self, processor: str, email: str) -> Customer | None:
        return next(
            (c for c in self._table.rows.values() if c.processor == processor and c.email == email),
            None,
        )

    def find_by_user(self, processor: str, user_id: UserId) -> Customer | None:
        with self._lock:
            return copy.deepcopy(self._by_user(processor, user_id))

    def find_by_email(self, processor: str, email: str) -> Customer | None:
        with self._lock:
            return copy.deepcopy(self._by_email(processor, email))


class InMemoryWebhookEventDao(_Reader[WebhookEventRecord], WebhookEventDao):
    """Received gateway events kept in memory, by event id, in the order received."""

    def create(self, entity: WebhookEventRecord) -> WebhookEventRecord:
        with self._lock:
            return self._table.insert(copy.deepcopy(entity))

    def finish(
        self, event_id: str, *, handled: bool, message: str, order_id: EntityId = None
    ) -> WebhookEventRecord | None:
        with self._lock:
            current = self._table.rows.get(str(event_id))
            if current is None:
                return None
            updated = dataclasses.replace(
                current, handled=handled, message=message, order_id=order_id
            )
            self._table.rows[str(event_id)] = updated
            return copy.deepcopy(updated)

    def latest(self, limit: int, before: str | None = None) -> list[WebhookEventRecord]:
        with self._lock:
            keys = list(self._table.rows)
            if before is not None:
                if str(before) not in self._table.rows:
                    return []
                keys = keys[: keys.index(str(before))]
            return [copy.deepcopy(self._table.rows[k]) for k in reversed(keys[-limit:])]


class InMemoryDaoFactory(DaoFactory):
    """The embedded in-memory backend: thread-safe, process-local, nothing persisted. With
    ``locking``, it appends under its lock (see :class:`InMemoryUserCreditsDao`)."""

    def __init__(self, *, locking: bool = False) -> None:
        self._lock = threading.RLock()
        self._offers = InMemoryOfferDao(_Table(Offer, self._lock, copy.deepcopy))
        self._orders = InMemoryOrderDao(_Table(Order, self._lock, _clone_order))
        self._ledger = InMemoryTokenTimetableDao(_Table(TokenTimetable, self._lock, _clone_line))
        self._credits = InMemoryUserCreditsDao(self._lock, self._ledger, locking=locking)
        self._customers = InMemoryCustomerDao(_Table(Customer, self._lock, copy.deepcopy))
        self._events = InMemoryWebhookEventDao(
            _Table(WebhookEventRecord, self._lock, copy.deepcopy)
        )

    def get_offer_dao(self) -> InMemoryOfferDao:
        return self._offers

    def get_order_dao(self) -> InMemoryOrderDao:
        return self._orders

    def get_token_timetable_dao(self) -> InMemoryTokenTimetableDao:
        return self._ledger

    def get_user_credits_dao(self) -> InMemoryUserCreditsDao:
        return self._credits

    def get_customer_dao(self) -> InMemoryCustomerDao:
        return self._customers

    def get_webhook_event_dao(self) -> InMemoryWebhookEventDao:
        return self._events
