"""Storage interfaces: one abstract DAO per entity and the factory that hands them out.

Every backend (the in-memory default, MongoDB, or your own) implements these
and must pass the contract suite in :mod:`usercredits.testing`. The services
are correct under concurrent use from several threads and processes because
each method below that changes a balance or an order's state is a single
atomic operation of the backend. Ids are accepted in their native form or as
their ``str()``; an id that matches nothing is "absent" (never an error).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

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

T = TypeVar("T")

Filters = Mapping[str, Any]
"""Model field names mapped to the values they must equal; ``{}`` matches everything."""

ID_FIELDS = frozenset({"id", "offer_id", "order_id", "parent_id"})
"""Model fields holding entity ids: a filter on one accepts an id or its ``str()``."""

ONCE_PER_ORDER = (LedgerReason.PURCHASE, LedgerReason.EXPIRY, LedgerReason.REFUND)
"""Ledger reasons of which an order has at most one line."""


class Dao(abc.ABC, Generic[T]):
    """Create, read, update and delete one kind of entity."""

    @abc.abstractmethod
    def create(self, entity: T) -> T:
        """Store ``entity`` (its id may be None) and return the stored copy with its id."""

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

    @abc.abstractmethod
    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> T | None:
        """Set the given fields in one atomic write; the updated entity, None when absent."""

    @abc.abstractmethod
    def delete_by_id(self, entity_id: EntityId) -> bool:
        """Delete the entity; True when it existed."""


class OfferDao(Dao[Offer]):
    """Offers; ``create`` raises DuplicateEntityError for a ``key`` already used."""

    @abc.abstractmethod
    def find_by_key(self, key: str) -> Offer | None:
        """The offer with this catalogue key, None when absent."""

    @abc.abstractmethod
    def find_regular(self, env_tags: Collection[str] | None = None) -> list[Offer]:
        """Offers with an empty ``unlocked_by`` carrying every tag of ``env_tags``, in one read."""

    @abc.abstractmethod
    def find_unlocked_by(self, offer_groups: Collection[str]) -> list[Offer]:
        """Offers whose ``unlocked_by`` names one of ``offer_groups``, in one read."""


class OrderDao(Dao[Order]):
    """Orders; ``payment_intent_secret`` is never stored."""

    @abc.abstractmethod
    def find_by_payment_intent_id(self, payment_intent_id: str) -> Order | None:
        """The order whose current payment intent is this one, None when none is."""

    @abc.abstractmethod
    def transition(
        self,
        order_id: EntityId,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        entry: OrderStatus | None = None,
    ) -> Order | None:
        """Atomically set ``changes`` and append ``entry`` to the history if the order's status is
        one of ``from_statuses``; the updated order, or None when its status is another.
        Raises EntityNotFoundError when there is no such order."""

    @abc.abstractmethod
    def find_due(self, user_id: UserId, now: datetime) -> list[Order]:
        """The user's paid orders whose ``expires`` is at or before ``now``, soonest first."""

    @abc.abstractmethod
    def find_paid(self, user_id: UserId, offer_group: str) -> list[Order]:
        """The user's paid orders (root or child) of ``offer_group``."""

    @abc.abstractmethod
    def find_children(self, parent_id: EntityId) -> list[Order]:
        """The child orders created when the bundle order ``parent_id`` was paid."""

    @abc.abstractmethod
    def claim_webhook_event(self, order_id: EntityId, event_id: str) -> bool:
        """Atomically record that ``event_id`` is applied to the order; False if it already was."""

    @abc.abstractmethod
    def release_webhook_event(self, order_id: EntityId, event_id: str) -> None:
        """Forget a claimed event whose application failed, so a redelivery applies it."""


class TokenTimetableDao(Dao[TokenTimetable]):
    """The token ledger. Lines are unique per (user, idempotency key) and per (order, reason) for
    the reasons of ``ONCE_PER_ORDER``; ``create`` raises DuplicateEntityError on a clash.
    ``update_by_id`` and ``delete_by_id`` are administrative: they do not touch balances."""

    @abc.abstractmethod
    def insert_once(self, line: TokenTimetable) -> tuple[TokenTimetable, bool]:
        """Store ``line`` unless a line with the same uniqueness key exists; returns the stored
        line and True, or the existing line and False. Racing calls store one line."""

    @abc.abstractmethod
    def find_by_idempotency_key(self, user_id: UserId, key: str) -> TokenTimetable | None:
        """The user's line recorded with this idempotency key, None when absent."""

    @abc.abstractmethod
    def find_group(self, user_id: UserId, offer_group: str) -> list[TokenTimetable]:
        """Every line of the user's group, in recording order, in one read."""


