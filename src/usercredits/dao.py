"""Storage interfaces: one abstract DAO per stored entity and the factory that hands them out.

Every backend (the in-memory default, MongoDB, SQL, or your own) implements these
and must pass the contract, concurrency and fault-injection suites of
:mod:`usercredits.testing`. The interfaces hold what the services need and no
more; every rule of the product lives in the services, above them.

The services never need a transaction across documents. Each operation commits
with **one** atomic write -- the next numbered line of an account appended under
a unique index, or a conditional change of an order's status -- and everything
written after it is an idempotent projection that a retry or ``reconcile``
re-applies. So each method below is a single atomic operation of the backend;
its docstring says what it guarantees. Ids are accepted in their native form or
as their ``str()``; an id that matches nothing is "absent" (never an error).
Driver failures are raised as :class:`~usercredits.errors.StorageError`, and a
write that would break a uniqueness rule as
:class:`~usercredits.errors.DuplicateEntityError`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from usercredits.grants import Snapshot
from usercredits.models import (
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

T = TypeVar("T")

Filters = Mapping[str, Any]
"""Model field names mapped to the values they must equal; ``{}`` matches everything."""

ID_FIELDS = frozenset({"id", "offer_id", "order_id", "parent_id"})
"""Model fields holding entity ids: a filter on one accepts an id or its ``str()``."""


class Reader(abc.ABC, Generic[T]):
    """Create and read one kind of entity."""

    @abc.abstractmethod
    def create(self, entity: T) -> T:
        """Store ``entity`` (its id may be None) and return the stored copy with its id;
        DuplicateEntityError when a uniqueness rule forbids it (nothing stored then)."""

    @abc.abstractmethod
    def find_by_id(self, entity_id: EntityId) -> T | None:
        """The entity with this id, None when absent."""

    @abc.abstractmethod
    def find(self, filters: Filters | None = None) -> list[T]:
        """Every entity matching ``filters``, in creation order."""

    @abc.abstractmethod
    def find_one(self, filters: Filters | None = None) -> T | None:
        """The first entity matching ``filters``, None when none does."""

    @abc.abstractmethod
    def count(self, filters: Filters | None = None) -> int:
        """How many entities match ``filters``."""


class OfferDao(Reader[Offer]):
    """The catalogue; ``create`` and ``update_by_id`` refuse a ``key`` already used."""

    @abc.abstractmethod
    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> Offer | None:
        """Set the given fields in one atomic write; the updated offer, None when absent.
        The changed offer is validated before anything is written (InvalidOfferError)."""

    @abc.abstractmethod
    def delete_by_id(self, entity_id: EntityId) -> bool:
        """Delete the offer; True when it existed."""

    @abc.abstractmethod
    def find_by_key(self, key: str) -> Offer | None:
        """The offer with this catalogue key, None when absent."""

    @abc.abstractmethod
    def find_regular(self, env_tags: Collection[str] | None = None) -> list[Offer]:
        """Offers with an empty ``unlocked_by`` carrying every tag of ``env_tags``, in one read."""

    @abc.abstractmethod
    def find_unlocked_by(self, offer_groups: Collection[str]) -> list[Offer]:
        """Offers whose ``unlocked_by`` names one of ``offer_groups``, in one read."""


class OrderDao(Reader[Order]):
    """Orders. ``payment_intent_secret`` is never stored. Two uniqueness rules hold, a write
    breaking one raising DuplicateEntityError and storing nothing: a child order (``parent_id``
    set) is unique per (``parent_id``, ``item_index``), and a user holds at most one paid
    order with ``exclusive`` set per offer (per ``user_id``, ``offer_id``), whether the
    second one is created paid or changed to paid by ``transition``."""

    @abc.abstractmethod
    def transition(
        self,
        order_id: EntityId,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        entry: OrderStatus | None = None,
        *,
        expected: Mapping[str, Any] | None = None,
    ) -> Order | None:
        """Atomically set ``changes`` and append ``entry`` to the history if the order's status is
        one of ``from_statuses`` (and each field of ``expected`` has the value given); the
        updated order, or None when not. Raises EntityNotFoundError when there is no such
        order."""

    @abc.abstractmethod
    def find_by_payment_intent_id(self, payment_intent_id: str) -> Order | None:
        """The order whose current payment intent is this one, None when none is."""

    @abc.abstractmethod
    def find_child(self, parent_id: EntityId, item_index: int) -> Order | None:
        """The child order of one item of a bundle order, None when not created."""

    @abc.abstractmethod
    def find_due(self, user_id: UserId, now: datetime) -> list[Order]:
        """The user's live orders (paid or partially refunded) whose ``expires`` is at or before
        ``now``, soonest first."""

    @abc.abstractmethod
    def find_live(self, user_id: UserId, offer_group: str | None = None) -> list[Order]:
        """The user's live orders (paid or partially refunded, root or child), of one group
        when given, in creation order."""

    @abc.abstractmethod
    def find_in_progress(self, user_id: UserId) -> list[Order]:
        """The user's orders whose ``in_progress`` is set, in creation order."""


class TokenTimetableDao(Reader[TokenTimetable]):
    """The token ledger, append-only: lines are created, never changed nor deleted.

    ``create`` is the commit point of every change of an account. It stores the line only if
    no stored line shares its (``user_id``, ``offer_group``, ``seq``), its (``user_id``,
    ``idempotency_key``) or its (``user_id``, ``operation_key``) (keys when set), and raises
    DuplicateEntityError otherwise, storing nothing. Racing creates of one ``seq`` store one
    line. Lines are numbered from 1: a ``seq`` below 1 is refused like a number already
    taken. ``find`` returns lines in recording order."""

    @abc.abstractmethod
    def lines_after(self, user_id: UserId, offer_group: str, seq: int) -> list[TokenTimetable]:
        """The account's lines numbered above ``seq``, in order, in one read."""

    @abc.abstractmethod
    def find_by_key(
        self,
        user_id: UserId,
        *,
        idempotency_key: str | None = None,
        operation_key: str | None = None,
    ) -> TokenTimetable | None:
        """The user's line holding this idempotency key, else this operation key; None."""

    @abc.abstractmethod
    def history(
        self,
        user_id: UserId,
        offer_group: str | None,
        limit: int,
        before: EntityId = None,
    ) -> list[TokenTimetable]:
        """At most ``limit`` (at least 1) of the user's lines (of one group when given), newest
        first, recorded before the line ``before`` when given; an empty list when ``before``
        is not one of the user's lines."""


class Account(NamedTuple):
    """A user's standing in one offer group as stored: the cached fold of its ledger lines
    (``snapshot``) and its validity window (``window``)."""

    user_id: UserId
    offer_group: str
    created_at: datetime
    snapshot: Snapshot
    window: Window


class Appended(NamedTuple):
    """The outcome of an append to an account.

    ``line`` is the line appended (``created``), or the line already holding the draft's key
    (not ``created``), or None when the decision was to append nothing. ``snapshot`` is the
    account as of the latest line seen."""

    line: TokenTimetable | None
    created: bool
    snapshot: Snapshot


Draft = Callable[[Snapshot], TokenTimetable | None]
"""Makes an account's next line from its snapshot: the line complete (user, group, date,
``seq`` one above the snapshot's), or None to append nothing; it may raise to refuse."""