class UserCreditsDao(Dao[UserCredits]):
    """One :class:`UserCredits` per user, with one balance per offer group and the subscriptions.

    The balance of a group and its validity window live together and change only
    through the atomic operations below. A group's window is the span of its paid
    orders: ``ActivatedOffer.expires`` is the latest end of a dated window, or None
    when an order never expires (or no order opened one).

    ``create``, ``update_by_id`` and ``delete_by_id`` replace or remove a user's whole
    credits: they are administrative tools, not atomic across groups in a backend that stores
    each group apart, and the services never call them."""

    @abc.abstractmethod
    def find_by_user_id(self, user_id: UserId) -> UserCredits | None:
        """The user's credits, None when the user has none."""

    @abc.abstractmethod
    def get_or_create(self, user_id: UserId) -> UserCredits:
        """The user's credits, created empty when absent; racing calls create exactly one."""

    @abc.abstractmethod
    def iter_user_ids(self, batch_size: int = 1000) -> Iterator[UserId]:
        """Every user id with credits, streamed in batches (never all loaded at once)."""

    @abc.abstractmethod
    def get_activated_offer(self, user_id: UserId, offer_group: str) -> ActivatedOffer | None:
        """The user's standing in one group, in one read; None when absent."""

    @abc.abstractmethod
    def add_tokens(
        self,
        user_id: UserId,
        offer_group: str,
        delta: int,
        *,
        now: datetime,
        floor: int | None = None,
    ) -> int | None:
        """Atomically add ``delta`` (negative to remove) to the group balance and return the new
        balance. An absent group (and user credits) is created with ``starts=now``. With
        ``floor``, nothing changes and None is returned when the result would be below it."""

    @abc.abstractmethod
    def open_window(
        self, user_id: UserId, offer_group: str, starts: datetime, expires: datetime | None
    ) -> None:
        """Atomically widen the group's window to cover ``starts``..``expires`` (None: never
        ends), creating the group with a zero balance when absent."""

    @abc.abstractmethod
    def chain_window(
        self,
        user_id: UserId,
        offer_group: str,
        now: datetime,
        window: Callable[[datetime], datetime | None],
    ) -> tuple[datetime, datetime | None]:
        """Atomically reserve the group's next window: it starts at the end of the latest dated
        window if that is after ``now`` (else at ``now``) and ends at ``window(start)``; the
        window is opened as by ``open_window``. Racing calls get consecutive windows."""

    @abc.abstractmethod
    def reset_window(
        self,
        user_id: UserId,
        offer_group: str,
        starts: datetime | None,
        latest_end: datetime | None,
        never_ends: bool,
    ) -> None:
        """Replace the group's window (after a refund): ``latest_end`` is the latest dated end,
        ``never_ends`` whether a live order never expires. No-op when the group is absent."""

    @abc.abstractmethod
    def remove_offer_if_spent(
        self, user_id: UserId, offer_group: str, now: datetime
    ) -> ActivatedOffer | None:
        """Atomically delete the group if its balance is 0 and its dated window ended at or
        before ``now`` (and no order keeps it open forever); the removed group, else None."""

    @abc.abstractmethod
    def add_subscriptions(self, user_id: UserId, subscriptions: Sequence[Subscription]) -> None:
        """Append subscriptions to the user's credits (created when absent)."""

    @abc.abstractmethod
    def update_subscriptions(
        self,
        user_id: UserId,
        order_id: EntityId,
        changes: Mapping[str, Any],
        *,
        offer_id: EntityId = None,
        offer_group: str | None = None,
    ) -> int:
        """Set ``changes`` on the user's subscriptions of ``order_id`` (narrowed to ``offer_id`` /
        ``offer_group`` when given); how many were updated."""

    @abc.abstractmethod
    def active_groups(self, user_id: UserId, now: datetime) -> set[str]:
        """Groups of the user's paid subscriptions not ended at ``now``, in one read."""


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
        """The user credits DAO."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the backend's resources (connections); the factory is unusable after."""