class UserCreditsDao(abc.ABC):
    """Users with credits and their accounts: one record per user, one account per (user,
    offer group). An account's snapshot and window change only through the two
    compare-and-set writes below (and :meth:`append_locked` and :meth:`append_consumption`,
    for backends that offer them)."""

    @abc.abstractmethod
    def register(self, user_id: UserId) -> EntityId:
        """The id of the user's record, created when absent; racing calls create one."""

    @abc.abstractmethod
    def find_record_id(self, user_id: UserId) -> EntityId | None:
        """The id of the user's record, None when the user has none."""

    @abc.abstractmethod
    def iter_user_ids(self, batch_size: int = 1000) -> Iterator[UserId]:
        """Every registered user id, streamed in batches (never all loaded at once)."""

    @abc.abstractmethod
    def open_account(self, user_id: UserId, offer_group: str, now: datetime) -> Account:
        """The account, created when absent with an empty snapshot and a window starting at
        ``now`` (the user is registered too); racing calls create one."""

    @abc.abstractmethod
    def get_account(self, user_id: UserId, offer_group: str) -> Account | None:
        """The account in one read, None when absent."""

    @abc.abstractmethod
    def accounts(self, user_id: UserId) -> list[Account]:
        """Every account of the user, in creation order, in one read."""

    @abc.abstractmethod
    def save_snapshot(self, user_id: UserId, offer_group: str, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` if the stored one has a lower ``seq``; whether it was stored
        (False, storing nothing, when the account does not exist)."""

    @abc.abstractmethod
    def save_window(
        self, user_id: UserId, offer_group: str, expected_version: int, window: Window
    ) -> bool:
        """Store ``window`` if the stored window's ``version`` is ``expected_version``; whether
        it was stored (False, storing nothing, when the account does not exist)."""

    def append_locked(self, user_id: UserId, offer_group: str, draft: Draft) -> Appended | None:
        """Optional: append the account's next line and its snapshot in one atomic write,
        holding the account so that no other writer can come in between (a transaction on a
        database that has them). None, calling nothing and storing nothing, when the backend
        does not offer it or the account does not exist: the caller appends by the
        compare-and-set rule of :mod:`usercredits.accounts` instead.

        Otherwise ``draft`` is called with the account's snapshot, every recorded line
        folded in (again, if a line numbered like its draft turns out to exist). A None
        draft stores nothing; a draft whose idempotency or operation key another line of the
        user holds stores nothing and returns that line (not ``created``); else the line is
        stored, and the snapshot that follows it when the stored snapshot would otherwise lag
        :data:`~usercredits.accounts.SNAPSHOT_LAG` lines behind. When ``draft`` raises,
        nothing is stored."""
        return None

    def append_consumption(
        self, user_id: UserId, offer_group: str, line: TokenTimetable, floor: int | None
    ) -> TokenTimetable | None:
        """Optional: append a consumption line (complete but for its ``seq``) as the account's
        next line in one atomic write, when the backend can tell by itself that it is
        allowed: the account holds no tokens on hold and, with ``floor``, its balance minus
        the line's tokens stays at ``floor`` or above. The line stored (numbered), or the
        line of the user holding its idempotency key (nothing stored), or None, storing
        nothing, whenever the backend does not tell (it does not offer this, the account is
        absent or holds tokens, the floor would be crossed...): the caller then appends by
        the general rule, which decides exactly."""
        return None


class CustomerDao(Reader[Customer]):
    """Customers of payment processors: at most one per (``processor``, ``user_id``) and one
    per (``processor``, ``email``); ``create`` of a second raises DuplicateEntityError."""

    @abc.abstractmethod
    def find_by_user(self, processor: str, user_id: UserId) -> Customer | None:
        """The user's customer at the processor, None when absent."""

    @abc.abstractmethod
    def find_by_email(self, processor: str, email: str) -> Customer | None:
        """The processor's customer of this e-mail, None when absent."""


class WebhookEventDao(Reader[WebhookEventRecord]):
    """Gateway events as received, by the gateway's event id: ``create`` of an id already
    stored raises DuplicateEntityError."""

    @abc.abstractmethod
    def finish(
        self, event_id: str, *, handled: bool, message: str, order_id: EntityId = None
    ) -> WebhookEventRecord | None:
        """Record in one write how the event's processing ended; the record, None when absent."""

    @abc.abstractmethod
    def latest(self, limit: int, before: str | None = None) -> list[WebhookEventRecord]:
        """At most ``limit`` (at least 1) records, the last received first, received before the
        event ``before`` when given (an empty list when it is unknown)."""


class DaoFactory(abc.ABC):
    """Hands out the DAOs of one backend."""

    @abc.abstractmethod
    def get_offer_dao(self) -> OfferDao:
        """The offer DAO."""

    @abc.abstractmethod
    def get_order_dao(self) -> OrderDao:
        """The order DAO."""

    @abc.abstractmethod
    def get_token_timetable_dao(self) -> TokenTimetableDao:
        """The token ledger DAO."""

    @abc.abstractmethod
    def get_user_credits_dao(self) -> UserCreditsDao:
        """The DAO of users and their accounts."""

    @abc.abstractmethod
    def get_customer_dao(self) -> CustomerDao:
        """The DAO of payment processors' customers."""

    @abc.abstractmethod
    def get_webhook_event_dao(self) -> WebhookEventDao:
        """The DAO of received gateway events."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the backend's resources (connections); the factory is unusable after."""


WRITES: Mapping[type, frozenset[str]] = {
    OfferDao: frozenset({"create", "update_by_id", "delete_by_id"}),
    OrderDao: frozenset({"create", "transition"}),
    TokenTimetableDao: frozenset({"create"}),
    UserCreditsDao: frozenset(
        {
            "register",
            "open_account",
            "save_snapshot",
            "save_window",
            "append_locked",
            "append_consumption",
        }
    ),
    CustomerDao: frozenset({"create"}),
    WebhookEventDao: frozenset({"create", "finish"}),
}
"""The methods of each interface that write: the fault-injection suite makes them fail."""
